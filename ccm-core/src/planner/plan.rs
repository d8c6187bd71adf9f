//! What the planner reads and what it answers.

use super::cost::CostReport;
use crate::placement::filter::Requirements;
use crate::session::SessionState;
use crate::template::WorkerTemplate;
use crate::timeslot::{Timeslot, Timestamp};
use crate::worker::{Worker, WorkerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One session as the planner sees it: what it needs and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedSession {
    /// Session id.
    pub id: String,
    /// Its definition's id (for reports).
    pub definition_id: String,
    /// What it needs from a worker (from its definition, see [`Requirements::of`]).
    pub requirements: Requirements,
    /// Its booked slot.
    pub slot: Timeslot,
    /// Its state: PENDING sessions are placed; capacity-holding sessions stay on `worker_id`.
    pub state: SessionState,
    /// The worker it is bound to, if any.
    pub worker_id: Option<String>,
}

/// Where a session was in an earlier plan (so re-planning can keep it there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorAssignment {
    /// Session id.
    pub session_id: String,
    /// Worker id (existing, or planned in the earlier plan).
    pub worker_id: String,
    /// Template of that worker.
    pub template: String,
    /// Region of that worker.
    pub region: String,
}

/// Everything a plan is computed from. The planner never reads a clock or a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// The instant the plan is made at.
    pub now: Timestamp,
    /// Sessions (any order; the plan does not depend on it).
    pub sessions: Vec<PlannedSession>,
    /// The fleet as it is now.
    pub workers: Vec<Worker>,
    /// Templates new workers may be made from (disabled ones are never launched).
    pub templates: Vec<WorkerTemplate>,
    /// Assignments of an earlier plan to keep where still valid (may be empty).
    #[serde(default)]
    pub previous: Vec<PriorAssignment>,
}

/// Where a worker of the plan comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerOrigin {
    /// Already in the fleet, in this state.
    Existing {
        /// Its state at `now`.
        state: WorkerState,
    },
    /// Launched by this plan.
    New,
}

/// One billed period of a worker: launched (or already up) at `launch_at`, accepting sessions
/// from `ready_at`, stopped at `stop_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Billing starts (`now` for a worker already up).
    pub launch_at: Timestamp,
    /// RUNNING from here.
    pub ready_at: Timestamp,
    /// Billing ends.
    pub stop_at: Timestamp,
}

/// A worker of the plan with its billed runs and sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedWorker {
    /// Worker id (`plan-N` for new ones).
    pub id: String,
    /// Template name.
    pub template: String,
    /// Region.
    pub region: String,
    /// Existing or new.
    pub origin: WorkerOrigin,
    /// Capacity (cpu, memory, storage, nodes).
    pub capacity: crate::resources::Load,
    /// Host ports it offers.
    pub ports: u32,
    /// Hourly price.
    pub cost_per_hour_usd: f64,
    /// Billed runs, in time order (empty: not used and stopped at `now` or left stopped).
    pub runs: Vec<Run>,
    /// A worker already DRAINING that stays draining: when its drain began.
    pub draining_since: Option<Timestamp>,
    /// Kept running through the horizon as one of the minimum warm workers.
    pub warm: bool,
}

/// A session placed on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Session id.
    pub session_id: String,
    /// Definition id.
    pub definition_id: String,
    /// Worker id.
    pub worker_id: String,
    /// Holds capacity from here…
    pub start: Timestamp,
    /// …until here.
    pub end: Timestamp,
    /// Already bound before this plan (not moved by it).
    pub bound: bool,
}

/// A scaling decision with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Launch a new worker.
    ScaleUp {
        /// Planned worker id.
        worker_id: String,
        /// Template.
        template: String,
        /// Region.
        region: String,
        /// Launch time: first slot start − lead.
        launch_at: Timestamp,
        /// RUNNING by then.
        ready_by: Timestamp,
        /// Sessions of this run.
        sessions: Vec<String>,
    },
    /// Start a STOPPED worker again (cheaper than a new one, or a later run of a planned one).
    Restart {
        /// Worker id.
        worker_id: String,
        /// Start time.
        launch_at: Timestamp,
        /// RUNNING by then.
        ready_by: Timestamp,
        /// Sessions of this run.
        sessions: Vec<String>,
    },
    /// A DRAINING worker takes new demand: back to RUNNING.
    CancelDrain {
        /// Worker id.
        worker_id: String,
        /// When.
        at: Timestamp,
    },
    /// Stop accepting sessions (no session within the grace period).
    Drain {
        /// Worker id.
        worker_id: String,
        /// When.
        at: Timestamp,
    },
    /// Stop the (empty) worker.
    Stop {
        /// Worker id.
        worker_id: String,
        /// When.
        at: Timestamp,
    },
    /// The drain timeout passed: stop, terminating the sessions still on it.
    ForceStop {
        /// Worker id.
        worker_id: String,
        /// When.
        at: Timestamp,
        /// Sessions terminated.
        sessions: Vec<String>,
    },
}

