//! Wiring: [`RuntimeBuilder`] → [`Runtime`] → a spawned [`RuntimeHandle`] or direct
//! [`Runtime::step`]s on a virtual clock.

use super::context::Ctx;
use super::controller::{Controller, ControllerReport};
use super::leadership::{Campaigner, LeaderHandle};
use super::metrics::{Metrics, MetricsSnapshot};
use super::scheduler::{Scheduler, SchedulerReport};
use super::settings::RuntimeSettings;
use super::{KeyLayout, RuntimeError, CONTROLLER, SCHEDULER};
use crate::store::{Clock, EventSink, LeaderElector, SpecStore, StateStore, WorkerProvider};
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
        let sh = LeaderHandle::new(SCHEDULER);
        let ch = LeaderHandle::new(CONTROLLER);
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
        Ok(Runtime {
            lablets: crate::api::Lablets::new(ctx.clone(), artifacts),
            scheduler_campaign: campaign(&sh),
            controller_campaign: campaign(&ch),
            scheduler: Scheduler::new(ctx.clone(), sh),
            controller: Controller::new(ctx.clone(), ch, provider),
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
}

/// The scheduler and controller of one process, with their leadership.
pub struct Runtime {
    ctx: Arc<Ctx>,
    lablets: crate::api::Lablets,
    metrics: Arc<Metrics>,
    scheduler: Scheduler,
    controller: Controller,
    scheduler_campaign: Campaigner,
    controller_campaign: Campaigner,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("candidate", &self.ctx.settings.candidate)
            .field("leadership", &self.leadership())
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
        report.leadership = self.leadership();
        Ok(report)
    }

    /// Gives up both leaderships at once (revokes the leases) so a standby takes over.
    pub async fn resign(&self) {
        self.scheduler_campaign.resign().await;
        self.controller_campaign.resign().await;
    }

    /// Runs the campaigns and both loops until `shutdown` turns true, then resigns.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let s = &self.ctx.settings;
        // A JoinSet aborts its tasks when dropped, so aborting `run` stops every loop.
        let mut tasks = tokio::task::JoinSet::new();
        if s.scheduler_enabled {
            let (a, b) = (self.clone(), self.clone());
            let (r1, r2) = (shutdown.clone(), shutdown.clone());
            tasks.spawn(async move { a.scheduler_campaign.run(r1).await });
            tasks.spawn(async move { b.scheduler.run(r2).await });
        }
        if s.controller_enabled {
            let (a, b) = (self.clone(), self.clone());
            let (r1, r2) = (shutdown.clone(), shutdown.clone());
            tasks.spawn(async move { a.controller_campaign.run(r1).await });
            tasks.spawn(async move { b.controller.run(r2).await });
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "runtime task ended abnormally");
            }
        }
        self.resign().await;
    }

    /// Spawns [`Runtime::run`] on the current tokio runtime.
    pub fn spawn(self: Arc<Self>) -> RuntimeHandle {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(self.clone().run(rx));
        RuntimeHandle {
            runtime: self,
            shutdown: tx,
            task,
        }
    }
}

/// A running [`Runtime`].
#[derive(Debug)]
pub struct RuntimeHandle {
    runtime: Arc<Runtime>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RuntimeHandle {
    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Graceful stop: the loops end and leadership is resigned.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "runtime ended abnormally");
        }
    }

    /// A crash: the tasks are aborted without resigning (the leases run out on their own).
    pub fn abort(self) {
        self.task.abort();
    }
}
