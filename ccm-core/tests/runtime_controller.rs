//! The controller on the simulated provider and a virtual clock: launches for due sessions
//! (once, counting booting workers), applies provider events, requeues sessions of a lost
//! worker, retries a refused launch, drains and stops idle workers.

mod runtime_common;

use ccm_core::runtime::ScalingAction;
use ccm_core::session::SessionState;
use ccm_core::store::StateStore;
use ccm_core::worker::WorkerState;
use chrono::Duration;
use runtime_common::*;

async fn run_for(w: &World, rt: &ccm_core::runtime::Runtime, minutes: i64) {
    for _ in 0..minutes * 2 {
        w.clock.advance(Duration::seconds(30));
        rt.step().await.unwrap();
    }
}

#[tokio::test]
async fn due_sessions_launch_one_worker_that_then_takes_them() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    for i in 0..3 {
        w.add_session(&format!("s{i}"), None).await;
    }
    // A session far in the future is not due: it launches nothing yet.
    w.add_session("later", Some(w.clock_now() + Duration::hours(5)))
        .await;
    let first = rt.step().await.unwrap();
    let c = first.controller.unwrap();
    let launches: Vec<_> = c
        .actions
        .iter()
        .filter(|a| matches!(a, ScalingAction::Launch { .. }))
        .collect();
    assert_eq!(launches.len(), 1, "{:?}", c.actions);
    let wid = launches[0].worker_id().to_string();
    assert_eq!(w.worker(&wid).await.unwrap().state, WorkerState::Pending);
    assert!(
        first.scheduler.unwrap().bound.is_empty(),
        "nothing RUNNING yet"
    );
    run_for(&w, &rt, 25).await;
    assert_eq!(
        w.provider.launches(),
        1,
        "a booting worker counts as capacity"
    );
    let wk = w.worker(&wid).await.unwrap();
    assert_eq!(wk.state, WorkerState::Running);
    assert!(wk.provider_id.is_some() && wk.ready_at.is_some());
    for i in 0..3 {
        let s = w.session(&format!("s{i}")).await;
        assert_eq!(
            (s.state, s.worker_id.as_deref()),
            (SessionState::Scheduled, Some(wid.as_str()))
        );
    }
    assert_eq!(w.session("later").await.state, SessionState::Pending);
    let types = w.events.types();
    for t in [
        "ccm.scaling.up.requested",
        "ccm.worker.provisioning",
        "ccm.worker.running",
        "ccm.scaling.up.completed",
        "ccm.lablet.session.scheduled",
    ] {
        assert!(types.iter().any(|x| x == t), "missing {t} in {types:?}");
    }
}

#[tokio::test]
async fn lost_worker_sends_its_sessions_back_to_pending_and_is_replaced() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    w.add_session("s1", None).await;
    w.add_session("s2", None).await;
    run_for(&w, &rt, 21).await;
    let first = w.session("s1").await.worker_id.expect("bound");
    w.provider.fail_worker(&first).unwrap();
    let r = rt.step().await.unwrap();
    let c = r.controller.unwrap();
    assert_eq!(c.lost_workers, vec![first.clone()]);
    assert_eq!(c.requeued.len(), 2);
    let s1 = w.session("s1").await;
    assert_eq!(
        (s1.state, s1.worker_id.clone(), s1.retry_count),
        (SessionState::Pending, None, 1)
    );
    assert!(s1.allocated_ports.is_empty());
    let failed = w.worker(&first).await.unwrap();
    assert_eq!(
        failed.state,
        WorkerState::Terminating,
        "FAILED, then terminated in the same pass"
    );
    assert!(failed.ports.owners().is_empty(), "ports freed");
    assert!(
        c.actions
            .iter()
            .any(|a| matches!(a, ScalingAction::Launch { .. })),
        "{:?}",
        c.actions
    );
    assert!(c
        .actions
        .iter()
        .any(|a| matches!(a, ScalingAction::Terminate { worker_id, .. } if *worker_id == first)));
    run_for(&w, &rt, 21).await;
    let s1 = w.session("s1").await;
    assert_eq!(s1.state, SessionState::Scheduled);
    assert_ne!(s1.worker_id.as_deref(), Some(first.as_str()));
    assert_eq!(
        w.worker(&first).await.unwrap().state,
        WorkerState::Terminated
    );
    assert_eq!(rt.metrics().requeued_total, 2);
    assert_eq!(rt.metrics().workers_lost_total, 1);
}

#[tokio::test]
async fn refused_launch_is_retried_on_the_next_pass() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    w.add_session("s1", None).await;
    w.provider.fail_next_launches(1);
    let c = rt.step().await.unwrap().controller.unwrap();
    assert_eq!(c.failed.len(), 1, "{c:?}");
    assert!(
        c.failed[0].1.contains("injected failure"),
        "{}",
        c.failed[0].1
    );
    assert!(
        w.workers().await.is_empty(),
        "no record left for a refused launch"
    );
    assert_eq!(rt.metrics().launch_failures_total, 1);
    w.clock.advance(Duration::seconds(30));
    let c = rt.step().await.unwrap().controller.unwrap();
    assert!(c.failed.is_empty());
    assert_eq!(w.workers().await.len(), 1);
    assert_eq!(w.provider.launches(), 1);
}

#[tokio::test]
async fn idle_worker_is_drained_then_stopped_after_the_grace() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    w.add_session("s1", None).await;
    run_for(&w, &rt, 21).await;
    let wid = w.session("s1").await.worker_id.expect("bound");
    // The lab ends (another component drives the session lifecycle).
    let mut s = w.session("s1").await;
    s.transition(SessionState::Terminated, w.clock_now(), "done")
        .unwrap();
    w.store
        .put(&w.keys.session("s1"), serde_json::to_vec(&s).unwrap(), None)
        .await
        .unwrap();
    run_for(&w, &rt, 20).await;
    assert_eq!(
        w.worker(&wid).await.unwrap().state,
        WorkerState::Running,
        "kept within the grace"
    );
    run_for(&w, &rt, 15).await;
    let wk = w.worker(&wid).await.unwrap();
    assert_eq!(
        wk.state,
        WorkerState::Stopped,
        "drained and stopped after the grace"
    );
    let m = rt.metrics();
    assert_eq!((m.drains_total, m.stops_total), (1, 1));
    assert!(w
        .events
        .types()
        .iter()
        .any(|t| t == "ccm.scaling.down.completed"));
    // A new due session restarts the stopped worker instead of launching another.
    w.add_session("s2", None).await;
    run_for(&w, &rt, 21).await;
    assert_eq!(w.provider.launches(), 1);
    assert_eq!(
        w.session("s2").await.worker_id.as_deref(),
        Some(wid.as_str())
    );
}
