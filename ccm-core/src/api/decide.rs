//! The façade's decisions, as pure functions of a snapshot, the templates and `now`: admission
//! (the planner on the live state plus one booking), filters and paging, the landscape, the
//! scheduler's and the planner's explanation of a PENDING session, and the worker views.

use super::types::{
    Admission, DueAction, Explanation, Landscape, LandscapeBucket, Page, Placement, PortUsage,
    Refusal, SessionQuery, WorkerView,
};
use crate::definition::LabletDefinition;
use crate::placement::filter::Requirements;
use crate::placement::Fleet;
use crate::planner::{Plan, PlanInput, PriorAssignment, Unserved, WorkerOrigin};
use crate::resources::Load;
use crate::runtime::{plan_input, RuntimeSettings, ScalingAction, StateSnapshot, Versioned};
use crate::session::{LabletSession, SessionState};
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use chrono::Duration;
use std::collections::BTreeSet;

/// The plan the controller would make from `snap` at `now` (no previous plan to keep).
pub fn plan_now(
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
    settings: &RuntimeSettings,
) -> (Plan, PlanInput) {
    plan_keeping(snap, templates, now, settings, &[])
}

/// The plan of `snap` at `now` that keeps the `previous` placements where they still fit (what
/// the admission fast path is refreshed with).
pub fn plan_keeping(
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
    settings: &RuntimeSettings,
    previous: &[PriorAssignment],
) -> (Plan, PlanInput) {
    let input = plan_input(snap, templates, now, settings, previous.to_vec());
    let plan = crate::planner::plan(&input, &settings.planner_policy());
    (plan, input)
}

/// What the plan says about PENDING session `id`.
///
/// The plan reserves a PENDING session's capacity from `instantiation` before its slot (the
/// lab is created on the worker first, see [`plan_input`]); the answer speaks of the slot
/// itself, so the times the planner gives are moved back by `instantiation`.
pub fn verdict(plan: &Plan, id: &str, instantiation: Duration) -> Admission {
    if let Some(a) = plan.assignments.iter().find(|a| a.session_id == id) {
        let w = plan.workers.iter().find(|w| w.id == a.worker_id);
        let (placement, ready_by) = match w {
            Some(w) => {
                let run = w
                    .runs
                    .iter()
                    .find(|r| r.launch_at <= a.start && a.start < r.stop_at)
                    .or_else(|| w.runs.first());
                let ready = run.map_or(plan.now, |r| r.ready_at.max(plan.now));
                match w.origin {
                    WorkerOrigin::Existing { state } => (
                        Placement::Worker {
                            worker_id: w.id.clone(),
                            state,
                        },
                        ready,
                    ),
                    WorkerOrigin::New => (
                        Placement::Launch {
                            worker_id: w.id.clone(),
                            template: w.template.clone(),
                            region: w.region.clone(),
                            launch_at: run.map_or(plan.now, |r| r.launch_at),
                        },
                        ready,
                    ),
                }
            }
            None => (
                Placement::Worker {
                    worker_id: a.worker_id.clone(),
                    state: crate::worker::WorkerState::Running,
                },
                plan.now,
            ),
        };
        return Admission::Accepted {
            placement,
            ready_by,
            start: crate::timeslot::saturating_add(a.start, instantiation),
            end: a.end,
        };
    }
    if let Some(u) = plan.unserved.iter().find(|u| u.session_id == id) {
        let mut r = refusal(u);
        r.earliest_start = r
            .earliest_start
            .map(|t| crate::timeslot::saturating_add(t, instantiation));
        return Admission::Rejected(r);
    }
    Admission::Accepted {
        placement: Placement::BeyondHorizon {
            horizon_end: plan.horizon_end,
        },
        ready_by: plan.horizon_end,
        start: plan.horizon_end,
        end: plan.horizon_end,
    }
}

