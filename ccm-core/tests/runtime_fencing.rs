//! Provider calls are fenced and worker news is never lost:
//! - a leader whose keep-alive stalls stops acting at TTL − margin, before its lease can expire
//!   and a standby take over (a recording provider proves it makes no call), and resumes when
//!   the keep-alive gets through in time; deposed, it never acts again;
//! - an order to the cloud is written (fenced) before it is given, and the fleet resync gives
//!   it again when the cloud did not carry it out;
//! - one provider event that cannot be applied does not drop the others, a lost event is
//!   recovered by the resync, and a PENDING record whose launch never reached the cloud is
//!   marked FAILED instead of counting against the region for ever.

mod runtime_common;

use async_trait::async_trait;
use ccm_core::runtime::{lease_margin, Runtime, RuntimeSettings};
use ccm_core::session::SessionState;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{
    LaunchRequest, LeaderElector, LeaderInfo, Leadership, ManagedInstance, ProviderError,
    ProviderEvent, SpecStore, StateStore, StoreError, WorkerProvider,
};
use ccm_core::worker::{Worker, WorkerState};
use chrono::Duration;
use runtime_common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A [`StoreElector`] whose keep-alives can be held back (a partitioned etcd).
struct Stalling {
    inner: StoreElector<ccm_core::memory::state::MemoryStateStore>,
    stalled: AtomicBool,
}

#[async_trait]
impl LeaderElector for Stalling {
    async fn try_campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Leadership>, StoreError> {
        self.inner.try_campaign(election, candidate, ttl).await
    }
    async fn observe(&self, election: &str) -> Result<Option<LeaderInfo>, StoreError> {
        self.inner.observe(election).await
    }
    async fn keep_alive(&self, leadership: &Leadership) -> Result<(), StoreError> {
        while self.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.inner.keep_alive(leadership).await
    }
    async fn resign(&self, leadership: &Leadership) -> Result<(), StoreError> {
        self.inner.resign(leadership).await
    }
}

/// The world's simulated provider, counting the calls that change the cloud.
struct Recording {
    inner: Arc<dyn WorkerProvider>,
    calls: AtomicU64,
}

impl Recording {
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl WorkerProvider for Recording {
    async fn launch(&self, req: LaunchRequest) -> Result<String, ProviderError> {
        self.count();
        self.inner.launch(req).await
    }
    async fn start(&self, id: &str) -> Result<(), ProviderError> {
        self.count();
        self.inner.start(id).await
    }
    async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        self.count();
        self.inner.stop(id).await
    }
    async fn terminate(&self, id: &str) -> Result<(), ProviderError> {
        self.count();
        self.inner.terminate(id).await
    }
    async fn describe(&self, id: &str) -> Result<Option<WorkerState>, ProviderError> {
        self.inner.describe(id).await
    }
    async fn poll_events(&self) -> Vec<ProviderEvent> {
        self.inner.poll_events().await
    }
    async fn list_managed(&self) -> Result<Vec<ManagedInstance>, ProviderError> {
        self.inner.list_managed().await
    }
}

struct Candidate {
    rt: Arc<Runtime>,
    elector: Arc<Stalling>,
    provider: Arc<Recording>,
}

fn candidate(w: &World, name: &str) -> Candidate {
    let settings = RuntimeSettings {
        // Interval-driven passes every second of virtual time.
        controller_interval: std::time::Duration::from_secs(1),
        scheduler_interval: std::time::Duration::from_secs(1),
        ..World::settings(name)
    };
    let elector = Arc::new(Stalling {
        inner: StoreElector::new(w.store.clone(), settings.prefix.clone()),
        stalled: AtomicBool::new(false),
    });
    let provider = Arc::new(Recording {
        inner: w.provider.clone(),
        calls: AtomicU64::new(0),
    });
    let rt = Arc::new(
        Runtime::builder()
            .state(w.store.clone())
            .elector(elector.clone())
            .spec(w.spec.clone())
            .events(w.events.clone())
            .clock(Arc::new(w.clock.clone()))
            .provider(provider.clone())
            .settings(settings)
            .build()
            .unwrap(),
    );
    Candidate {
        rt,
        elector,
        provider,
    }
}

async fn tick(w: &World, secs: i64) {
    for _ in 0..secs * 4 {
        w.clock.advance(Duration::milliseconds(250));
        settle().await;
    }
}

