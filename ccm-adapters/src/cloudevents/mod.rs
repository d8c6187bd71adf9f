//! CloudEvents adapter: an [`EventSink`] that POSTs CloudEvents 1.0 over HTTP
//! (crate `cloudevents-sdk` with `reqwest`).
//!
//! * Binary content mode by default (`ce-*` headers, JSON body), structured mode as an option.
//! * `specversion` 1.0, `source` = `CLOUDEVENTS_SOURCE`, `subject`, unique `id`, `time`,
//!   `datacontenttype` `application/json`.
//! * Never blocks scheduling: [`EventSink::publish`] only takes a slot in a bounded queue and
//!   returns; when the queue is full the event is dropped, counted and
//!   [`EventError::Dropped`] is returned.
//! * Background lanes deliver; one subject always maps to the same lane and a lane delivers
//!   strictly in order, so events of one subject arrive in publish order.
//! * 5xx, timeouts and transport errors are retried with exponential back-off and jitter (for
//!   at most [`CloudEventsConfig::retry_for`]); 4xx are logged and not retried.
//! * [`CloudEventsSink::stats`] returns the counters (accepted, delivered, retried, dropped,
//!   failed, queued) for metrics.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ccm_adapters::cloudevents::{CloudEventsConfig, CloudEventsSink};
//! use ccm_core::events::CcmEvent;
//! use ccm_core::session::LabletSession;
//! use ccm_core::store::EventSink;
//! let sink = CloudEventsSink::new(CloudEventsConfig::new("http://127.0.0.1:18080/"))?;
//! let now = chrono::Utc::now();
//! let session = LabletSession::new("s-1", "def-1", "1.0.0", "alice", None, now);
//! sink.publish(CcmEvent::session(&session).to_event(now)).await?;
//! println!("{:?}", sink.stats());
//! # Ok(()) }
//! ```

mod config;
mod delivery;
mod stats;

pub use config::{Backoff, CloudEventsConfig, ConfigError, ContentMode, DEFAULT_BACKOFF};
pub use stats::DeliveryStats;

use async_trait::async_trait;
use ccm_core::store::events::{Event, EventError, EventSink};
use stats::Counters;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Why the sink could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CloudEventsError {
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for {url}: {reason}")]
    Client {
        /// Sink URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Created outside a Tokio runtime (the delivery lanes are Tokio tasks).
    #[error("the CloudEvents sink must be created inside a Tokio runtime")]
    NoRuntime,
}

/// The CloudEvents HTTP sink. Dropping it lets the lanes finish what is queued in the
/// background; [`CloudEventsSink::shutdown`] waits for that.
pub struct CloudEventsSink {
    config: Arc<CloudEventsConfig>,
    counters: Arc<Counters>,
    lanes: Mutex<Option<Vec<mpsc::UnboundedSender<Event>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for CloudEventsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudEventsSink")
            .field(
                "sink_url",
                &ccm_core::redact::redact_url(&self.config.sink_url),
            )
            .field("mode", &self.config.mode)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values (senders, join handles) stay valid after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CloudEventsSink {
    /// Validates `config`, builds the HTTP client and starts the delivery lanes (needs a Tokio
    /// runtime).
    pub fn new(config: CloudEventsConfig) -> Result<Self, CloudEventsError> {
        config.validate()?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| CloudEventsError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .build()
            .map_err(|e| CloudEventsError::Client {
                url: config.sink_url.clone(),
                reason: e.to_string(),
            })?;
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let mut senders = Vec::with_capacity(config.lanes);
        let mut tasks = Vec::with_capacity(config.lanes);
        for _ in 0..config.lanes {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tasks.push(runtime.spawn(delivery::run_lane(
                client.clone(),
                config.clone(),
                counters.clone(),
                rx,
            )));
        }
        tracing::info!(url = %config.sink_url, source = %config.source, mode = ?config.mode,
            queue = config.queue_capacity, lanes = config.lanes, "CloudEvents sink started");
        Ok(CloudEventsSink {
            config,
            counters,
            lanes: Mutex::new(Some(senders)),
            tasks: Mutex::new(tasks),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &CloudEventsConfig {
        &self.config
    }

    /// The counters now.
    pub fn stats(&self) -> DeliveryStats {
        self.counters.snapshot()
    }

    /// Waits until every accepted event is delivered or given up, at most `timeout`;
    /// true when the queue is empty.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.counters.queued() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops accepting events ([`EventError::Closed`] from then on), lets the lanes deliver
    /// what is queued for at most `timeout`, then stops them. Returns the final counters.
    pub async fn shutdown(&self, timeout: Duration) -> DeliveryStats {
        drop(lock(&self.lanes).take());
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(timeout, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            for a in aborts {
                a.abort();
            }
            tracing::warn!(
                queued = self.counters.queued(),
                "CloudEvents sink stopped with events still queued"
            );
        }
        self.stats()
    }

    fn lane_of(&self, subject: &str, lanes: usize) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        subject.hash(&mut h);
        (h.finish() % lanes as u64) as usize
    }
}

#[async_trait]
impl EventSink for CloudEventsSink {
    async fn publish(&self, event: Event) -> Result<(), EventError> {
        let lanes = lock(&self.lanes);
        let Some(senders) = lanes.as_ref() else {
            return Err(EventError::Closed);
        };
        if !self.counters.try_reserve(self.config.queue_capacity) {
            tracing::warn!(id = %event.id, r#type = %event.event_type, subject = %event.subject,
                capacity = self.config.queue_capacity, "CloudEvents queue full; event dropped");
            return Err(EventError::Dropped(event.id));
        }
        let lane = self.lane_of(&event.subject, senders.len());
        if senders[lane].send(event).is_err() {
            self.counters.unreserve();
            return Err(EventError::Closed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_config_is_refused_before_starting() {
        let mut c = CloudEventsConfig::new("not a url");
        let e = CloudEventsSink::new(c.clone()).unwrap_err();
        assert!(e.to_string().contains("not a url"), "{e}");
        c.sink_url = "http://127.0.0.1:9/".into();
        c.queue_capacity = 0;
        let e = CloudEventsSink::new(c).unwrap_err();
        assert!(e.to_string().contains("CLOUDEVENTS_QUEUE_CAPACITY"), "{e}");
    }

    #[test]
    fn needs_a_runtime() {
        let e = CloudEventsSink::new(CloudEventsConfig::new("http://127.0.0.1:9/")).unwrap_err();
        assert!(matches!(e, CloudEventsError::NoRuntime), "{e}");
    }

    #[tokio::test]
    async fn closed_after_shutdown() {
        let sink = CloudEventsSink::new(CloudEventsConfig::new("http://127.0.0.1:9/")).unwrap();
        let stats = sink.shutdown(Duration::from_secs(1)).await;
        assert_eq!(stats.queued, 0);
        let ev = Event {
            id: "1".into(),
            event_type: "ccm.worker.running".into(),
            subject: "w".into(),
            time: chrono::Utc::now(),
            data: serde_json::json!({}),
        };
        assert_eq!(sink.publish(ev).await, Err(EventError::Closed));
    }
}
