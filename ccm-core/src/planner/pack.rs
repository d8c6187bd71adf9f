//! Time-aware packing: sessions onto workers, each worker a capacity-over-time step function.
//!
//! [`run`] is the planner; it goes through the phases below in order, each in its own module
//! (the planner's README tells the whole story):
//!
//! 1. [`lower`] — the fleet and the sessions as [`model::WorkerTimeline`]s and
//!    [`model::SessionSpan`]s in seconds, bound sessions put on their workers;
//! 2. [`reuse`] — sessions the previous plan placed stay where they were, if they still fit;
//! 3. [`place`] — the others, greedily, each where it adds the least billed cost;
//! 4. [`improve`] — local moves (consolidation, moves, swaps) while they lower the cost;
//! 5. [`warm`] — the warm minimum;
//! 6. [`explain`] — why each session left unserved cannot be served;
//! 7. [`emit`] — runs, actions, assignments, cost and lower bound.
//!
//! In debug builds [`check`] verifies the post-conditions of the phases.

use super::plan::{Plan, PlanInput};
use super::policy::Policy;
use super::profile::Dims;
use crate::placement::filter::Requirements;
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;

mod check;
mod emit;
mod explain;
mod improve;
mod lower;
mod model;
mod place;
mod reuse;
mod warm;

/// Seconds since the epoch.
pub(crate) fn secs(t: Timestamp) -> i64 {
    t.timestamp()
}

/// A timestamp from seconds since the epoch.
pub(crate) fn ts(s: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(s, 0).unwrap_or_default()
}

/// The five packed dimensions of a requirement (ports last).
pub(crate) fn need_of(r: &Requirements) -> Dims {
    let d = r.load.dims();
    [d[0], d[1], d[2], d[3], r.ports.len() as u32]
}

/// The five packed dimensions of a template's capacity.
pub(crate) fn cap_of_template(t: &WorkerTemplate) -> Dims {
    let d = t.load_capacity().dims();
    [d[0], d[1], d[2], d[3], t.port_range.len()]
}

/// Computes the plan (see [`crate::planner::plan`]).
pub(crate) fn run(
    input: &PlanInput,
    policy: &Policy,
    progress: &mut dyn FnMut(usize, usize),
) -> Plan {
    let mut packing = model::Packing::new(secs(input.now), policy, &input.templates);
    let mut lowered = lower::lower(&mut packing, input);
    if cfg!(debug_assertions) {
        check::lowered(&packing, &lowered);
    }
    let prior = reuse::prior_by_session(&input.previous);
    let rest = reuse::reuse(&mut packing, &mut lowered, &prior);
    let sessions = &mut lowered.sessions;
    let placed = place::place(&mut packing, sessions, &rest, progress);
    if cfg!(debug_assertions) {
        check::packed(&packing, sessions, &placed.unserved);
    }
    improve::improve(&mut packing, sessions, &placed.movable);
    if cfg!(debug_assertions) {
        check::packed(&packing, sessions, &placed.unserved);
    }
    warm::warm_minimum(&mut packing);
    if cfg!(debug_assertions) {
        check::warm(&packing);
    }
    let unserved = explain::explain_all(&mut packing, sessions, &placed.unserved);
    let outcome = emit::Outcome {
        existing_workers: lowered.existing_workers,
        unserved,
        beyond_horizon: lowered.beyond_horizon,
        prior: &prior,
    };
    let plan = emit::emit(&mut packing, sessions, outcome);
    if cfg!(debug_assertions) {
        check::emitted(&packing, sessions, &plan);
    }
    plan
}
