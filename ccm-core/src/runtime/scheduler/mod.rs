//! The scheduler loop: binds due PENDING sessions to RUNNING workers and expires the ones whose
//! slot passed, in fenced transactions.

mod decide;

use super::codec;
use super::context::{Commit, Ctx, Write};
use super::driver::{self, PassOutcome, Reconciler};
use super::leadership::LeaderHandle;
use super::snapshot::{self, StateSnapshot};
use super::RuntimeError;
use crate::events::CcmEvent;
use crate::session::{LabletSession, SessionState};
use crate::store::{Fence, Revision, WatchEvent};
use crate::timeslot::Timestamp;
use crate::worker::Worker;
use decide::Tentative;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;

/// One session bound in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Session id.
    pub session: String,
    /// Worker id.
    pub worker: String,
    /// Ports allocated, by name.
    pub ports: BTreeMap<String, u16>,
}

/// What one scheduler pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Store revision of the last listing.
    pub revision: Revision,
    /// Sessions bound.
    pub bound: Vec<Binding>,
    /// Sessions expired (slot start passed more than the grace ago).
    pub expired: Vec<String>,
    /// Due sessions that fit nowhere: (session id, why).
    pub unschedulable: Vec<(String, String)>,
    /// PENDING sessions not due yet.
    pub not_due: usize,
    /// Transactions that lost a compare and were retried after a re-read.
    pub conflicts: u32,
    /// Transactions committed.
    pub transactions: u32,
    /// Sessions left out of a batch because their record changed since it was read (the rest
    /// of the batch was committed; the next pass re-reads them): (session id, why).
    pub skipped: Vec<(String, String)>,
}

/// How one attempt at a pass ended.
enum Outcome {
    Done,
    /// A worker (or an unnamed key) changed since the read: re-read and retry.
    Conflict,
    /// The store refused a transaction as too large; the limit is halved: retry.
    TooLarge,
}

/// The scheduler: one pass is [`Scheduler::reconcile_once`]; [`Scheduler::run`] is the timed,
/// watch-driven loop.
pub struct Scheduler {
    ctx: Arc<Ctx>,
    leader: LeaderHandle,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("leader", &self.leader.is_leader())
            .finish()
    }
}

impl Scheduler {
    pub(crate) fn new(ctx: Arc<Ctx>, leader: LeaderHandle) -> Self {
        Scheduler { ctx, leader }
    }

    /// The leadership this loop runs under.
    pub fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    /// One pass at `now`: re-list, expire, bind every due session that fits, commit in fenced
    /// batches; on a conflict re-read and retry (up to `max_conflict_retries`).
    /// Fails with [`RuntimeError::NotLeader`] without writing when this process does not lead,
    /// or when the fence refused a write (leadership is then forgotten at once).
    pub async fn reconcile_once(&self, now: Timestamp) -> Result<SchedulerReport, RuntimeError> {
        let fence = self.leader.require()?;
        let started = std::time::Instant::now();
        let mut report = SchedulerReport::default();
        let mut attempt = 0;
        loop {
            let snap = snapshot::load(&self.ctx).await?;
            report.revision = snap.revision;
            report.unschedulable.clear();
            match self.pass(&fence, &snap, now, &mut report).await {
                Ok(Outcome::Done) => break,
                // Bounded: the limit halves every time, down to 3 (then the store's refusal is
                // an error naming its limit).
                Ok(Outcome::TooLarge) => continue,
                Ok(Outcome::Conflict) => {
                    report.conflicts += 1;
                    attempt += 1;
                    if attempt > self.ctx.settings.max_conflict_retries {
                        tracing::warn!(
                            attempts = attempt,
                            "scheduler gave up after conflicts; next pass retries"
                        );
                        break;
                    }
                }
                Err(e) => {
                    if matches!(e, RuntimeError::NotLeader { .. }) {
                        self.leader.lost(&fence);
                    }
                    return Err(e);
                }
            }
        }
        for (_, why) in &report.unschedulable {
            let reason = why.split(':').next().unwrap_or(why);
            self.ctx.metrics.unschedulable(reason);
        }
        self.ctx.metrics.scheduler_pass(started.elapsed());
        Ok(report)
    }

