//! Batch placement: many sessions in a deterministic order (slot start, then session id),
//! each one seeing the capacity the earlier ones took.

use super::explain::Unschedulable;
use super::filter::Requirements;
use super::fleet::{Binding, CommitError, Fleet};
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use serde::{Deserialize, Serialize};

/// One session to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// Session id.
    pub session: String,
    /// What it needs.
    pub requirements: Requirements,
    /// Start of its time slot (orders the batch).
    pub slot_start: Timestamp,
}

/// A session of the batch that was not placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    /// Session id.
    pub session: String,
    /// Start of its slot.
    pub slot_start: Timestamp,
    /// Why not.
    pub why: Unschedulable,
}

/// What a batch did, in placement order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    /// Sessions bound, in the order they were placed.
    pub bindings: Vec<Binding>,
    /// Sessions no worker could take.
    pub unschedulable: Vec<Unplaced>,
    /// Sessions whose commit was refused (e.g. already bound), with the reason.
    pub refused: Vec<(String, CommitError)>,
}

/// Places and commits every request on `fleet`, ordered by (slot start, session id);
/// explanations carry a template hint from `templates` (pass `&[]` for none). A session
/// already committed through `fleet` keeps its binding (running a batch twice changes nothing).
pub fn place_batch(
    fleet: &mut Fleet,
    mut requests: Vec<BatchRequest>,
    templates: &[WorkerTemplate],
) -> BatchOutcome {
    requests.sort_by(|a, b| {
        a.slot_start
            .cmp(&b.slot_start)
            .then_with(|| a.session.cmp(&b.session))
    });
    let mut out = BatchOutcome::default();
    for r in requests {
        if let Some(b) = fleet.binding(&r.session) {
            // Already committed through this fleet: batches are idempotent.
            out.bindings.push(b.clone());
            continue;
        }
        match fleet.place_or_explain(&r.requirements, templates) {
            Ok(choice) => match fleet.commit(&r.session, &choice) {
                Ok(b) => out.bindings.push(b),
                Err(e) => out.refused.push((r.session, e)),
            },
            Err(why) => out.unschedulable.push(Unplaced {
                session: r.session,
                slot_start: r.slot_start,
                why,
            }),
        }
    }
    out
}
