//! Leadership of one loop: campaign, keep-alive every TTL/3, stop at once on loss, resign on
//! shutdown.
//!
//! A held leadership is trusted only until a local deadline: TTL − margin after the last
//! keep-alive (or campaign) that succeeded, measured from when it was *sent*. A keep-alive
//! that stalls (a partitioned etcd, a request timeout longer than the TTL) therefore stops this
//! process from acting before the lease can have expired on the server and a standby taken
//! over — it never has to wait for the keep-alive to fail.

use super::metrics::Metrics;
use super::RuntimeError;
use crate::store::{Clock, Fence, LeaderElector, Leadership};
use crate::timeslot::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A leadership and until when this process may act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    leadership: Leadership,
    valid_until: Timestamp,
}

/// The part of the TTL a leader gives up at the end of every lease: a fifth, at least 1 ms.
pub fn lease_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(1))
}

/// The leadership a loop holds right now (shared by the campaign task and the loop).
#[derive(Clone)]
pub struct LeaderHandle {
    election: String,
    clock: Arc<dyn Clock>,
    tx: Arc<watch::Sender<Option<Held>>>,
}

impl std::fmt::Debug for LeaderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderHandle")
            .field("election", &self.election)
            .field("leading", &self.is_leader())
            .finish()
    }
}

impl LeaderHandle {
    /// A handle for `election`, not leading; its deadlines are read on `clock`.
    pub fn new(election: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        let (tx, _rx) = watch::channel(None);
        LeaderHandle {
            election: election.into(),
            clock,
            tx: Arc::new(tx),
        }
    }

    /// The election's name.
    pub fn election(&self) -> &str {
        &self.election
    }

    /// Whether this process leads now (held, and within its local deadline).
    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    /// The held leadership, if any — also past its local deadline (the campaign still tries
    /// to keep it alive).
    pub fn current(&self) -> Option<Leadership> {
        self.tx.borrow().as_ref().map(|h| h.leadership.clone())
    }

    /// Whether a leadership is held but its local deadline passed (a keep-alive is overdue).
    pub fn lapsed(&self) -> bool {
        let now = self.clock.now();
        self.tx
            .borrow()
            .as_ref()
            .is_some_and(|h| now >= h.valid_until)
    }

    /// The fence writes must carry, if leading: `None` also once the local deadline passed.
    pub fn fence(&self) -> Option<Fence> {
        let now = self.clock.now();
        self.tx
            .borrow()
            .as_ref()
            .filter(|h| now < h.valid_until)
            .map(|h| h.leadership.fence.clone())
    }

    /// Whether `fence` is still this process's valid fence (checked right before a call
    /// outside the store — a cloud or CML call — that no fenced write can guard).
    pub fn holds(&self, fence: &Fence) -> bool {
        self.fence().as_ref() == Some(fence)
    }

    /// The fence to write with, or [`RuntimeError::NotLeader`] (not leading, or past the
    /// local deadline).
    pub(crate) fn require(&self) -> Result<Fence, RuntimeError> {
        self.fence().ok_or_else(|| self.not_leader())
    }

