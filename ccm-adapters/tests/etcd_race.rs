//! Two schedulers race to bind 1,000 PENDING sessions onto 90 workers through real etcd
//! (`CCM_TEST_ETCD`), each binding one transaction guarded by the mod revisions it read
//! (session + worker). Demand (1,000) exceeds capacity (90 × 11 = 990), so a broken guard
//! would over-commit. Afterwards etcd is read with `etcdctl` (a separate process) and checked:
//! no worker over capacity, no port handed twice, every session bound at most once, worker
//! tables agree with sessions.
#![cfg(feature = "etcd")]

mod support;

use ccm_adapters::etcd::EtcdStateStore;
use ccm_core::store::{Compare, KeyValue, StateStore, Txn, TxnOpResponse};
use ccm_core::testkit::state::unique_prefix;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use support::etcd::{connect, single_etcd};
use support::{env, run};

const SESSIONS: usize = 1_000;
const WORKERS: usize = 90;
const CAPACITY: usize = 11;
const FIRST_PORT: u16 = 5000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Session {
    state: String,
    worker: Option<String>,
    port: Option<u16>,
    by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Worker {
    capacity: usize,
    /// port -> session id
    ports: BTreeMap<u16, String>,
}

fn decode<T: for<'a> Deserialize<'a>>(kv: &KeyValue) -> T {
    serde_json::from_slice(&kv.value).unwrap_or_else(|e| panic!("decode {}: {e}", kv.key))
}

struct Cached<T> {
    value: T,
    rev: i64,
}

/// Each key with its decoded value and the mod revision it was read at.
fn cached<T: for<'a> Deserialize<'a>>(
    kvs: &[KeyValue],
) -> impl Iterator<Item = (String, Cached<T>)> + '_ {
    kvs.iter().map(|kv| {
        (
            kv.key.clone(),
            Cached {
                value: decode(kv),
                rev: kv.mod_revision,
            },
        )
    })
}

/// One scheduler: binds pending sessions in its own order; on conflict refreshes what it read.
async fn scheduler(
    s: Arc<EtcdStateStore>,
    prefix: String,
    name: String,
    reverse: bool,
) -> (usize, usize) {
    let (mut bound, mut conflicts) = (0, 0);
    loop {
        let sessions = s
            .list(&format!("{prefix}/sessions/"))
            .await
            .expect("list sessions");
        let workers = s
            .list(&format!("{prefix}/workers/"))
            .await
            .expect("list workers");
        let mut ws: Vec<(String, Cached<Worker>)> = cached(&workers.kvs).collect();
        if reverse {
            ws.reverse();
        }
        let mut pending: Vec<(String, Cached<Session>)> = cached::<Session>(&sessions.kvs)
            .filter(|(_, c)| c.value.state == "PENDING")
            .collect();
        if reverse {
            pending.reverse();
        }
        let free = ws
            .iter()
            .any(|(_, w)| w.value.ports.len() < w.value.capacity);
        if pending.is_empty() || !free {
            return (bound, conflicts);
        }
        for (skey, sess) in pending {
            let Some(wi) = ws
                .iter()
                .position(|(_, w)| w.value.ports.len() < w.value.capacity)
            else {
                break;
            };
            let (wkey, w) = &mut ws[wi];
            let port = (FIRST_PORT..)
                .find(|p| !w.value.ports.contains_key(p))
                .expect("a free port exists below capacity");
            let sid = skey.rsplit('/').next().expect("id").to_string();
            let mut nw = w.value.clone();
            nw.ports.insert(port, sid);
            let ns = Session {
                state: "SCHEDULED".into(),
                worker: Some(wkey.rsplit('/').next().expect("id").to_string()),
                port: Some(port),
                by: Some(name.clone()),
            };
            let t = Txn::new()
                .when(Compare::unchanged_since(skey.as_str(), sess.rev))
                .when(Compare::unchanged_since(wkey.as_str(), w.rev))
                .put(skey.as_str(), serde_json::to_vec(&ns).expect("json"))
                .put(wkey.as_str(), serde_json::to_vec(&nw).expect("json"))
                .or_get(wkey.as_str());
            let r = s.txn(t).await.expect("txn");
            if r.succeeded {
                bound += 1;
                w.value = nw;
                w.rev = r.revision;
            } else {
                conflicts += 1;
                // Refresh the worker from the failure branch; the session is re-checked on the
                // next listing (it may have been bound by the other scheduler).
                if let Some(TxnOpResponse::Get(Some(kv))) = r.responses.first() {
                    w.value = decode(kv);
                    w.rev = kv.mod_revision;
                }
            }
        }
    }
}

