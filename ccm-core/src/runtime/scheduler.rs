//! The scheduler loop: binds due PENDING sessions to RUNNING workers and expires the ones whose
//! slot passed, in fenced transactions.

use super::codec;
use super::context::{Commit, Ctx, Write};
use super::leadership::{shutdown_requested, LeaderHandle};
use super::snapshot::{self, StateSnapshot};
use super::RuntimeError;
use crate::events::CcmEvent;
use crate::placement::filter::Requirements;
use crate::placement::Fleet;
use crate::session::{LabletSession, SessionState};
use crate::store::{Fence, Revision, WatchEvent, WatchStream};
use crate::timeslot::Timestamp;
use crate::worker::Worker;
use futures::{FutureExt, StreamExt};
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

struct Tentative {
    session: LabletSession,
    expect: Revision,
    worker: String,
    ports: BTreeMap<String, u16>,
    load: crate::resources::Load,
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
        let fence = self.leader.fence().ok_or_else(|| RuntimeError::NotLeader {
            election: self.leader.election().to_string(),
        })?;
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
        // 1. Expire PENDING sessions whose slot start passed more than the grace ago.
        let mut expiring = Vec::new();
        for s in snap.sessions.values() {
            let v = &s.value;
            if v.state != SessionState::Pending {
                continue;
            }
            if let Some(slot) = v.timeslot {
                if now > slot.expires_at(ctx.settings.pending_grace) {
                    let mut e = v.clone();
                    e.transition(
                        SessionState::Expired,
                        now,
                        format!("not placed by slot start {} + grace", slot.start),
                    )?;
                    expiring.push((e, s.mod_revision));
                }
            }
        }
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
                    writes.push(Write {
                        value: Some(codec::encode(&key, s)?),
                        key,
                        expect: *rev,
                    });
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
        // Sessions expired (or left out because they moved) are not bound in this pass.
        let expired: BTreeSet<&str> = expiring.iter().map(|(s, _)| s.id.as_str()).collect();

        // 2. Due sessions in a deterministic order: slot start (ASAP: created_at), then id.
        let lead = ctx.settings.lead_time;
        let mut due: Vec<&LabletSession> = Vec::new();
        let mut not_due = 0;
        for s in snap.sessions.values() {
            let v = &s.value;
            if v.state != SessionState::Pending || expired.contains(v.id.as_str()) {
                continue;
            }
            if v.due_at(lead).is_none_or(|d| now >= d) {
                due.push(v);
            } else {
                not_due += 1;
            }
        }
        report.not_due = not_due;
        due.sort_by(|a, b| {
            let ka = a.timeslot.map_or(a.created_at, |t| t.start);
            let kb = b.timeslot.map_or(b.created_at, |t| t.start);
            ka.cmp(&kb).then_with(|| a.id.cmp(&b.id))
        });

