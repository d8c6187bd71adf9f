//! Notifications (CloudEvents in production): never the system of record, never blocking.

use crate::timeslot::Timestamp;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One event, ready to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// Type, e.g. `ccm.lablet.session.scheduled`.
    pub event_type: String,
    /// Session, worker or definition id.
    pub subject: String,
    /// When it happened.
    pub time: Timestamp,
    /// JSON data.
    pub data: serde_json::Value,
}

/// Errors of an [`EventSink`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The queue is full; the event was dropped (and counted).
    #[error("event queue full, dropped {0}")]
    Dropped(String),
    /// The sink is shut down.
    #[error("event sink closed")]
    Closed,
}

/// Publishes events. Implementations must return quickly (enqueue, not deliver).
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Hands an event over for delivery.
    async fn publish(&self, event: Event) -> Result<(), EventError>;
}
