//! A simulated cloud: workers boot in their template's `startup_minutes` on the injected
//! [`Clock`] (a virtual one in tests and `ccm demo`), launches and starts can be told to fail,
//! and a worker can be made to fail or vanish.
//!
//! ```
//! # tokio_test_block_on(async {
//! use ccm_core::memory::provider::SimulatedProvider;
//! use ccm_core::store::{Clock, LaunchRequest, VirtualClock, WorkerProvider};
//! use ccm_core::worker::WorkerState;
//! use chrono::{Duration, TimeZone, Utc};
//! use std::sync::Arc;
//! let clock = VirtualClock::new(Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap());
//! let cloud = SimulatedProvider::new(Arc::new(clock.clone()));
//! let t = ccm_core::template::seed_templates().unwrap().remove(0);
//! cloud.launch(LaunchRequest { worker_id: "w1".into(), template: t, region: "us-east-1".into() }).await.unwrap();
//! clock.advance(Duration::minutes(20));
//! let states: Vec<_> = cloud.poll_events().await.into_iter().map(|e| e.state).collect();
//! assert_eq!(states, [WorkerState::Provisioning, WorkerState::Starting, WorkerState::Running]);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
//! ```

use crate::store::{
    Clock, LaunchRequest, ManagedInstance, ProviderError, ProviderEvent, WorkerProvider,
};
use crate::timeslot::Timestamp;
use crate::worker::WorkerState;
use async_trait::async_trait;
use chrono::Duration;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Minutes a stop or a terminate takes in the simulation.
pub const SHUTDOWN_MINUTES: i64 = 1;

#[derive(Debug, Clone)]
struct Instance {
    provider_id: String,
    state: WorkerState,
    startup: Duration,
    template: String,
    region: String,
}

#[derive(Debug, Default)]
struct Inner {
    instances: BTreeMap<String, Instance>,
    /// Scheduled changes: (when, sequence, event).
    scheduled: Vec<(Timestamp, u64, ProviderEvent)>,
    seq: u64,
    next_id: u64,
    fail_launches: u32,
    fail_all_launches: bool,
    fail_starts: u32,
    /// Regions refusing launches for lack of capacity.
    no_capacity: std::collections::BTreeSet<String>,
    launches: u64,
    /// Changes released, waiting for `poll_events`.
    outbox: Vec<ProviderEvent>,
}

/// The simulated [`WorkerProvider`].
#[derive(Clone)]
pub struct SimulatedProvider {
    clock: Arc<dyn Clock>,
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for SimulatedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedProvider").finish_non_exhaustive()
    }
}

impl SimulatedProvider {
    /// A cloud with no instances, on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        SimulatedProvider {
            clock,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` launches are refused.
    pub fn fail_next_launches(&self, n: u32) {
        self.lock().fail_launches = n;
    }

    /// Every launch is refused while `on` (e.g. no capacity in the region).
    pub fn fail_all_launches(&self, on: bool) {
        self.lock().fail_all_launches = on;
    }

    /// While `on`, launches in `region` fail with [`ProviderError::Capacity`] (what EC2's
    /// `InsufficientInstanceCapacity` becomes), other regions unaffected.
    pub fn no_capacity_in(&self, region: &str, on: bool) {
        let mut g = self.lock();
        if on {
            g.no_capacity.insert(region.to_string());
        } else {
            g.no_capacity.remove(region);
        }
    }

    /// The next `n` starts of stopped workers are refused.
    pub fn fail_next_starts(&self, n: u32) {
        self.lock().fail_starts = n;
    }

    /// The worker breaks now: a FAILED event, and nothing it had scheduled happens.
    pub fn fail_worker(&self, worker_id: &str) -> Result<(), ProviderError> {
        self.force(worker_id, WorkerState::Failed)
    }

    /// The worker vanishes now (e.g. a spot reclaim): a TERMINATED event nobody asked for.
    pub fn lose_worker(&self, worker_id: &str) -> Result<(), ProviderError> {
        self.force(worker_id, WorkerState::Terminated)
    }

    /// Takes an instance that already exists into the simulation (a fleet carried over from
    /// before): `w` in its state, booting ones reaching RUNNING `startup_minutes` after their
    /// launch (or from now), a stopping one STOPPED a minute from now. A DRAINING worker runs
    /// as far as the cloud is concerned. Returns the instance's provider id.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use ccm_core::memory::provider::SimulatedProvider;
    /// use ccm_core::store::{VirtualClock, WorkerProvider};
    /// use ccm_core::worker::{Worker, WorkerState};
    /// use chrono::{TimeZone, Utc};
    /// use std::sync::Arc;
    /// let clock = VirtualClock::new(Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap());
    /// let cloud = SimulatedProvider::new(Arc::new(clock));
    /// let t = ccm_core::template::seed_templates().unwrap().remove(0);
    /// let w = Worker::from_template("old-1", &t, "us-east-1", WorkerState::Stopped, "2.9.0".parse().unwrap(), "cml");
    /// cloud.adopt(&w, t.startup_minutes).unwrap();
    /// cloud.start("old-1").await.unwrap();
    /// assert_eq!(cloud.launches(), 0, "adopted, not launched");
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
    /// ```
    pub fn adopt(
        &self,
        w: &crate::worker::Worker,
        startup_minutes: u32,
    ) -> Result<String, ProviderError> {
        let now = self.clock.now();
        let mut g = self.lock();
        if g.instances
            .get(&w.id)
            .is_some_and(|i| i.state != WorkerState::Terminated)
        {
            return Err(refused("adopt", &w.id, "already known"));
        }
        g.next_id += 1;
        let pid = w
            .provider_id
            .clone()
            .unwrap_or_else(|| format!("i-{:017x}", g.next_id));
        let startup = Duration::minutes(i64::from(startup_minutes.max(1)));
        let state = match w.state {
            WorkerState::Draining => WorkerState::Running,
            s => s,
        };
        g.instances.insert(
            w.id.clone(),
            Instance {
                provider_id: pid.clone(),
                state,
                startup,
                template: w.template.clone(),
                region: w.region.clone(),
            },
        );
        if state.is_coming_up() {
            let ready = w
                .launched_at
                .map_or(now + startup, |l| l + startup)
                .max(now);
            Self::schedule(&mut g, &w.id, &pid, WorkerState::Running, ready);
        } else if state == WorkerState::Stopping {
            let stopped = now + Duration::minutes(SHUTDOWN_MINUTES);
            Self::schedule(&mut g, &w.id, &pid, WorkerState::Stopped, stopped);
        }
        Ok(pid)
    }

