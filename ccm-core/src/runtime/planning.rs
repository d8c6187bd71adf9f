//! The controller's bridge to the time-aware planner: the live state becomes a
//! [`PlanInput`], and the plan's actions that are due at `now` become [`ScalingAction`]s —
//! each checked against the fleet as it really is (a drain or stop never touches a worker that
//! still holds a session; a start only a STOPPED worker).

use super::policy::{past_its_end, worker_numbering, ScalingAction};
use super::settings::RuntimeSettings;
use super::snapshot::StateSnapshot;
use crate::placement::filter::{check_template, Requirements};
use crate::planner::{Action, Plan, PlanInput, PlannedSession, PriorAssignment};
use crate::session::{LabletSession, SessionState};
use crate::template::WorkerTemplate;
use crate::timeslot::{saturating_add, saturating_sub, Timeslot, Timestamp};
use crate::worker::WorkerState;
use chrono::Duration;
use std::collections::{BTreeMap, BTreeSet};

/// What the controller's last plan said, for reports, `/metrics` and events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanSummary {
    /// When it was made.
    pub at: Option<Timestamp>,
    /// Billed cost of the plan over its horizon (USD).
    pub cost_usd: f64,
    /// The lower bound the cost is measured against (USD).
    pub lower_bound_usd: f64,
    /// Workers the plan uses.
    pub workers: usize,
    /// Billed worker-hours of the plan.
    pub worker_hours: f64,
    /// Sessions placed.
    pub assigned: usize,
    /// Sessions it cannot serve, each with the planner's reason.
    pub unserved: Vec<(String, String)>,
    /// Earlier assignments kept on the same worker / moved.
    pub kept: usize,
    /// Earlier assignments that moved.
    pub moved: usize,
    /// Wall time of the planning.
    pub duration: std::time::Duration,
    /// Template regions left out of this plan because they refused a launch for lack of
    /// capacity: `(template, region, avoided until)`.
    pub unavailable: Vec<(String, String, Timestamp)>,
}

impl PlanSummary {
    pub(crate) fn of(plan: &Plan, duration: std::time::Duration) -> Self {
        PlanSummary {
            at: Some(plan.now),
            cost_usd: plan.cost.cost_usd,
            lower_bound_usd: plan.cost.lower_bound_usd,
            workers: plan.cost.workers,
            worker_hours: plan.cost.worker_hours,
            assigned: plan.assignments.len(),
            unserved: plan
                .unserved
                .iter()
                .map(|u| (u.session_id.clone(), u.reason.clone()))
                .collect(),
            kept: plan.kept,
            moved: plan.moved,
            duration,
            unavailable: Vec::new(),
        }
    }
}

/// One minute: a bound session whose end already passed still holds its worker this long.
const HOLD_SECS: i64 = 60;

/// When a bound session without a slot was bound (its last change to SCHEDULED).
fn bound_at(s: &LabletSession) -> Timestamp {
    s.state_history
        .iter()
        .rev()
        .find(|c| c.to == SessionState::Scheduled)
        .map_or(s.created_at, |c| c.at)
}

