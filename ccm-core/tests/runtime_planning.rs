//! The controller's bridge to the planner, on hand-made snapshots: what the live state looks
//! like to the planner, and which of the plan's actions may be carried out on the real fleet.

mod runtime_common;

use ccm_core::planner::{plan, Action};
use ccm_core::runtime::{due_actions, plan_input, RuntimeSettings, ScalingAction, StateSnapshot};
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::timeslot::Timeslot;
use ccm_core::worker::{Worker, WorkerState};
use chrono::Duration;
use runtime_common::*;

fn snapshot(sessions: Vec<LabletSession>, workers: Vec<Worker>) -> StateSnapshot {
    StateSnapshot::from_values(1, sessions, workers, [definition()])
}

/// A worker of the seed's template `template` (0: personal-standard, 1: enterprise-large).
fn worker(id: &str, template: usize, state: WorkerState) -> Worker {
    let mut w = Worker::from_template(
        id,
        &templates()[template],
        "us-east-1",
        state,
        "2.9.0".parse().unwrap(),
        "CML-2.9.0",
    );
    if state == WorkerState::Running {
        w.ready_at = Some(t0());
    }
    w
}

fn running(id: &str) -> Worker {
    worker(id, 0, WorkerState::Running)
}

fn session(id: &str, slot: Option<(i64, i64)>) -> LabletSession {
    let slot = slot.map(|(a, b)| {
        Timeslot::new(t0() + Duration::minutes(a), t0() + Duration::minutes(b)).unwrap()
    });
    LabletSession::new(id, "def-ccna", "1.0.0", "owner", slot, t0())
}

fn bind(mut s: LabletSession, worker: &str) -> LabletSession {
    s.transition(SessionState::Scheduled, t0(), "bound")
        .unwrap();
    s.worker_id = Some(worker.into());
    s
}

#[test]
fn asap_sessions_are_planned_from_now_plus_lead_and_stale_ones_left_out() {
    let settings = RuntimeSettings::default();
    let snap = snapshot(
        vec![
            session("asap", None),
            session("booked", Some((120, 240))),
            // Started 10 minutes ago and never bound: past the 5-minute grace.
            session("stale", Some((-10, 110))),
            // Bound, its slot ended a minute ago (the lab overran): still holds its worker.
            bind(session("overrun", Some((-120, -1))), "w1"),
        ],
        vec![running("w1")],
    );
    let input = plan_input(&snap, &templates(), t0(), &settings, vec![]);
    let by_id = |id: &str| input.sessions.iter().find(|s| s.id == id);
    // A pending session occupies its worker from the start of its lab's instantiation
    // (15 min): an ASAP one has its lab ready at now + lead (35 min).
    let asap = by_id("asap").expect("asap planned");
    assert_eq!(asap.slot.start, t0() + Duration::minutes(20));
    assert_eq!(asap.slot.end, t0() + Duration::minutes(35 + 120));
    assert_eq!(
        by_id("booked").unwrap().slot.start,
        t0() + Duration::minutes(105)
    );
    assert_eq!(
        by_id("booked").unwrap().slot.end,
        t0() + Duration::minutes(240)
    );
    assert!(by_id("stale").is_none());
    let overrun = by_id("overrun").expect("bound session kept");
    assert_eq!(overrun.worker_id.as_deref(), Some("w1"));
    assert!(overrun.slot.end > t0());
    assert_eq!(input.workers.len(), 1);
}

#[test]
fn default_region_pins_sessions_without_one() {
    let settings = RuntimeSettings {
        default_region: Some("eu-west-1".into()),
        ..RuntimeSettings::default()
    };
    let snap = snapshot(vec![session("asap", None)], vec![]);
    let input = plan_input(&snap, &templates(), t0(), &settings, vec![]);
    assert_eq!(
        input.sessions[0].requirements.region.as_deref(),
        Some("eu-west-1")
    );
}

#[test]
fn a_worker_that_still_holds_a_session_is_never_drained_or_stopped() {
    let settings = RuntimeSettings::default();
    // The lab overran its slot: the plan sees the worker busy for one more minute and then
    // wants it drained and stopped.
    let snap = snapshot(
        vec![bind(session("overrun", Some((-120, -1))), "w1")],
        vec![running("w1")],
    );
    let input = plan_input(&snap, &templates(), t0(), &settings, vec![]);
    let p = plan(&input, &settings.planner_policy());
    assert!(p
        .actions
        .iter()
        .any(|a| matches!(a, Action::Drain { worker_id, .. } if worker_id == "w1")));
    // Ten minutes later the session is still there: nothing is done to w1.
    let later = t0() + Duration::minutes(10);
    let (actions, _) = due_actions(&p, &input, &snap, &templates(), later);
    assert!(actions.is_empty(), "{actions:?}");
    // Once it has ended, the same plan drains and stops w1 in one pass.
    let idle = snapshot(vec![], vec![running("w1")]);
    let (actions, _) = due_actions(&p, &input, &idle, &templates(), later);
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            ScalingAction::Drain { .. } => "drain",
            ScalingAction::Stop { force: false, .. } => "stop",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["drain", "stop"]);
}