    /// One attempt: expire, decide, commit in batches. A batch whose only moved keys are
    /// sessions is committed without them (they are reported in `skipped`), so one bad or
    /// busy record never fails the whole pass.
    async fn pass(
        &self,
        fence: &Fence,
        snap: &StateSnapshot,
        now: Timestamp,
        report: &mut SchedulerReport,
    ) -> Result<Outcome, RuntimeError> {
        let ctx = &self.ctx;
        let max = ctx.txn_limit();
        let decision = decide::decide(snap, now, &ctx.settings)?;
        let expiring = decision.expire;
        for chunk in expiring.chunks(max - 1) {
            let mut dropped: BTreeSet<String> = BTreeSet::new();
            loop {
                let live: Vec<&(LabletSession, Revision)> = chunk
                    .iter()
                    .filter(|(s, _)| !dropped.contains(&s.id))
                    .collect();
                if live.is_empty() {
                    break;
                }
                let mut writes = Vec::with_capacity(live.len());
                for (s, rev) in &live {
                    let key = ctx.keys.session(&s.id);
                    writes.push(Write::put(key, s, *rev)?);
                }
                match ctx.commit(fence, writes).await? {
                    Commit::Conflict { changed } => {
                        let Some(ids) = self.changed_sessions_only(&changed) else {
                            return Ok(Outcome::Conflict);
                        };
                        report.conflicts += 1;
                        for id in ids {
                            report
                                .skipped
                                .push((id.clone(), "changed since it was read".into()));
                            dropped.insert(id);
                        }
                    }
                    Commit::TooLarge => return Ok(Outcome::TooLarge),
                    Commit::Done(_) => {
                        report.transactions += 1;
                        ctx.metrics.expired(live.len() as u64);
                        for (s, _) in live {
                            report.expired.push(s.id.clone());
                            ctx.emit(CcmEvent::session(s), now).await;
                        }
                        break;
                    }
                }
            }
        }
        report.not_due = decision.not_due;
        report.unschedulable.extend(decision.unschedulable);
        let tentative = decision.bind;

        // 4. Commit in batches that fit the transaction limit (sessions + workers + fence).
        let mut committed: BTreeMap<String, (Worker, Revision)> = BTreeMap::new();
        let mut start = 0;
        while start < tentative.len() {
            let mut workers: BTreeSet<&str> = BTreeSet::new();
            let mut end = start;
            while end < tentative.len() {
                let extra = usize::from(!workers.contains(tentative[end].worker.as_str()));
                if (end - start) + 1 + workers.len() + extra + 1 > max {
                    break;
                }
                workers.insert(tentative[end].worker.as_str());
                end += 1;
            }
            if end == start {
                return Err(RuntimeError::Config(format!(
                    "max_txn_ops {max} is too small for one binding (needs 3)"
                )));
            }
            let whole = &tentative[start..end];
            let mut dropped: BTreeSet<String> = BTreeSet::new();
            loop {
                let batch: Vec<&Tentative> = whole
                    .iter()
                    .filter(|t| !dropped.contains(&t.session.id))
                    .collect();
                if batch.is_empty() {
                    break;
                }
                let mut writes = Vec::with_capacity(batch.len() + workers.len());
                let mut new_workers: BTreeMap<String, (Worker, Revision)> = BTreeMap::new();
                let mut scheduled: Vec<LabletSession> = Vec::with_capacity(batch.len());
                for t in &batch {
                    let (w, _) = match new_workers.get_mut(&t.worker) {
                        Some(x) => x,
                        None => {
                            let base = match committed.get(&t.worker) {
                                Some(x) => x.clone(),
                                None => match snap.workers.get(&t.worker) {
                                    Some(v) => (v.value.clone(), v.mod_revision),
                                    None => continue,
                                },
                            };
                            new_workers.entry(t.worker.clone()).or_insert(base)
                        }
                    };
                    w.allocated = w.allocated.saturating_add(&t.load);
                    w.ports.restore(&t.session.id, &t.ports).map_err(|e| {
                        RuntimeError::Inconsistent(format!("port bookkeeping: {e}"))
                    })?;
                    w.last_activity_at = Some(now);
                    let mut s = t.session.clone();
                    s.transition(
                        SessionState::Scheduled,
                        now,
                        format!("bound to {}", t.worker),
                    )?;
                    s.worker_id = Some(t.worker.clone());
                    s.allocated_ports = t.ports.clone();
                    scheduled.push(s.clone());
                    let key = ctx.keys.session(&s.id);
                    writes.push(Write::put(key, &s, t.expect)?);
                }
                for (id, (w, rev)) in &new_workers {
                    let key = ctx.keys.worker(id);
                    writes.push(Write::put(key, w, *rev)?);
                }
                match ctx.commit(fence, writes).await? {
                    Commit::Conflict { changed } => {
                        // Only sessions moved: leave them out and commit the rest of the
                        // batch (the workers' revisions still hold). A worker that moved
                        // means a re-read.
                        let Some(ids) = self.changed_sessions_only(&changed) else {
                            return Ok(Outcome::Conflict);
                        };
                        report.conflicts += 1;
                        for id in ids {
                            tracing::warn!(session = %id, "session changed since it was read; left out of this batch");
                            report
                                .skipped
                                .push((id.clone(), "changed since it was read".into()));
                            dropped.insert(id);
                        }
                    }
                    Commit::TooLarge => return Ok(Outcome::TooLarge),
                    Commit::Done(rev) => {
                        report.transactions += 1;
                        for (id, (w, _)) in new_workers {
                            committed.insert(id, (w, rev));
                        }
                        ctx.metrics.bound(batch.len() as u64);
                        for t in &batch {
                            report.bound.push(Binding {
                                session: t.session.id.clone(),
                                worker: t.worker.clone(),
                                ports: t.ports.clone(),
                            });
                        }
                        for s in &scheduled {
                            ctx.emit(CcmEvent::session(s), now).await;
                        }
                        break;
                    }
                }
            }
            start = end;
        }
        Ok(Outcome::Done)
    }

