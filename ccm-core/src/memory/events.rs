//! In-memory events backend.
//!
//! * [`RecordingSink`] keeps every published event (tests, `ccm demo`).
//! * [`LogSink`] writes each event to the log via `tracing` — the default when no
//!   `CLOUDEVENTS_SINK_URL` is configured (events are then only logged and audited).
//! * [`FanoutSink`] hands each event to several sinks (e.g. log + HTTP).
//!
//! ```
//! use ccm_core::memory::events::RecordingSink;
//! use ccm_core::events::CcmEvent;
//! use ccm_core::session::LabletSession;
//! use ccm_core::store::EventSink;
//! use chrono::Utc;
//!
//! # tokio_test_block_on(async {
//! let sink = RecordingSink::new();
//! let s = LabletSession::new("s-1", "def-1", "1.0.0", "alice", None, Utc::now());
//! sink.publish(CcmEvent::session(&s).to_event(Utc::now())).await.unwrap();
//! assert_eq!(sink.types(), vec!["ccm.lablet.session.pending".to_string()]);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use crate::store::events::{Event, EventError, EventSink};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Keeps every published event in memory, in publish order.
///
/// With a capacity, it behaves like a full queue once that many events are held: further
/// events are refused with [`EventError::Dropped`] and counted. After [`RecordingSink::close`]
/// every publish answers [`EventError::Closed`].
#[derive(Debug, Default)]
pub struct RecordingSink {
    inner: Mutex<Recorded>,
    closed: AtomicBool,
    capacity: Option<usize>,
}

#[derive(Debug, Default)]
struct Recorded {
    events: Vec<Event>,
    dropped: u64,
}

impl RecordingSink {
    /// An unbounded recorder.
    pub fn new() -> Self {
        RecordingSink::default()
    }

    /// A recorder that holds at most `capacity` events and drops (and counts) the rest.
    pub fn with_capacity(capacity: usize) -> Self {
        RecordingSink {
            capacity: Some(capacity),
            ..RecordingSink::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panic while holding the lock leaves a Vec that is still valid: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of every recorded event.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Removes and returns every recorded event.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.lock().events)
    }

    /// The recorded events' types, in order.
    pub fn types(&self) -> Vec<String> {
        self.lock()
            .events
            .iter()
            .map(|e| e.event_type.clone())
            .collect()
    }

    /// The recorded events about `subject`, in order.
    pub fn for_subject(&self, subject: &str) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .filter(|e| e.subject == subject)
            .cloned()
            .collect()
    }

    /// Number of recorded events.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events refused because the capacity was reached.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Refuses every later publish with [`EventError::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn publish(&self, event: Event) -> Result<(), EventError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(EventError::Closed);
        }
        let mut inner = self.lock();
        if self.capacity.is_some_and(|c| inner.events.len() >= c) {
            inner.dropped += 1;
            return Err(EventError::Dropped(event.id));
        }
        inner.events.push(event);
        Ok(())
    }
}

/// Logs each event at INFO on target `ccm::events`; never fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl LogSink {
    /// The log sink.
    pub fn new() -> Self {
        LogSink
    }
}

#[async_trait]
impl EventSink for LogSink {
    async fn publish(&self, event: Event) -> Result<(), EventError> {
        tracing::info!(
            target: "ccm::events",
            id = %event.id,
            r#type = %event.event_type,
            subject = %event.subject,
            time = %event.time.to_rfc3339(),
            data = %event.data,
            "event"
        );
        Ok(())
    }
}

/// Hands each event to every inner sink, in order.
///
/// Every sink gets the event even when an earlier one fails; the first error is returned.
#[derive(Clone, Default)]
pub struct FanoutSink {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for FanoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSink")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl FanoutSink {
    /// A fan-out over `sinks`.
    pub fn new(sinks: Vec<Arc<dyn EventSink>>) -> Self {
        FanoutSink { sinks }
    }

    /// Adds a sink.
    pub fn with(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Number of inner sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// True when there is no inner sink.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

#[async_trait]
impl EventSink for FanoutSink {
    async fn publish(&self, event: Event) -> Result<(), EventError> {
        let mut first_err = None;
        for sink in &self.sinks {
            if let Err(e) = sink.publish(event.clone()).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::CcmEvent;
    use crate::session::{LabletSession, SessionState};
    use chrono::{TimeZone, Utc};

    fn events(n: usize) -> Vec<Event> {
        let t0 = Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap();
        let mut s = LabletSession::new("s-1", "def-1", "1.0.0", "alice", None, t0);
        let mut out = vec![CcmEvent::session(&s).to_event(t0)];
        let path = [
            SessionState::Scheduled,
            SessionState::Instantiating,
            SessionState::Ready,
            SessionState::Running,
        ];
        for to in path.iter().take(n.saturating_sub(1)) {
            s.transition(*to, t0, "").unwrap();
            out.push(CcmEvent::session(&s).to_event(t0));
        }
        out
    }

    #[tokio::test]
    async fn recording_keeps_order_and_counts_drops() {
        let sink = RecordingSink::with_capacity(3);
        let evs = events(5);
        for e in &evs[..3] {
            sink.publish(e.clone()).await.unwrap();
        }
        let err = sink.publish(evs[3].clone()).await.unwrap_err();
        assert_eq!(err, EventError::Dropped(evs[3].id.clone()));
        assert_eq!(sink.dropped(), 1);
        assert_eq!(sink.events(), evs[..3].to_vec());
        assert_eq!(
            sink.types(),
            vec![
                "ccm.lablet.session.pending",
                "ccm.lablet.session.scheduled",
                "ccm.lablet.session.instantiating"
            ]
        );
        assert_eq!(sink.for_subject("s-1").len(), 3);
        assert!(sink.for_subject("s-2").is_empty());
        assert_eq!(sink.take().len(), 3);
        assert!(sink.is_empty());
        sink.close();
        assert_eq!(sink.publish(evs[4].clone()).await, Err(EventError::Closed));
    }

    #[tokio::test]
    async fn fanout_delivers_to_all_and_reports_first_error() {
        let a = Arc::new(RecordingSink::new());
        let full = Arc::new(RecordingSink::with_capacity(0));
        let b = Arc::new(RecordingSink::new());
        let fan = FanoutSink::new(vec![a.clone(), full.clone()])
            .with(Arc::new(LogSink::new()))
            .with(b.clone());
        assert_eq!(fan.len(), 4);
        let ev = events(1).remove(0);
        let err = fan.publish(ev.clone()).await.unwrap_err();
        assert_eq!(err, EventError::Dropped(ev.id.clone()));
        assert_eq!(a.events(), vec![ev.clone()]);
        assert_eq!(b.events(), vec![ev]);
        assert_eq!(full.dropped(), 1);
        assert!(FanoutSink::default()
            .publish(events(1).remove(0))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn log_sink_never_fails() {
        for e in events(5) {
            assert_eq!(LogSink::new().publish(e).await, Ok(()));
        }
    }
}