        // 3. Decide every binding on a working copy of the fleet.
        // A worker named by an undecodable session record has a load nobody can count: it
        // takes no new binding until the record is repaired.
        let workers: Vec<Worker> = snap
            .workers
            .values()
            .filter(|w| !snap.has_unknown_sessions(&w.value.id))
            .map(|w| w.value.clone())
            .collect();
        let mut fleet = Fleet::new(workers, ctx.settings.scoring)
            .map_err(|e| RuntimeError::Config(format!("fleet snapshot: {e}")))?;
        let mut tentative = Vec::new();
        for s in due {
            let Some(def) = snap.definitions.get(&s.definition_id) else {
                report.unschedulable.push((
                    s.id.clone(),
                    format!("definition: {} not found", s.definition_id),
                ));
                continue;
            };
            let req = Requirements::of(def, s.region.as_deref());
            match fleet.place(&req) {
                Ok(choice) => match fleet.commit(&s.id, &choice) {
                    Ok(b) => tentative.push(Tentative {
                        session: s.clone(),
                        expect: snap.sessions.get(&s.id).map_or(0, |v| v.mod_revision),
                        worker: b.worker,
                        ports: b.ports,
                        load: b.load,
                    }),
                    Err(e) => report
                        .unschedulable
                        .push((s.id.clone(), format!("commit: {e}"))),
                },
                Err(u) => {
                    let reason = u
                        .rejected_by
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                        .map_or("no_workers", |(k, _)| k.as_str());
                    report.unschedulable.push((
                        s.id.clone(),
                        format!("{reason}: {}", u.to_string().replace('\n', ";")),
                    ));
                }
            }
        }

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
                    w.ports
                        .restore(&t.session.id, &t.ports)
                        .map_err(|e| RuntimeError::Config(format!("port bookkeeping: {e}")))?;
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
                    writes.push(Write {
                        value: Some(codec::encode(&key, &s)?),
                        key,
                        expect: t.expect,
                    });
                }
                for (id, (w, rev)) in &new_workers {
                    let key = ctx.keys.worker(id);
                    writes.push(Write {
                        value: Some(codec::encode(&key, w)?),
                        key,
                        expect: *rev,
                    });
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
    /// until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let ctx = &self.ctx;
        let interval = chrono::Duration::from_std(ctx.settings.scheduler_interval)
            .unwrap_or_else(|_| chrono::Duration::seconds(30));
        let mut leader_rx = self.leader.subscribe();
        loop {
            // Wait for leadership.
            while self.leader.fence().is_none() {
                tokio::select! {
                    _ = shutdown_requested(&mut shutdown) => return,
                    r = leader_rx.changed() => if r.is_err() { return },
                }
            }
            let fence = self.leader.fence();
            let mut stream: Option<WatchStream> = None;
            'leading: loop {
                if *shutdown.borrow() {
                    return;
                }
                if self.leader.fence() != fence {
                    break 'leading;
                }
                match self.reconcile_once(ctx.clock.now()).await {
                    Ok(r) => {
                        if stream.is_none() {
                            match ctx.state.watch(&ctx.keys.sessions(), r.revision + 1).await {
                                Ok(s) => stream = Some(s),
                                Err(e) => {
                                    tracing::warn!(error = %e, "session watch failed; relying on re-list")
                                }
                            }
                        }
                    }
                    Err(RuntimeError::NotLeader { .. }) => break 'leading,
                    Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
                }
                let next = crate::timeslot::saturating_add(ctx.clock.now(), interval);
                loop {
                    tokio::select! {
                        _ = shutdown_requested(&mut shutdown) => return,
                        r = leader_rx.changed() => {
                            if r.is_err() { return; }
                            if self.leader.fence() != fence { break 'leading; }
                        }
                        _ = ctx.clock.sleep_until(next) => break,
                        ev = next_event(&mut stream) => match ev {
                            Some(Ok(e)) => {
                                // Drain what is already delivered, so a burst of writes costs one pass.
                                let hit = self.is_pending_put(&e) | drain_pending(self, &mut stream);
                                if hit {
                                    break;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "session watch broke; re-listing");
                                stream = None;
                                break;
                            }
                            None => { stream = None; break; }
                        },
                    }
                }
            }
        }
    }

    fn is_pending_put(&self, e: &WatchEvent) -> bool {
        match e {
            WatchEvent::Put(kv) => codec::decode::<LabletSession>(&kv.key, &kv.value)
                .is_ok_and(|s| s.state == SessionState::Pending),
            WatchEvent::Delete { .. } => false,
        }
    }
}

async fn next_event(
    s: &mut Option<WatchStream>,
) -> Option<Result<WatchEvent, crate::store::StoreError>> {
    match s {
        Some(s) => s.next().await,
        None => futures::future::pending().await,
    }
}

/// Consumes the events already delivered; true when one was a PENDING session.
fn drain_pending(sched: &Scheduler, s: &mut Option<WatchStream>) -> bool {
    let Some(stream) = s else { return false };
    let mut found = false;
    while let Some(Some(ev)) = stream.next().now_or_never() {
        match ev {
            Ok(e) => found |= sched.is_pending_put(&e),
            Err(_) => {
                *s = None;
                return true;
            }
        }
    }
    found
}
