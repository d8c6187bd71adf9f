//! The controller loop: applies the provider's worker state changes, requeues the sessions of
//! lost workers and carries out the scaling actions through the [`WorkerProvider`] and the
//! state store (every write fenced).

mod decide;

use super::codec;
use super::context::{Commit, Ctx, Write};
use super::driver::{self, PassOutcome, Reconciler};
use super::leadership::LeaderHandle;
use super::planning::PlanSummary;
use super::policy::ScalingAction;
use super::settings::ScalingMode;
use super::snapshot::{self, StateSnapshot};
use super::RuntimeError;
use crate::events::{CcmEvent, ScalingDirection, ScalingEventData, ScalingPhase};
use crate::placement::filter::{template_ami_name, template_cml_version};
use crate::planner::PriorAssignment;
use crate::session::SessionState;
use crate::store::{Fence, LaunchRequest, ProviderError, ProviderEvent, WorkerProvider};
use crate::timeslot::Timestamp;
use crate::transition::StateMachine;
use crate::worker::{Worker, WorkerState};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What one controller pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerReport {
    /// Provider state changes applied: (worker, new state).
    pub applied: Vec<(String, WorkerState)>,
    /// Workers found lost (FAILED, TERMINATED unexpectedly, or missing).
    pub lost_workers: Vec<String>,
    /// Sessions sent back to PENDING.
    pub requeued: Vec<String>,
    /// Sessions terminated (their lab was on a lost worker, or a drain timed out).
    pub terminated: Vec<String>,
    /// Scaling actions carried out.
    pub actions: Vec<ScalingAction>,
    /// Actions that failed: (worker, why).
    pub failed: Vec<(String, String)>,
    /// The plan this pass carried out ([`ScalingMode::Planner`] only).
    pub plan: Option<PlanSummary>,
}

/// The controller: one pass is [`Controller::reconcile_once`]; [`Controller::run`] repeats it
/// every `controller_interval` while this process leads.
pub struct Controller {
    ctx: Arc<Ctx>,
    leader: LeaderHandle,
    provider: Arc<dyn WorkerProvider>,
    /// The workers' CML: when set, a worker is RUNNING only once its CML answers.
    labs: Option<Arc<dyn crate::store::LabRuntime>>,
    /// The last plan's assignments (kept where still valid by the next plan).
    previous: Mutex<Vec<PriorAssignment>>,
    /// Sessions the plan could not serve that were already logged (logged once each).
    unserved_logged: Mutex<std::collections::BTreeSet<String>>,
    /// (template, region) pairs that refused a launch for lack of capacity, until when.
    unavailable: Mutex<BTreeMap<(String, String), Timestamp>>,
    /// Fence token of the leadership term whose fleet was reconciled with the provider.
    fleet_term: Mutex<Option<crate::store::Revision>>,
    /// When the provider's instances were last read against the records (the fleet resync).
    last_resync: Mutex<Option<Timestamp>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("leader", &self.leader.is_leader())
            .finish()
    }
}

/// Shortest way from `from` to `to` in the worker table (through UNKNOWN only when there is no
/// other way); the steps after `from`.
pub(crate) fn path(from: WorkerState, to: WorkerState) -> Option<Vec<WorkerState>> {
    crate::transition::shortest_path(from, to, &[WorkerState::Unknown])
}

/// A scaling event about one worker (the worker id is the decision id, so `requested` and
/// `completed` of one decision share a subject and arrive in order).
fn scaling_event(
    direction: ScalingDirection,
    phase: ScalingPhase,
    w: &Worker,
    reason: impl Into<String>,
    plan_cost_usd: Option<f64>,
) -> CcmEvent {
    CcmEvent::scaling(
        direction,
        phase,
        ScalingEventData {
            decision_id: w.id.clone(),
            template: w.template.clone(),
            region: w.region.clone(),
            count: 1,
            worker_ids: vec![w.id.clone()],
            reason: reason.into(),
            plan_cost_usd,
        },
    )
}

/// Minutes after its launch during which a worker whose instance the provider does not list
/// is not taken for lost (listings can lag a launch).
pub const ADOPTION_GRACE_MINUTES: i64 = 5;

/// How long a recorded order (start, stop, terminate) may stay without effect in the cloud
/// before the fleet resync gives it again.
pub const ORDER_AGAIN_MINUTES: i64 = 2;

/// Minutes a template's region is avoided after it refused a launch for lack of capacity.
pub const CAPACITY_BACKOFF_MINUTES: i64 = 15;

/// Longest launch reason kept on a worker record.
pub const MAX_LAUNCH_REASON_CHARS: usize = 512;

fn is_lost_state(s: WorkerState) -> bool {
    matches!(
        s,
        WorkerState::Failed
            | WorkerState::Terminating
            | WorkerState::Terminated
            | WorkerState::Stopping
            | WorkerState::Stopped
    )
}

