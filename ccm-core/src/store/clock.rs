//! Time, always injectable: the real clock and a virtual one that tests and `ccm demo` advance.

use crate::timeslot::Timestamp;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A source of `now` and of sleeping until a time.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Returns once `now() >= t`.
    async fn sleep_until(&self, t: Timestamp);
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
    async fn sleep_until(&self, t: Timestamp) {
        let d = (t - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(d).await;
    }
}

/// A clock that only moves when told to; sleepers wake when it passes their deadline.
///
/// ```
/// use ccm_core::store::{Clock, VirtualClock};
/// use chrono::{Duration, TimeZone, Utc};
/// let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// let c = VirtualClock::new(t0);
/// c.advance(Duration::minutes(5));
/// assert_eq!(c.now(), t0 + Duration::minutes(5));
/// ```
#[derive(Debug, Clone)]
pub struct VirtualClock {
    inner: Arc<Mutex<Timestamp>>,
    tx: Arc<watch::Sender<Timestamp>>,
}

impl VirtualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        let (tx, _rx) = watch::channel(start);
        VirtualClock {
            inner: Arc::new(Mutex::new(start)),
            tx: Arc::new(tx),
        }
    }

    /// Moves time forward by `d` (never backwards).
    pub fn advance(&self, d: chrono::Duration) {
        let now = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if d > chrono::Duration::zero() {
                *g += d;
            }
            *g
        };
        self.tx.send_replace(now);
    }

    /// Sets the time to `t` if it is later than now.
    pub fn set(&self, t: Timestamp) {
        let now = self.now();
        if t > now {
            self.advance(t - now);
        }
    }
}

#[async_trait]
impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    async fn sleep_until(&self, t: Timestamp) {
        let mut rx = self.tx.subscribe();
        loop {
            if *rx.borrow_and_update() >= t {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