/// The planner's view of the live state at `now`.
///
/// * A PENDING session occupies its worker from the start of its lab's instantiation: with a
///   slot, over `[start − instantiation, end)` (those already past the expiry grace are left to
///   the scheduler to expire); without one (ASAP), from `now + lead − instantiation` — its lab
///   ready at `now + lead`, the soonest a new worker can take it — for its definition's maximum
///   duration. (The slot start alone would let the plan hand a worker to a session while the
///   session before it still runs there, and the scheduler could bind it only after its slot
///   started.) Use it with [`RuntimeSettings::planner_policy`], whose lead is the boot part.
/// * Capacity-holding sessions stay on their worker until their slot ends (ASAP ones for their
///   maximum duration from binding), and at least another minute.
/// * A session without a region is pinned to `settings.default_region` when one is set.
/// * Sessions whose definition is unknown are left out (the scheduler reports them).
pub fn plan_input(
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
    settings: &RuntimeSettings,
    previous: Vec<PriorAssignment>,
) -> PlanInput {
    let lead = settings.lead_time;
    let inst = settings.instantiation();
    let mut sessions = Vec::new();
    for s in snap.sessions.values().map(|v| &v.value) {
        let pending = s.state == SessionState::Pending;
        let holds = s.holds_capacity() && s.worker_id.is_some();
        if !pending && !holds {
            continue;
        }
        let Some(d) = snap.definitions.get(&s.definition_id) else {
            continue;
        };
        let max = Duration::minutes(i64::from(d.max_duration_minutes.max(1)));
        let slot = match (s.timeslot, holds) {
            (Some(t), false) => {
                if now > t.expires_at(settings.pending_grace) {
                    continue;
                }
                match t
                    .start
                    .checked_sub_signed(inst)
                    .map(|a| Timeslot::new(a, t.end))
                {
                    Some(Ok(t)) => t,
                    _ => continue,
                }
            }
            (None, false) => {
                let a = saturating_add(now, lead);
                match Timeslot::new(saturating_sub(a, inst), saturating_add(a, max)) {
                    Ok(t) => t,
                    Err(_) => continue,
                }
            }
            (t, true) => {
                let (a, b) = match t {
                    Some(t) => (t.start, t.end),
                    None => {
                        let a = bound_at(s);
                        (a, saturating_add(a, max))
                    }
                };
                let b = b.max(saturating_add(now, Duration::seconds(HOLD_SECS)));
                match Timeslot::new(a.min(now), b) {
                    Ok(t) => t,
                    Err(_) => continue,
                }
            }
        };
        let region = s.region.as_deref().or(settings.default_region.as_deref());
        sessions.push(PlannedSession {
            id: s.id.clone(),
            definition_id: s.definition_id.clone(),
            requirements: Requirements::of(d, region),
            slot,
            state: if holds {
                s.state
            } else {
                SessionState::Pending
            },
            worker_id: if holds { s.worker_id.clone() } else { None },
        });
    }
    PlanInput {
        now,
        sessions,
        workers: snap.workers.values().map(|v| v.value.clone()).collect(),
        templates: templates.to_vec(),
        previous,
    }
}