impl Controller {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        leader: LeaderHandle,
        provider: Arc<dyn WorkerProvider>,
        labs: Option<Arc<dyn crate::store::LabRuntime>>,
    ) -> Self {
        Controller {
            ctx,
            leader,
            provider,
            labs,
            previous: Mutex::new(Vec::new()),
            unserved_logged: Mutex::new(std::collections::BTreeSet::new()),
            unavailable: Mutex::new(BTreeMap::new()),
            fleet_term: Mutex::new(None),
            last_resync: Mutex::new(None),
        }
    }

    /// The leadership this loop runs under.
    pub fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    /// One pass at `now`: provider events, lost workers, scaling.
    pub async fn reconcile_once(&self, now: Timestamp) -> Result<ControllerReport, RuntimeError> {
        let fence = self.leader.require()?;
        let started = std::time::Instant::now();
        let r = match self.pass(&fence, now).await {
            Ok(report) => super::archive::sweep(&self.ctx, &fence, now)
                .await
                .map(|_| report),
            failed => failed,
        };
        if let Err(RuntimeError::NotLeader { .. }) = &r {
            self.leader.lost(&fence);
        }
        self.ctx.metrics.controller_pass(started.elapsed());
        r
    }

    async fn pass(&self, fence: &Fence, now: Timestamp) -> Result<ControllerReport, RuntimeError> {
        let mut report = ControllerReport::default();
        let new_term = {
            let mut g = self.fleet_term.lock().unwrap_or_else(|p| p.into_inner());
            let new = *g != Some(fence.token);
            *g = Some(fence.token);
            new
        };
        let resync_due = {
            let g = self.last_resync.lock().unwrap_or_else(|p| p.into_inner());
            g.is_none_or(|t| now - t >= self.ctx.settings.fleet_resync_interval || now < t)
        };
        if new_term || resync_due {
            match self.reconcile_fleet(fence, now, &mut report).await {
                Ok(()) => {
                    *self.last_resync.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                }
                Err(e @ RuntimeError::NotLeader { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "fleet reconciliation failed; retried next pass");
                    *self.fleet_term.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    *self.last_resync.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
            }
        }
        for ev in self.provider.poll_events().await {
            match self.apply_event(fence, &ev, &mut report).await {
                Ok(()) => {}
                Err(e @ RuntimeError::NotLeader { .. }) => return Err(e),
                Err(e) => {
                    // The provider already handed the event over: the next fleet resync (due
                    // at once now) reads the instance's state again.
                    tracing::warn!(worker = %ev.worker_id, state = %ev.state, error = %e, "provider event not applied; the fleet is re-read");
                    report.failed.push((ev.worker_id.clone(), e.to_string()));
                    *self.last_resync.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
            }
        }
        let mut snap = snapshot::load(&self.ctx).await?;
        if self.labs.is_some() && self.promote_ready(fence, &snap, now, &mut report).await? {
            snap = snapshot::load(&self.ctx).await?;
        }
        if self.requeue_lost(fence, &snap, now, &mut report).await? {
            snap = snapshot::load(&self.ctx).await?;
        }
        let templates = self.without_unavailable(self.ctx.spec.list_templates().await?, now);
        let actions = match self.ctx.settings.scaling {
            ScalingMode::Reactive => {
                decide::decide_scaling(&snap, &templates, now, &self.ctx.settings, Vec::new())
                    .actions
            }
            ScalingMode::Planner => {
                let (actions, summary) = self.plan(&snap, &templates, now);
                report.plan = Some(summary);
                actions
            }
        };
        for action in actions {
            match self
                .execute(fence, &snap, &templates, &action, now, &mut report)
                .await
            {
                Ok(true) => report.actions.push(action),
                Ok(false) => {}
                Err(e @ RuntimeError::NotLeader { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(worker = %action.worker_id(), error = %e, "scaling action failed");
                    report
                        .failed
                        .push((action.worker_id().to_string(), e.to_string()));
                }
            }
        }
        Ok(report)
    }

    /// Once per leadership term (a start-up, a failover): the provider's instances tagged as
    /// ccm's against the worker records. A recorded worker takes its instance's id and state; an
    /// instance without a record is adopted, terminated or left alone by
    /// [`super::OrphanPolicy`]; a record whose instance is gone (launched more than
    /// [`ADOPTION_GRACE_MINUTES`] ago) is marked TERMINATED, so its sessions requeue.
    async fn reconcile_fleet(
        &self,
        fence: &Fence,
        now: Timestamp,
        report: &mut ControllerReport,
    ) -> Result<(), RuntimeError> {
        let managed = self.provider.list_managed().await?;
        let snap = snapshot::load(&self.ctx).await?;
        let templates = self.ctx.spec.list_templates().await?;
        let mut live = std::collections::BTreeSet::new();
        for m in &managed {
            live.insert(m.worker_id.clone());
            if let Some(w) = snap.workers.get(&m.worker_id) {
                // A draining worker runs as far as the cloud knows.
                let same = w.value.state == m.state
                    || (w.value.state == WorkerState::Draining && m.state == WorkerState::Running);
                if same && w.value.provider_id.as_deref() == Some(m.provider_id.as_str()) {
                    continue;
                }
                if self.order_again(fence, &w.value, m.state, now).await? {
                    continue;
                }
                let target = if same { w.value.state } else { m.state };
                let ev = ProviderEvent {
                    worker_id: m.worker_id.clone(),
                    provider_id: m.provider_id.clone(),
                    state: target,
                    at: now,
                };
                self.apply_event(fence, &ev, report).await?;
                continue;
            }
            self.orphan(fence, m, &templates, now).await?;
        }
        for v in snap.workers.values() {
            let w = &v.value;
            let recent = w
                .launched_at
                .is_some_and(|t| now - t < chrono::Duration::minutes(ADOPTION_GRACE_MINUTES));
            if w.provider_id.is_none() && w.state == WorkerState::Pending && !recent {
                if !live.contains(&w.id) {
                    // Recorded, then the leader died before its launch reached the cloud: a
                    // phantom that would count against the region's limit for ever.
                    tracing::warn!(worker = %w.id, "PENDING worker never reached the cloud; marked FAILED");
                    self.fail_phantom(fence, &w.id, now, report).await?;
                }
                continue;
            }
            if live.contains(&w.id)
                || w.provider_id.is_none()
                || recent
                || matches!(w.state, WorkerState::Terminated | WorkerState::Unknown)
            {
                continue;
            }
            tracing::warn!(worker = %w.id, provider_id = ?w.provider_id, "the worker's instance is gone");
            let ev = ProviderEvent {
                worker_id: w.id.clone(),
                provider_id: w.provider_id.clone().unwrap_or_default(),
                state: WorkerState::Terminated,
                at: now,
            };
            self.apply_event(fence, &ev, report).await?;
        }
        Ok(())
    }

    /// A recorded order the cloud has not carried out [`ORDER_AGAIN_MINUTES`] after it was
    /// given (the call failed, or the leader died between the intent and the call): given
    /// again. True when it was (the instance's state is then left to the next events).
    async fn order_again(
        &self,
        fence: &Fence,
        w: &Worker,
        cloud: WorkerState,
        now: Timestamp,
    ) -> Result<bool, RuntimeError> {
        use WorkerState as W;
        let overdue = w
            .ordered_at
            .is_none_or(|t| now - t >= chrono::Duration::minutes(ORDER_AGAIN_MINUTES));
        let order = match (w.state, cloud) {
            (W::Starting, W::Stopped) => W::Starting,
            (W::Stopping, W::Running) => W::Stopping,
            (W::Terminating, W::Pending | W::Running | W::Stopping | W::Stopped) => W::Terminating,
            _ => return Ok(false),
        };
        if !overdue {
            return Ok(true);
        }
        self.leader.require_holds(fence)?;
        tracing::warn!(worker = %w.id, state = %w.state, cloud = %cloud, "the cloud did not carry out the recorded order; ordered again");
        let r = match order {
            W::Starting => self.provider.start(&w.id).await,
            W::Stopping => self.provider.stop(&w.id).await,
            _ => self.provider.terminate(&w.id).await,
        };
        if let Err(e) = r {
            tracing::warn!(worker = %w.id, order = %order, error = %e, "ordering again failed; retried at the next resync");
        }
        self.ctx.metrics.reordered();
        self.update_worker(fence, &w.id, |w| {
            w.ordered_at = Some(now);
            Ok(true)
        })
        .await?;
        Ok(true)
    }

    /// PENDING → FAILED for a recorded worker whose launch never reached the cloud (its
    /// sessions requeue; the planner launches again if it still needs one).
    async fn fail_phantom(
        &self,
        fence: &Fence,
        id: &str,
        now: Timestamp,
        report: &mut ControllerReport,
    ) -> Result<(), RuntimeError> {
        let res = self
            .update_worker(fence, id, |w| {
                if w.state != WorkerState::Pending || w.provider_id.is_some() {
                    return Ok(false);
                }
                w.transition(WorkerState::Failed)?;
                w.launch_reason = "launch never reached the cloud".into();
                Ok(true)
            })
            .await?;
        if let Some((before, after)) = res.filter(|(b, a)| b.state != a.state) {
            self.ctx.metrics.worker_lost();
            report.lost_workers.push(after.id.clone());
            if let Some(e) =
                CcmEvent::worker(&after, Some(before.state), "launch never reached the cloud")
            {
                self.ctx.emit(e, now).await;
            }
        }
        Ok(())
    }

    /// An instance tagged as ccm's with no worker record, handled by the orphan policy.
    async fn orphan(
        &self,
        fence: &Fence,
        m: &crate::store::ManagedInstance,
        templates: &[crate::template::WorkerTemplate],
        now: Timestamp,
    ) -> Result<(), RuntimeError> {
        use super::OrphanPolicy;
        match self.ctx.settings.orphan_policy {
            OrphanPolicy::Ignore => {
                tracing::warn!(worker = %m.worker_id, instance = %m.provider_id, "instance tagged as ccm's has no record; left alone");
                Ok(())
            }
            OrphanPolicy::Terminate => {
                tracing::warn!(worker = %m.worker_id, instance = %m.provider_id, "instance tagged as ccm's has no record; terminating it");
                self.provider.terminate(&m.worker_id).await?;
                Ok(())
            }
            OrphanPolicy::Adopt => {
                let Some(t) = m
                    .template
                    .as_ref()
                    .and_then(|name| templates.iter().find(|t| &t.name == name))
                else {
                    tracing::warn!(worker = %m.worker_id, template = ?m.template, "orphan instance of an unknown template; left alone");
                    return Ok(());
                };
                let state = match m.state {
                    WorkerState::Terminating | WorkerState::Terminated => return Ok(()),
                    s => s,
                };
                let mut w = Worker::from_template(
                    m.worker_id.clone(),
                    t,
                    m.region.clone(),
                    state,
                    template_cml_version(t),
                    template_ami_name(t),
                );
                w.provider_id = Some(m.provider_id.clone());
                w.launched_at = Some(now);
                if state == WorkerState::Running {
                    w.ready_at = Some(now);
                    w.last_activity_at = Some(now);
                }
                if state == WorkerState::Stopped {
                    w.stopped_at = Some(now);
                }
                let key = self.ctx.keys.worker(&w.id);
                let write = Write::put(key, &w, 0)?;
                if let Commit::Done(_) = self.ctx.commit(fence, vec![write]).await? {
                    tracing::info!(worker = %w.id, instance = %m.provider_id, region = %m.region, state = %state, "orphan instance adopted");
                    self.ctx.metrics.adopted();
                    if let Some(e) = CcmEvent::worker(
                        &w,
                        None,
                        "adopted: an instance tagged as ccm's without a record",
                    ) {
                        self.ctx.emit(e, now).await;
                    }
                }
                Ok(())
            }
        }
    }

    /// The cost of the last plan (carried by the scaling events it causes).
    fn plan_cost(&self) -> Option<f64> {
        self.ctx.metrics.last_plan_cost()
    }

    /// Plans the horizon from `snap` and returns the actions due now (the planner is a pure
    /// function; the previous plan's assignments keep re-planning stable).
    fn plan(
        &self,
        snap: &StateSnapshot,
        templates: &[crate::template::WorkerTemplate],
        now: Timestamp,
    ) -> (Vec<ScalingAction>, PlanSummary) {
        let settings = &self.ctx.settings;
        let previous =
            std::mem::take(&mut *self.previous.lock().unwrap_or_else(|p| p.into_inner()));
        let decision = decide::decide_scaling(snap, templates, now, settings, previous);
        let actions = decision.actions;
        let mut summary = decision.plan.unwrap_or_default();
        summary.unavailable = self
            .unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|((t, r), until)| (t.clone(), r.clone(), *until))
            .collect();
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) =
            decision.carry_over.unwrap_or_default();
        self.ctx.metrics.planned(&summary);
        {
            // Warn once per session (not again when a later plan still cannot serve it); forget
            // sessions that left the snapshot so the set stays bounded.
            let mut warned = self
                .unserved_logged
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            warned.retain(|id| snap.sessions.contains_key(id));
            let mut new = 0;
            for (session, reason) in &summary.unserved {
                if warned.insert(session.clone()) {
                    new += 1;
                    tracing::warn!(%session, %reason, "the plan cannot serve this session");
                }
            }
            self.ctx.metrics.unservable(new);
        }
        tracing::debug!(
            cost_usd = summary.cost_usd,
            lower_bound_usd = summary.lower_bound_usd,
            workers = summary.workers,
            unserved = summary.unserved.len(),
            due = actions.len(),
            "planned"
        );
        (actions, summary)
    }

    /// Reads a worker, lets `f` change it, writes it back guarded by its revision (retries on
    /// conflict). `f` returns false to leave it alone. `None` when the worker is unknown.
    async fn update_worker<F>(
        &self,
        fence: &Fence,
        id: &str,
        f: F,
    ) -> Result<Option<(Worker, Worker)>, RuntimeError>
    where
        F: FnMut(&mut Worker) -> Result<bool, RuntimeError>,
    {
        self.update_worker_at(fence, id, None, f).await
    }

    /// [`Controller::update_worker`]; with `expect`, only from that revision of the record
    /// (one attempt; unchanged `(before, before)` when the record moved on).
    async fn update_worker_at<F>(
        &self,
        fence: &Fence,
        id: &str,
        expect: Option<crate::store::Revision>,
        mut f: F,
    ) -> Result<Option<(Worker, Worker)>, RuntimeError>
    where
        F: FnMut(&mut Worker) -> Result<bool, RuntimeError>,
    {
        let key = self.ctx.keys.worker(id);
        let tries = match expect {
            Some(_) => 1,
            None => self.ctx.settings.max_conflict_retries.max(1),
        };
        for _ in 0..tries {
            let Some(kv) = self.ctx.state.get(&key).await? else {
                return Ok(None);
            };
            let before: Worker = codec::decode(&key, &kv.value)?;
            if expect.is_some_and(|r| r != kv.mod_revision) {
                tracing::info!(worker = %id, "worker changed since the decision; decided again next pass");
                return Ok(Some((before.clone(), before)));
            }
            let mut w = before.clone();
            if !f(&mut w)? {
                return Ok(Some((before, w)));
            }
            let write = Write::put(key.clone(), &w, kv.mod_revision)?;
            match self.ctx.commit(fence, vec![write]).await? {
                Commit::Done(_) => return Ok(Some((before, w))),
                _ if expect.is_some() => return Ok(Some((before.clone(), before))),
                _ => {}
            }
        }
        Err(RuntimeError::Conflict { key, tries })
    }

    /// Whether the worker's CML answers (system information, ready); true without a
    /// [`crate::store::LabRuntime`].
    async fn cml_answers(&self, w: &Worker) -> bool {
        let Some(labs) = &self.labs else { return true };
        match labs.system_info(&self.ctx.settings.lab_endpoint(w)).await {
            Ok(info) => info.ready,
            Err(e) => {
                tracing::debug!(worker = %w.id, error = %e, "CML not answering yet");
                false
            }
        }
    }

    /// STARTING workers the cloud reports running whose CML now answers become RUNNING (a
    /// provider event that came while CML was still booting left them STARTING). Returns
    /// whether one changed.
    async fn promote_ready(
        &self,
        fence: &Fence,
        snap: &StateSnapshot,
        now: Timestamp,
        report: &mut ControllerReport,
    ) -> Result<bool, RuntimeError> {
        let mut changed = false;
        for w in snap.workers.values() {
            let w = &w.value;
            if w.state != WorkerState::Starting {
                continue;
            }
            let Some(pid) = w.provider_id.clone() else {
                continue;
            };
            if !matches!(
                self.provider.describe(&w.id).await,
                Ok(Some(WorkerState::Running))
            ) {
                continue;
            }
            let ev = ProviderEvent {
                worker_id: w.id.clone(),
                provider_id: pid,
                state: WorkerState::Running,
                at: now,
            };
            let before = report.applied.len();
            self.apply_event(fence, &ev, report).await?;
            changed |= report.applied.len() > before;
        }
        Ok(changed)
    }

    async fn apply_event(
        &self,
        fence: &Fence,
        ev: &ProviderEvent,
        report: &mut ControllerReport,
    ) -> Result<(), RuntimeError> {
        let mut target = ev.state;
        if target == WorkerState::Running && self.labs.is_some() {
            // Running for placement only once CML answers (not when the machine is up).
            let key = self.ctx.keys.worker(&ev.worker_id);
            if let Some(kv) = self.ctx.state.get(&key).await? {
                let mut w: Worker = codec::decode(&key, &kv.value)?;
                if w.state != WorkerState::Running && w.state != WorkerState::Draining {
                    w.provider_id = Some(ev.provider_id.clone());
                    if !self.cml_answers(&w).await {
                        target = WorkerState::Starting;
                    }
                }
            }
        }
        let res = self
            .update_worker(fence, &ev.worker_id, |w| {
                let mut changed = false;
                if w.provider_id.as_deref().is_some_and(|own| own != ev.provider_id) {
                    // Another instance tagged with this worker's id (another deployment on the
                    // same account, a leftover of an earlier fleet): not this worker's news.
                    tracing::warn!(worker = %w.id, own = ?w.provider_id, other = %ev.provider_id, state = %ev.state, "event for another instance with this worker's id; ignored");
                    return Ok(false);
                }
                if w.provider_id.as_deref() != Some(ev.provider_id.as_str()) {
                    w.provider_id = Some(ev.provider_id.clone());
                    changed = true;
                }
                if w.state == target {
                    return Ok(changed);
                }
                let Some(steps) = path(w.state, target) else {
                    tracing::warn!(worker = %w.id, from = %w.state, to = %target, "provider reported a state the worker cannot reach; ignored");
                    return Ok(changed);
                };
                for s in steps {
                    w.transition(s)?;
                }
                match target {
                    WorkerState::Running => {
                        w.ready_at = Some(ev.at);
                        w.last_activity_at = Some(ev.at);
                        w.drain_started_at = None;
                    }
                    WorkerState::Stopped => {
                        w.drain_started_at = None;
                        w.stopped_at = Some(ev.at);
                    }
                    WorkerState::Terminated => w.drain_started_at = None,
                    _ => {}
                }
                Ok(true)
            })
            .await?;
        let Some((before, after)) = res else {
            tracing::warn!(worker = %ev.worker_id, state = %ev.state, "provider event for an unknown worker");
            return Ok(());
        };
        if before.state == after.state {
            return Ok(());
        }
        report.applied.push((after.id.clone(), after.state));
        if let Some(e) = CcmEvent::worker(&after, Some(before.state), "provider reported") {
            self.ctx.emit(e, ev.at).await;
        }
        match after.state {
            WorkerState::Running if before.state.is_coming_up() => {
                let e = scaling_event(
                    ScalingDirection::Up,
                    ScalingPhase::Completed,
                    &after,
                    "worker running",
                    None,
                );
                self.ctx.emit(e, ev.at).await;
            }
            WorkerState::Stopped => {
                let e = scaling_event(
                    ScalingDirection::Down,
                    ScalingPhase::Completed,
                    &after,
                    "worker stopped",
                    None,
                );
                self.ctx.emit(e, ev.at).await;
            }
            WorkerState::Failed => {
                self.ctx.metrics.worker_lost();
                report.lost_workers.push(after.id.clone());
            }
            WorkerState::Terminated if before.state != WorkerState::Terminating => {
                self.ctx.metrics.worker_lost();
                report.lost_workers.push(after.id.clone());
            }
            WorkerState::Terminated => {
                let e = scaling_event(
                    ScalingDirection::Down,
                    ScalingPhase::Completed,
                    &after,
                    "worker terminated",
                    None,
                );
                self.ctx.emit(e, ev.at).await;
            }
            _ => {}
        }
        Ok(())
    }

    /// Sessions holding capacity on a worker that is gone, failed or stopped: SCHEDULED ones go
    /// back to PENDING, later ones are TERMINATED (their lab went with the worker). Returns
    /// whether anything was written.
    async fn requeue_lost(
        &self,
        fence: &Fence,
        snap: &StateSnapshot,
        now: Timestamp,
        report: &mut ControllerReport,
    ) -> Result<bool, RuntimeError> {
        let by_worker = decide::lost_sessions(snap);
        let mut wrote = false;
        let max = self.ctx.txn_limit();
        for (wid, sessions) in by_worker {
            for chunk in sessions.chunks(max - 2) {
                let mut writes = Vec::new();
                let mut requeued = Vec::new();
                let mut terminated = Vec::new();
                let mut worker = snap.workers.get(&wid).cloned();
                for s in chunk {
                    let mut v = s.value.clone();
                    let state = worker
                        .as_ref()
                        .map_or("missing".to_string(), |w| w.value.state.to_string());
                    let reason = format!("worker {wid} lost ({state})");
                    let requeue = v.state == SessionState::Scheduled;
                    if requeue {
                        v.transition(SessionState::Pending, now, reason)?;
                    } else {
                        v.transition(SessionState::Terminated, now, reason)?;
                    }
                    v.worker_id = None;
                    v.allocated_ports.clear();
                    if requeue {
                        requeued.push(v.clone());
                    } else {
                        terminated.push(v.clone());
                    }
                    if let Some(w) = worker.as_mut() {
                        w.value.ports.release(&v.id);
                    }
                    let key = self.ctx.keys.session(&v.id);
                    writes.push(Write::put(key, &v, s.mod_revision)?);
                }
                if let Some(w) = worker.as_mut() {
                    // Recompute the worker's load from the sessions that stay on it.
                    let ids: Vec<&str> = chunk.iter().map(|s| s.value.id.as_str()).collect();
                    w.value.allocated = snap
                        .sessions_on(&wid)
                        .filter(|s| !ids.contains(&s.value.id.as_str()))
                        .filter_map(|s| snap.definitions.get(&s.value.definition_id))
                        .fold(crate::resources::Load::default(), |a, d| {
                            a.saturating_add(&crate::resources::Load::new(
                                d.resource_requirements,
                                d.node_count,
                            ))
                        });
                    let key = self.ctx.keys.worker(&wid);
                    writes.push(Write::put(key, &w.value, w.mod_revision)?);
                }
                match self.ctx.commit(fence, writes).await? {
                    // Re-read next pass (with smaller batches after a TooLarge).
                    Commit::Conflict { .. } | Commit::TooLarge => return Ok(true),
                    Commit::Done(_) => {
                        wrote = true;
                        self.ctx.metrics.requeued(requeued.len() as u64);
                        for v in requeued.iter().chain(terminated.iter()) {
                            self.ctx.emit(CcmEvent::session(v), now).await;
                        }
                        report.requeued.extend(requeued.into_iter().map(|v| v.id));
                        report
                            .terminated
                            .extend(terminated.into_iter().map(|v| v.id));
                    }
                }
                // A chunk changed the worker's revision: the next chunk re-reads next pass.
                if worker.is_some() {
                    break;
                }
            }
        }
        Ok(wrote)
    }

    /// Carries out one action; false when there was nothing to do.
    async fn execute(
        &self,
        fence: &Fence,
        snap: &StateSnapshot,
        templates: &[crate::template::WorkerTemplate],
        action: &ScalingAction,
        now: Timestamp,
        report: &mut ControllerReport,
    ) -> Result<bool, RuntimeError> {
        let ctx = &self.ctx;
        match action {
            ScalingAction::Launch {
                worker_id,
                template,
                region,
                node_definitions,
                reason,
            } => {
                let Some(t) = templates.iter().find(|t| &t.name == template) else {
                    return Err(RuntimeError::Inconsistent(format!(
                        "template {template} of a planned launch is not in the spec store"
                    )));
                };
                self.launch_with_fallback(
                    fence,
                    t,
                    worker_id,
                    region,
                    node_definitions,
                    reason,
                    now,
                )
                .await
            }
            ScalingAction::Start { worker_id, .. } => {
                // The fenced intent first: a deposed leader's write fails here, before the
                // cloud is asked. A start that then fails is ordered again by the fleet resync.
                if !self
                    .transition_worker(fence, worker_id, WorkerState::Starting, now)
                    .await?
                {
                    return Ok(false);
                }
                self.leader.require_holds(fence)?;
                self.provider.start(worker_id).await?;
                Ok(true)
            }
            ScalingAction::CancelDrain { worker_id, .. } => {
                self.transition_worker(fence, worker_id, WorkerState::Running, now)
                    .await
            }
            ScalingAction::Drain { worker_id, reason } => {
                // Decided on `snap`: written only if the worker is unchanged since (a session
                // bound meanwhile moved its revision; the next pass decides again).
                let expect = snap.workers.get(worker_id).map(|w| w.mod_revision);
                let done = self
                    .transition_worker_at(fence, worker_id, WorkerState::Draining, now, expect)
                    .await?;
                if done {
                    ctx.metrics.drained();
                    if let Some(w) = snap.workers.get(worker_id) {
                        let e = scaling_event(
                            ScalingDirection::Down,
                            ScalingPhase::Requested,
                            &w.value,
                            reason.clone(),
                            self.plan_cost(),
                        );
                        ctx.emit(e, now).await;
                    }
                }
                Ok(done)
            }
            ScalingAction::Stop {
                worker_id,
                force,
                reason,
            } => {
                if *force
                    && !self
                        .terminate_sessions(fence, snap, worker_id, now, reason, report)
                        .await?
                {
                    // A session changed meanwhile: no stop on a stale view; next pass decides.
                    return Ok(false);
                }
                if !self
                    .transition_worker(fence, worker_id, WorkerState::Stopping, now)
                    .await?
                {
                    return Ok(false);
                }
                self.leader.require_holds(fence)?;
                self.provider.stop(worker_id).await?;
                ctx.metrics.stopped();
                Ok(true)
            }
            ScalingAction::Terminate { worker_id, .. } => {
                if !self
                    .transition_worker(fence, worker_id, WorkerState::Terminating, now)
                    .await?
                {
                    return Ok(false);
                }
                self.leader.require_holds(fence)?;
                match self.provider.terminate(worker_id).await {
                    Ok(()) => Ok(true),
                    Err(ProviderError::NotFound(_)) => {
                        // Not (or no longer) in the cloud: nothing to delete there.
                        self.transition_worker(fence, worker_id, WorkerState::Terminated, now)
                            .await
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// The templates as planning should see them at `now`: the regions that refused a launch
    /// of the template for lack of capacity within [`CAPACITY_BACKOFF_MINUTES`] are left out,
    /// so new workers go to the template's other regions or to another template (workers that
    /// exist are not affected).
    fn without_unavailable(
        &self,
        mut templates: Vec<crate::template::WorkerTemplate>,
        now: Timestamp,
    ) -> Vec<crate::template::WorkerTemplate> {
        let mut g = self.unavailable.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|_, until| *until > now);
        if !g.is_empty() {
            for t in &mut templates {
                t.regions
                    .retain(|r| !g.contains_key(&(t.name.clone(), r.clone())));
            }
        }
        templates
    }

    /// Launches `worker_id` of template `t`, in `region` unless that region is marked out of
    /// capacity for the template: then, and after a [`ProviderError::Capacity`] refusal, in the
    /// template's next region. A refused region is avoided for [`CAPACITY_BACKOFF_MINUTES`];
    /// each refusal is counted (`launch_capacity_refusals_total`) and the next region's
    /// scale-up event says why it was chosen.
    #[allow(clippy::too_many_arguments)]
    async fn launch_with_fallback(
        &self,
        fence: &Fence,
        t: &crate::template::WorkerTemplate,
        worker_id: &str,
        region: &str,
        node_definitions: &std::collections::BTreeSet<String>,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, RuntimeError> {
        let mut order: Vec<String> = vec![region.to_string()];
        order.extend(t.regions.iter().filter(|r| r.as_str() != region).cloned());
        let available: Vec<String> = {
            let mut g = self.unavailable.lock().unwrap_or_else(|p| p.into_inner());
            g.retain(|_, until| *until > now);
            order
                .into_iter()
                .filter(|r| !g.contains_key(&(t.name.clone(), r.clone())))
                .collect()
        };
        if available.is_empty() {
            return Err(RuntimeError::Provider(ProviderError::Capacity {
                region: t.regions.join(","),
                template: t.name.clone(),
                reason: "every region of the template refused for lack of capacity recently"
                    .to_string(),
            }));
        }
        let mut why = reason.to_string();
        let mut last = None;
        for r in available {
            match self
                .launch_in(fence, t, worker_id, &r, node_definitions, &why, now)
                .await?
            {
                Ok(done) => return Ok(done),
                Err(e @ ProviderError::Capacity { .. }) => {
                    tracing::warn!(worker = worker_id, template = %t.name, region = %r, error = %e, "no capacity; the region is avoided for a while");
                    self.ctx.metrics.capacity_refused();
                    self.unavailable
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(
                            (t.name.clone(), r.clone()),
                            now + chrono::Duration::minutes(CAPACITY_BACKOFF_MINUTES),
                        );
                    why = format!("{reason} (fallback: {e})");
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .map(RuntimeError::Provider)
            .unwrap_or_else(|| RuntimeError::Config("no region to launch in".to_string())))
    }

    /// Writes the PENDING record of `worker_id` in `region`, announces it and asks the provider
    /// to launch it; a refused launch removes the record again. The provider's refusal is the
    /// inner error.
    #[allow(clippy::too_many_arguments)]
    async fn launch_in(
        &self,
        fence: &Fence,
        t: &crate::template::WorkerTemplate,
        worker_id: &str,
        region: &str,
        node_definitions: &std::collections::BTreeSet<String>,
        reason: &str,
        now: Timestamp,
    ) -> Result<Result<bool, ProviderError>, RuntimeError> {
        let ctx = &self.ctx;
        let worker_id = &worker_id.to_string();
        let region = &region.to_string();
        let mut w = Worker::from_template(
            worker_id.clone(),
            t,
            region.clone(),
            WorkerState::Pending,
            template_cml_version(t),
            template_ami_name(t),
        );
        w.node_definitions = node_definitions.clone();
        w.launched_at = Some(now);
        w.boot_started_at = Some(now);
        w.launch_reason = reason.chars().take(MAX_LAUNCH_REASON_CHARS).collect();
        let key = ctx.keys.worker(worker_id);
        let write = Write::put(key.clone(), &w, 0)?;
        let Commit::Done(rev) = ctx.commit(fence, vec![write]).await? else {
            return Ok(Ok(false));
        };
        ctx.emit(
            scaling_event(
                ScalingDirection::Up,
                ScalingPhase::Requested,
                &w,
                reason,
                self.plan_cost(),
            ),
            now,
        )
        .await;
        let req = LaunchRequest {
            worker_id: worker_id.clone(),
            template: t.clone(),
            region: region.clone(),
        };
        match self.provider.launch(req).await {
            Ok(pid) => {
                ctx.metrics.launched();
                let mut launched = w.clone();
                launched.provider_id = Some(pid.clone());
                if let Some(e) = CcmEvent::worker(&launched, None, reason) {
                    ctx.emit(e, now).await;
                }
                self.update_worker(fence, worker_id, |w| {
                    let changed = w.provider_id.is_none();
                    if changed {
                        w.provider_id = Some(pid.clone());
                    }
                    Ok(changed)
                })
                .await?;
                Ok(Ok(true))
            }
            Err(e) => {
                ctx.metrics.launch_failed();
                // Forget the record so the next pass (or the next region) can try again.
                let write = Write {
                    key,
                    value: None,
                    expect: rev,
                };
                ctx.commit(fence, vec![write]).await?;
                Ok(Err(e))
            }
        }
    }

    async fn transition_worker(
        &self,
        fence: &Fence,
        id: &str,
        to: WorkerState,
        now: Timestamp,
    ) -> Result<bool, RuntimeError> {
        self.transition_worker_at(fence, id, to, now, None).await
    }

    /// Moves worker `id` to `to` (through the shortest path); with `expect`, only if its record
    /// is still at that revision (one attempt: false when it moved).
    async fn transition_worker_at(
        &self,
        fence: &Fence,
        id: &str,
        to: WorkerState,
        now: Timestamp,
        expect: Option<crate::store::Revision>,
    ) -> Result<bool, RuntimeError> {
        let res = self
            .update_worker_at(fence, id, expect, |w| {
                if w.state == to {
                    return Ok(false);
                }
                let steps = path(w.state, to).ok_or_else(|| {
                    RuntimeError::Transition(w.state.transition(to).err().unwrap_or_else(|| {
                        crate::transition::InvalidTransition {
                            entity: "worker",
                            from: w.state.to_string(),
                            to: to.to_string(),
                            allowed: Vec::new(),
                        }
                    }))
                })?;
                for s in steps {
                    w.transition(s)?;
                }
                if matches!(
                    to,
                    WorkerState::Starting | WorkerState::Stopping | WorkerState::Terminating
                ) {
                    w.ordered_at = Some(now);
                }
                match to {
                    WorkerState::Starting => w.boot_started_at = Some(now),
                    WorkerState::Draining => w.drain_started_at = Some(now),
                    WorkerState::Running => w.drain_started_at = None,
                    _ => {}
                }
                Ok(true)
            })
            .await?;
        let Some((before, after)) = res else {
            return Ok(false);
        };
        if before.state == after.state {
            return Ok(false);
        }
        if let Some(e) = CcmEvent::worker(&after, Some(before.state), "") {
            self.ctx.emit(e, now).await;
        }
        Ok(true)
    }

    async fn terminate_sessions(
        &self,
        fence: &Fence,
        snap: &StateSnapshot,
        worker_id: &str,
        now: Timestamp,
        reason: &str,
        report: &mut ControllerReport,
    ) -> Result<bool, RuntimeError> {
        let max = self.ctx.txn_limit();
        let sessions: Vec<_> = snap.sessions_on(worker_id).collect();
        let mut all = true;
        for chunk in sessions.chunks(max - 1) {
            let mut writes = Vec::new();
            let mut ended = Vec::with_capacity(chunk.len());
            for s in chunk {
                let mut v = s.value.clone();
                v.transition(SessionState::Terminated, now, reason)?;
                ended.push(v.clone());
                let key = self.ctx.keys.session(&v.id);
                writes.push(Write::put(key, &v, s.mod_revision)?);
            }
            if let Commit::Done(_) = self.ctx.commit(fence, writes).await? {
                for v in &ended {
                    report.terminated.push(v.id.clone());
                    self.ctx.emit(CcmEvent::session(v), now).await;
                }
            } else {
                all = false;
            }
        }
        Ok(all)
    }

    /// Repeats [`Controller::reconcile_once`] every `controller_interval` while this process
    /// leads, until `shutdown` turns true (see [`super::driver`]).
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        driver::drive(self, shutdown).await;
    }
}

impl Reconciler for Controller {
    fn name(&self) -> &'static str {
        super::CONTROLLER
    }

    fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    fn interval(&self) -> chrono::Duration {
        driver::interval_of(
            self.ctx.settings.controller_interval,
            chrono::Duration::seconds(30),
        )
    }

    async fn pass(&self, now: Timestamp) -> Result<PassOutcome, RuntimeError> {
        self.reconcile_once(now).await?;
        Ok(PassOutcome::default())
    }
}
