//! Wiring: [`RuntimeBuilder`] → [`Runtime`] → a spawned [`RuntimeHandle`] or direct
//! [`Runtime::step`]s on a virtual clock.

use super::context::Ctx;
use super::controller::{Controller, ControllerReport};
use super::lab_loop::{LabLoop, LabReport};
use super::leadership::{Campaigner, LeaderHandle};
use super::metrics::{Metrics, MetricsSnapshot};
use super::scheduler::{Scheduler, SchedulerReport};
use super::settings::RuntimeSettings;
use super::{KeyLayout, RuntimeError, CONTROLLER, LAB, SCHEDULER};
use crate::store::{
    Clock, EventSink, LabRuntime, LeaderElector, SpecStore, StateStore, WorkerProvider,
};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Collects the parts of a [`Runtime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    state: Option<Arc<dyn StateStore>>,
    elector: Option<Arc<dyn LeaderElector>>,
    spec: Option<Arc<dyn SpecStore>>,
    events: Option<Arc<dyn EventSink>>,
    clock: Option<Arc<dyn Clock>>,
    provider: Option<Arc<dyn WorkerProvider>>,
    artifacts: Option<Arc<dyn crate::store::ArtifactStore>>,
    labs: Option<Arc<dyn LabRuntime>>,
    settings: RuntimeSettings,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// The live-state store.
    pub fn state(mut self, s: Arc<dyn StateStore>) -> Self {
        self.state = Some(s);
        self
    }
    /// The leader elector (over the same store in practice).
    pub fn elector(mut self, e: Arc<dyn LeaderElector>) -> Self {
        self.elector = Some(e);
        self
    }
    /// Definitions and templates.
    pub fn spec(mut self, s: Arc<dyn SpecStore>) -> Self {
        self.spec = Some(s);
        self
    }
    /// Where events go.
    pub fn events(mut self, e: Arc<dyn EventSink>) -> Self {
        self.events = Some(e);
        self
    }
    /// Time.
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = Some(c);
        self
    }
    /// The cloud.
    pub fn provider(mut self, p: Arc<dyn WorkerProvider>) -> Self {
        self.provider = Some(p);
        self
    }
    /// Where lab YAML is kept (for [`Runtime::lablets`]; in memory when not set).
    pub fn artifacts(mut self, a: Arc<dyn crate::store::ArtifactStore>) -> Self {
        self.artifacts = Some(a);
        self
    }
    /// The lab side of the workers (their CML): with it the runtime runs the lab loop, and a
    /// launched worker is RUNNING only once its CML answers.
    pub fn labs(mut self, l: Arc<dyn LabRuntime>) -> Self {
        self.labs = Some(l);
        self
    }
    /// Intervals, TTL, lead time, grace, prefix, candidate id.
    pub fn settings(mut self, s: RuntimeSettings) -> Self {
        self.settings = s;
        self
    }

    /// Builds the runtime; the error names the first missing part.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        fn need<T>(v: Option<T>, what: &str) -> Result<T, RuntimeError> {
            v.ok_or_else(|| {
                RuntimeError::Config(format!("{what} is not set on the RuntimeBuilder"))
            })
        }
        let state = need(self.state, "state store")?;
        let elector = need(self.elector, "leader elector")?;
        let spec = need(self.spec, "spec store")?;
        let events = need(self.events, "event sink")?;
        let clock = need(self.clock, "clock")?;
        let provider = need(self.provider, "worker provider")?;
        let s = self.settings;
        if s.leader_ttl.is_zero() {
            return Err(RuntimeError::Config("leader TTL must be positive".into()));
        }
        if s.max_txn_ops < 3 {
            return Err(RuntimeError::Config(format!(
                "max_txn_ops must be at least 3, got {}",
                s.max_txn_ops
            )));
        }
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(Ctx::new(
            state,
            spec,
            events,
            clock.clone(),
            s.clone(),
            metrics.clone(),
        ));
        let sh = LeaderHandle::new(SCHEDULER, clock.clone());
        let ch = LeaderHandle::new(CONTROLLER, clock.clone());
        let lh = LeaderHandle::new(LAB, clock.clone());
        let campaign = |h: &LeaderHandle| {
            Campaigner::new(
                elector.clone(),
                clock.clone(),
                h.clone(),
                s.candidate.clone(),
                s.leader_ttl,
                metrics.clone(),
            )
        };
        let artifacts = self
            .artifacts
            .unwrap_or_else(|| Arc::new(crate::memory::artifact::MemoryArtifactStore::new()));
        let (failed, _) = watch::channel(None);
        let lab = self
            .labs
            .clone()
            .filter(|_| s.lab_enabled)
            .map(|labs| LabLoop::new(ctx.clone(), lh.clone(), labs, artifacts.clone()));
        Ok(Runtime {
            failed,
            lablets: crate::api::Lablets::new(ctx.clone(), artifacts),
            scheduler_campaign: campaign(&sh),
            controller_campaign: campaign(&ch),
            lab_campaign: lab.as_ref().map(|_| campaign(&lh)),
            lab,
            scheduler: Scheduler::new(ctx.clone(), sh),
            controller: Controller::new(ctx.clone(), ch, provider, self.labs),
            ctx,
            metrics,
        })
    }
}

/// Whether this process leads each loop (for `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoopLeadership {
    /// Leads the scheduler.
    pub scheduler: bool,
    /// Leads the controller.
    pub controller: bool,
    /// Leads the lab loop (false when the runtime has none).
    pub lab: bool,
}

/// What one [`Runtime::step`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Leadership after the campaign tick.
    pub leadership: LoopLeadership,
    /// The controller pass, when leading it.
    pub controller: Option<ControllerReport>,
    /// The scheduler pass, when leading it.
    pub scheduler: Option<SchedulerReport>,
    /// The lab loop pass, when leading it.
    pub lab: Option<LabReport>,
}