#[tokio::test]
async fn a_leader_whose_keep_alive_stalls_stops_acting_before_its_lease_can_expire() {
    let w = World::new().await;
    let a = candidate(&w, "a");
    let ttl = Duration::from_std(World::settings("a").leader_ttl).unwrap();
    let margin = Duration::from_std(lease_margin(World::settings("a").leader_ttl)).unwrap();
    let running = a.rt.clone().spawn();
    eventually("a leads the controller", || async {
        a.rt.leadership().controller
    })
    .await;
    // Just after a keep-alive went through: the next one (TTL/3 later) stalls.
    a.elector.stalled.store(true, Ordering::SeqCst);
    let stalled_at = w.clock_now();
    let lapse = stalled_at + ttl - margin;
    while w.clock_now() < lapse + Duration::milliseconds(250) {
        tick(&w, 1).await;
    }
    assert!(
        !a.rt.leadership().controller,
        "lapsed at TTL − margin ({}) without an answer",
        w.clock_now() - stalled_at
    );
    // The lease is still valid in the store (nobody else could lead yet), but a booking that
    // calls for a launch gets no provider call from a.
    assert!(w.clock_now() < stalled_at + ttl);
    w.add_session("s1", None).await;
    tick(&w, 1).await;
    assert_eq!(
        a.provider.calls(),
        0,
        "a lapsed leader made a provider call"
    );
    assert!(w.workers().await.is_empty(), "nor wrote a worker record");
    // The held-back keep-alive gets through before the lease expired: a leads and acts again.
    a.elector.stalled.store(false, Ordering::SeqCst);
    eventually("a leads again", || async { a.rt.leadership().controller }).await;
    eventually("a launches", || async {
        settle().await;
        w.clock.advance(Duration::milliseconds(250));
        a.provider.calls() >= 1
    })
    .await;
    assert_eq!(w.workers().await.len(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn a_deposed_leader_never_calls_the_provider_and_its_successor_does() {
    let w = World::new().await;
    let a = candidate(&w, "a");
    let b = candidate(&w, "b");
    let ra = a.rt.clone().spawn();
    eventually("a leads", || async { a.rt.leadership().controller }).await;
    let rb = b.rt.clone().spawn();
    settle().await;
    a.elector.stalled.store(true, Ordering::SeqCst);
    eventually("a lapses", || async {
        w.clock.advance(Duration::milliseconds(250));
        settle().await;
        !a.rt.leadership().controller
    })
    .await;
    w.add_session("s1", None).await;
    // Past a's lease: b takes over and launches.
    eventually("b leads and launches", || async {
        w.clock.advance(Duration::milliseconds(250));
        settle().await;
        b.rt.leadership().controller && b.provider.calls() >= 1
    })
    .await;
    assert!(!a.rt.leadership().controller);
    // a's keep-alive finally gets an answer: the lease is gone, a stays deposed.
    a.elector.stalled.store(false, Ordering::SeqCst);
    tick(&w, 20).await;
    assert!(!a.rt.leadership().controller, "a still thinks it leads");
    assert_eq!(a.provider.calls(), 0, "the deposed leader acted");
    assert_eq!(w.workers().await.len(), 1, "one worker for the one booking");
    ra.shutdown().await;
    rb.shutdown().await;
}

/// A worker launched through the simulated provider and recorded, as the controller does.
async fn launched(w: &World, id: &str) -> Worker {
    let t = &templates()[0];
    let pid = w
        .provider
        .launch(LaunchRequest {
            worker_id: id.into(),
            template: t.clone(),
            region: "us-east-1".into(),
        })
        .await
        .unwrap();
    let mut rec = World::worker_record(id, WorkerState::Pending);
    rec.provider_id = Some(pid);
    rec.launched_at = Some(w.clock_now());
    w.put_worker(&rec).await;
    rec
}

#[tokio::test]
async fn one_event_that_cannot_be_applied_does_not_drop_the_others() {
    let w = World::new().await;
    launched(&w, "w1").await;
    launched(&w, "w2").await;
    // w1's record is corrupted (a future version's state): its events cannot be applied.
    let key = w.keys.worker("w1");
    let mut v: serde_json::Value =
        serde_json::from_slice(&w.store.get(&key).await.unwrap().unwrap().value).unwrap();
    v["state"] = "HIBERNATING".into();
    w.store
        .put(&key, serde_json::to_vec(&v).unwrap(), None)
        .await
        .unwrap();
    w.clock.advance(Duration::minutes(25)); // both instances are up by now
    let rt = w.runtime(World::settings_keep_fleet("a"));
    rt.step().await.unwrap();
    assert_eq!(
        w.worker("w2").await.unwrap().state,
        WorkerState::Running,
        "w2's events were applied though w1's failed"
    );
    let raw = w.store.get(&key).await.unwrap().unwrap().value;
    assert!(
        String::from_utf8_lossy(&raw).contains("HIBERNATING"),
        "w1's record is left alone"
    );
}

#[tokio::test]
async fn a_lost_running_event_is_recovered_by_the_fleet_resync() {
    let w = World::new().await;
    let every = Duration::hours(1);
    let rt = w.runtime(RuntimeSettings {
        fleet_resync_interval: every,
        // One term over the whole test (a new term resyncs at once).
        leader_ttl: std::time::Duration::from_secs(4 * 3600),
        ..World::settings_keep_fleet("a")
    });
    launched(&w, "w1").await;
    rt.step().await.unwrap(); // the term's first resync: the instance is still booting
    let started = w.clock_now();
    w.clock.advance(Duration::minutes(25));
    // Someone else drained the provider's events: the controller never hears of them.
    assert!(!w.provider.poll_events().await.is_empty());
    w.clock.advance(Duration::seconds(10));
    rt.step().await.unwrap();
    assert_eq!(
        w.worker("w1").await.unwrap().state,
        WorkerState::Provisioning,
        "as last heard"
    );
    w.clock.set(started + every);
    rt.step().await.unwrap();
    assert_eq!(
        w.worker("w1").await.unwrap().state,
        WorkerState::Running,
        "the resync read the instance's state"
    );
}

#[tokio::test]
async fn a_pending_record_whose_launch_never_reached_the_cloud_is_marked_failed() {
    let w = World::new().await;
    let mut rec = World::worker_record("phantom", WorkerState::Pending);
    rec.launched_at = Some(w.clock_now());
    w.put_worker(&rec).await;
    let rt = w.runtime(World::settings_keep_fleet("a"));
    rt.step().await.unwrap();
    assert_eq!(
        w.worker("phantom").await.unwrap().state,
        WorkerState::Pending,
        "within the adoption grace a launch may still be under way"
    );
    w.clock
        .advance(Duration::minutes(6) + World::settings("a").fleet_resync_interval);
    rt.step().await.unwrap();
    let after = w.worker("phantom").await.unwrap();
    assert!(
        matches!(
            after.state,
            WorkerState::Failed | WorkerState::Terminating | WorkerState::Terminated
        ),
        "{}",
        after.state
    );
    assert_eq!(w.provider.launches(), 0, "nothing was in the cloud");
    assert!(rt.metrics().workers_lost_total >= 1);
}

#[tokio::test]
async fn a_start_the_cloud_refused_is_recorded_first_and_ordered_again() {
    let w = World::new().await;
    // One worker at most in the one region: a booking can only be served by starting w1 again.
    for mut t in templates() {
        t.max_workers_per_region = Some(u32::from(t.name == templates()[0].name));
        t.regions = vec!["us-east-1".into()];
        w.spec.put_template(&t).await.unwrap();
    }
    launched(&w, "w1").await;
    w.clock.advance(Duration::minutes(25));
    let rt = w.runtime(World::settings("a"));
    // Nothing booked: the planner drains and stops the idle worker.
    for _ in 0..120 {
        rt.step().await.unwrap();
        w.clock.advance(Duration::minutes(1));
        if w.worker("w1").await.unwrap().state == WorkerState::Stopped {
            break;
        }
    }
    assert_eq!(w.worker("w1").await.unwrap().state, WorkerState::Stopped);
    // A booking needs it again; the cloud refuses the first start.
    w.provider.fail_next_starts(1);
    w.add_session("s1", None).await;
    let mut saw_starting = false;
    for _ in 0..60 {
        w.clock.advance(Duration::minutes(1));
        rt.step().await.unwrap();
        let wk = w.worker("w1").await.unwrap();
        if wk.state == WorkerState::Starting {
            saw_starting = true;
            assert!(wk.ordered_at.is_some(), "the order is recorded");
        }
        if w.session("s1").await.state == SessionState::Scheduled
            && wk.state == WorkerState::Running
        {
            break;
        }
    }
    assert!(saw_starting, "the intent was written before the call");
    assert_eq!(w.worker("w1").await.unwrap().state, WorkerState::Running);
    assert!(
        rt.metrics().provider_reorders_total >= 1,
        "the refused start was ordered again"
    );
}