    /// Launches accepted so far.
    pub fn launches(&self) -> u64 {
        self.lock().launches
    }

    /// Instances not terminated, by worker id, with their current state.
    pub fn instances(&self) -> BTreeMap<String, WorkerState> {
        self.release_due();
        self.lock()
            .instances
            .iter()
            .filter(|(_, i)| i.state != WorkerState::Terminated)
            .map(|(k, i)| (k.clone(), i.state))
            .collect()
    }

    fn force(&self, worker_id: &str, state: WorkerState) -> Result<(), ProviderError> {
        self.release_due();
        let now = self.clock.now();
        let mut g = self.lock();
        g.scheduled.retain(|(_, _, e)| e.worker_id != worker_id);
        let pid = g
            .instances
            .get(worker_id)
            .map(|i| i.provider_id.clone())
            .ok_or_else(|| ProviderError::NotFound(worker_id.to_string()))?;
        Self::schedule(&mut g, worker_id, &pid, state, now);
        Ok(())
    }

    fn schedule(g: &mut Inner, worker_id: &str, pid: &str, state: WorkerState, at: Timestamp) {
        g.seq += 1;
        let seq = g.seq;
        g.scheduled.push((
            at,
            seq,
            ProviderEvent {
                worker_id: worker_id.to_string(),
                provider_id: pid.to_string(),
                state,
                at,
            },
        ));
    }

    /// Applies every change due by now to the instances and queues it for `poll_events`.
    fn release_due(&self) {
        let now = self.clock.now();
        let mut g = self.lock();
        g.scheduled.sort_by_key(|e| (e.0, e.1));
        let split = g.scheduled.partition_point(|(t, _, _)| *t <= now);
        let due: Vec<(Timestamp, u64, ProviderEvent)> = g.scheduled.drain(..split).collect();
        for (_, _, e) in due {
            if let Some(i) = g.instances.get_mut(&e.worker_id) {
                i.state = e.state;
            }
            g.outbox.push(e);
        }
    }

    fn instance_state(
        &self,
        worker_id: &str,
    ) -> Result<(String, WorkerState, Duration), ProviderError> {
        self.release_due();
        let g = self.lock();
        let i = g
            .instances
            .get(worker_id)
            .ok_or_else(|| ProviderError::NotFound(worker_id.to_string()))?;
        Ok((i.provider_id.clone(), i.state, i.startup))
    }
}

fn refused(action: &str, worker: &str, reason: impl Into<String>) -> ProviderError {
    ProviderError::Refused {
        action: action.to_string(),
        worker: worker.to_string(),
        reason: reason.into(),
    }
}

