//! End-to-end binding throughput through a real etcd (`CCM_TEST_ETCD`, default
//! `http://127.0.0.1:23790`): 5,000 PENDING sessions onto 1,000 workers (5 each).
//!
//! * `batched`: list sessions + workers, place, and commit the bindings in transactions of
//!   whole worker groups (one worker compare + put and its sessions' compares + puts) kept
//!   within etcd's 128-op limit, guarded by the mod revisions read, up to 8 in flight.
//! * `naive_one_txn_per_binding` (baseline): the same over 1,000 sessions / 200 workers, one
//!   guarded transaction per binding, re-reading the worker each time, sequentially.
//!
//! Seeding and clean-up are not timed. Target: ≥ 5,000 bindings/s committed (batched).

use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_benches::{etcd_endpoint, timed_rounds, tokio_two_workers};
use ccm_core::store::{Compare, KeyValue, StateStore, Txn};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const MAX_OPS: usize = 128;
const IN_FLIGHT: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    id: String,
    definition: String,
    owner: String,
    state: String,
    cpu: u32,
    memory_gb: u32,
    worker: Option<String>,
    port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Worker {
    id: String,
    region: String,
    cpu: u32,
    cpu_used: u32,
    ports: BTreeMap<u16, String>,
}

fn decode<T: for<'a> Deserialize<'a>>(kv: &KeyValue) -> T {
    serde_json::from_slice(&kv.value).unwrap_or_else(|e| panic!("decode {}: {e}", kv.key))
}

/// A fresh prefix holding `sessions` PENDING sessions and `workers` empty workers.
async fn seeded(s: &EtcdStateStore, sessions: usize, workers: usize) -> String {
    let prefix = format!("/ccm-bench/{}", uuid::Uuid::new_v4().simple());
    let mut kvs: Vec<(String, Vec<u8>)> = Vec::with_capacity(sessions + workers);
    for i in 0..workers {
        let w = Worker {
            id: format!("w{i:05}"),
            region: "us-east-1".into(),
            cpu: 64,
            cpu_used: 0,
            ports: BTreeMap::new(),
        };
        kvs.push((
            format!("{prefix}/workers/{}", w.id),
            serde_json::to_vec(&w).expect("json"),
        ));
    }
    for i in 0..sessions {
        let x = Session {
            id: format!("s{i:06}"),
            definition: "ccna-exam-2026".into(),
            owner: format!("candidate-{i}"),
            state: "PENDING".into(),
            cpu: 8,
            memory_gb: 16,
            worker: None,
            port: None,
        };
        kvs.push((
            format!("{prefix}/sessions/{}", x.id),
            serde_json::to_vec(&x).expect("json"),
        ));
    }
    let txns: Vec<Txn> = kvs
        .chunks(MAX_OPS)
        .map(|c| {
            c.iter()
                .fold(Txn::new(), |t, (k, v)| t.put(k.as_str(), v.clone()))
        })
        .collect();
    futures::stream::iter(txns)
        .map(|t| async move { s.txn(t).await.expect("seed txn") })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    prefix
}

/// Picks the worker and port for a session on a local copy (first fit).
fn place(w: &mut Worker, sess: &mut Session) -> bool {
    if w.cpu - w.cpu_used < sess.cpu {
        return false;
    }
    let Some(port) = (5000u16..).find(|p| !w.ports.contains_key(p)) else {
        return false;
    };
    w.cpu_used += sess.cpu;
    w.ports.insert(port, sess.id.clone());
    sess.state = "SCHEDULED".into();
    sess.worker = Some(w.id.clone());
    sess.port = Some(port);
    true
}

