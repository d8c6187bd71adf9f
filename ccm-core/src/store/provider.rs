//! Launching and stopping workers in a cloud (simulated in [`crate::memory`]).

use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use crate::worker::WorkerState;
use async_trait::async_trait;

/// What to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    /// ccm's worker id.
    pub worker_id: String,
    /// Template.
    pub template: WorkerTemplate,
    /// Region.
    pub region: String,
}

/// A state change the provider observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// ccm's worker id.
    pub worker_id: String,
    /// Cloud id.
    pub provider_id: String,
    /// New state.
    pub state: WorkerState,
    /// When.
    pub at: Timestamp,
}

/// Errors of a [`WorkerProvider`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Unknown worker.
    #[error("worker {0} unknown to the provider")]
    NotFound(String),
    /// The cloud refused (capacity, quota, injected failure).
    #[error("provider refused {action} of {worker}: {reason}")]
    Refused {
        /// launch / start / stop / terminate.
        action: String,
        /// Worker id.
        worker: String,
        /// Why.
        reason: String,
    },
    /// The cloud has no capacity for this template in this region now (EC2
    /// `InsufficientInstanceCapacity`, `InstanceLimitExceeded`, `Unsupported`): the region is
    /// worth avoiding for a while, another region or template may work.
    #[error("no capacity for template {template} in region {region}: {reason}")]
    Capacity {
        /// Region that refused.
        region: String,
        /// Template whose instance type it refused.
        template: String,
        /// The cloud's error code and message.
        reason: String,
    },
    /// The cloud kept throttling the calls after the bounded back-off.
    #[error("provider throttled {action} after {attempts} attempts: {reason}")]
    Throttled {
        /// The call that was throttled.
        action: String,
        /// How many attempts were made.
        attempts: u32,
        /// The cloud's last error.
        reason: String,
    },
    /// No machine image of the template matches its pattern in the region.
    #[error("no image matching {pattern:?} in region {region}")]
    NoImage {
        /// Region searched.
        region: String,
        /// The template's `ami_pattern`.
        pattern: String,
    },
}

impl ProviderError {
    /// Whether the error says the region lacks capacity (try another region or template).
    pub fn is_capacity(&self) -> bool {
        matches!(self, ProviderError::Capacity { .. })
    }
}

/// An instance the provider runs for ccm, found by ccm's tags (what adoption after a restart or
/// a leadership change starts from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInstance {
    /// ccm's worker id (the `ccm:worker-id` tag).
    pub worker_id: String,
    /// Cloud id.
    pub provider_id: String,
    /// Template name (the `ccm:template` tag), when tagged.
    pub template: Option<String>,
    /// Region the instance runs in.
    pub region: String,
    /// Its state, mapped onto the worker state machine.
    pub state: WorkerState,
}

/// A cloud that runs workers.
#[async_trait]
pub trait WorkerProvider: Send + Sync + 'static {
    /// Launches a new worker; returns the provider id. Idempotent per worker id: launching a
    /// worker that already has a live instance returns that instance's id and launches nothing
    /// (so a retry or a failover never launches twice).
    async fn launch(&self, req: LaunchRequest) -> Result<String, ProviderError>;
    /// Starts a stopped worker.
    async fn start(&self, worker_id: &str) -> Result<(), ProviderError>;
    /// Stops a worker.
    async fn stop(&self, worker_id: &str) -> Result<(), ProviderError>;
    /// Terminates a worker.
    async fn terminate(&self, worker_id: &str) -> Result<(), ProviderError>;
    /// The provider's view of a worker's state.
    async fn describe(&self, worker_id: &str) -> Result<Option<WorkerState>, ProviderError>;
    /// State changes since the last call (in order).
    async fn poll_events(&self) -> Vec<ProviderEvent>;
    /// Every instance tagged as ccm's that is not terminated (for adoption and orphan
    /// detection), in no particular order.
    async fn list_managed(&self) -> Result<Vec<ManagedInstance>, ProviderError>;
}