#[test]
fn launches_are_named_after_their_template_and_numbered_on() {
    let settings = RuntimeSettings::default();
    let t = &templates()[0];
    let mut existing = running(&format!("{}-0007", t.name));
    existing.state = WorkerState::Terminated;
    let sessions: Vec<LabletSession> = (0..3).map(|i| session(&format!("s{i}"), None)).collect();
    let snap = snapshot(sessions, vec![existing]);
    let input = plan_input(&snap, &templates(), t0(), &settings, vec![]);
    let p = plan(&input, &settings.planner_policy());
    let (actions, named) = due_actions(&p, &input, &snap, &templates(), t0());
    let launches: Vec<&ScalingAction> = actions
        .iter()
        .filter(|a| matches!(a, ScalingAction::Launch { .. }))
        .collect();
    assert_eq!(launches.len(), 1, "{actions:?}");
    let ScalingAction::Launch {
        worker_id,
        template,
        ..
    } = launches[0]
    else {
        unreachable!()
    };
    assert_eq!(
        worker_id,
        &format!("{template}-{:04}", if *template == t.name { 8 } else { 1 })
    );
    assert_eq!(named.len(), 1);
    assert_eq!(named.values().next(), Some(worker_id));
    // A booked session far ahead launches nothing now.
    let snap = snapshot(vec![session("later", Some((600, 720)))], vec![]);
    let input = plan_input(&snap, &templates(), t0(), &settings, vec![]);
    let p = plan(&input, &settings.planner_policy());
    let (actions, _) = due_actions(&p, &input, &snap, &templates(), t0());
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn a_recently_stopped_worker_is_restarted_only_after_the_cooldown() {
    // Cooldown 10 min; a lead of 45 min leaves 30 min for a boot of 20.
    let settings = RuntimeSettings {
        lead_time: Duration::minutes(45),
        ..RuntimeSettings::default()
    };
    let mut w = worker("w1", 1, WorkerState::Stopped);
    w.stopped_at = Some(t0() - Duration::minutes(2));
    // Booked at +50 min: its lab instantiates from +35, so the restart would be due at +5 —
    // the cooldown holds it back to +8, still in time (up at +28).
    let snap = snapshot(vec![session("booked", Some((50, 170)))], vec![w]);
    let input = plan_input(&snap, &templates(), t0(), &settings, vec![]);
    let p = plan(&input, &settings.planner_policy());
    let restart = p
        .actions
        .iter()
        .find(|a| matches!(a, Action::Restart { .. }))
        .unwrap_or_else(|| panic!("no restart in {:?}", p.actions));
    assert_eq!(restart.worker_id(), "w1");
    assert_eq!(restart.at(), t0() + Duration::minutes(8));
    assert!(p
        .actions
        .iter()
        .all(|a| !matches!(a, Action::ScaleUp { .. })));
    // Not yet due at t0; due once the cooldown is over.
    let (now_actions, _) = due_actions(&p, &input, &snap, &templates(), t0());
    assert!(now_actions.is_empty(), "{now_actions:?}");
    let (later, _) = due_actions(&p, &input, &snap, &templates(), restart.at());
    assert!(
        matches!(later.as_slice(), [ScalingAction::Start { worker_id, .. }] if worker_id == "w1"),
        "{later:?}"
    );
}

#[test]
fn an_idle_worker_is_not_stopped_to_launch_another_minutes_later() {
    let settings = RuntimeSettings::default();
    // Booked 40 minutes ahead: keeping w1 idle for 40 minutes costs a little more than a new
    // worker's 35-minute boot, but stopping one worker to launch the same kind minutes later
    // would flap (a new instance also pays the cooldown).
    let w1 = worker("w1", 1, WorkerState::Running);
    let snap = snapshot(vec![session("next", Some((40, 160)))], vec![w1]);
    let input = plan_input(&snap, &templates(), t0(), &settings, vec![]);
    let p = plan(&input, &settings.planner_policy());
    assert!(
        p.actions
            .iter()
            .all(|a| !matches!(a, Action::ScaleUp { .. })),
        "{:?}",
        p.actions
    );
    let a = p
        .assignments
        .iter()
        .find(|a| a.session_id == "next")
        .unwrap();
    assert_eq!(a.worker_id, "w1");
    let (now_actions, _) = due_actions(&p, &input, &snap, &templates(), t0());
    assert!(now_actions.is_empty(), "{now_actions:?}");
}