#[async_trait]
impl WorkerProvider for SimulatedProvider {
    async fn launch(&self, req: LaunchRequest) -> Result<String, ProviderError> {
        let now = self.clock.now();
        let mut g = self.lock();
        if g.fail_all_launches {
            return Err(refused(
                "launch",
                &req.worker_id,
                "injected failure: no capacity",
            ));
        }
        if g.no_capacity.contains(&req.region) {
            return Err(ProviderError::Capacity {
                region: req.region.clone(),
                template: req.template.name.clone(),
                reason: "InsufficientInstanceCapacity: injected".to_string(),
            });
        }
        if g.fail_launches > 0 {
            g.fail_launches -= 1;
            return Err(refused("launch", &req.worker_id, "injected failure"));
        }
        if let Some(i) = g
            .instances
            .get(&req.worker_id)
            .filter(|i| i.state != WorkerState::Terminated)
        {
            // A retry of a launch that went through: the same instance, nothing new.
            return Ok(i.provider_id.clone());
        }
        g.next_id += 1;
        g.launches += 1;
        let pid = format!("i-{:017x}", g.next_id);
        let startup = Duration::minutes(i64::from(req.template.startup_minutes.max(1)));
        g.instances.insert(
            req.worker_id.clone(),
            Instance {
                provider_id: pid.clone(),
                state: WorkerState::Pending,
                startup,
                template: req.template.name.clone(),
                region: req.region.clone(),
            },
        );
        Self::schedule(&mut g, &req.worker_id, &pid, WorkerState::Provisioning, now);
        Self::schedule(
            &mut g,
            &req.worker_id,
            &pid,
            WorkerState::Starting,
            now + startup / 2,
        );
        Self::schedule(
            &mut g,
            &req.worker_id,
            &pid,
            WorkerState::Running,
            now + startup,
        );
        Ok(pid)
    }

    async fn start(&self, worker_id: &str) -> Result<(), ProviderError> {
        let (pid, state, startup) = self.instance_state(worker_id)?;
        let now = self.clock.now();
        let mut g = self.lock();
        if g.fail_starts > 0 {
            g.fail_starts -= 1;
            return Err(refused("start", worker_id, "injected failure"));
        }
        if state != WorkerState::Stopped {
            return Err(refused(
                "start",
                worker_id,
                format!("it is {state}, not STOPPED"),
            ));
        }
        g.scheduled.retain(|(_, _, e)| e.worker_id != worker_id);
        Self::schedule(&mut g, worker_id, &pid, WorkerState::Starting, now);
        Self::schedule(&mut g, worker_id, &pid, WorkerState::Running, now + startup);
        Ok(())
    }

    async fn stop(&self, worker_id: &str) -> Result<(), ProviderError> {
        let (pid, state, _) = self.instance_state(worker_id)?;
        if matches!(state, WorkerState::Terminated | WorkerState::Terminating) {
            return Err(refused("stop", worker_id, format!("it is {state}")));
        }
        let now = self.clock.now();
        let mut g = self.lock();
        g.scheduled.retain(|(_, _, e)| e.worker_id != worker_id);
        Self::schedule(&mut g, worker_id, &pid, WorkerState::Stopping, now);
        Self::schedule(
            &mut g,
            worker_id,
            &pid,
            WorkerState::Stopped,
            now + Duration::minutes(SHUTDOWN_MINUTES),
        );
        Ok(())
    }

    async fn terminate(&self, worker_id: &str) -> Result<(), ProviderError> {
        let (pid, state, _) = self.instance_state(worker_id)?;
        if state == WorkerState::Terminated {
            return Ok(());
        }
        let now = self.clock.now();
        let mut g = self.lock();
        g.scheduled.retain(|(_, _, e)| e.worker_id != worker_id);
        Self::schedule(&mut g, worker_id, &pid, WorkerState::Terminating, now);
        Self::schedule(
            &mut g,
            worker_id,
            &pid,
            WorkerState::Terminated,
            now + Duration::minutes(SHUTDOWN_MINUTES),
        );
        Ok(())
    }

    async fn describe(&self, worker_id: &str) -> Result<Option<WorkerState>, ProviderError> {
        self.release_due();
        Ok(self.lock().instances.get(worker_id).map(|i| i.state))
    }

    async fn poll_events(&self) -> Vec<ProviderEvent> {
        self.release_due();
        std::mem::take(&mut self.lock().outbox)
    }

