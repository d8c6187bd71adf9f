//! Booking throughput and latency through the lablet façade (`ccm_core::api::Lablets::book`,
//! what `POST /api/v1/sessions` calls) on a real etcd (`CCM_TEST_ETCD`, default
//! `http://127.0.0.1:23790`), admission included: a booking is fitted into the kept admission
//! plan when the store has not moved since it was made, else the planner runs on the live state
//! plus the booking; either way the session is committed in a transaction guarded by the
//! admission key (the fast path commits the bookings waiting together in one transaction).
//!
//! * `admitted`: 200 bookings, 16 in flight, onto 20 RUNNING workers already holding
//!   `BOOKED` sessions spread over the next 8 hours (a fresh prefix per sample, seeding not
//!   timed).
//! * `raw_put` (baseline): the same 200 session records written with one guarded
//!   create-if-absent transaction each, 16 in flight — the store's floor without admission.
//!
//! Besides criterion's medians it prints the p50/p99 latency of one booking from a run of
//! 12,000 onto 60 workers (a few seconds: longer than the kept admission plan's shelf life, so its background
//! refresh is part of it), the bookings/s of that run, how many of them the admission fast
//! path took (the rest had the full re-plan) and how many plans were refreshed meanwhile. Target (issue: lablet API): ≥ 1,000 bookings/s with
//! p99 < 20 ms on the 2-core machine.

use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_benches::{etcd_endpoint, put_json, timed_rounds, tokio_two_workers};
use ccm_core::api::{BookingRequest, DefinitionDraft, Lablets};
use ccm_core::memory::artifact::MemoryArtifactStore;
use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::resources::Resources;
use ccm_core::runtime::{KeyLayout, Runtime, RuntimeSettings};
use ccm_core::store::{Clock, Compare, SpecStore, StateStore, SystemClock, Txn};
use ccm_core::template::parse_templates;
use ccm_core::worker::{Worker, WorkerState};
use chrono::Duration;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;

const WORKERS: usize = 20;
const BOOKED: usize = 100;
const BOOKINGS: usize = 200;
const IN_FLIGHT: usize = 16;
/// Bookings of the latency run: long enough (a few seconds) to outlive the kept admission
/// plan's shelf life several times, so its background refreshes are part of what is measured;
/// spread over 16 hours onto [`RUN_WORKERS`] workers (with the lab's instantiation at most
/// ~950 at once, within their 1,200 CML nodes).
const RUN: usize = 12_000;
/// Workers of the latency run.
const RUN_WORKERS: usize = 60;
/// Quarter hours the bookings are spread over (8 hours).
const DAY: usize = 32;

const LAB: &str = "\
lab:
  title: ccna