    /// The session ids among `changed` keys, when every changed key is a session (and at
    /// least one is); `None` means something else moved (a worker, or the store did not say).
    fn changed_sessions_only(&self, changed: &[String]) -> Option<Vec<String>> {
        let ids: Vec<String> = changed
            .iter()
            .map(|k| self.ctx.keys.id_of_session(k).map(str::to_string))
            .collect::<Option<_>>()?;
        (!ids.is_empty()).then_some(ids)
    }

    /// Runs while this process leads the scheduler: a pass at once, then on every watch event
    /// of a PENDING session and every `scheduler_interval` (the re-list catches lost events),
    /// until `shutdown` turns true (see [`super::driver`]).
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        driver::drive(self, shutdown).await;
    }

    fn is_pending_put(&self, e: &WatchEvent) -> bool {
        match e {
            WatchEvent::Put(kv) => codec::decode::<LabletSession>(&kv.key, &kv.value)
                .is_ok_and(|s| s.state == SessionState::Pending),
            WatchEvent::Delete { .. } => false,
        }
    }
}

impl Reconciler for Scheduler {
    fn name(&self) -> &'static str {
        super::SCHEDULER
    }

    fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    fn interval(&self) -> chrono::Duration {
        driver::interval_of(
            self.ctx.settings.scheduler_interval,
            chrono::Duration::seconds(30),
        )
    }

    fn watch_prefixes(&self) -> Vec<String> {
        vec![self.ctx.keys.sessions()]
    }

    fn wakes(&self, event: &WatchEvent) -> bool {
        self.is_pending_put(event)
    }

    async fn pass(&self, now: Timestamp) -> Result<PassOutcome, RuntimeError> {
        let r = self.reconcile_once(now).await?;
        Ok(PassOutcome {
            revision: Some(r.revision),
        })
    }
}
