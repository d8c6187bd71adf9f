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
}

/// A cloud that runs workers.
#[async_trait]
pub trait WorkerProvider: Send + Sync + 'static {
    /// Launches a new worker; returns the provider id.
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
}