/// The plan's actions due at `now`, as steps the controller can carry out on the fleet it
/// read, plus the ids given to the workers the plan launches (`plan-N` → real id).
///
/// Each step is checked against `snap`: a drain only for a RUNNING worker and a stop only for
/// a draining one, both only while no session holds it; a start only for a STOPPED worker; a
/// cancelled drain only for a DRAINING one. Drain timeouts and FAILED workers are handled from
/// the fleet whatever the plan says.
pub fn due_actions(
    plan: &Plan,
    input: &PlanInput,
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
) -> (Vec<ScalingAction>, BTreeMap<String, String>) {
    let mut actions = Vec::new();
    let mut named = BTreeMap::new();
    let mut numbering = worker_numbering(snap);
    let by_name: BTreeMap<&str, &WorkerTemplate> =
        templates.iter().map(|t| (t.name.as_str(), t)).collect();
    let busy = |id: &str| snap.busy(id);
    // Distinct requirements of the sessions still to place (sessions share a few classes).
    let open: std::collections::HashSet<&Requirements> = input
        .sessions
        .iter()
        .filter(|s| s.worker_id.is_none())
        .map(|s| &s.requirements)
        .collect();
    let starts: BTreeMap<&str, Timestamp> = plan
        .assignments
        .iter()
        .map(|a| (a.session_id.as_str(), a.start))
        .collect();
    // Workers this batch already drains (their Stop may follow in the same pass).
    let mut draining: BTreeSet<&str> = BTreeSet::new();
    let mut stopped: BTreeSet<&str> = BTreeSet::new();
    for a in plan.actions.iter().take_while(|a| a.at() <= now) {
        let id = a.worker_id();
        let state = snap.workers.get(id).map(|w| w.value.state);
        match a {
            Action::ScaleUp {
                worker_id,
                template,
                region,
                sessions,
                ..
            } => {
                let Some(t) = by_name.get(template.as_str()) else {
                    continue;
                };
                let n = numbering.entry(template.clone()).or_insert(0);
                *n += 1;
                let real = format!("{template}-{n:04}");
                named.insert(worker_id.clone(), real.clone());
                actions.push(ScalingAction::Launch {
                    worker_id: real,
                    template: template.clone(),
                    region: region.clone(),
                    node_definitions: node_definitions_for(&open, t, region),
                    reason: launch_reason(sessions, &starts, plan),
                });
            }
            Action::Restart { sessions, .. } if state == Some(WorkerState::Stopped) => {
                actions.push(ScalingAction::Start {
                    worker_id: id.to_string(),
                    reason: format!(
                        "planned: {} session(s) from {}",
                        sessions.len(),
                        first_start(sessions, &starts)
                            .map_or("now".into(), |t| t.format("%H:%M").to_string())
                    ),
                });
            }
            Action::CancelDrain { .. } if state == Some(WorkerState::Draining) => {
                actions.push(ScalingAction::CancelDrain {
                    worker_id: id.to_string(),
                    reason: "planned sessions need its capacity".into(),
                });
            }
            Action::Drain { .. } if state == Some(WorkerState::Running) && !busy(id) => {
                draining.insert(id);
                actions.push(ScalingAction::Drain {
                    worker_id: id.to_string(),
                    reason: "no session on it and none planned within the grace".into(),
                });
            }
            Action::Stop { .. }
                if (state == Some(WorkerState::Draining) || draining.contains(id))
                    && !busy(id)
                    && stopped.insert(id) =>
            {
                actions.push(ScalingAction::Stop {
                    worker_id: id.to_string(),
                    force: false,
                    reason: "drained: no session left".into(),
                });
            }
            _ => {}
        }
    }
    // Drain timeouts and failed workers: from the fleet as it is, whatever the plan says.
    for w in snap.workers.values().map(|v| &v.value) {
        let draining_busy =
            w.state == WorkerState::Draining && busy(&w.id) && !stopped.contains(w.id.as_str());
        if draining_busy || w.state == WorkerState::Failed {
            actions.extend(past_its_end(w, &by_name, now));
        }
    }
    (actions, named)
}

/// Node definitions a new worker of `t` in `region` is imaged with: every one a planned
/// session it could serve needs (so it can take any of them later, as the plan assumes).
fn node_definitions_for(
    open: &std::collections::HashSet<&Requirements>,
    t: &WorkerTemplate,
    region: &str,
) -> BTreeSet<String> {
    open.iter()
        .filter(|r| check_template(t, region, r).is_ok())
        .flat_map(|r| r.node_definitions.iter().cloned())
        .collect()
}

fn first_start(sessions: &[String], starts: &BTreeMap<&str, Timestamp>) -> Option<Timestamp> {
    sessions
        .iter()
        .filter_map(|id| starts.get(id.as_str()).copied())
        .min()
}

fn launch_reason(sessions: &[String], starts: &BTreeMap<&str, Timestamp>, plan: &Plan) -> String {
    match first_start(sessions, starts) {
        Some(t) => format!(
            "planned: {} session(s), the first at {} (cost of the plan ${:.2})",
            sessions.len(),
            t.format("%H:%M"),
            plan.cost.cost_usd
        ),
        None => "planned".into(),
    }
}

/// The previous plan's assignments with the workers launched this pass renamed to their real
/// ids (so the next plan keeps those sessions where they were planned).
pub(crate) fn carry_over(plan: &Plan, named: &BTreeMap<String, String>) -> Vec<PriorAssignment> {
    let mut prior = plan.prior_assignments();
    for p in &mut prior {
        if let Some(real) = named.get(&p.worker_id) {
            p.worker_id = real.clone();
        }
    }
    prior
}
