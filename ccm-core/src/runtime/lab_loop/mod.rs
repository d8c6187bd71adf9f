//! The lab loop: moves bound sessions through their lab's life on the worker's CML, beside
//! the scheduler and the controller, leader-gated and fenced like them.
//!
//! SCHEDULED → INSTANTIATING at `slot start − instantiation` (ASAP at once) → the lab is
//! acquired (a lab already imported under the session's title is adopted, a wiped lab of the
//! same definition on the worker is reused, else the definition's YAML — hash verified, ports
//! filled in by [`crate::labyaml::rewrite_ports`] — is imported) → port tags synced, started →
//! READY once every node booted → RUNNING at slot start → STOPPING at slot end (or
//! `max_duration_minutes`), capacity and ports released in the same fenced write → stop, wipe
//! (kept for reuse; deleted beyond [`RuntimeSettings::lab_keep_per_worker`]) → STOPPED →
//! ARCHIVED.
//!
//! Each pass: one listing of the state, [`needs`] says what to ask CML (one listing per worker,
//! the session's own lab), [`decide`] (pure) picks the action, the action is carried out and
//! its progress ([`crate::session::LabProgress`]) written into the session record, fenced and
//! guarded by the record's revision. Imports (the one slow call, ~90 s) run as tasks of their
//! own; everything else in the pass. A failed step is retried after a back-off; past
//! [`RuntimeSettings::lab_max_attempts`] the session is requeued (still SCHEDULED) or ended
//! (TERMINATED), with the reason, an event and a metric.

mod decide;

pub use decide::{decide, end_of_use, instantiate_at, needs, LabAction, LabsKnown, Needs};

use super::codec;
use super::context::{Commit, Ctx, Write};
use super::driver::{self, PassOutcome, Reconciler};
use super::leadership::LeaderHandle;
use super::settings::RuntimeSettings;
use super::snapshot::{self, StateSnapshot};
use super::RuntimeError;
use crate::definition::LabletDefinition;
use crate::events::CcmEvent;
use crate::session::{LabProgress, LabStep, LabletSession, SessionState};
use crate::store::{
    ArtifactStore, Fence, LabDetails, LabEndpoint, LabError, LabId, LabRuntime, LabSummary, NodeId,
    Revision,
};
use crate::timeslot::Timestamp;
use crate::worker::Worker;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What one lab loop pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabReport {
    /// Store revision of the listing.
    pub revision: Revision,
    /// Session transitions written: (session, new state).
    pub transitions: Vec<(String, SessionState)>,
    /// Sessions whose import started.
    pub imports: Vec<String>,
    /// Wiped labs reused: (session, lab id).
    pub reused: Vec<(String, String)>,
    /// Labs found again by title: (session, lab id).
    pub adopted: Vec<(String, String)>,
    /// Failed steps (retried after a back-off): (session, why).
    pub failures: Vec<(String, String)>,
    /// Sessions given up after the retries: (session, why).
    pub gave_up: Vec<(String, String)>,
    /// Writes that lost a compare (retried next pass).
    pub conflicts: u32,
    /// Imports still running after the pass.
    pub in_flight: usize,
}

#[derive(Default)]
struct InFlight {
    /// The fence token the tasks run under.
    token: Option<Revision>,
    tasks: BTreeMap<String, JoinHandle<()>>,
}

impl InFlight {
    fn abort_all(&mut self) {
        for (_, t) in std::mem::take(&mut self.tasks) {
            t.abort();
        }
    }
}

/// The lab loop: one pass is [`LabLoop::reconcile_once`]; [`LabLoop::run`] repeats it every
/// `lab_interval` while this process leads.
pub struct LabLoop {
    shared: Arc<Shared>,
    leader: LeaderHandle,
    in_flight: Mutex<InFlight>,
}

/// What a pass and its import tasks share.
struct Shared {
    ctx: Arc<Ctx>,
    labs: Arc<dyn LabRuntime>,
    artifacts: Arc<dyn ArtifactStore>,
}