/// Reads every key under `prefix` with `etcdctl` (key and value lines alternate).
fn etcdctl_dump(prefix: &str) -> BTreeMap<String, String> {
    let endpoint = env("CCM_TEST_ETCD");
    let out = run(
        std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "get", "--prefix", prefix]),
        "etcdctl (apt package etcd-client)",
    );
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 2, 0, "etcdctl prints key/value pairs");
    lines
        .chunks(2)
        .map(|p| (p[0].to_string(), p[1].to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_two_schedulers_never_overcommit_or_double_assign_ports() {
    let s = connect(single_etcd()).await;
    let prefix = unique_prefix("/ccm-test", "race");
    // Seed in batches within the 128-op limit.
    let mut keys: Vec<(String, Vec<u8>)> = (0..WORKERS)
        .map(|i| {
            let w = Worker {
                capacity: CAPACITY,
                ports: BTreeMap::new(),
            };
            (
                format!("{prefix}/workers/w{i:03}"),
                serde_json::to_vec(&w).expect("json"),
            )
        })
        .collect();
    keys.extend((0..SESSIONS).map(|i| {
        let v = Session {
            state: "PENDING".into(),
            worker: None,
            port: None,
            by: None,
        };
        (
            format!("{prefix}/sessions/s{i:04}"),
            serde_json::to_vec(&v).expect("json"),
        )
    }));
    for chunk in keys.chunks(128) {
        let mut t = Txn::new();
        for (k, v) in chunk {
            t = t.put(k.as_str(), v.clone());
        }
        assert!(s.txn(t).await.expect("seed").succeeded);
    }
    let a = tokio::spawn(scheduler(s.clone(), prefix.clone(), "a".into(), false));
    let b = tokio::spawn(scheduler(s.clone(), prefix.clone(), "b".into(), true));
    let (ra, rb) = (a.await.expect("a"), b.await.expect("b"));
    eprintln!(
        "scheduler a bound {} ({} conflicts), b bound {} ({} conflicts)",
        ra.0, ra.1, rb.0, rb.1
    );
    assert_eq!(
        ra.0 + rb.0,
        WORKERS * CAPACITY,
        "all capacity used exactly once"
    );
    assert!(
        ra.0 > 0 && rb.0 > 0,
        "both schedulers bound something (they really raced)"
    );

    // Check from outside with etcdctl.
    let dump = etcdctl_dump(&format!("{prefix}/"));
    let mut sessions: HashMap<String, Session> = HashMap::new();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    for (k, v) in &dump {
        let id = k.rsplit('/').next().expect("id").to_string();
        if k.contains("/sessions/") {
            sessions.insert(id, serde_json::from_str(v).expect("session json"));
        } else if k.contains("/workers/") {
            workers.insert(id, serde_json::from_str(v).expect("worker json"));
        }
    }
    assert_eq!(sessions.len(), SESSIONS);
    assert_eq!(workers.len(), WORKERS);
    let mut used: HashSet<(String, u16)> = HashSet::new();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    let mut scheduled = 0;
    for (id, sess) in &sessions {
        if sess.state == "SCHEDULED" {
            scheduled += 1;
            let w = sess.worker.clone().expect("worker");
            let p = sess.port.expect("port");
            assert!(
                used.insert((w.clone(), p)),
                "port {p} on {w} handed twice (session {id})"
            );
            *per_worker.entry(w.clone()).or_default() += 1;
            assert_eq!(
                workers[&w].ports.get(&p),
                Some(id),
                "worker {w}'s port table agrees with session {id}"
            );
        } else {
            assert_eq!(sess.state, "PENDING");
        }
    }
    assert_eq!(scheduled, WORKERS * CAPACITY);
    let mut in_tables = HashSet::new();
    for (wid, w) in &workers {
        assert!(
            w.ports.len() <= w.capacity,
            "worker {wid} over-committed: {} > {}",
            w.ports.len(),
            w.capacity
        );
        assert_eq!(per_worker.get(wid).copied().unwrap_or(0), w.ports.len());
        for sid in w.ports.values() {
            assert!(
                in_tables.insert(sid.clone()),
                "session {sid} bound twice across worker tables"
            );
        }
    }
}
