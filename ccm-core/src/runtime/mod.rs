//! The reconcile loops (scheduler, controller) and the leadership that gates them.
//!
//! * [`Scheduler`] binds due PENDING sessions to RUNNING workers: session state, worker
//!   allocation and ports in one transaction guarded by the revisions read and the leader fence.
//! * [`Controller`] applies the provider's worker state changes, requeues the sessions of lost
//!   workers and scales the fleet: every pass it plans the horizon with
//!   [`crate::planner::plan`] ([`plan_input`]) and carries out the actions due now
//!   ([`due_actions`]: launch, restart, cancel drain, drain, stop), or follows the reactive rule
//!   ([`ScalingMode::Reactive`]).
//! * [`LabLoop`] moves bound sessions through their lab's life on the worker's CML
//!   (instantiate, reuse, start, ready, run, stop, wipe) through a [`crate::store::LabRuntime`].
//! * Each loop runs only while this process leads its election ([`LeaderHandle`],
//!   [`Campaigner`]): keep-alive every TTL/3, writes stop at once when leadership is lost.
//!   One driver (`driver.rs`) runs every loop the same way: a pass on leadership, then on a
//!   watched change (the scheduler: a PENDING session; the lab loop: any session or worker) or
//!   when the loop's interval runs out (the re-list), whichever comes first.
//! * Each loop decides in a pure step (`decide.rs` of `scheduler/`, `controller/`,
//!   `lab_loop/`) and applies the decision as fenced transactions and provider or CML calls.
//! * [`Runtime`] wires the stores, the clock and the provider; its loops run on any
//!   [`crate::store::Clock`], and a pass can be called directly ([`Runtime::step`]) so a
//!   virtual clock drives a whole day in seconds.
//!
//! The key layout is documented in [`keys`].

pub mod archive;
mod builder;
pub mod codec;
pub(crate) mod context;
mod controller;
mod driver;
pub mod keys;
pub mod lab_loop;
mod leadership;
mod metrics;
mod planning;
mod policy;
mod scheduler;
mod settings;
pub mod snapshot;

pub use builder::{LoopLeadership, Runtime, RuntimeBuilder, RuntimeHandle, StepReport};
pub use controller::{Controller, ControllerReport};
pub use keys::KeyLayout;
pub use lab_loop::{LabAction, LabLoop, LabReport};
pub use leadership::{lease_margin, Campaigner, LeaderHandle};
pub use metrics::{Metrics, MetricsSnapshot, PhaseDuration};
pub use planning::{due_actions, plan_input, PlanSummary};
pub use policy::ScalingAction;
pub use scheduler::{Binding, Scheduler, SchedulerReport};
pub use settings::{OrphanPolicy, RuntimeSettings, ScalingMode};
pub use snapshot::{StateSnapshot, Versioned};

/// The scheduler's election name.
pub const SCHEDULER: &str = "scheduler";
/// The controller's election name.
pub const CONTROLLER: &str = "controller";
/// The lab loop's election name.
pub const LAB: &str = "lab";

/// Errors of the loops.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    /// This process does not lead the loop (or the fence refused its write): nothing written.
    #[error("not the leader of {election}: write refused")]
    NotLeader {
        /// Election name.
        election: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The spec store failed.
    #[error(transparent)]
    Spec(#[from] crate::store::SpecError),
    /// The worker provider failed.
    #[error(transparent)]
    Provider(#[from] crate::store::ProviderError),
    /// A state machine refused a transition.
    #[error(transparent)]
    Transition(#[from] crate::transition::InvalidTransition),
    /// A loop task panicked or returned before shutdown: this runtime stopped and resigned
    /// (names the loop and the panic).
    #[error("runtime stopped: {0}")]
    LoopDied(String),
    /// A record kept changing under this process: every one of `tries` compare-and-swap writes
    /// lost (the next pass re-reads it).
    #[error("{key}: gave up after {tries} write conflicts in a row")]
    Conflict {
        /// The key that kept moving.
        key: String,
        /// Attempts made (`max_conflict_retries`).
        tries: u32,
    },
    /// The stored state contradicts itself (names what and where); nothing was written.
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
    /// The runtime was built wrong (names what is missing or invalid).
    #[error("runtime configuration: {0}")]
    Config(String),
}
