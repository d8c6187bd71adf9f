//! Shared by the daemon-on-etcd tests: start `ccm serve` on a prefix, seed workers and
//! sessions (sessions through the façade), wait for bindings, and check the stored state is
//! consistent. A test using it declares `mod support;` too (the general helpers).
#![allow(dead_code)]

use crate::support::{free_port, unique};

use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_core::definition::LabletDefinition;
use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::resources::{Load, Resources};
use ccm_core::runtime::{KeyLayout, Runtime, RuntimeSettings};
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::store::{Clock, StateStore, SystemClock};
use ccm_core::worker::{Worker, WorkerState};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TTL_SECS: u64 = 3;
pub const INTERVAL_SECS: u64 = 1;

pub struct Daemon {
    pub name: String,
    pub child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ccm serve` on etcd with the scheduler only (the controller disabled).
pub fn serve(name: &str, endpoint: &str, prefix: &str) -> Daemon {
    serve_with(name, endpoint, prefix, &[("CONTROLLER_ENABLED", "false")])
}

/// `ccm serve` on etcd under `prefix`, with `extra` settings on top of the test defaults.
pub fn serve_with(name: &str, endpoint: &str, prefix: &str, extra: &[(&str, &str)]) -> Daemon {
    let child = crate::support::ccm()
        .arg("serve")
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
        // These tests are about binding and scaling: no lab side unless a test asks for one
        // (a lab loop would move bound sessions on past SCHEDULED).
        .env("CCM_LAB_RUNTIME", "none")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ccm serve");
    Daemon {
        name: name.to_string(),
        child: Some(child),
    }
}

pub fn definition() -> LabletDefinition {
    LabletDefinition {
        name: "failover-lab".into(),
        lab_yaml_hash: "00".into(),
        ..LabletDefinition::new(
            "def-failover",
            Resources {
                cpu_cores: 4,
                memory_gb: 16,
                storage_gb: 20,
            },
            2,
            &["ssh", "vnc"],
        )
    }
}

/// Writes JSON; a write that hits a stopped member is retried (the adapter retries reads
/// only — a writer re-reads and retries, as the loops do).
pub async fn put_json<T: serde::Serialize>(store: &EtcdStateStore, key: &str, v: &T) {
    let value = serde_json::to_vec(v).unwrap();
    let mut tries = 0;
    loop {
        match store.put(key, value.clone(), None).await {
            Ok(_) => return,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("put {key}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

pub async fn sessions(store: &EtcdStateStore, keys: &KeyLayout) -> Vec<LabletSession> {
    let l = store.list(&keys.sessions()).await.unwrap();
    l.kvs
        .iter()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
        .collect()
}

/// A runtime over `store` under the prefix of `keys` (in-memory spec, events and cloud), for
/// its façade: the tests write sessions as a client of the API would. Building it starts no
/// loop and campaigns for nothing, so it never competes with the daemons.
pub fn facade(store: &EtcdStateStore, keys: &KeyLayout) -> Runtime {
    let state = Arc::new(store.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Runtime::builder()
        .state(state.clone())
        .elector(Arc::new(state.elector()))
        .spec(Arc::new(MemorySpecStore::new()))
        .events(Arc::new(RecordingSink::new()))
        .clock(clock.clone())
        .provider(Arc::new(SimulatedProvider::new(clock)))
        .settings(RuntimeSettings {
            prefix: keys.prefix().to_string(),
            ..RuntimeSettings::default()
        })
        .build()
        .expect("a runtime over the test store")
}

/// Imports PENDING sessions `s{from}`..`s{from + n - 1}` through the façade; an import that
/// hits a stopped member is retried (create-if-absent: what the failed try wrote is kept).
pub async fn add_sessions(store: &EtcdStateStore, keys: &KeyLayout, from: usize, n: usize) {
    let now = chrono::Utc::now();
    let batch: Vec<LabletSession> = (from..from + n)
        .map(|i| {
            LabletSession::new(
                format!("s{i:04}"),
                "def-failover",
                "1.0.0",
                "owner",
                None,
                now,
            )
        })
        .collect();
    let rt = facade(store, keys);
    let mut tries = 0;
    loop {
        match rt.lablets().import(&batch).await {
            Ok(_) => return,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("import s{from:04}..: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("import s{from:04}..: {e}"),
        }
    }
}

pub async fn wait_all_scheduled(
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

pub async fn leader(store: &EtcdStateStore, keys: &KeyLayout) -> Option<String> {
    store
        .get(&keys.leader("scheduler"))
        .await
        .unwrap()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// Nothing bound twice, no worker over-committed, stored allocations match their sessions, no
/// port with two owners, and all `n` sessions hold ports on exactly one worker.
pub async fn check_consistent(
    store: &EtcdStateStore,
    keys: &KeyLayout,
    def: &LabletDefinition,
    n: usize,
) {
    // Nothing bound twice, no worker over-committed, no port with two owners.
    let ss = sessions(store, keys).await;
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
        n,
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

/// Writes the definition and `n` RUNNING personal-standard workers under the prefix.
pub async fn seed_fleet(store: &EtcdStateStore, keys: &KeyLayout, n: usize) -> LabletDefinition {
    let templates = ccm_core::template::seed_templates().unwrap();
    let def = definition();
    put_json(store, &keys.definition(&def.id), &def).await;
    for i in 0..n {
        let mut w = Worker::from_template(
            format!("w{i:02}"),
            &templates[0],
            "us-east-1",
            WorkerState::Running,
            "2.9.0".parse().unwrap(),
            "CML-2.9.0",
        );
        w.launched_at = Some(chrono::Utc::now());
        put_json(store, &keys.worker(&w.id), &w).await;
    }
    def
}

/// A store on `endpoints` under a fresh prefix.
pub async fn fresh_store(endpoints: &[String], tag: &str) -> (EtcdStateStore, KeyLayout, String) {
    let prefix = format!("/ccm-{tag}-{}", unique());
    let keys = KeyLayout::new(prefix.clone());
    let mut cfg = EtcdConfig::new(endpoints.to_vec());
    cfg.prefix = prefix.clone();
    (EtcdStateStore::connect(cfg).await.unwrap(), keys, prefix)
}