impl Action {
    /// When the action happens.
    pub fn at(&self) -> Timestamp {
        match self {
            Action::ScaleUp { launch_at, .. } | Action::Restart { launch_at, .. } => *launch_at,
            Action::CancelDrain { at, .. }
            | Action::Drain { at, .. }
            | Action::Stop { at, .. }
            | Action::ForceStop { at, .. } => *at,
        }
    }

    /// The worker it acts on.
    pub fn worker_id(&self) -> &str {
        match self {
            Action::ScaleUp { worker_id, .. }
            | Action::Restart { worker_id, .. }
            | Action::CancelDrain { worker_id, .. }
            | Action::Drain { worker_id, .. }
            | Action::Stop { worker_id, .. }
            | Action::ForceStop { worker_id, .. } => worker_id,
        }
    }

    /// Short name (`scale_up`, `restart`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::ScaleUp { .. } => "scale_up",
            Action::Restart { .. } => "restart",
            Action::CancelDrain { .. } => "cancel_drain",
            Action::Drain { .. } => "drain",
            Action::Stop { .. } => "stop",
            Action::ForceStop { .. } => "force_stop",
        }
    }
}

/// What one template could do for an unserved session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVerdict {
    /// Template name.
    pub template: String,
    /// Why it cannot serve the session (`None`: it could, but see the session's reason).
    pub rejection: Option<String>,
}

/// A session the plan cannot serve, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unserved {
    /// Session id.
    pub session_id: String,
    /// Definition id.
    pub definition_id: String,
    /// One line for people.
    pub reason: String,
    /// Existing workers rejected, by the first failing filter (`not_ready_in_time` for a worker
    /// that could not be running by the slot start).
    pub workers_rejected: BTreeMap<String, usize>,
    /// Each template's verdict.
    pub templates: Vec<TemplateVerdict>,
    /// The earliest slot start (same length) within the horizon that would work, if any.
    pub earliest_start: Option<Timestamp>,
}

/// The answer of [`crate::planner::plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// When it was made.
    pub now: Timestamp,
    /// Sessions starting at or after this are not planned yet.
    pub horizon_end: Timestamp,
    /// Every worker that is up, planned or used (existing unusable ones are left out).
    pub workers: Vec<PlannedWorker>,
    /// Placements, sorted by session id.
    pub assignments: Vec<Assignment>,
    /// Scaling actions, by time.
    pub actions: Vec<Action>,
    /// Sessions it cannot serve, sorted by session id.
    pub unserved: Vec<Unserved>,
    /// Pending sessions starting after the horizon (left for later plans).
    pub beyond_horizon: usize,
    /// Earlier assignments kept on the same worker.
    pub kept: usize,
    /// Earlier assignments that moved to another worker or became unserved.
    pub moved: usize,
    /// Billed hours, cost, utilisation, lower bound.
    pub cost: CostReport,
}

impl Plan {
    /// This plan's assignments as input for the next plan (see [`PlanInput::previous`]).
    pub fn prior_assignments(&self) -> Vec<PriorAssignment> {
        let by_id: BTreeMap<&str, &PlannedWorker> =
            self.workers.iter().map(|w| (w.id.as_str(), w)).collect();
        self.assignments
            .iter()
            .filter(|a| !a.bound)
            .filter_map(|a| {
                let w = by_id.get(a.worker_id.as_str())?;
                Some(PriorAssignment {
                    session_id: a.session_id.clone(),
                    worker_id: a.worker_id.clone(),
                    template: w.template.clone(),
                    region: w.region.clone(),
                })
            })
            .collect()
    }

    /// Workers used (with at least one run), per template name.
    pub fn workers_per_template(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for w in self.workers.iter().filter(|w| !w.runs.is_empty()) {
            *m.entry(w.template.clone()).or_insert(0) += 1;
        }
        m
    }
}
