//! The controller on the simulated provider and a virtual clock: launches for due sessions
//! (once, counting booting workers), applies provider events, requeues sessions of a lost
//! worker, retries a refused launch, drains and stops idle workers; the planner-driven
//! controller launches `lead` before a slot, keeps workers with a booking within the grace,
//! honours the cooldown and the warm minimum, and reports the plan's cost.

mod runtime_common;

use ccm_core::runtime::{RuntimeSettings, ScalingAction, ScalingMode};
use ccm_core::session::SessionState;
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

/// Binds one ASAP session, then ends it (another component drives the lab lifecycle).
async fn serve_and_end_one(w: &World, rt: &ccm_core::runtime::Runtime, id: &str) -> String {
    w.add_session(id, None).await;
    run_for(w, rt, 21).await;
    let wid = w.session(id).await.worker_id.expect("bound");
    let mut s = w.session(id).await;
    s.transition(SessionState::Terminated, w.clock_now(), "done")
        .unwrap();
    w.overwrite_session(&s).await;
    wid
}

/// After a while, `session` runs on `wid`, started again: still only one launch ever.
async fn restarted_for(w: &World, rt: &ccm_core::runtime::Runtime, session: &str, wid: &str) {
    run_for(w, rt, 21).await;
    assert_eq!(w.provider.launches(), 1);
    assert_eq!(w.session(session).await.worker_id.as_deref(), Some(wid));
}

#[tokio::test]
async fn reactive_rule_drains_an_idle_worker_only_after_the_grace() {
    let w = World::new().await;
    let rt = w.runtime(RuntimeSettings {
        scaling: ScalingMode::Reactive,
        ..World::settings("a")
    });
    let wid = serve_and_end_one(&w, &rt, "s1").await;
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
    assert_eq!(m.plans_total, 0, "the reactive rule makes no plan");
    // A new due session restarts the stopped worker instead of launching another.
    w.add_session("s2", None).await;
    restarted_for(&w, &rt, "s2", &wid).await;
}

#[tokio::test]
async fn planner_keeps_a_worker_with_a_session_planned_within_the_grace() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    let wid = serve_and_end_one(&w, &rt, "s1").await;
    // The next booking starts in 25 minutes, within the 30-minute grace: the idle worker is
    // kept for it rather than stopped (a relaunch would cost as much and risk the slot).
    w.add_session("next", Some(w.clock_now() + Duration::minutes(25)))
        .await;
    run_for(&w, &rt, 10).await;
    assert_eq!(w.worker(&wid).await.unwrap().state, WorkerState::Running);
    run_for(&w, &rt, 20).await;
    assert_eq!(
        w.session("next").await.worker_id.as_deref(),
        Some(wid.as_str()),
        "the idle worker takes the next booking"
    );
    assert_eq!(w.provider.launches(), 1);
    assert_eq!(rt.metrics().drains_total, 0);
}

#[tokio::test]
async fn planner_drains_and_stops_an_idle_worker_with_nothing_planned_then_cools_down() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    let wid = serve_and_end_one(&w, &rt, "s1").await;
    let ended = w.clock_now();
    // Nothing planned within the grace: drained and stopped on the next passes (no idle
    // minutes billed for nothing).
    run_for(&w, &rt, 2).await;
    let wk = w.worker(&wid).await.unwrap();
    assert_eq!(wk.state, WorkerState::Stopped);
    let stopped_at = wk.stopped_at.expect("stop time recorded");
    assert!(stopped_at - ended <= Duration::minutes(2));
    let m = rt.metrics();
    assert_eq!((m.drains_total, m.stops_total), (1, 1));
    // A session is booked for 45 minutes after the stop: its lab instantiates from 30 minutes
    // after the stop, so a boot (20 min) must begin 10 minutes after the stop — the stopped
    // worker is started again then (no second launch), not before the 10-minute cooldown.
    w.add_session("s2", Some(stopped_at + Duration::minutes(45)))
        .await;
    let mut started_at = None;
    for _ in 0..60 {
        w.clock.advance(Duration::seconds(30));
        let r = rt.step().await.unwrap();
        let c = r.controller.unwrap();
        if c.actions
            .iter()
            .any(|a| matches!(a, ScalingAction::Start { worker_id, .. } if *worker_id == wid))
        {
            started_at = Some(w.clock_now());
            break;
        }
    }
    let started_at = started_at.expect("restarted");
    assert!(
        started_at - stopped_at >= Duration::minutes(10),
        "cooldown: stopped {stopped_at}, started {started_at}"
    );
    assert!(started_at - stopped_at <= Duration::minutes(11));
    restarted_for(&w, &rt, "s2", &wid).await;
}

#[tokio::test]
async fn planner_keeps_the_warm_minimum_running() {
    let w = World::new().await;
    let rt = w.runtime(RuntimeSettings {
        min_warm_workers: 1,
        ..World::settings("a")
    });
    let wid = serve_and_end_one(&w, &rt, "s1").await;
    run_for(&w, &rt, 90).await;
    assert_eq!(w.worker(&wid).await.unwrap().state, WorkerState::Running);
    assert_eq!(rt.metrics().drains_total, 0);
}

#[tokio::test]
async fn planner_launches_lead_before_the_slot_and_reports_its_cost() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    let start = w.clock_now() + Duration::hours(3);
    for i in 0..12 {
        w.add_session(&format!("b{i:02}"), Some(start)).await;
    }
    let mut launched = Vec::new();
    let mut last_plan = None;
    for _ in 0..(3 * 60 * 2) {
        w.clock.advance(Duration::seconds(30));
        let c = rt.step().await.unwrap().controller.unwrap();
        for a in &c.actions {
            if let ScalingAction::Launch { worker_id, .. } = a {
                launched.push((w.clock_now(), worker_id.clone()));
            }
        }
        last_plan = c.plan.clone().or(last_plan);
    }
    // 12 sessions of 4 cores / 2 nodes: the plan's workers, launched 35 minutes before the
    // slot (within one 30-second pass), not earlier.
    let p = last_plan.clone().expect("a plan every pass");
    assert!(!launched.is_empty());
    assert_eq!(launched.len(), p.workers, "{launched:?}");
    for (at, _) in &launched {
        let lead = start - *at;
        assert!(
            lead <= Duration::minutes(35) && lead > Duration::minutes(34),
            "launched {lead} before the slot"
        );
    }
    for i in 0..12 {
        let s = w.session(&format!("b{i:02}")).await;
        assert_eq!(s.state, SessionState::Scheduled, "{}", s.id);
    }
    assert!(
        p.cost_usd > 0.0 && p.cost_usd + 1e-9 >= p.lower_bound_usd,
        "{p:?}"
    );
    assert!(p.unserved.is_empty(), "{:?}", p.unserved);
    let m = rt.metrics();
    assert!(m.plans_total >= 360);
    let text = m.to_prometheus();
    for name in [
        "ccm_plan_cost_usd ",
        "ccm_plan_lower_bound_usd ",
        "ccm_plan_sessions_unserved 0\n",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    // The scale-up events carry the cost of the plan that caused them.
    let ups: Vec<_> = w
        .events
        .events()
        .into_iter()
        .filter(|e| e.event_type == "ccm.scaling.up.requested")
        .collect();
    assert_eq!(ups.len(), launched.len());
    for e in &ups {
        let cost = e.data["plan_cost_usd"]
            .as_f64()
            .expect("plan cost in the event");
        assert!(cost > 0.0, "{}", e.data);
    }
}
