//! Shared set-up of the runtime tests: in-memory stores on one virtual clock.
#![allow(dead_code)]

use ccm_core::definition::LabletDefinition;
use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::resources::Resources;
use ccm_core::runtime::{KeyLayout, Runtime, RuntimeSettings};
use ccm_core::session::LabletSession;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{SpecStore, StateStore, VirtualClock};
use ccm_core::template::WorkerTemplate;
use ccm_core::timeslot::{Timeslot, Timestamp};
use ccm_core::worker::{Worker, WorkerState};
use chrono::{Duration, TimeZone, Utc};
use std::sync::Arc;

pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap()
}

pub fn templates() -> Vec<WorkerTemplate> {
    ccm_core::template::seed_templates().unwrap()
}

/// 4 cores, 16 GB, 20 GB, 2 nodes, ports ssh + vnc: 10 fit a personal-standard worker (nodes 20/2).
pub fn definition() -> LabletDefinition {
    LabletDefinition {
        name: "ccna-lab".into(),
        ..LabletDefinition::new(
            "def-ccna",
            Resources {
                cpu_cores: 4,
                memory_gb: 16,
                storage_gb: 20,
            },
            2,
            &["ssh", "vnc"],
        )
    }
}

pub struct World {
    pub clock: VirtualClock,
    pub store: Arc<MemoryStateStore>,
    pub spec: Arc<MemorySpecStore>,
    pub events: Arc<RecordingSink>,
    pub provider: Arc<SimulatedProvider>,
    pub keys: KeyLayout,
}

impl World {
    pub async fn new() -> World {
        let clock = VirtualClock::new(t0());
        let store = Arc::new(MemoryStateStore::new(Arc::new(clock.clone())));
        let spec = Arc::new(MemorySpecStore::new());
        spec.insert_definition(&definition()).await.unwrap();
        spec.seed_templates(&templates()).await.unwrap();
        World {
            provider: Arc::new(SimulatedProvider::new(Arc::new(clock.clone()))),
            clock,
            store,
            spec,
            events: Arc::new(RecordingSink::new()),
            keys: KeyLayout::default(),
        }
    }

    pub fn settings(candidate: &str) -> RuntimeSettings {
        RuntimeSettings {
            candidate: candidate.into(),
            ..RuntimeSettings::default()
        }
    }

    /// [`World::settings`] for tests about leadership and binding rather than scaling: the
    /// RUNNING workers a test adds stay up (the planner keeps them as warm workers instead of
    /// draining them while nothing is booked).
    pub fn settings_keep_fleet(candidate: &str) -> RuntimeSettings {
        RuntimeSettings {
            min_warm_workers: 1_000,
            ..World::settings(candidate)
        }
    }

    pub fn runtime(&self, settings: RuntimeSettings) -> Arc<Runtime> {
        let elector = Arc::new(StoreElector::new(
            self.store.clone(),
            settings.prefix.clone(),
        ));
        Arc::new(
            Runtime::builder()
                .state(self.store.clone())
                .elector(elector)
                .spec(self.spec.clone())
                .events(self.events.clone())
                .clock(Arc::new(self.clock.clone()))
                .provider(self.provider.clone())
                .settings(settings)
                .build()
                .unwrap(),
        )
    }

    /// A personal-standard worker record in us-east-1 in `state` (not stored).
    pub fn worker_record(id: &str, state: WorkerState) -> Worker {
        Worker::from_template(
            id,
            &templates()[0],
            "us-east-1",
            state,
            "2.9.0".parse().unwrap(),
            "CML-2.9.0",
        )
    }

    /// Stores `w` under its key as it is.
    pub async fn put_worker(&self, w: &Worker) {
        self.store
            .put(
                &self.keys.worker(&w.id),
                serde_json::to_vec(w).unwrap(),
                None,
            )
            .await
            .unwrap();
    }

    /// Stores new session `s` as it is (id, state and binding kept), through the façade's
    /// import as a migration would.
    pub async fn put_session(&self, s: &LabletSession) {
        let done = self
            .runtime(World::settings("seed"))
            .lablets()
            .import(std::slice::from_ref(s))
            .await
            .unwrap();
        assert_eq!(
            done.created.as_slice(),
            std::slice::from_ref(&s.id),
            "session {} existed",
            s.id
        );
    }

    /// Rewrites stored session `s` as it is: a scenario's edit of the record behind the
    /// loops' back (what an operator's or another version's write would be).
    pub async fn overwrite_session(&self, s: &LabletSession) {
        self.store
            .put(
                &self.keys.session(&s.id),
                serde_json::to_vec(s).unwrap(),
                None,
            )
            .await
            .unwrap();
    }

    /// A RUNNING personal-standard worker, stored.
    pub async fn add_worker(&self, id: &str) -> Worker {
        let mut w = World::worker_record(id, WorkerState::Running);
        w.ready_at = Some(self.clock_now());
        self.put_worker(&w).await;
        w
    }

    /// A PENDING session (ASAP when `start` is None), stored.
    pub async fn add_session(&self, id: &str, start: Option<Timestamp>) -> LabletSession {
        let slot = start.map(|s| Timeslot::new(s, s + Duration::hours(2)).unwrap());
        let s = LabletSession::new(id, "def-ccna", "1.0.0", "owner", slot, self.clock_now());
        self.put_session(&s).await;
        s
    }

    pub fn clock_now(&self) -> Timestamp {
        use ccm_core::store::Clock;
        self.clock.now()
    }

    pub async fn session(&self, id: &str) -> LabletSession {
        let kv = self
            .store
            .get(&self.keys.session(id))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&kv.value).unwrap()
    }

    pub async fn worker(&self, id: &str) -> Option<Worker> {
        let kv = self.store.get(&self.keys.worker(id)).await.unwrap()?;
        Some(serde_json::from_slice(&kv.value).unwrap())
    }

    pub async fn sessions(&self) -> Vec<LabletSession> {
        let l = self.store.list(&self.keys.sessions()).await.unwrap();
        l.kvs
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect()
    }

    pub async fn workers(&self) -> Vec<Worker> {
        let l = self.store.list(&self.keys.workers()).await.unwrap();
        l.kvs
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect()
    }
}

/// Lets spawned tasks run (real time, bounded).
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

/// Polls `cond` (letting tasks run) for up to 10 s of real time.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..2000 {
        if cond().await {
            return;
        }
        settle().await;
    }
    panic!("timed out waiting for: {what}");
}