    async fn list_managed(&self) -> Result<Vec<ManagedInstance>, ProviderError> {
        self.release_due();
        Ok(self
            .lock()
            .instances
            .iter()
            .filter(|(_, i)| i.state != WorkerState::Terminated)
            .map(|(id, i)| ManagedInstance {
                worker_id: id.clone(),
                provider_id: i.provider_id.clone(),
                template: Some(i.template.clone()),
                region: i.region.clone(),
                state: i.state,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VirtualClock;
    use chrono::TimeZone;

    fn setup() -> (
        VirtualClock,
        SimulatedProvider,
        crate::template::WorkerTemplate,
    ) {
        let clock = VirtualClock::new(chrono::Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap());
        let p = SimulatedProvider::new(Arc::new(clock.clone()));
        let t = crate::template::seed_templates().unwrap().remove(0);
        (clock, p, t)
    }

    fn req(id: &str, t: &crate::template::WorkerTemplate) -> LaunchRequest {
        LaunchRequest {
            worker_id: id.into(),
            template: t.clone(),
            region: "us-east-1".into(),
        }
    }

    /// Lets the virtual clock run past every boot and shutdown.
    struct Advance(VirtualClock);

    #[async_trait]
    impl crate::testkit::provider::Driver for Advance {
        async fn settle(&self) {
            self.0.advance(Duration::hours(2));
        }
    }

    #[tokio::test]
    async fn behaviour_suite() {
        use crate::testkit::provider as suite;
        let (clock, p, t) = setup();
        let d = Advance(clock);
        suite::check_lifecycle(&p, &d, &t, "us-east-1", "life").await;
        let pid = suite::check_idempotent_launch(&p, &d, &t, "us-east-1", "again").await;
        assert_eq!(p.launches(), 2, "the retries launched nothing");
        assert!(pid.starts_with("i-"));
        suite::check_many(&p, &d, &t, "us-east-1", "many", 30).await;
        suite::check_two_regions(&p, &d, &t, ["us-east-1", "us-west-2"], "two").await;
    }

    #[tokio::test]
    async fn capacity_is_per_region() {
        let (_clock, p, t) = setup();
        p.no_capacity_in("us-east-1", true);
        let e = p.launch(req("w1", &t)).await.unwrap_err();
        assert!(e.is_capacity(), "{e}");
        assert!(e.to_string().contains("us-east-1"), "{e}");
        let mut other = req("w1", &t);
        other.region = "us-west-2".into();
        p.launch(other).await.unwrap();
        p.no_capacity_in("us-east-1", false);
        p.launch(req("w2", &t)).await.unwrap();
        assert_eq!(p.launches(), 2);
    }

    #[tokio::test]
    async fn boot_takes_the_template_startup_minutes() {
        let (clock, p, mut t) = setup();
        t.startup_minutes = 12;
        p.launch(req("w1", &t)).await.unwrap();
        clock.advance(Duration::minutes(11));
        let states: Vec<_> = p.poll_events().await.iter().map(|e| e.state).collect();
        assert_eq!(states, [WorkerState::Provisioning, WorkerState::Starting]);
        assert_eq!(p.describe("w1").await.unwrap(), Some(WorkerState::Starting));
        clock.advance(Duration::minutes(1));
        let ev = p.poll_events().await;
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].state, WorkerState::Running);
        assert_eq!(ev[0].at, clock.now());
        assert!(
            p.poll_events().await.is_empty(),
            "events are delivered once"
        );
    }

    #[tokio::test]
    async fn injected_failures_and_lost_workers() {
        let (clock, p, t) = setup();
        p.fail_next_launches(1);
        assert!(matches!(
            p.launch(req("w1", &t)).await,
            Err(ProviderError::Refused { .. })
        ));
        let pid = p.launch(req("w1", &t)).await.unwrap();
        assert_eq!(p.launches(), 1);
        clock.advance(Duration::minutes(5));
        p.fail_worker("w1").unwrap();
        clock.advance(Duration::hours(1));
        let ev = p.poll_events().await;
        let last = ev.last().unwrap();
        assert_eq!(
            (last.state, last.provider_id.as_str()),
            (WorkerState::Failed, pid.as_str())
        );
        assert!(
            !ev.iter().any(|e| e.state == WorkerState::Running),
            "a failed boot never completes"
        );
        assert!(matches!(
            p.fail_worker("nope"),
            Err(ProviderError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn stop_start_terminate() {
        let (clock, p, t) = setup();
        p.launch(req("w1", &t)).await.unwrap();
        clock.advance(Duration::minutes(20));
        assert!(p.start("w1").await.is_err(), "only a stopped worker starts");
        p.stop("w1").await.unwrap();
        clock.advance(Duration::minutes(SHUTDOWN_MINUTES));
        assert_eq!(p.describe("w1").await.unwrap(), Some(WorkerState::Stopped));
        p.fail_next_starts(1);
        assert!(p.start("w1").await.is_err());
        p.start("w1").await.unwrap();
        clock.advance(Duration::minutes(20));
        assert_eq!(p.describe("w1").await.unwrap(), Some(WorkerState::Running));
        p.terminate("w1").await.unwrap();
        clock.advance(Duration::minutes(SHUTDOWN_MINUTES));
        assert!(p.instances().is_empty());
        let states: Vec<_> = p.poll_events().await.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                WorkerState::Provisioning,
                WorkerState::Starting,
                WorkerState::Running,
                WorkerState::Stopping,
                WorkerState::Stopped,
                WorkerState::Starting,
                WorkerState::Running,
                WorkerState::Terminating,
                WorkerState::Terminated,
            ]
        );
    }
}