impl std::fmt::Debug for LabLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabLoop")
            .field("leader", &self.leader.is_leader())
            .finish()
    }
}

impl Drop for LabLoop {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

/// Where a session's record stood when read, with what the pass learnt since.
struct Entry {
    session: LabletSession,
    rev: Revision,
}

/// The port tags the rewritten YAML gives each node label.
fn node_tags(yaml: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let doc: serde_norway::Value =
        serde_norway::from_str(yaml).map_err(|e| format!("lab YAML does not parse: {e}"))?;
    let mut out = BTreeMap::new();
    let Some(nodes) = doc.get("nodes").and_then(|n| n.as_sequence()) else {
        return Ok(out);
    };
    for n in nodes {
        let Some(label) = n.get("label").and_then(|l| l.as_str()) else {
            continue;
        };
        let tags = n
            .get("tags")
            .and_then(|t| t.as_sequence())
            .map(|s| {
                s.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(label.to_string(), tags);
    }
    Ok(out)
}

impl Shared {
    /// The definition's lab YAML with the session's ports filled in (SHA-256 checked).
    async fn lab_yaml(&self, s: &LabletSession) -> Result<String, String> {
        let def = self
            .ctx
            .definition(&s.definition_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("definition {} not found", s.definition_id))?;
        lab_yaml_of(self.artifacts.as_ref(), &def, &s.allocated_ports).await
    }

    /// Writes `next` over the record read at `rev` (and `worker` when given), fenced.
    async fn write(
        &self,
        fence: &Fence,
        next: &LabletSession,
        rev: Revision,
        worker: Option<(&Worker, Revision)>,
    ) -> Result<Commit, RuntimeError> {
        let key = self.ctx.keys.session(&next.id);
        let mut writes = vec![Write::put(key, next, rev)?];
        if let Some((w, wrev)) = worker {
            let key = self.ctx.keys.worker(&w.id);
            writes.push(Write::put(key, w, wrev)?);
        }
        self.ctx.commit(fence, writes).await
    }

    /// Re-reads a session and applies `f` to its progress (retrying on conflicts up to
    /// `max_conflict_retries` times): how an import task records its result.
    async fn update_progress<F>(&self, fence: &Fence, id: &str, f: F) -> Result<(), RuntimeError>
    where
        F: Fn(&mut LabletSession) -> bool,
    {
        let key = self.ctx.keys.session(id);
        let tries = self.ctx.settings.max_conflict_retries.max(1);
        for _ in 0..tries {
            let Some(kv) = self.ctx.state.get(&key).await? else {
                return Ok(());
            };
            let mut s: LabletSession = codec::decode(&key, &kv.value)?;
            if !f(&mut s) {
                return Ok(());
            }
            s.updated_at = self.ctx.clock.now();
            match self.write(fence, &s, kv.mod_revision, None).await? {
                Commit::Done(_) => return Ok(()),
                Commit::Conflict { .. } | Commit::TooLarge => continue,
            }
        }
        Err(RuntimeError::Conflict { key, tries })
    }
}

/// The lab YAML of `def` with `ports` filled in: the stored artifact, its SHA-256 checked
/// against the definition's, rewritten by [`crate::labyaml::rewrite_ports`].
pub async fn lab_yaml_of(
    artifacts: &dyn ArtifactStore,
    def: &LabletDefinition,
    ports: &BTreeMap<String, u16>,
) -> Result<String, String> {
    if def.lab_artifact_uri.is_empty() {
        return Err(format!("definition {} has no lab YAML", def.id));
    }
    let (data, meta) = artifacts
        .get(&def.lab_artifact_uri)
        .await
        .map_err(|e| format!("artifact {}: {e}", def.lab_artifact_uri))?;
    let actual = crate::store::artifact::sha256_hex(&data);
    for (what, h) in [("stored", meta.sha256.as_str()), ("read", actual.as_str())] {
        if !def.lab_yaml_hash.is_empty() && h != def.lab_yaml_hash {
            return Err(format!(
                "artifact {}: {what} sha256 {h} but definition {} expects {}",
                def.lab_artifact_uri, def.id, def.lab_yaml_hash
            ));
        }
    }
    let text = std::str::from_utf8(&data)
        .map_err(|e| format!("artifact {}: {e}", def.lab_artifact_uri))?;
    let bindings = crate::labyaml::PortBindings::new(&def.port_template, ports)
        .map_err(|e| format!("definition {}: {e}", def.id))?;
    let out = crate::labyaml::rewrite_ports(text, &bindings)
        .map_err(|e| format!("artifact {}: {e}", def.lab_artifact_uri))?;
    Ok(out.text)
}

/// Records a failed attempt on `s` (attempts + 1, back-off, reason).
fn failed(s: &mut LabletSession, reason: &str, now: Timestamp, settings: &RuntimeSettings) {
    let p = progress(s);
    p.attempts = p.attempts.saturating_add(1);
    p.retry_at = Some(crate::timeslot::saturating_add(
        now,
        settings.lab_backoff(p.attempts),
    ));
    p.last_error = reason.chars().take(500).collect();
}

/// The session's progress on its current worker (a fresh one when there is none, or it was
/// about another worker).
fn progress(s: &mut LabletSession) -> &mut LabProgress {
    if let Some(wid) = &s.worker_id {
        if s.lab.as_ref().is_some_and(|p| &p.worker_id != wid) {
            s.lab = None;
        }
    }
    let wid = s.worker_id.clone().unwrap_or_default();
    let title = LabProgress::title_for(&s.id, &s.definition_id);
    s.lab.get_or_insert_with(|| LabProgress::new(wid, title))
}

/// Moves the progress to `step` (attempts reset).
fn advance(s: &mut LabletSession, step: LabStep) {
    let p = progress(s);
    p.step = step;
    p.attempts = 0;
    p.retry_at = None;
    p.last_error.clear();
}

impl LabLoop {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        leader: LeaderHandle,
        labs: Arc<dyn LabRuntime>,
        artifacts: Arc<dyn ArtifactStore>,
    ) -> Self {
        LabLoop {
            shared: Arc::new(Shared {
                ctx,
                labs,
                artifacts,
            }),
            leader,
            in_flight: Mutex::new(InFlight::default()),
        }
    }

    /// The leadership this loop runs under.
    pub fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Imports still running.
    pub fn imports_in_flight(&self) -> usize {
        let mut g = self.in_flight();
        g.tasks.retain(|_, t| !t.is_finished());
        g.tasks.len()
    }

    /// One pass at `now` (see the module docs). Fails with [`RuntimeError::NotLeader`]
    /// without writing when this process does not lead (running imports are then abandoned).
    pub async fn reconcile_once(&self, now: Timestamp) -> Result<LabReport, RuntimeError> {
        let fence = self
            .leader
            .require()
            .inspect_err(|_| self.in_flight().abort_all())?;
        let started = std::time::Instant::now();
        {
            let mut g = self.in_flight();
            if g.token != Some(fence.token) {
                g.abort_all();
                g.token = Some(fence.token);
            }
            g.tasks.retain(|_, t| !t.is_finished());
        }
        let r = self.pass(&fence, now).await;
        if let Err(RuntimeError::NotLeader { .. }) = &r {
            self.leader.lost(&fence);
            self.in_flight().abort_all();
        }
        self.shared.ctx.metrics.lab_pass(started.elapsed());
        r
    }

    async fn pass(&self, fence: &Fence, now: Timestamp) -> Result<LabReport, RuntimeError> {
        let sh = &self.shared;
        let ctx = &sh.ctx;
        let settings = &ctx.settings;
        // Imports that finished since the last pass record their result first.
        for _ in 0..8 {
            if self.in_flight().tasks.values().all(|t| t.is_finished()) {
                break;
            }
            tokio::task::yield_now().await;
        }
        let snap = snapshot::load(ctx).await?;
        let mut report = LabReport {
            revision: snap.revision,
            ..LabReport::default()
        };
        self.in_flight().tasks.retain(|_, t| !t.is_finished());
        let no_claims = BTreeSet::new();
        let busy: BTreeSet<String> = self.in_flight().tasks.keys().cloned().collect();
        // Labs held by sessions, per worker.
        let mut claimed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in snap.sessions.values() {
            if let Some(p) = s.value.lab.as_ref().filter(|p| p.holds_lab()) {
                if let Some(l) = &p.lab_id {
                    claimed
                        .entry(p.worker_id.clone())
                        .or_default()
                        .insert(l.clone());
                }
            }
        }
        // What to ask CML.
        let mut entries: Vec<(Entry, Needs)> = Vec::new();
        for v in snap.sessions.values() {
            if busy.contains(&v.value.id) {
                continue;
            }
            let n = needs(&v.value, now, settings);
            entries.push((
                Entry {
                    session: v.value.clone(),
                    rev: v.mod_revision,
                },
                n,
            ));
        }
        let mut listings: BTreeMap<String, Result<Vec<LabSummary>, LabError>> = BTreeMap::new();
        for (e, n) in &entries {
            let Some(wid) = lab_worker(&e.session) else {
                continue;
            };
            if n.labs && !listings.contains_key(&wid) {
                let Some(w) = snap.workers.get(&wid) else {
                    continue;
                };
                let ep = settings.lab_endpoint(&w.value);
                listings.insert(wid.clone(), sh.labs.list_labs(&ep).await);
            }
        }
        // Live copies of the workers written in this pass (capacity released).
        let mut workers: BTreeMap<String, (Worker, Revision)> = snap
            .workers
            .iter()
            .map(|(id, w)| (id.clone(), (w.value.clone(), w.mod_revision)))
            .collect();
        for (e, n) in entries {
            let s = &e.session;
            let wid = lab_worker(s);
            let worker = wid
                .as_ref()
                .and_then(|w| snap.workers.get(w))
                .map(|v| &v.value);
            let endpoint = worker.map(|w| settings.lab_endpoint(w));
            let own = match (
                n.own,
                &endpoint,
                s.lab.as_ref().and_then(|p| p.lab_id.as_ref()),
            ) {
                (true, Some(ep), Some(l)) => Some(sh.labs.lab(ep, &LabId(l.clone())).await),
                _ => None,
            };
            let mut others = wid
                .as_ref()
                .and_then(|w| claimed.get(w))
                .unwrap_or(&no_claims)
                .clone();
            if let Some(l) = s.lab.as_ref().and_then(|p| p.lab_id.as_ref()) {
                others.remove(l);
            }
            let known = LabsKnown {
                labs: wid.as_ref().and_then(|w| listings.get(w)),
                own: own.as_ref(),
                claimed: &others,
            };
            let max = snap
                .definitions
                .get(&s.definition_id)
                .map_or(0, |d| d.max_duration_minutes);
            let mut action = decide(s, worker, known, max, now, settings);
            let mut e = e;
            let mut own = own;
            // A step that needs no new answer from CML follows at once (READY → RUNNING when
            // the slot started, STOPPED → ARCHIVED, INSTANTIATING → acquire, ...).
            for _ in 0..4 {
                if let LabAction::Reuse { lab_id } = &action {
                    if let Some(w) = &wid {
                        claimed.entry(w.clone()).or_default().insert(lab_id.clone());
                    }
                }
                tracing::debug!(session = %e.session.id, state = %e.session.state, ?action, "lab loop");
                let own_lab = e.session.lab.as_ref().and_then(|p| p.lab_id.clone());
                let kind = action.clone();
                let written = self
                    .apply(
                        fence,
                        &snap,
                        &mut workers,
                        e,
                        action,
                        endpoint.clone(),
                        own.take(),
                        now,
                        &mut report,
                    )
                    .await?;
                // What the rest of the pass sees: a released lab is spare, a deleted one gone.
                if let (Some(w), Some(l)) = (&wid, own_lab) {
                    match kind {
                        LabAction::Released if written.is_some() => {
                            claimed.entry(w.clone()).or_default().remove(&l);
                        }
                        LabAction::DeleteLab => {
                            claimed.entry(w.clone()).or_default().insert(l);
                        }
                        _ => {}
                    }
                }
                let chains = matches!(
                    kind,
                    LabAction::Instantiate
                        | LabAction::Ready
                        | LabAction::Released
                        | LabAction::Expire { .. }
                        | LabAction::Archive
                );
                let Some((session, rev)) = written.filter(|_| chains) else {
                    break;
                };
                let mut others = wid
                    .as_ref()
                    .and_then(|w| claimed.get(w))
                    .unwrap_or(&no_claims)
                    .clone();
                if let Some(l) = session.lab.as_ref().and_then(|p| p.lab_id.as_ref()) {
                    others.remove(l);
                }
                let known = LabsKnown {
                    labs: wid.as_ref().and_then(|w| listings.get(w)),
                    own: None,
                    claimed: &others,
                };
                action = decide(&session, worker, known, max, now, settings);
                e = Entry { session, rev };
            }
        }
        // Let imports that need no time finish within the pass.
        for _ in 0..8 {
            if self.in_flight().tasks.values().all(|t| t.is_finished()) {
                break;
            }
            tokio::task::yield_now().await;
        }
        report.in_flight = self.imports_in_flight();
        Ok(report)
    }

    /// Carries out `action` for one session; the record as written, when it was.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        fence: &Fence,
        snap: &StateSnapshot,
        workers: &mut BTreeMap<String, (Worker, Revision)>,
        e: Entry,
        action: LabAction,
        endpoint: Option<LabEndpoint>,
        own: Option<Result<LabDetails, LabError>>,
        now: Timestamp,
        report: &mut LabReport,
    ) -> Result<Option<(LabletSession, Revision)>, RuntimeError> {
        let sh = &self.shared;
        let ctx = &sh.ctx;
        let settings = &ctx.settings;
        if !matches!(action, LabAction::Nothing | LabAction::Wait { .. }) {
            // Past the local lease deadline (or deposed): no CML call, no write.
            self.leader.require_holds(fence)?;
        }
        let Entry { session: s, rev } = e;
        let mut next = s.clone();
        next.updated_at = now;
        let lab_id = s.lab.as_ref().and_then(|p| p.lab_id.clone()).map(LabId);
        let mut release = false;
        let mut reused = false;
        let mut transition: Option<(SessionState, String)> = None;
        match action {
            LabAction::Nothing | LabAction::Wait { .. } => return Ok(None),
            LabAction::Instantiate => {
                let wid = s.worker_id.clone().unwrap_or_default();
                next.lab = None;
                advance(&mut next, LabStep::Acquire);
                transition = Some((
                    SessionState::Instantiating,
                    format!("instantiating the lab on {wid}"),
                ));
            }
            LabAction::Import => {
                let Some(ep) = endpoint else {
                    return Ok(None);
                };
                // The title and the start of the import are in the record before the import
                // is sent: a leader after a crash finds the lab by title, and waits for an
                // import still under way instead of sending a second one.
                if s.lab.as_ref().is_none_or(|p| p.step != LabStep::Acquire) {
                    advance(&mut next, LabStep::Acquire);
                }
                progress(&mut next).import_started_at = Some(now);
                match sh.write(fence, &next, rev, None).await? {
                    Commit::Done(_) => {}
                    _ => {
                        report.conflicts += 1;
                        return Ok(None);
                    }
                }
                self.spawn_import(fence, next, ep);
                report.imports.push(s.id.clone());
                return Ok(None);
            }
            LabAction::Adopt { lab_id } => {
                let p = progress(&mut next);
                p.lab_id = Some(lab_id.clone());
                p.import_started_at = None;
                advance(&mut next, LabStep::Prepare);
                ctx.metrics.lab_adopted();
                report.adopted.push((s.id.clone(), lab_id));
            }
            LabAction::Reuse { lab_id } => {
                let p = progress(&mut next);
                p.lab_id = Some(lab_id.clone());
                p.import_started_at = None;
                p.reused = true;
                advance(&mut next, LabStep::Prepare);
                reused = true;
                report.reused.push((s.id.clone(), lab_id));
            }
            LabAction::Prepare => {
                let (Some(ep), Some(lab), Some(Ok(d))) = (endpoint, lab_id, own) else {
                    return Ok(None);
                };
                match self.prepare(&s, &ep, &lab, &d).await {
                    Ok(()) => advance(&mut next, LabStep::Boot),
                    Err(why) => {
                        report.failures.push((s.id.clone(), why.clone()));
                        ctx.metrics.lab_retried();
                        failed(&mut next, &why, now, settings);
                    }
                }
            }
            LabAction::Ready => {
                advance(&mut next, LabStep::InUse);
                transition = Some((SessionState::Ready, "every node booted".into()));
            }
            LabAction::Run => {
                let why = if s.timeslot.is_some() {
                    "slot started"
                } else {
                    "lab ready (as soon as possible)"
                };
                transition = Some((SessionState::Running, why.into()));
            }
            LabAction::Expire { reason } => {
                transition = Some((SessionState::Expired, reason));
            }
            LabAction::BeginStop { reason } => {
                advance(&mut next, LabStep::Teardown);
                release = true;
                transition = Some((SessionState::Stopping, reason));
            }
            LabAction::StopLab | LabAction::WipeLab | LabAction::DeleteLab => {
                let (Some(ep), Some(lab)) = (endpoint, lab_id) else {
                    return Ok(None);
                };
                let r = match action {
                    LabAction::StopLab => sh.labs.stop(&ep, &lab).await,
                    LabAction::WipeLab => sh.labs.wipe(&ep, &lab).await,
                    _ => sh.labs.delete(&ep, &lab).await,
                };
                match r {
                    Ok(()) if action == LabAction::DeleteLab => {
                        ctx.metrics.lab_deleted();
                        progress(&mut next).deleted = true;
                        advance(&mut next, LabStep::Released);
                        if next.state == SessionState::Stopping {
                            transition = Some((SessionState::Stopped, "lab deleted".into()));
                        }
                    }
                    Ok(()) => {
                        // CML took the order. It is recorded, so that neither this leader's
                        // next pass nor a new leader orders it again while the lab's state
                        // catches up.
                        advance(&mut next, LabStep::Teardown);
                        let p = progress(&mut next);
                        if action == LabAction::StopLab {
                            p.stop_ordered_at = Some(now);
                        } else {
                            p.wipe_ordered_at = Some(now);
                        }
                    }
                    Err(err) => {
                        let why = err.to_string();
                        report.failures.push((s.id.clone(), why.clone()));
                        ctx.metrics.lab_retried();
                        failed(&mut next, &why, now, settings);
                    }
                }
            }
            LabAction::Released => {
                advance(&mut next, LabStep::Released);
                if next.state == SessionState::Stopping {
                    transition = Some((SessionState::Stopped, "lab stopped and wiped".into()));
                }
            }
            LabAction::Archive => {
                transition = Some((SessionState::Archived, String::new()));
            }
            LabAction::Forget { reason } => {
                let p = progress(&mut next);
                p.lab_id = None;
                p.reused = false;
                p.step = LabStep::Acquire;
                report.failures.push((s.id.clone(), reason.clone()));
                ctx.metrics.lab_retried();
                failed(&mut next, &reason, now, settings);
            }
            LabAction::Failed { reason } => {
                report.failures.push((s.id.clone(), reason.clone()));
                ctx.metrics.lab_retried();
                failed(&mut next, &reason, now, settings);
            }
            LabAction::GiveUp { reason } => {
                let step = s.lab.as_ref().map_or(LabStep::Acquire, |p| p.step);
                ctx.metrics
                    .lab_failed(&format!("{step:?}").to_ascii_lowercase());
                report.gave_up.push((s.id.clone(), reason.clone()));
                tracing::warn!(session = %s.id, state = %s.state, %reason, "lab loop gave up");
                match s.state {
                    SessionState::Scheduled => {
                        release = true;
                        transition = Some((SessionState::Pending, format!("requeued: {reason}")));
                    }
                    SessionState::Terminated => {
                        progress(&mut next).step = LabStep::Abandoned;
                    }
                    _ => {
                        release = s.holds_capacity();
                        let p = progress(&mut next);
                        // A lab that never came up is torn down like any other; one that
                        // cannot be stopped is left alone.
                        p.step = if s.state == SessionState::Stopping {
                            LabStep::Abandoned
                        } else {
                            LabStep::Teardown
                        };
                        p.attempts = 0;
                        p.retry_at = None;
                        transition = Some((SessionState::Terminated, reason));
                    }
                }
            }
        }
        if let Some((to, why)) = &transition {
            next.transition(*to, now, why.clone())?;
        }
        let mut worker_write = None;
        if release {
            next.allocated_ports.clear();
            if next.state == SessionState::Pending {
                next.worker_id = None;
                next.lab = None;
            }
            if let Some(wid) = &s.worker_id {
                if let Some((w, wrev)) = workers.get(wid) {
                    let mut w = w.clone();
                    if let Some(def) = snap.definitions.get(&s.definition_id) {
                        let load =
                            crate::resources::Load::new(def.resource_requirements, def.node_count);
                        w.allocated = w.allocated.saturating_sub(&load);
                    }
                    w.ports.release(&s.id);
                    w.last_activity_at = Some(now);
                    worker_write = Some((w, *wrev));
                }
            }
        }
        let commit = sh
            .write(
                fence,
                &next,
                rev,
                worker_write.as_ref().map(|(w, r)| (w, *r)),
            )
            .await?;
        match commit {
            Commit::Done(r) => {
                if let Some((w, _)) = worker_write {
                    workers.insert(w.id.clone(), (w, r));
                }
                if reused {
                    ctx.metrics.lab_reused();
                }
                if let Some((to, _)) = transition {
                    self.measure(&s, to, now);
                    report.transitions.push((s.id.clone(), to));
                    ctx.emit(CcmEvent::session(&next), now).await;
                }
                Ok(Some((next, r)))
            }
            Commit::Conflict { .. } | Commit::TooLarge => {
                report.conflicts += 1;
                if reused {
                    report.reused.retain(|(id, _)| *id != s.id);
                }
                Ok(None)
            }
        }
    }

    /// Phase durations, measured when a phase ends.
    fn measure(&self, before: &LabletSession, to: SessionState, now: Timestamp) {
        let m = &self.shared.ctx.metrics;
        let since = |st| before.entered(st).map(|t| now - t);
        let (phase, d) = match to {
            SessionState::Ready => ("instantiation", since(SessionState::Instantiating)),
            SessionState::Running => ("ready", since(SessionState::Ready)),
            SessionState::Stopping if before.state != SessionState::Expired => {
                ("running", since(SessionState::Running))
            }
            SessionState::Stopped => ("teardown", since(SessionState::Stopping)),
            _ => return,
        };
        if let Some(d) = d {
            m.lab_phase(phase, d);
        }
    }

    /// Writes the session's port tags into the lab's nodes (where they differ) and starts it.
    async fn prepare(
        &self,
        s: &LabletSession,
        ep: &LabEndpoint,
        lab: &LabId,
        d: &LabDetails,
    ) -> Result<(), String> {
        let sh = &self.shared;
        let yaml = sh.lab_yaml(s).await?;
        let want = node_tags(&yaml)?;
        for n in &d.nodes {
            if let Some(tags) = want.get(&n.label) {
                if &n.tags != tags {
                    sh.labs
                        .set_node_tags(ep, lab, &NodeId(n.id.0.clone()), tags)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        sh.labs.start(ep, lab).await.map_err(|e| e.to_string())
    }

    /// Starts the import of `s`'s lab as a task of its own; it records the lab id (or the
    /// failure) in the session record, fenced.
    fn spawn_import(&self, fence: &Fence, s: LabletSession, ep: LabEndpoint) {
        let sh = self.shared.clone();
        let fence = fence.clone();
        let leader = self.leader.clone();
        let id = s.id.clone();
        let task = tokio::spawn(async move {
            let title = s.lab.as_ref().map_or_else(
                || LabProgress::title_for(&s.id, &s.definition_id),
                |p| p.title.clone(),
            );
            let result = match sh.lab_yaml(&s).await {
                Ok(yaml) => sh
                    .labs
                    .import_lab(&ep, &title, &yaml)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let now = sh.ctx.clock.now();
            let settings = sh.ctx.settings.clone();
            let wid = ep.worker_id.clone();
            let r = match &result {
                Ok(lab) => {
                    sh.ctx.metrics.lab_imported();
                    let lab = lab.0.clone();
                    sh.update_progress(&fence, &s.id, |rec| {
                        let Some(p) = rec.lab.as_mut().filter(|p| p.worker_id == wid) else {
                            return false;
                        };
                        if p.lab_id.is_some() {
                            return false;
                        }
                        p.lab_id = Some(lab.clone());
                        p.import_started_at = None;
                        if rec.state == SessionState::Instantiating {
                            advance(rec, LabStep::Prepare);
                        }
                        true
                    })
                    .await
                }
                Err(why) => {
                    tracing::warn!(session = %s.id, error = %why, "lab import failed");
                    sh.ctx.metrics.lab_retried();
                    sh.update_progress(&fence, &s.id, |rec| {
                        if rec.state != SessionState::Instantiating
                            || rec.lab.as_ref().is_none_or(|p| p.lab_id.is_some())
                        {
                            return false;
                        }
                        if let Some(p) = rec.lab.as_mut() {
                            p.import_started_at = None;
                        }
                        failed(rec, why, now, &settings);
                        true
                    })
                    .await
                }
            };
            match r {
                Ok(()) => {}
                Err(RuntimeError::NotLeader { .. }) => leader.lost(&fence),
                Err(e) => {
                    tracing::warn!(session = %s.id, error = %e, "recording the import failed")
                }
            }
        });
        self.in_flight().tasks.insert(id, task);
    }

    /// Runs [`LabLoop::reconcile_once`] while this process leads, until `shutdown` turns
    /// true: on every change of a session or worker record and at least every `lab_interval`
    /// (the re-list); imports in flight are aborted when leadership is lost (see
    /// [`super::driver`]).
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        driver::drive(self, shutdown).await;
    }
}

impl Reconciler for LabLoop {
    fn name(&self) -> &'static str {
        super::LAB
    }

    fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    fn ctx(&self) -> &Ctx {
        &self.shared.ctx
    }

    fn interval(&self) -> chrono::Duration {
        driver::interval_of(
            self.shared.ctx.settings.lab_interval,
            chrono::Duration::seconds(10),
        )
    }

    fn watch_prefixes(&self) -> Vec<String> {
        let keys = &self.shared.ctx.keys;
        vec![keys.sessions(), keys.workers()]
    }

    async fn pass(&self, now: Timestamp) -> Result<PassOutcome, RuntimeError> {
        let r = self.reconcile_once(now).await?;
        Ok(PassOutcome {
            revision: Some(r.revision),
        })
    }

    fn on_leadership_lost(&self) {
        self.in_flight().abort_all();
    }
}

/// The worker a session's lab is (or will be) on.
fn lab_worker(s: &LabletSession) -> Option<String> {
    s.worker_id
        .clone()
        .or_else(|| s.lab.as_ref().map(|p| p.worker_id.clone()))
}
