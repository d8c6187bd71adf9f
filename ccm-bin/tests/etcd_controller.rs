//! The planner-driven controller of a `ccm serve` daemon on real etcd: ASAP sessions with no
//! worker make it launch one (worker record written to etcd, booted by the simulated cloud in
//! the template's one startup minute), the scheduler binds them there; once their labs end the
//! idle worker is drained and stopped. Nothing over-committed, no port with two owners.
#![cfg(feature = "all-adapters")]

mod etcd_common;
mod support;

use ccm_core::session::SessionState;
use ccm_core::store::StateStore;
use ccm_core::worker::{Worker, WorkerState};
use etcd_common::*;
use std::time::{Duration, Instant};
use support::*;

async fn workers(
    store: &ccm_adapters::etcd::EtcdStateStore,
    keys: &ccm_core::runtime::KeyLayout,
) -> Vec<Worker> {
    store
        .list(&keys.workers())
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_launches_for_asap_sessions_then_drains_and_stops_the_idle_worker() {
    let endpoint = need("CCM_TEST_ETCD");
    let (store, keys, prefix) = fresh_store(std::slice::from_ref(&endpoint), "controller").await;
    let def = seed_fleet(&store, &keys, 0).await;
    let templates = fast_templates("etcd-controller");

    let _d = serve_with(
        "ctl1",
        &endpoint,
        &prefix,
        &[
            ("CONTROLLER_RECONCILE_INTERVAL_SECONDS", "1"),
            ("WORKER_TEMPLATES_CONFIG_PATH", templates.to_str().unwrap()),
        ],
    );
    add_sessions(&store, &keys, 0, 5).await;
    wait_all_scheduled(&store, &keys, 5, Duration::from_secs(150)).await;
    check_consistent(&store, &keys, &def, 5).await;
    let fleet = workers(&store, &keys).await;
    assert_eq!(
        fleet.len(),
        1,
        "one worker holds five 4-core sessions: {fleet:?}"
    );
    let w = &fleet[0];
    assert_eq!(w.state, WorkerState::Running);
    assert!(w.provider_id.is_some() && w.ready_at.is_some(), "{w:?}");

    // The labs end (cancelled through the façade: TERMINATED, capacity and ports released):
    // with nothing booked, the idle worker is drained and stopped.
    let api = facade(&store, &keys);
    for s in sessions(&store, &keys).await {
        let ended = api
            .lablets()
            .cancel(&s.id, "lab ended")
            .await
            .unwrap_or_else(|e| panic!("cancel {}: {e}", s.id));
        assert_eq!(ended.state, SessionState::Terminated);
    }
    let t0 = Instant::now();
    loop {
        let w = workers(&store, &keys).await.remove(0);
        if w.state == WorkerState::Stopped {
            assert!(w.stopped_at.is_some(), "{w:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "worker still {} after {:?}",
            w.state,
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(dir) = templates.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
