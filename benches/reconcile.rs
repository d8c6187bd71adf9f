//! One scheduler reconcile: 1,000 PENDING sessions onto 100 RUNNING workers on the in-memory
//! store (fenced, batched transactions), against a naive baseline in the same run that binds one
//! session per transaction after re-reading the fleet (the original's read-check-put, made safe
//! with compares).

use ccm_benches::{memory_runtime, put_json, tokio_current_thread};
use ccm_core::definition::LabletDefinition;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::placement::filter::{check, Requirements};
use ccm_core::resources::Resources;
use ccm_core::runtime::{KeyLayout, Runtime, RuntimeSettings};
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{Compare, LeaderElector, SpecStore, StateStore, Txn, VirtualClock};
use ccm_core::worker::{Worker, WorkerState};
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::sync::Arc;
use std::time::Duration;

const WORKERS: usize = 100;
const SESSIONS: usize = 1000;

fn definition() -> LabletDefinition {
    LabletDefinition {
        name: "lab".into(),
        ..LabletDefinition::new(
            "def",
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

struct Setup {
    rt: Runtime,
    store: Arc<MemoryStateStore>,
    clock: VirtualClock,
}

async fn setup() -> Setup {
    let clock = VirtualClock::new(Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap());
    let store = Arc::new(MemoryStateStore::new(Arc::new(clock.clone())));
    let spec = Arc::new(MemorySpecStore::new());
    spec.insert_definition(&definition()).await.unwrap();
    let keys = KeyLayout::default();
    let t = &ccm_core::template::seed_templates().unwrap()[0];
    for i in 0..WORKERS {
        let w = Worker::from_template(
            format!("w{i:03}"),
            t,
            "us-east-1",
            WorkerState::Running,
            "2.9.0".parse().unwrap(),
            "CML-2.9.0",
        );
        put_json(store.as_ref(), &keys.worker(&w.id), &w).await;
    }
    let rt = memory_runtime(
        store.clone(),
        spec,
        &clock,
        Arc::new(SimulatedProvider::new(Arc::new(clock.clone()))),
        RuntimeSettings::default(),
    );
    // The PENDING sessions go in through the façade (seeding, not timed).
    use ccm_core::store::Clock;
    let sessions: Vec<LabletSession> = (0..SESSIONS)
        .map(|i| LabletSession::new(format!("s{i:04}"), "def", "1.0.0", "o", None, clock.now()))
        .collect();
    let seeded = rt.lablets().import(&sessions).await.unwrap();
    assert_eq!(seeded.created.len(), SESSIONS, "{seeded:?}");
    assert!(rt.campaign_once().await.scheduler);
    Setup { rt, store, clock }
}

/// The baseline: per session, re-read the fleet, take the first worker that passes the filters,
/// and commit that one binding in its own guarded transaction.
async fn naive_reconcile(s: &Setup) -> usize {
    use ccm_core::store::Clock;
    let keys = KeyLayout::default();
    let def = definition();
    let req = Requirements::of(&def, None);
    let elector = StoreElector::new(s.store.clone(), "/ccm");
    let lead = elector
        .try_campaign("baseline", "naive", Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    let sessions = s.store.list(&keys.sessions()).await.unwrap();
    let mut bound = 0;
    for kv in sessions.kvs {
        let mut sess: LabletSession = serde_json::from_slice(&kv.value).unwrap();
        let workers = s.store.list(&keys.workers()).await.unwrap();
        for wkv in workers.kvs {
            let mut w: Worker = serde_json::from_slice(&wkv.value).unwrap();
            if check(&w, &req).is_err() {
                continue;
            }
            let ports = w.ports.allocate(&sess.id, &req.ports).unwrap();
            w.allocated = w.allocated.saturating_add(&req.load);
            sess.transition(SessionState::Scheduled, s.clock.now(), "")
                .unwrap();
            sess.worker_id = Some(w.id.clone());
            sess.allocated_ports = ports;
            let txn = lead
                .fence
                .guard(Txn::new())
                .when(Compare::unchanged_since(kv.key.clone(), kv.mod_revision))
                .when(Compare::unchanged_since(wkv.key.clone(), wkv.mod_revision))
                .put(kv.key.clone(), serde_json::to_vec(&sess).unwrap())
                .put(wkv.key.clone(), serde_json::to_vec(&w).unwrap());
            if s.store.txn(txn).await.unwrap().succeeded {
                bound += 1;
            }
            break;
        }
    }
    bound
}

fn bench(c: &mut Criterion) {
    let rt = tokio_current_thread();
    let mut g = c.benchmark_group("reconcile_1000_sessions_100_workers");
    g.sample_size(10);
    g.bench_function("runtime_reconcile_once", |b| {
        b.iter_batched(
            || rt.block_on(setup()),
            |s| {
                use ccm_core::store::Clock;
                let r = rt
                    .block_on(s.rt.scheduler().reconcile_once(s.clock.now()))
                    .unwrap();
                assert_eq!(r.bound.len(), SESSIONS);
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("naive_one_txn_per_session", |b| {
        b.iter_batched(
            || rt.block_on(setup()),
            |s| {
                let n = rt.block_on(naive_reconcile(&s));
                assert_eq!(n, SESSIONS);
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
