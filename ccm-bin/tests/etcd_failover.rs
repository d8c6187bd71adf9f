//! Failover of two `ccm serve` daemons on real etcd (env CCM_TEST_ETCD): SIGKILL the leading
//! scheduler; the standby binds new sessions within TTL + one interval (plus process slack),
//! and no session is bound twice, no worker over-committed, no port handed to two sessions.
#![cfg(feature = "all-adapters")]

use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_core::definition::{LabletDefinition, PortTemplate, Protocol};
use ccm_core::resources::{Load, Resources};
use ccm_core::runtime::KeyLayout;
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::store::StateStore;
use ccm_core::template::parse_templates;
use ccm_core::worker::{Worker, WorkerState};
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TTL_SECS: u64 = 3;
const INTERVAL_SECS: u64 = 1;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Daemon {
    name: String,
    child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(name: &str, endpoint: &str, prefix: &str) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_ccm"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(root())
        .args(["--env-file", "/nonexistent/ccm.env", "serve"])
        .env("CCM_BACKEND", "etcd")
        .env("CCM_ETCD_ENDPOINTS", endpoint)
        .env("CCM_ETCD_PREFIX", prefix)
        .env("CCM_CANDIDATE_ID", name)
        .env("CCM_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("SCHEDULER_LEADER_LEASE_TTL_SECONDS", TTL_SECS.to_string())
        .env(
            "SCHEDULER_RECONCILE_INTERVAL_SECONDS",
            INTERVAL_SECS.to_string(),
        )
        .env("CONTROLLER_ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ccm serve");
    Daemon {
        name: name.to_string(),
        child: Some(child),
    }
}

fn definition() -> LabletDefinition {
    LabletDefinition {
        id: "def-failover".into(),
        name: "failover-lab".into(),
        version: semver::Version::new(1, 0, 0),
        lab_artifact_uri: String::new(),
        lab_yaml_hash: "00".into(),
        resource_requirements: Resources {
            cpu_cores: 4,
            memory_gb: 16,
            storage_gb: 20,
        },
        node_count: 2,
        license_affinity: vec![],
        ami_requirements: Default::default(),
        port_template: ["ssh", "vnc"]
            .iter()
            .map(|n| PortTemplate {
                name: n.to_string(),
                protocol: Protocol::Tcp,
                description: String::new(),
            })
            .collect(),
        max_duration_minutes: 120,
        created_at: None,
        created_by: None,
    }
}

async fn put_json<T: serde::Serialize>(store: &EtcdStateStore, key: &str, v: &T) {
    store
        .put(key, serde_json::to_vec(v).unwrap(), None)
        .await
        .unwrap();
}

async fn sessions(store: &EtcdStateStore, keys: &KeyLayout) -> Vec<LabletSession> {
    let l = store.list(&keys.sessions()).await.unwrap();
    l.kvs
        .iter()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
        .collect()
}

async fn add_sessions(store: &EtcdStateStore, keys: &KeyLayout, from: usize, n: usize) {
    let now = chrono::Utc::now();
    for i in from..from + n {
        let s = LabletSession::new(
            format!("s{i:04}"),
            "def-failover",
            "1.0.0",
            "owner",
            None,
            now,
        );
        put_json(store, &keys.session(&s.id), &s).await;
    }
}

async fn wait_all_scheduled(
    store: &EtcdStateStore,
    keys: &KeyLayout,
    n: usize,
    limit: Duration,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let ss = sessions(store, keys).await;
        let done = ss
            .iter()
            .filter(|s| s.state == SessionState::Scheduled)
            .count();
        if ss.len() == n && done == n {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "only {done} of {n} sessions scheduled after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader(store: &EtcdStateStore, keys: &KeyLayout) -> Option<String> {
    store
        .get(&keys.leader("scheduler"))
        .await
        .unwrap()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_leader_standby_binds_within_ttl_plus_interval_none_twice() {
    let endpoint = std::env::var("CCM_TEST_ETCD").unwrap_or_else(|_| {
        panic!("CCM_TEST_ETCD is not set: run `bash scripts/test.sh` (it starts etcd)")
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("/ccm-failover-{nanos}");
    let keys = KeyLayout::new(prefix.clone());
    let mut cfg = EtcdConfig::new([endpoint.clone()]);
    cfg.prefix = prefix.clone();
    let store = EtcdStateStore::connect(cfg).await.unwrap();

    let templates =
        parse_templates(include_str!("../../config/worker-templates.yaml"), "seed").unwrap();
    let def = definition();
    put_json(&store, &keys.definition(&def.id), &def).await;
    for i in 0..10 {
        let mut w = Worker::from_template(
            format!("w{i:02}"),
            &templates[0],
            "us-east-1",
            WorkerState::Running,
            "2.9.0".parse().unwrap(),
            "CML-2.9.0",
        );
        w.launched_at = Some(chrono::Utc::now());
        put_json(&store, &keys.worker(&w.id), &w).await;
    }

    let mut a = serve("a", &endpoint, &prefix);
    let mut b = serve("b", &endpoint, &prefix);
    add_sessions(&store, &keys, 0, 40).await;
    wait_all_scheduled(&store, &keys, 40, Duration::from_secs(60)).await;
    let first = leader(&store, &keys).await.expect("a scheduler leads");
    let (dead, standby) = if first == "a" {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    assert_eq!(dead.name, first);

    // SIGKILL: no resign, the lease must run out.
    let mut c = dead.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let killed_at = Instant::now();
    add_sessions(&store, &keys, 40, 40).await;
    let bound_in = wait_all_scheduled(&store, &keys, 80, Duration::from_secs(60)).await;
    let took = killed_at.elapsed().max(bound_in);
    eprintln!(
        "standby {} bound the new sessions {took:?} after the leader was killed",
        standby.name
    );
    assert_eq!(
        leader(&store, &keys).await.as_deref(),
        Some(standby.name.as_str())
    );
    // TTL + one interval, plus slack for process scheduling on a loaded 2-core machine.
    let bound = Duration::from_secs(TTL_SECS + INTERVAL_SECS + 4);
    assert!(took <= bound, "failover took {took:?}, more than {bound:?}");

    // Nothing bound twice, no worker over-committed, no port with two owners.
    let ss = sessions(&store, &keys).await;
    let wl = store.list(&keys.workers()).await.unwrap();
    let workers: Vec<Worker> = wl
        .kvs
        .iter()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
        .collect();
    let need = Load::new(def.resource_requirements, def.node_count);
    let mut owners_seen = BTreeSet::new();
    for w in &workers {
        let on: Vec<&LabletSession> = ss
            .iter()
            .filter(|s| s.worker_id.as_deref() == Some(w.id.as_str()))
            .collect();
        let load = on
            .iter()
            .fold(Load::default(), |l, _| l.saturating_add(&need));
        assert!(
            load.fits_in(&w.capacity),
            "{} over-committed: {load:?} > {:?}",
            w.id,
            w.capacity
        );
        assert_eq!(
            w.allocated, load,
            "{}: stored allocation matches its sessions",
            w.id
        );
        let mut ports = BTreeSet::new();
        for (sid, m) in w.ports.owners() {
            assert!(
                owners_seen.insert(sid.clone()),
                "session {sid} holds ports on two workers"
            );
            for p in m.values() {
                assert!(ports.insert(*p), "port {p} on {} handed out twice", w.id);
            }
        }
        for s in &on {
            assert_eq!(
                w.ports.of(&s.id),
                Some(&s.allocated_ports),
                "{} ports agree",
                s.id
            );
        }
    }
    assert_eq!(
        owners_seen.len(),
        80,
        "every session holds ports on exactly one worker"
    );
    let per_session: BTreeMap<&str, usize> = ss
        .iter()
        .map(|s| {
            (
                s.id.as_str(),
                s.state_history
                    .iter()
                    .filter(|c| c.to == SessionState::Scheduled)
                    .count(),
            )
        })
        .collect();
    assert!(
        per_session.values().all(|n| *n == 1),
        "a session was scheduled twice: {per_session:?}"
    );
}