    /// `Ok` while `fence` is still this process's valid fence, else
    /// [`RuntimeError::NotLeader`] (see [`LeaderHandle::holds`]).
    pub(crate) fn require_holds(&self, fence: &Fence) -> Result<(), RuntimeError> {
        if self.holds(fence) {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    fn not_leader(&self) -> RuntimeError {
        RuntimeError::NotLeader {
            election: self.election.clone(),
        }
    }

    /// Notified on every change (also on every successful keep-alive, which moves the
    /// deadline).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Held>> {
        self.tx.subscribe()
    }

    pub(crate) fn set(&self, l: Option<Leadership>, valid_until: Timestamp) {
        self.tx.send_replace(l.map(|leadership| Held {
            leadership,
            valid_until,
        }));
    }

    /// Forgets the leadership if it is still the term of `fence` (called when a write was
    /// refused by the fence). A lapsed leadership is left to the campaign: its keep-alive
    /// either renews it (the loops resume) or fails (it is forgotten then).
    pub(crate) fn lost(&self, fence: &Fence) {
        let now = self.clock.now();
        self.tx.send_if_modified(|cur| {
            if cur
                .as_ref()
                .is_some_and(|h| &h.leadership.fence == fence && now < h.valid_until)
            {
                *cur = None;
                true
            } else {
                false
            }
        });
    }
}

/// Campaigns for one election and keeps the lease alive.
pub struct Campaigner {
    elector: Arc<dyn LeaderElector>,
    clock: Arc<dyn Clock>,
    handle: LeaderHandle,
    candidate: String,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Campaigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaigner")
            .field("election", &self.handle.election)
            .field("candidate", &self.candidate)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Campaigner {
    /// A campaigner publishing into `handle`.
    pub fn new(
        elector: Arc<dyn LeaderElector>,
        clock: Arc<dyn Clock>,
        handle: LeaderHandle,
        candidate: impl Into<String>,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Campaigner {
            elector,
            clock,
            handle,
            candidate: candidate.into(),
            ttl,
            metrics,
        }
    }

    /// The handle this campaigner updates.
    pub fn handle(&self) -> &LeaderHandle {
        &self.handle
    }

    /// Publishes `l`, trusted until TTL − margin after `sent` (when the request that
    /// confirmed it was sent).
    fn publish(&self, l: Option<Leadership>, sent: Timestamp) {
        self.metrics.set_leader(&self.handle.election, l.is_some());
        let margin = lease_margin(self.ttl);
        let trust = chrono::Duration::from_std(self.ttl.saturating_sub(margin))
            .unwrap_or(chrono::Duration::zero());
        self.handle
            .set(l, crate::timeslot::saturating_add(sent, trust));
    }

    /// One step: refresh the lease when leading (forgetting leadership at once when that
    /// fails), otherwise try to become leader. Returns whether this process leads afterwards.
    pub async fn tick(&self) -> bool {
        if let Some(l) = self.handle.current() {
            let sent = self.clock.now();
            match self.elector.keep_alive(&l).await {
                Ok(()) => {
                    self.publish(Some(l), sent);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(election = %self.handle.election, candidate = %self.candidate, error = %e, "leadership lost");
                    self.publish(None, sent);
                }
            }
        }
        let sent = self.clock.now();
        match self
            .elector
            .try_campaign(&self.handle.election, &self.candidate, self.ttl)
            .await
        {
            Ok(Some(l)) => {
                tracing::info!(election = %self.handle.election, candidate = %self.candidate, token = l.fence.token, "became leader");
                self.publish(Some(l), sent);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(election = %self.handle.election, error = %e, "campaign failed");
                false
            }
        }
    }

    /// Gives leadership up (revokes the lease) so a standby takes over at once.
    pub async fn resign(&self) {
        if let Some(l) = self.handle.current() {
            self.publish(None, self.clock.now());
            if let Err(e) = self.elector.resign(&l).await {
                tracing::warn!(election = %self.handle.election, error = %e, "resign failed");
            } else {
                tracing::info!(election = %self.handle.election, candidate = %self.candidate, "resigned");
            }
        }
    }

    /// Campaigns and keeps alive every TTL/3 until `shutdown` turns true, then resigns.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let every = chrono::Duration::from_std((self.ttl / 3).max(Duration::from_millis(1)))
            .unwrap_or_else(|_| chrono::Duration::seconds(5));
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.tick().await;
            let next = crate::timeslot::saturating_add(self.clock.now(), every);
            tokio::select! {
                _ = self.clock.sleep_until(next) => {}
                r = shutdown.changed() => { if r.is_err() { break; } }
            }
        }
        self.resign().await;
    }
}

/// Waits until `shutdown` is true (or its sender is gone).
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
