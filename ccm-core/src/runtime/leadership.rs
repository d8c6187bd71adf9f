//! Leadership of one loop: campaign, keep-alive every TTL/3, stop at once on loss, resign on
//! shutdown.

use super::metrics::Metrics;
use crate::store::{Clock, Fence, LeaderElector, Leadership};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The leadership a loop holds right now (shared by the campaign task and the loop).
#[derive(Debug, Clone)]
pub struct LeaderHandle {
    election: String,
    tx: Arc<watch::Sender<Option<Leadership>>>,
}

impl LeaderHandle {
    /// A handle for `election`, not leading.
    pub fn new(election: impl Into<String>) -> Self {
        let (tx, _rx) = watch::channel(None);
        LeaderHandle {
            election: election.into(),
            tx: Arc::new(tx),
        }
    }

    /// The election's name.
    pub fn election(&self) -> &str {
        &self.election
    }

    /// Whether this process leads now.
    pub fn is_leader(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// The held leadership, if any.
    pub fn current(&self) -> Option<Leadership> {
        self.tx.borrow().clone()
    }

    /// The fence writes must carry, if leading.
    pub fn fence(&self) -> Option<Fence> {
        self.tx.borrow().as_ref().map(|l| l.fence.clone())
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Leadership>> {
        self.tx.subscribe()
    }

    pub(crate) fn set(&self, l: Option<Leadership>) {
        self.tx.send_replace(l);
    }

    /// Forgets the leadership if it is still the term of `fence` (called when a write was
    /// refused by the fence).
    pub(crate) fn lost(&self, fence: &Fence) {
        self.tx.send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|l| &l.fence == fence) {
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

    fn publish(&self, l: Option<Leadership>) {
        self.metrics.set_leader(&self.handle.election, l.is_some());
        self.handle.set(l);
    }

    /// One step: refresh the lease when leading (forgetting leadership at once when that
    /// fails), otherwise try to become leader. Returns whether this process leads afterwards.
    pub async fn tick(&self) -> bool {
        if let Some(l) = self.handle.current() {
            match self.elector.keep_alive(&l).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(election = %self.handle.election, candidate = %self.candidate, error = %e, "leadership lost");
                    self.publish(None);
                }
            }
        }
        match self
            .elector
            .try_campaign(&self.handle.election, &self.candidate, self.ttl)
            .await
        {
            Ok(Some(l)) => {
                tracing::info!(election = %self.handle.election, candidate = %self.candidate, token = l.fence.token, "became leader");
                self.publish(Some(l));
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
            self.publish(None);
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