/// The refusal of an unserved session: its deciding constraint is the filter that rejected the
/// most workers (ties: the first by name), else what the planner's reason names.
pub fn refusal(u: &Unserved) -> Refusal {
    let constraint = u
        .workers_rejected
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| {
            if u.reason.contains("too soon to boot") {
                "not_ready_in_time".into()
            } else if u.reason.contains("at its cap") {
                "max_workers_per_region".into()
            } else if u.reason.contains("can ever run it") {
                "no_template".into()
            } else {
                "no_workers".into()
            }
        });
    Refusal {
        constraint,
        reason: u.reason.clone(),
        workers_rejected: u.workers_rejected.clone(),
        templates: u.templates.clone(),
        earliest_start: u.earliest_start,
    }
}

/// Admission: the planner on `snap` plus `candidate` (whose definition is `def`). Accepted when
/// the plan serves the candidate without leaving a session unserved that the plan without it
/// serves; the second plan is made only when some other session is unserved.
pub fn admit(
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
    settings: &RuntimeSettings,
    candidate: &LabletSession,
    def: &LabletDefinition,
) -> Admission {
    admit_planned(snap, templates, now, settings, candidate, def, &[]).0
}

/// [`admit`] keeping the placements `previous` (of the last admission plan) where they still
/// fit, as the controller keeps its own plan's; with the plan made with the candidate and its
/// input (what the admission fast path, [`super::admission::AdmissionPlan`], continues from).
pub fn admit_planned(
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
    settings: &RuntimeSettings,
    candidate: &LabletSession,
    def: &LabletDefinition,
    previous: &[PriorAssignment],
) -> (Admission, Plan, PlanInput) {
    let plan_with = |snap: &StateSnapshot| {
        let input = plan_input(snap, templates, now, settings, previous.to_vec());
        let plan = crate::planner::plan(&input, &settings.planner_policy());
        (plan, input)
    };
    let mut with = snap.clone();
    with.definitions.insert(def.id.clone(), def.clone());
    with.sessions.insert(
        candidate.id.clone(),
        Versioned {
            value: candidate.clone(),
            mod_revision: 0,
        },
    );
    let (plan, input) = plan_with(&with);
    let answer = verdict(&plan, &candidate.id, settings.instantiation());
    if !answer.accepted() {
        return (answer, plan, input);
    }
    let others: BTreeSet<&str> = plan
        .unserved
        .iter()
        .map(|u| u.session_id.as_str())
        .filter(|id| *id != candidate.id)
        .collect();
    if others.is_empty() {
        return (answer, plan, input);
    }
    let (without, _) = plan_with(snap);
    let before: BTreeSet<&str> = without
        .unserved
        .iter()
        .map(|u| u.session_id.as_str())
        .collect();
    let displaced: Vec<&str> = others.difference(&before).copied().collect();
    if displaced.is_empty() {
        return (answer, plan, input);
    }
    let refusal = Admission::Rejected(Refusal {
        constraint: "displaces_others".into(),
        reason: format!(
            "the plan would serve it only by leaving {} booked session(s) unserved: {}",
            displaced.len(),
            displaced.join(", ")
        ),
        workers_rejected: Default::default(),
        templates: Vec::new(),
        earliest_start: None,
    });
    (refusal, plan, input)
}

/// Whether a session passes the filters of `q` (not the paging).
pub fn matches(q: &SessionQuery, s: &LabletSession) -> bool {
    if !q.states.is_empty() && !q.states.contains(&s.state) {
        return false;
    }
    if q.owner_id.as_ref().is_some_and(|o| &s.owner_id != o) {
        return false;
    }
    if q.worker_id
        .as_ref()
        .is_some_and(|w| s.worker_id.as_ref() != Some(w))
    {
        return false;
    }
    if let Some(d) = &q.definition {
        let name = s
            .definition_id
            .split_once('@')
            .map_or(s.definition_id.as_str(), |x| x.0);
        if &s.definition_id != d && name != d {
            return false;
        }
    }
    let (a, b) = match s.timeslot {
        Some(t) => (t.start, t.end),
        None => (s.created_at, s.created_at + Duration::seconds(1)),
    };
    if q.from.is_some_and(|f| b <= f) {
        return false;
    }
    if q.to.is_some_and(|t| a >= t) {
        return false;
    }
    true
}

