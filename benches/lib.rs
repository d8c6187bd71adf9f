//! Shared fleet and scenario generators for the benchmarks, and their set-up: the tokio
//! runtime, records written to a store, a runtime on the memory backends, timed rounds.
//!
//! Everything is deterministic (a seeded SplitMix64), so runs are comparable.

use ccm_core::glob::Glob;
use ccm_core::license::LicenseType;
use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::placement::Requirements;
use ccm_core::resources::Load;
use ccm_core::runtime::{Runtime, RuntimeSettings};
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{StateStore, VirtualClock};
use ccm_core::template::WorkerTemplate;
use ccm_core::version::VersionRange;
use ccm_core::worker::{Worker, WorkerState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small deterministic random source (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[lo, hi)` as a float.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed templates plus an EVALUATION one: mixed licences and capacities.
pub fn bench_templates() -> Vec<WorkerTemplate> {
    let mut ts = ccm_core::template::seed_templates().unwrap_or_default();
    if let Some(first) = ts.first().cloned() {
        let mut ev = first;
        ev.name = "evaluation-small".into();
        ev.license_type = LicenseType::Evaluation;
        ev.capacity.cpu_cores = 24;
        ev.capacity.memory_gb = 96;
        ev.max_nodes = 20;
        ts.push(ev);
    }
    ts
}

const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];
const VERSIONS: [&str; 3] = ["2.9.0", "2.9.1", "2.10.0"];

/// `n` RUNNING workers of mixed templates, licences, regions and CML versions, each filled to
/// a random 50–90 % (per dimension, with ±5 % jitter) with ports held in proportion.
pub fn mixed_fleet(n: usize, seed: u64) -> Vec<Worker> {
    let ts = bench_templates();
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let t = &ts[rng.below(ts.len() as u64) as usize];
            let region = if t.regions.len() > 1 {
                REGIONS[rng.below(2) as usize]
            } else {
                t.regions.first().map(String::as_str).unwrap_or("us-east-1")
            };
            let v = VERSIONS[rng.below(3) as usize];
            let mut w = Worker::from_template(
                format!("w{:07}", i as u64 * 7919 % 1_000_003),
                t,
                region,
                WorkerState::Running,
                v.parse()
                    .unwrap_or_else(|_| ccm_core::version::CmlVersion::zero()),
                format!("CML-{v}"),
            );
            if rng.below(2) == 0 {
                w.node_definitions.insert("iosv".into());
                w.node_definitions.insert("csr1000v".into());
            }
            let fill = rng.range_f64(0.5, 0.9);
            let c = w.capacity.dims();
            w.allocated = Load::from_dims(c.map(|cap| {
                let f = (fill + rng.range_f64(-0.05, 0.05)).clamp(0.0, 1.0);
                (f64::from(cap) * f) as u32
            }));
            let sessions = (fill * 10.0) as usize;
            for s in 0..sessions {
                let names: Vec<String> = (0..3).map(|p| format!("p{p}")).collect();
                let _ = w.ports.allocate(&format!("pre-{i}-{s}"), &names);
            }
            w
        })
        .collect()
}

/// A typical session: 4 cores, 16 GB, 50 GB, 5 nodes, 3 ports, PERSONAL, CML 2.9–2.10.
pub fn typical_request() -> Requirements {
    Requirements {
        load: Load {
            cpu_cores: 4,
            memory_gb: 16,
            storage_gb: 50,
            nodes: 5,
        },
        license_affinity: vec![LicenseType::Personal],
        cml_versions: VersionRange {
            min: "2.9".parse().ok(),
            max: "2.10".parse().ok(),
        },
        node_definitions: vec![],
        ami: Some(Glob::new("CML-2.*")),
        ports: vec!["ssh".into(), "console".into(), "http".into()],
        region: None,
    }
}

/// The etcd the etcd benches run on: `CCM_TEST_ETCD`, default `http://127.0.0.1:23790`.
pub fn etcd_endpoint() -> String {
    std::env::var("CCM_TEST_ETCD").unwrap_or_else(|_| "http://127.0.0.1:23790".to_string())
}

/// A single-threaded tokio runtime (the in-memory benches).
pub fn tokio_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A tokio runtime with two worker threads, as many as the machine has cores (the etcd benches).
pub fn tokio_two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Writes `value` as JSON at `key` (seeding, not timed).
pub async fn put_json<T: serde::Serialize>(store: &dyn StateStore, key: &str, value: &T) {
    store
        .put(key, serde_json::to_vec(value).expect("json"), None)
        .await
        .unwrap_or_else(|e| panic!("seed {key}: {e}"));
}

/// A runtime on the memory backends: `store` (its elector under `/ccm`), `spec`, `provider`,
/// events recorded, time from `clock`.
pub fn memory_runtime(
    store: Arc<MemoryStateStore>,
    spec: Arc<MemorySpecStore>,
    clock: &VirtualClock,
    provider: Arc<SimulatedProvider>,
    settings: RuntimeSettings,
) -> Runtime {
    Runtime::builder()
        .state(store.clone())
        .elector(Arc::new(StoreElector::new(store, "/ccm")))
        .spec(spec)
        .events(Arc::new(RecordingSink::new()))
        .clock(Arc::new(clock.clone()))
        .provider(provider)
        .settings(settings)
        .build()
        .expect("runtime")
}

/// `iters` rounds for criterion's `iter_custom`: each round's `setup` and `after` (checks,
/// clean-up) are not timed, its `measured` part is; returns the measured time.
pub async fn timed_rounds<S, T>(
    iters: u64,
    mut setup: impl AsyncFnMut() -> S,
    mut measured: impl AsyncFnMut(&S) -> T,
    mut after: impl AsyncFnMut(S, T),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let state = setup().await;
        let t0 = Instant::now();
        let out = measured(&state).await;
        total += t0.elapsed();
        after(state, out).await;
    }
    total
}