/// The scheduler and controller of one process, with their leadership.
pub struct Runtime {
    /// Why a loop died (set once; see [`Runtime::run`]).
    failed: watch::Sender<Option<String>>,
    ctx: Arc<Ctx>,
    lablets: crate::api::Lablets,
    metrics: Arc<Metrics>,
    scheduler: Scheduler,
    controller: Controller,
    scheduler_campaign: Campaigner,
    controller_campaign: Campaigner,
    lab: Option<LabLoop>,
    lab_campaign: Option<Campaigner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("candidate", &self.ctx.settings.candidate)
            .field("leadership", &self.leadership())
            .field("failed", &self.failure())
            .finish()
    }
}

impl Runtime {
    /// A builder.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The lablet API over this runtime's stores (register, book, cancel, explain, plan).
    pub fn lablets(&self) -> &crate::api::Lablets {
        &self.lablets
    }

    /// The scheduler loop.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The controller loop.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The lab loop, when the runtime has a [`LabRuntime`] and `lab_enabled` is set.
    pub fn lab_loop(&self) -> Option<&LabLoop> {
        self.lab.as_ref()
    }

    /// The key layout.
    pub fn keys(&self) -> &KeyLayout {
        &self.ctx.keys
    }

    /// The settings.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.ctx.settings
    }

    /// Counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Whether this process leads each loop now.
    pub fn leadership(&self) -> LoopLeadership {
        LoopLeadership {
            scheduler: self.scheduler.leader().is_leader(),
            controller: self.controller.leader().is_leader(),
            lab: self.lab.as_ref().is_some_and(|l| l.leader().is_leader()),
        }
    }

    /// One campaign / keep-alive step for each enabled loop.
    pub async fn campaign_once(&self) -> LoopLeadership {
        if self.ctx.settings.scheduler_enabled {
            self.scheduler_campaign.tick().await;
        }
        if self.ctx.settings.controller_enabled {
            self.controller_campaign.tick().await;
        }
        if let Some(c) = &self.lab_campaign {
            c.tick().await;
        }
        self.leadership()
    }

    /// One deterministic step at the clock's `now`: campaign, then a controller pass and a
    /// scheduler pass for each loop this process leads. `ccm demo` calls this after every
    /// advance of its virtual clock.
    pub async fn step(&self) -> Result<StepReport, RuntimeError> {
        let leadership = self.campaign_once().await;
        let mut report = StepReport {
            leadership,
            ..Default::default()
        };
        if leadership.controller {
            match self.controller.reconcile_once(self.ctx.clock.now()).await {
                Ok(r) => report.controller = Some(r),
                Err(RuntimeError::NotLeader { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if leadership.scheduler {
            match self.scheduler.reconcile_once(self.ctx.clock.now()).await {
                Ok(r) => report.scheduler = Some(r),
                Err(RuntimeError::NotLeader { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let (true, Some(lab)) = (leadership.lab, &self.lab) {
            match lab.reconcile_once(self.ctx.clock.now()).await {
                Ok(r) => report.lab = Some(r),
                Err(RuntimeError::NotLeader { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        report.leadership = self.leadership();
        Ok(report)
    }

    /// Gives up both leaderships at once (revokes the leases) so a standby takes over.
    pub async fn resign(&self) {
        self.scheduler_campaign.resign().await;
        self.controller_campaign.resign().await;
        if let Some(c) = &self.lab_campaign {
            c.resign().await;
        }
    }

    /// Why a loop of this runtime died, if one did (then nothing leads here any more and the
    /// daemon must exit; see [`Runtime::run`]).
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Runs the campaigns and both loops until `shutdown` turns true, then resigns.
    ///
    /// **A loop that dies takes its leadership with it.** When a loop task panics or returns
    /// before `shutdown`, the whole runtime stops: every task is told to stop, both
    /// leaderships are resigned at once (the leases are revoked, `is_leader` turns false, a
    /// standby takes over within one campaign tick), [`Runtime::failure`] names the loop and
    /// the panic, and `run` returns it as [`RuntimeError::LoopDied`]. Restarting the loop in
    /// place would repeat a panic that stored data causes on every pass; exiting lets the
    /// supervisor restart the process while a healthy standby leads.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let s = &self.ctx.settings;
        // Every task stops on `stop`: set by the caller's shutdown or by a dying loop.
        let (stop_tx, stop) = watch::channel(false);
        // A JoinSet aborts its tasks when dropped, so aborting `run` stops every loop.
        let mut tasks = tokio::task::JoinSet::new();
        let mut names = std::collections::HashMap::new();
        let mut spawn = |tasks: &mut tokio::task::JoinSet<()>,
                         name: String,
                         f: futures::future::BoxFuture<'static, ()>| {
            let h = tasks.spawn(f);
            names.insert(h.id(), name);
        };
        if s.scheduler_enabled {
            let (a, b) = (self.clone(), self.clone());
            let (r1, r2) = (stop.clone(), stop.clone());
            spawn(
                &mut tasks,
                format!("{SCHEDULER} campaign"),
                Box::pin(async move { a.scheduler_campaign.run(r1).await }),
            );
            spawn(
                &mut tasks,
                format!("{SCHEDULER} loop"),
                Box::pin(async move { b.scheduler.run(r2).await }),
            );
        }
        if s.controller_enabled {
            let (a, b) = (self.clone(), self.clone());
            let (r1, r2) = (stop.clone(), stop.clone());
            spawn(
                &mut tasks,
                format!("{CONTROLLER} campaign"),
                Box::pin(async move { a.controller_campaign.run(r1).await }),
            );
            spawn(
                &mut tasks,
                format!("{CONTROLLER} loop"),
                Box::pin(async move { b.controller.run(r2).await }),
            );
        }
        if self.lab.is_some() {
            let (a, b) = (self.clone(), self.clone());
            let (r1, r2) = (stop.clone(), stop.clone());
            spawn(
                &mut tasks,
                format!("{LAB} campaign"),
                Box::pin(async move {
                    if let Some(c) = &a.lab_campaign {
                        c.run(r1).await;
                    }
                }),
            );
            spawn(
                &mut tasks,
                format!("{LAB} loop"),
                Box::pin(async move {
                    if let Some(l) = &b.lab {
                        l.run(r2).await;
                    }
                }),
            );
        }
        let mut shutdown = shutdown;
        let mut stopping = false;
        let mut failure: Option<String> = None;
        loop {
            tokio::select! {
                _ = super::leadership::shutdown_requested(&mut shutdown), if !stopping => {
                    stopping = true;
                    stop_tx.send_replace(true);
                }
                r = tasks.join_next_with_id() => {
                    let Some(r) = r else { break };
                    let (id, why) = match r {
                        Ok((id, ())) => (id, "returned".to_string()),
                        Err(e) => (e.id(), panic_text(e)),
                    };
                    if stopping {
                        if why != "returned" {
                            tracing::error!(task = names.get(&id).map_or("?", String::as_str), error = %why, "runtime task failed while stopping");
                        }
                        continue;
                    }
                    let name = names.get(&id).cloned().unwrap_or_else(|| "a runtime task".into());
                    let text = format!("{name} ended unexpectedly ({why})");
                    tracing::error!(task = %name, error = %why, "a loop died: resigning leadership and stopping this runtime");
                    stopping = true;
                    // Resign first, so a standby can take over while the other tasks stop.
                    self.resign().await;
                    stop_tx.send_replace(true);
                    self.failed.send_replace(Some(text.clone()));
                    failure = Some(text);
                }
            }
        }
        self.resign().await;
        match failure {
            Some(reason) => Err(RuntimeError::LoopDied(reason)),
            None => Ok(()),
        }
    }

    /// Spawns [`Runtime::run`] on the current tokio runtime.
    pub fn spawn(self: Arc<Self>) -> RuntimeHandle {
        let (tx, rx) = watch::channel(false);
        let failed = self.failed.subscribe();
        let task = tokio::spawn(self.clone().run(rx));
        RuntimeHandle {
            runtime: self,
            shutdown: tx,
            failed,
            task,
        }
    }
}

/// A running [`Runtime`].
#[derive(Debug)]
pub struct RuntimeHandle {
    runtime: Arc<Runtime>,
    shutdown: watch::Sender<bool>,
    failed: watch::Receiver<Option<String>>,
    task: JoinHandle<Result<(), RuntimeError>>,
}

impl RuntimeHandle {
    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Resolves with the reason once a loop of this runtime died (its leadership is then
    /// already resigned); pending for ever while the loops run.
    pub async fn failed(&mut self) -> String {
        loop {
            if let Some(why) = self.failed.borrow_and_update().clone() {
                return why;
            }
            if self.failed.changed().await.is_err() {
                return futures::future::pending().await;
            }
        }
    }

    /// Graceful stop: the loops end and leadership is resigned (a loop that had died is
    /// logged; [`RuntimeHandle::stop`] returns it).
    pub async fn shutdown(self) {
        if let Err(e) = self.stop().await {
            tracing::error!(error = %e, "runtime had failed");
        }
    }

    /// Graceful stop like [`RuntimeHandle::shutdown`], returning
    /// [`RuntimeError::LoopDied`] when a loop had died before.
    pub async fn stop(self) -> Result<(), RuntimeError> {
        self.shutdown.send_replace(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "runtime ended abnormally");
                Err(RuntimeError::LoopDied(format!("runtime task: {e}")))
            }
        }
    }

    /// A crash: the tasks are aborted without resigning (the leases run out on their own).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// The message of a panicked task, or why it was cancelled.
fn panic_text(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "cancelled".into();
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    format!("panicked: {msg}")
}