/// Largest page.
pub const MAX_PAGE: usize = 1000;

/// Filters `sessions` (any order) by `q` and returns the page after `q.after`, by id.
pub fn page(
    q: &SessionQuery,
    sessions: impl IntoIterator<Item = LabletSession>,
) -> Page<LabletSession> {
    let mut all: Vec<LabletSession> = sessions.into_iter().filter(|s| matches(q, s)).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let total = all.len();
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let items: Vec<LabletSession> = all
        .into_iter()
        .filter(|s| q.after.as_ref().is_none_or(|a| s.id.as_str() > a.as_str()))
        .take(limit + 1)
        .collect();
    let mut items = items;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|s| s.id.clone())
    } else {
        None
    };
    Page { items, next, total }
}

/// The capacity, allocation and ports of every worker of `snap`, by id.
pub fn worker_views(snap: &StateSnapshot) -> Vec<WorkerView> {
    snap.workers
        .values()
        .map(|v| {
            let w = &v.value;
            let range = w.ports.range();
            let free = w.ports.free();
            WorkerView {
                id: w.id.clone(),
                template: w.template.clone(),
                region: w.region.clone(),
                state: w.state,
                capacity: w.capacity,
                allocated: w.allocated,
                free: w.capacity.saturating_sub(&w.allocated),
                ports: PortUsage {
                    first: range.start,
                    last: range.end,
                    allocated: range.len().saturating_sub(free),
                    free,
                    by_session: w.ports.owners().clone(),
                },
                sessions: snap
                    .sessions_on(&w.id)
                    .map(|s| s.value.id.clone())
                    .collect(),
                cml_version: w.cml_version.to_string(),
                license_type: w.license_type,
            }
        })
        .collect()
}

/// A scaling action as the API shows it.
pub fn due_action(a: &ScalingAction) -> DueAction {
    let (action, reason) = match a {
        ScalingAction::Launch { reason, .. } => ("launch", reason),
        ScalingAction::Start { reason, .. } => ("start", reason),
        ScalingAction::CancelDrain { reason, .. } => ("cancel_drain", reason),
        ScalingAction::Drain { reason, .. } => ("drain", reason),
        ScalingAction::Stop { reason, .. } => ("stop", reason),
        ScalingAction::Terminate { reason, .. } => ("terminate", reason),
    };
    DueAction {
        action: action.into(),
        worker_id: a.worker_id().to_string(),
        reason: reason.clone(),
    }
}

/// Demand against billed capacity in `bucket`-long intervals over `span` from `now`.
pub fn landscape(
    plan: &Plan,
    input: &PlanInput,
    now: Timestamp,
    bucket: Duration,
    span: Duration,
) -> Landscape {
    let step = bucket.max(Duration::minutes(1));
    let n = (span.num_seconds().max(0) / step.num_seconds()).max(1);
    let unserved: BTreeSet<&str> = plan
        .unserved
        .iter()
        .map(|u| u.session_id.as_str())
        .collect();
    let mut buckets = Vec::new();
    for i in 0..n {
        let a = now + step * i32::try_from(i).unwrap_or(i32::MAX);
        let b = a + step;
        let mut out = LandscapeBucket {
            start: a,
            end: b,
            sessions: 0,
            demand: Load::default(),
            workers: 0,
            capacity: Load::default(),
            unserved: 0,
        };
        for s in &input.sessions {
            if s.slot.start < b && a < s.slot.end {
                out.sessions += 1;
                out.demand = out.demand.saturating_add(&s.requirements.load);
                if unserved.contains(s.id.as_str()) {
                    out.unserved += 1;
                }
            }
        }
        for w in &plan.workers {
            if w.runs.iter().any(|r| r.launch_at < b && a < r.stop_at) {
                out.workers += 1;
                out.capacity = out.capacity.saturating_add(&w.capacity);
            }
        }
        buckets.push(out);
    }
    Landscape {
        now,
        bucket_minutes: u32::try_from(step.num_minutes()).unwrap_or(u32::MAX),
        buckets,
        cost_usd: plan.cost.cost_usd,
    }
}

