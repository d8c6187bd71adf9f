//! Placement: binding a due session to the best RUNNING worker (domain.md §4).
//!
//! * [`filter`]: the filters and their reasons (`cpu: need 4, free 2`).
//! * [`score`]: bin-pack / spread with integer weights, exact scores, tie-break by worker id.
//! * [`Fleet`]: the fast placer (equivalence classes + ordered skip index):
//!   [`Fleet::place`] decides, [`Fleet::commit`] takes capacity and ports, [`Fleet::release`]
//!   gives them back.
//! * [`naive`]: the filter-and-score-everything reference the fast placer must equal.
//! * [`batch`]: many sessions in (slot start, id) order.
//! * [`explain`]: [`Unschedulable`] — counts per filter, reasons per worker, template hint.

pub mod batch;
pub mod explain;
pub mod filter;
pub mod fleet;
pub mod naive;
pub mod score;

pub use batch::{place_batch, BatchOutcome, BatchRequest, Unplaced};
pub use explain::{template_hint, Hint, TemplateRejection, Unschedulable, WorkerRejection};
pub use filter::{check, FilterKind, Rejection, Requirements};
pub use fleet::{Binding, Choice, CommitError, Fleet, FleetError};
pub use score::{Score, Scoring, Strategy, Weights};