/// The batched scheduler pass; returns bindings committed.
async fn bind_batched(s: &EtcdStateStore, prefix: &str, per_worker: usize) -> usize {
    let sessions = s.list(&format!("{prefix}/sessions/")).await.expect("list");
    let workers = s.list(&format!("{prefix}/workers/")).await.expect("list");
    let mut pending = sessions
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision, decode::<Session>(kv)))
        .filter(|(_, _, x)| x.state == "PENDING");
    // Group bindings per worker: (worker key, rev, new worker, [(session key, rev, new session)]).
    let mut groups = Vec::new();
    for kv in &workers.kvs {
        let mut w: Worker = decode(kv);
        let mut mine = Vec::new();
        while mine.len() < per_worker {
            let Some((k, rev, mut x)) = pending.next() else {
                break;
            };
            if !place(&mut w, &mut x) {
                break;
            }
            mine.push((k, rev, x));
        }
        if mine.is_empty() {
            break;
        }
        groups.push((kv.key.clone(), kv.mod_revision, w, mine));
    }
    // Pack whole groups into transactions within the op limit.
    let mut txns = Vec::new();
    let (mut t, mut ops, mut n) = (Txn::new(), 0, 0);
    let mut counts = Vec::new();
    for (wk, wrev, w, mine) in groups {
        let need = 1 + mine.len();
        if ops + need > MAX_OPS {
            txns.push(std::mem::take(&mut t));
            counts.push(n);
            (ops, n) = (0, 0);
        }
        t = t
            .when(Compare::unchanged_since(wk.as_str(), wrev))
            .put(wk.as_str(), serde_json::to_vec(&w).expect("json"));
        for (k, rev, x) in mine {
            t = t
                .when(Compare::unchanged_since(k.as_str(), rev))
                .put(k.as_str(), serde_json::to_vec(&x).expect("json"));
            n += 1;
        }
        ops += need;
    }
    if ops > 0 {
        txns.push(t);
        counts.push(n);
    }
    futures::stream::iter(txns.into_iter().zip(counts))
        .map(|(t, n)| async move {
            let r = s.txn(t).await.expect("bind txn");
            assert!(r.succeeded, "no one else writes: the guard must hold");
            n
        })
        .buffer_unordered(IN_FLIGHT)
        .fold(0, |a, n| async move { a + n })
        .await
}

/// Baseline: one guarded transaction per binding, sequential, re-reading the worker.
async fn bind_naive(s: &EtcdStateStore, prefix: &str) -> usize {
    let sessions = s.list(&format!("{prefix}/sessions/")).await.expect("list");
    let workers = s.list(&format!("{prefix}/workers/")).await.expect("list");
    let mut wi = 0;
    let mut bound = 0;
    for kv in &sessions.kvs {
        let mut x: Session = decode(kv);
        loop {
            let Some(wkv) = workers.kvs.get(wi) else {
                return bound;
            };
            let cur = s.get(&wkv.key).await.expect("get").expect("worker");
            let mut w: Worker = decode(&cur);
            if !place(&mut w, &mut x) {
                wi += 1;
                continue;
            }
            let t = Txn::new()
                .when(Compare::unchanged_since(kv.key.as_str(), kv.mod_revision))
                .when(Compare::unchanged_since(cur.key.as_str(), cur.mod_revision))
                .put(kv.key.as_str(), serde_json::to_vec(&x).expect("json"))
                .put(cur.key.as_str(), serde_json::to_vec(&w).expect("json"));
            assert!(s.txn(t).await.expect("txn").succeeded);
            bound += 1;
            break;
        }
    }
    bound
}

fn bench(c: &mut Criterion) {
    let rt = tokio_two_workers();
    let store = rt.block_on(async {
        let s = EtcdStateStore::connect(EtcdConfig::new([etcd_endpoint()]))
            .await
            .expect("connect");
        s.ping().await.unwrap_or_else(|e| {
            panic!(
                "etcd at {} does not answer (start scripts/services.sh): {e}",
                etcd_endpoint()
            )
        });
        s
    });
    let mut g = c.benchmark_group("etcd_bind");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.warm_up_time(Duration::from_secs(1));

    g.throughput(Throughput::Elements(5_000));
    g.bench_function("batched_5000_sessions_1000_workers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed_rounds(
                iters,
                async || seeded(&store, 5_000, 1_000).await,
                async |prefix| bind_batched(&store, prefix, 5).await,
                async |prefix, n| {
                    assert_eq!(n, 5_000, "every session bound");
                    store.delete_prefix(&prefix).await.expect("clean up");
                },
            ))
        })
    });

    g.throughput(Throughput::Elements(1_000));
    g.bench_function("naive_one_txn_per_binding_1000_sessions_200_workers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed_rounds(
                iters,
                async || seeded(&store, 1_000, 200).await,
                async |prefix| bind_naive(&store, prefix).await,
                async |prefix, n| {
                    assert_eq!(n, 1_000, "every session bound");
                    store.delete_prefix(&prefix).await.expect("clean up");
                },
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
