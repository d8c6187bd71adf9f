//! The controller's pure steps, decided from one snapshot at `now` (no I/O); the controller
//! ([`super::Controller`]) applies them as provider calls and fenced transactions.

use super::super::planning::{self, PlanSummary};
use super::super::policy::{self, ScalingAction};
use super::super::settings::{RuntimeSettings, ScalingMode};
use super::super::snapshot::{StateSnapshot, Versioned};
use super::is_lost_state;
use crate::planner::PriorAssignment;
use crate::session::LabletSession;
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use std::collections::BTreeMap;

/// What the scaling step decided.
pub(crate) struct ScalingDecision {
    /// The actions due now, in order.
    pub actions: Vec<ScalingAction>,
    /// The plan behind them ([`ScalingMode::Planner`] only).
    pub plan: Option<PlanSummary>,
    /// The plan's assignments for the next pass to keep where still valid
    /// ([`ScalingMode::Planner`] only).
    pub carry_over: Option<Vec<PriorAssignment>>,
}

/// The scaling actions due now: the reactive rule, or the plan of the horizon (re-planned from
/// `previous`, the last plan's assignments) and the part of it due now.
pub(crate) fn decide_scaling(
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
    settings: &RuntimeSettings,
    previous: Vec<PriorAssignment>,
) -> ScalingDecision {
    match settings.scaling {
        ScalingMode::Reactive => ScalingDecision {
            actions: policy::decide(now, snap, templates, settings),
            plan: None,
            carry_over: None,
        },
        ScalingMode::Planner => {
            let input = planning::plan_input(snap, templates, now, settings, previous);
            let started = std::time::Instant::now();
            let plan = crate::planner::plan(&input, &settings.planner_policy());
            let summary = PlanSummary::of(&plan, started.elapsed());
            let (actions, named) = planning::due_actions(&plan, &input, snap, templates, now);
            ScalingDecision {
                actions,
                plan: Some(summary),
                carry_over: Some(planning::carry_over(&plan, &named)),
            }
        }
    }
}

/// The capacity-holding sessions whose worker is lost (FAILED, TERMINATED, or missing), by
/// worker. A worker whose record does not decode is UNKNOWN, not gone: its sessions stay.
pub(crate) fn lost_sessions(
    snap: &StateSnapshot,
) -> BTreeMap<String, Vec<&Versioned<LabletSession>>> {
    let mut by_worker: BTreeMap<String, Vec<&Versioned<LabletSession>>> = BTreeMap::new();
    for s in snap.sessions.values() {
        if !s.value.holds_capacity() {
            continue;
        }
        let Some(wid) = &s.value.worker_id else {
            continue;
        };
        let lost = !snap.unknown_workers.contains(wid)
            && snap
                .workers
                .get(wid)
                .is_none_or(|w| is_lost_state(w.value.state));
        if lost {
            by_worker.entry(wid.clone()).or_default().push(s);
        }
    }
    by_worker
}
