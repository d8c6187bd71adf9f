//! The one leader-gated driver every loop runs under (kube-runtime's controller shape).
//!
//! A loop says what one pass is ([`Reconciler::pass`]), how often to re-list
//! ([`Reconciler::interval`]) and which key prefixes wake it early
//! ([`Reconciler::watch_prefixes`], [`Reconciler::wakes`]); [`drive`] does the rest:
//!
//! 1. waits until this process leads the loop's election;
//! 2. runs a pass at once, then opens a watch of the prefixes from the revision the pass read;
//! 3. runs the next pass when a watched change calls for one (a burst of events already
//!    delivered costs one pass) or when the interval ran out (the re-list catches lost
//!    events), whichever comes first;
//! 4. stops acting when the leadership term changes or a write is refused by the fence
//!    ([`Reconciler::on_leadership_lost`], then back to 1), and returns on shutdown.
//!
//! A failed pass is logged (`"{name} pass failed"`) and retried on the next wake-up. A pass
//! still running after `max_pass_duration` is stalled: the driver returns, which the runtime
//! treats as a dead loop (it resigns every leadership and stops).

use std::future::Future;

use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::context::Ctx;
use super::leadership::{shutdown_requested, LeaderHandle};
use super::RuntimeError;
use crate::store::{Clock, Revision, StateStore, StoreError, WatchEvent, WatchStream};
use crate::timeslot::Timestamp;

/// What a pass reports to the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PassOutcome {
    /// The store revision the pass read (the watch starts after it); `None` when the pass read
    /// no listing (then no watch is opened).
    pub revision: Option<Revision>,
}

/// One reconcile loop, as the driver sees it.
pub(crate) trait Reconciler: Send + Sync {
    /// The loop's name, for logs.
    fn name(&self) -> &'static str;
    /// The leadership that gates the loop.
    fn leader(&self) -> &LeaderHandle;
    /// What the loop's passes run on (its clock times passes and intervals; watches are opened
    /// on its state store).
    fn ctx(&self) -> &Ctx;
    /// The clock passes and intervals run on.
    fn clock(&self) -> &dyn Clock {
        self.ctx().clock.as_ref()
    }
    /// The state store the watches are opened on.
    fn state(&self) -> &dyn StateStore {
        self.ctx().state.as_ref()
    }
    /// The longest wait between two passes (the re-list).
    fn interval(&self) -> chrono::Duration;
    /// Key prefixes whose changes may call for a pass before the interval ends (none: the
    /// loop runs on its interval only).
    fn watch_prefixes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether `event` on a watched prefix calls for a pass now.
    fn wakes(&self, _event: &WatchEvent) -> bool {
        true
    }
    /// One pass at `now`.
    fn pass(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<PassOutcome, RuntimeError>> + Send;
    /// Called whenever this process does not (or no longer) lead, and when the driver returns:
    /// work started under a past term stops here.
    fn on_leadership_lost(&self) {}
}

/// Interval `d`, or `fallback` when `d` does not fit a [`chrono::Duration`].
pub(crate) fn interval_of(d: std::time::Duration, fallback: chrono::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(fallback)
}

/// Runs `r` while this process leads its election, until `shutdown` turns true.
pub(crate) async fn drive<R: Reconciler>(r: &R, mut shutdown: watch::Receiver<bool>) {
    lead_while_elected(r, &mut shutdown).await;
    r.on_leadership_lost();
}

async fn lead_while_elected<R: Reconciler>(r: &R, shutdown: &mut watch::Receiver<bool>) {
    let leader = r.leader();
    let mut leader_rx = leader.subscribe();
    let prefixes = r.watch_prefixes();
    loop {
        // Wait for leadership.
        while leader.fence().is_none() {
            r.on_leadership_lost();
            tokio::select! {
                _ = shutdown_requested(shutdown) => return,
                changed = leader_rx.changed() => if changed.is_err() { return },
            }
        }
        let Some(fence) = leader.fence() else {
            continue;
        };
        let mut stream: Option<WatchStream> = None;
        'leading: loop {
            if *shutdown.borrow() {
                return;
            }
            if leader.fence().as_ref() != Some(&fence) {
                break 'leading;
            }
            let now = r.clock().now();
            let deadline = crate::timeslot::saturating_add(now, r.ctx().settings.max_pass_duration);
            let passed = tokio::select! {
                res = r.pass(now) => Some(res),
                _ = r.clock().sleep_until(deadline) => None,
            };
            let Some(passed) = passed else {
                // A stalled pass: end the loop, so the runtime resigns every leadership and a
                // standby takes over (see `Runtime::run`).
                tracing::error!(loop_name = r.name(), limit = %r.ctx().settings.max_pass_duration, "{} pass stalled; the loop ends", r.name());
                return;
            };
            match passed {
                Ok(outcome) => {
                    if stream.is_none() && !prefixes.is_empty() {
                        if let Some(rev) = outcome.revision {
                            stream = open_watch(r, &prefixes, rev.saturating_add(1)).await;
                        }
                    }
                }
                Err(RuntimeError::NotLeader { .. }) => {
                    // The fence refused a write: this term is over here.
                    leader.lost(&fence);
                    break 'leading;
                }
                Err(e) => {
                    tracing::warn!(loop_name = r.name(), error = %e, "{} pass failed", r.name())
                }
            }
            let next = crate::timeslot::saturating_add(r.clock().now(), r.interval());
            loop {
                tokio::select! {
                    _ = shutdown_requested(shutdown) => return,
                    changed = leader_rx.changed() => {
                        if changed.is_err() { return; }
                        if leader.fence().as_ref() != Some(&fence) { break 'leading; }
                    }
                    _ = r.clock().sleep_until(next) => break,
                    ev = next_event(&mut stream) => match ev {
                        Some(Ok(e)) => {
                            // Drain what is already delivered, so a burst of writes costs one pass.
                            let hit = r.wakes(&e) | drain(r, &mut stream);
                            if hit {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(loop_name = r.name(), error = %e, "watch broke; re-listing");
                            stream = None;
                            break;
                        }
                        None => {
                            stream = None;
                            break;
                        }
                    },
                }
            }
        }
        r.on_leadership_lost();
    }
}

/// One stream of every prefix's changes from `from`; `None` (interval only) when a watch could
/// not be opened.
async fn open_watch<R: Reconciler>(
    r: &R,
    prefixes: &[String],
    from: Revision,
) -> Option<WatchStream> {
    let mut streams = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        match r.state().watch(p, from).await {
            Ok(s) => streams.push(s),
            Err(e) => {
                tracing::warn!(loop_name = r.name(), prefix = %p, error = %e, "watch failed; relying on re-list");
                return None;
            }
        }
    }
    match streams.len() {
        1 => streams.pop(),
        _ => Some(futures::stream::select_all(streams).boxed()),
    }
}

async fn next_event(s: &mut Option<WatchStream>) -> Option<Result<WatchEvent, StoreError>> {
    match s {
        Some(s) => s.next().await,
        None => futures::future::pending().await,
    }
}

/// Consumes the events already delivered; true when one calls for a pass (or the stream broke).
fn drain<R: Reconciler>(r: &R, s: &mut Option<WatchStream>) -> bool {
    let Some(stream) = s else { return false };
    let mut found = false;
    while let Some(Some(ev)) = stream.next().now_or_never() {
        match ev {
            Ok(e) => found |= r.wakes(&e),
            Err(_) => {
                *s = None;
                return true;
            }
        }
    }
    found
}