nodes:
  - id: n0
    label: r1
    node_definition: iosv
    tags: [\"ssh:${PORT_R1_SSH}\"]
";

struct Bench {
    lablets: Lablets,
    store: Arc<EtcdStateStore>,
    keys: KeyLayout,
    _runtime: Runtime,
}

/// A store with `workers` RUNNING workers and [`BOOKED`] sessions booked.
async fn world(tag: &str, workers: usize) -> Bench {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let prefix = format!("/ccm-bench-booking-{tag}-{nanos}");
    let store = Arc::new(
        EtcdStateStore::connect(EtcdConfig::new(vec![etcd_endpoint()]).with_prefix(prefix.clone()))
            .await
            .expect("etcd at CCM_TEST_ETCD (bash scripts/services.sh start)"),
    );
    let keys = KeyLayout::new(prefix.clone());
    let templates = parse_templates(
        include_str!("../config/worker-templates.yaml"),
        "worker-templates.yaml",
    )
    .expect("seed templates");
    let spec = Arc::new(MemorySpecStore::new());
    spec.seed_templates(&templates).await.expect("seed");
    for i in 0..workers {
        let mut w = Worker::from_template(
            format!("w{i:03}"),
            &templates[0],
            "us-east-1",
            WorkerState::Running,
            "2.9.0".parse().expect("version"),
            "CML-2.9.0",
        );
        w.launched_at = Some(chrono::Utc::now());
        put_json(store.as_ref(), &keys.worker(&w.id), &w).await;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let runtime = Runtime::builder()
        .state(store.clone())
        .elector(Arc::new(store.elector()))
        .spec(spec)
        .events(Arc::new(RecordingSink::new()))
        .clock(clock.clone())
        .provider(Arc::new(SimulatedProvider::new(clock)))
        .artifacts(Arc::new(MemoryArtifactStore::new()))
        .settings(RuntimeSettings {
            prefix,
            candidate: "bench".into(),
            controller_enabled: false,
            scheduler_enabled: false,
            ..RuntimeSettings::default()
        })
        .build()
        .expect("runtime");
    let lablets = runtime.lablets().clone();
    lablets
        .register_definition(
            DefinitionDraft {
                name: "ccna".into(),
                version: None,
                resource_requirements: Resources {
                    cpu_cores: 2,
                    memory_gb: 4,
                    storage_gb: 10,
                },
                node_count: None,
                license_affinity: Vec::new(),
                ami_requirements: Default::default(),
                max_duration_minutes: Some(120),
                created_by: None,
            },
            LAB,
        )
        .await
        .expect("register");
    let b = Bench {
        lablets,
        store,
        keys,
        _runtime: runtime,
    };
    // The sessions already booked (spread over 8 hours), admitted like any other.
    book_all(&b, BOOKED, "booked", DAY).await;
    b
}

/// Booking `i`: one hour, starting in one hour plus `i % quarters` quarter hours.
fn request(i: usize, tag: &str, quarters: usize) -> BookingRequest {
    let start =
        chrono::Utc::now() + Duration::hours(1) + Duration::minutes((i % quarters) as i64 * 15);
    BookingRequest {
        definition_id: "ccna".into(),
        timeslot_start: Some(start),
        timeslot_end: Some(start + Duration::hours(1)),
        owner_id: format!("{tag}-{i}"),
        ..BookingRequest::default()
    }
}

/// Books `n` sessions, `IN_FLIGHT` at a time; returns each booking's latency.
async fn book_all(b: &Bench, n: usize, tag: &str, quarters: usize) -> Vec<std::time::Duration> {
    futures::stream::iter(0..n)
        .map(|i| {
            let api = b.lablets.clone();
            let req = request(i, tag, quarters);
            async move {
                let t = Instant::now();
                let out = api.book(req).await.expect("booking");
                assert!(out.admission.accepted(), "{:?}", out.admission);
                t.elapsed()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// Writes `n` raw records, `IN_FLIGHT` at a time; returns each put's latency.
async fn raw_put(b: &Bench, n: usize) -> Vec<std::time::Duration> {
    futures::stream::iter(0..n)
        .map(|i| {
            let store = b.store.clone();
            let key = b.keys.session(&format!("raw-{i}"));
            async move {
                let t = Instant::now();
                let txn = Txn::new()
                    .when(Compare::Missing { key: key.clone() })
                    .put(key, br#"{"raw":true}"#.to_vec());
                assert!(store.txn(txn).await.expect("txn").succeeded);
                t.elapsed()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn bench(c: &mut Criterion) {
    let rt = tokio_two_workers();
    // One long run for the latency distribution.
    let (mut lat, secs, counts) = rt.block_on(async {
        let b = world("latency", RUN_WORKERS).await;
        let before = b.lablets.admission_counts();
        let t = Instant::now();
        let lat = book_all(&b, RUN, "run", 2 * DAY).await;
        let secs = t.elapsed().as_secs_f64();
        let after = b.lablets.admission_counts();
        (
            lat,
            secs,
            (
                after.fast - before.fast,
                after.full - before.full,
                after.refreshed - before.refreshed,
            ),
        )
    });
    lat.sort();
    let (mut raw, raw_secs) = rt.block_on(async {
        let b = world("raw-latency", WORKERS).await;
        let t = Instant::now();
        let lat = raw_put(&b, 1_000).await;
        (lat, t.elapsed().as_secs_f64())
    });
    raw.sort();
    println!(
        "raw guarded puts, 1,000 ({IN_FLIGHT} in flight): p50 {:.2} ms, p99 {:.2} ms, {:.0} puts/s",
        percentile(&raw, 0.50).as_secs_f64() * 1e3,
        percentile(&raw, 0.99).as_secs_f64() * 1e3,
        1_000.0 / raw_secs
    );
    println!(
        "booking latency over {RUN} admitted bookings ({IN_FLIGHT} in flight, {RUN_WORKERS} workers, {secs:.1} s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.0} bookings/s; fast path {}, full re-plan {}, plans refreshed in the background {}",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        RUN as f64 / secs,
        counts.0,
        counts.1,
        counts.2
    );

    let mut g = c.benchmark_group("booking");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BOOKINGS as u64));
    g.bench_function("admitted", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(timed_rounds(
                iters,
                async || world("admitted", WORKERS).await,
                async |b| book_all(b, BOOKINGS, "bench", DAY).await,
                async |_, _| {},
            ))
        })
    });
    g.bench_function("raw_put", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(timed_rounds(
                iters,
                async || world("raw", WORKERS).await,
                async |b| raw_put(b, BOOKINGS).await,
                async |_, _| {},
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