/// Why `s` (in `snap`) is where it is: the scheduler's placement on the fleet as it is (the
/// same filters and scoring the scheduler binds with) and the planner's view at `now`.
pub fn explain(
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    now: Timestamp,
    settings: &RuntimeSettings,
    s: &LabletSession,
) -> Explanation {
    let due_at = s.due_at(settings.lead_time);
    let mut e = Explanation {
        session_id: s.id.clone(),
        state: s.state,
        summary: String::new(),
        due_at,
        due: false,
        unschedulable: None,
        fits_on: None,
        planned: None,
    };
    if s.state != SessionState::Pending {
        e.summary = match (&s.worker_id, s.holds_capacity()) {
            (Some(w), true) => format!("{} on worker {w}: not pending", s.state),
            _ => format!("{}: not pending", s.state),
        };
        return e;
    }
    let Some(def) = snap.definitions.get(&s.definition_id) else {
        e.summary = format!(
            "definition {} is unknown: the scheduler cannot place it",
            s.definition_id
        );
        return e;
    };
    e.due = due_at.is_none_or(|d| now >= d);
    let (plan, _) = plan_now(snap, templates, now, settings);
    let planned = verdict(&plan, &s.id, settings.instantiation());
    let req = Requirements::of(
        def,
        s.region.as_deref().or(settings.default_region.as_deref()),
    );
    if e.due {
        let workers: Vec<_> = snap.workers.values().map(|w| w.value.clone()).collect();
        match Fleet::new(workers.clone(), settings.scoring) {
            Ok(fleet) => match fleet.place(&req) {
                Ok(choice) => {
                    let w = choice.worker;
                    e.summary = format!(
                        "due since {}: fits on {w}; the next scheduler pass binds it",
                        due_at.map_or("booking".into(), |d| d.to_rfc3339())
                    );
                    e.fits_on = Some(w);
                }
                Err(u) => {
                    let u = u.with_hint(&req, templates);
                    e.summary = format!(
                        "due, but no worker that is up can take it now ({}); {}",
                        u.rejected_by
                            .iter()
                            .filter(|(_, n)| **n > 0)
                            .map(|(k, n)| format!("{k}: {n}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        match &planned {
                            Admission::Accepted { ready_by, .. } =>
                                format!("the plan has room for it by {}", ready_by.to_rfc3339()),
                            Admission::Rejected(r) =>
                                format!("the plan cannot serve it: {}", r.reason),
                        }
                    );
                    e.unschedulable = Some(u);
                }
            },
            Err(err) => e.summary = format!("the fleet snapshot is inconsistent: {err}"),
        }
    } else {
        e.summary = format!(
            "not due yet: the scheduler binds it from {} (slot start − lead {} min); {}",
            due_at.map_or("now".into(), |d| d.to_rfc3339()),
            settings.lead_time.num_minutes(),
            match &planned {
                Admission::Accepted { placement, .. } => match placement {
                    Placement::Worker { worker_id, .. } => format!("planned on {worker_id}"),
                    Placement::Launch {
                        template,
                        launch_at,
                        ..
                    } => format!(
                        "planned on a new {template} worker launched at {}",
                        launch_at.to_rfc3339()
                    ),
                    Placement::BeyondHorizon { .. } => "beyond the planning horizon".into(),
                },
                Admission::Rejected(r) => format!("the plan cannot serve it: {}", r.reason),
            }
        );
    }
    e.planned = Some(planned);
    e
}
