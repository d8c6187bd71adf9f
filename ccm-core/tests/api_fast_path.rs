//! The admission fast path through the façade, on the in-memory backends with a virtual clock:
//! bookings that fit the kept plan are admitted without a re-plan and answer like it; the
//! full re-plan refuses what does not fit; a changed worker record, another process's
//! admission or an old plan send the next booking to the full re-plan.

use ccm_core::api::{Admission, ApiError, BookingRequest, DefinitionDraft, Lablets, Placement};
use ccm_core::memory::artifact::MemoryArtifactStore;
use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::resources::Resources;
use ccm_core::runtime::{Runtime, RuntimeSettings};
use ccm_core::store::elector::StoreElector;
use ccm_core::store::intercept::{Intercepted, Interceptor};
use ccm_core::store::{Clock, SpecStore, StateStore, StoreError, Txn, VirtualClock};
use ccm_core::template::{parse_templates, WorkerTemplate};
use ccm_core::timeslot::Timestamp;
use ccm_core::worker::{Worker, WorkerState};
use chrono::{Duration, TimeZone, Utc};
use std::sync::Arc;

const LAB: &str = "\
lab:
  title: small
nodes:
  - id: n0
    label: r1
    node_definition: iosv
    tags: [\"ssh:${PORT_R1_SSH}\"]
";

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 4, 6, 0, 0).unwrap()
}

struct World {
    clock: VirtualClock,
    state: Arc<MemoryStateStore>,
    spec: Arc<MemorySpecStore>,
    artifacts: Arc<MemoryArtifactStore>,
    runtime: Runtime,
    templates: Vec<WorkerTemplate>,
}

fn runtime_on<S: StateStore + 'static>(
    clock: &VirtualClock,
    state: &Arc<S>,
    spec: &Arc<MemorySpecStore>,
    artifacts: &Arc<MemoryArtifactStore>,
    candidate: &str,
) -> Runtime {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    Runtime::builder()
        .state(state.clone())
        .elector(Arc::new(StoreElector::new(state.clone(), "/ccm")))
        .spec(spec.clone())
        .events(Arc::new(RecordingSink::new()))
        .clock(shared.clone())
        .provider(Arc::new(SimulatedProvider::new(shared)))
        .artifacts(artifacts.clone())
        .settings(RuntimeSettings {
            candidate: candidate.into(),
            controller_enabled: false,
            ..RuntimeSettings::default()
        })
        .build()
        .unwrap()
}

/// A world with `workers` RUNNING workers, templates disabled (the fleet is all there is) and
/// a definition of 8 cores, 16 GB, 1 node, 1 port (6 fit a 48-core worker at once).
async fn world(workers: usize) -> World {
    let clock = VirtualClock::new(t0());
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let state = Arc::new(MemoryStateStore::new(shared));
    let spec = Arc::new(MemorySpecStore::new());
    let templates = parse_templates(
        include_str!("../../config/worker-templates.yaml"),
        "worker-templates.yaml",
    )
    .unwrap();
    for t in &templates {
        let mut t = t.clone();
        t.enabled = false;
        spec.put_template(&t).await.unwrap();
    }
    let artifacts = Arc::new(MemoryArtifactStore::new());
    let runtime = runtime_on(&clock, &state, &spec, &artifacts, "a");
    let w = World {
        clock,
        state,
        spec,
        artifacts,
        runtime,
        templates,
    };
    w.api()
        .register_definition(
            DefinitionDraft {
                name: "small".into(),
                version: None,
                resource_requirements: Resources {
                    cpu_cores: 8,
                    memory_gb: 16,
                    storage_gb: 40,
                },
                node_count: None,
                license_affinity: vec![],
                ami_requirements: Default::default(),
                max_duration_minutes: Some(180),
                created_by: None,
            },
            LAB,
        )
        .await
        .unwrap();
    for i in 0..workers {
        w.api()
            .put_worker(&w.worker(&format!("w{i}")))
            .await
            .unwrap();
    }
    w
}

impl World {
    fn api(&self) -> &Lablets {
        self.runtime.lablets()
    }

    /// How many sessions the store holds.
    async fn stored(&self) -> usize {
        let all = ccm_core::api::SessionQuery::default();
        self.api().list(&all).await.unwrap().total
    }

    fn worker(&self, id: &str) -> Worker {
        let mut w = Worker::from_template(
            id,
            &self.templates[0],
            "us-east-1",
            WorkerState::Running,
            "2.9.0".parse().unwrap(),
            "CML-2.9.0",
        );
        w.ready_at = Some(t0());
        w
    }

    fn booking(&self, i: usize, start_in: Duration) -> BookingRequest {
        let start = self.clock.now() + start_in;
        BookingRequest {
            definition_id: "small".into(),
            timeslot_start: Some(start),
            timeslot_end: Some(start + Duration::hours(1)),
            owner_id: format!("student-{i}"),
            ..BookingRequest::default()
        }
    }
}

#[tokio::test]
async fn bookings_that_fit_the_kept_plan_skip_the_re_plan_and_the_rest_get_it() {
    let w = world(1).await;
    let mut answers = Vec::new();
    for i in 0..6 {
        let out = w
            .api()
            .book(w.booking(i, Duration::hours(2)))
            .await
            .unwrap();
        answers.push(out.admission);
    }
    // The first booking had the full re-plan; the next five fitted its plan.
    let c = w.api().admission_counts();
    assert_eq!((c.fast, c.full), (5, 1), "{c:?}");
    for a in &answers {
        match a {
            Admission::Accepted {
                placement: Placement::Worker { worker_id, .. },
                ready_by,
                start,
                ..
            } => {
                assert_eq!(worker_id, "w0");
                assert!(ready_by <= start, "{a:?}");
            }
            other => panic!("expected accepted on w0, got {other:?}"),
        }
    }
    // The fast path answers as the full re-plan does: in a second world, a dry run (always
    // the full re-plan) of the second booking after the first names the same worker and times.
    let v = world(1).await;
    v.api()
        .book(v.booking(0, Duration::hours(2)))
        .await
        .unwrap();
    let mut dry = v.booking(1, Duration::hours(2));
    dry.dry_run = true;
    let d = v.api().book(dry).await.unwrap();
    assert_eq!(d.admission, answers[1]);
    // The seventh does not fit (48 cores, 6 × 8 taken): the full re-plan refuses it and names
    // the constraint and the earliest slot.
    let e = w
        .api()
        .book(w.booking(6, Duration::hours(2)))
        .await
        .unwrap_err();
    let ApiError::Rejected(r) = e else {
        panic!("expected a refusal, got {e:?}")
    };
    assert!(!r.constraint.is_empty(), "{r:?}");
    let end = t0() + Duration::hours(3);
    assert!(r.earliest_start.is_some_and(|t| t >= end), "{r:?}");
    let c = w.api().admission_counts();
    assert_eq!((c.fast, c.full), (5, 2), "{c:?}");
    // Exactly six on the store.
    assert_eq!(w.stored().await, 6);
}

#[tokio::test]
async fn a_changed_worker_record_or_another_process_sends_the_next_booking_to_the_re_plan() {
    let w = world(1).await;
    w.api()
        .book(w.booking(0, Duration::hours(2)))
        .await
        .unwrap();
    w.api()
        .book(w.booking(1, Duration::hours(2)))
        .await
        .unwrap();
    assert_eq!(w.api().admission_counts().fast, 1);
    // The worker's record is written (as a bind, a drain or a stop would): the kept plan's
    // view of it is stale, so the next booking is planned afresh.
    w.api().put_worker(&w.worker("w0")).await.unwrap();
    w.api()
        .book(w.booking(2, Duration::hours(2)))
        .await
        .unwrap();
    let c = w.api().admission_counts();
    assert_eq!((c.fast, c.full), (1, 2), "{c:?}");
    // And fits the new plan again.
    w.api()
        .book(w.booking(3, Duration::hours(2)))
        .await
        .unwrap();
    assert_eq!(w.api().admission_counts().fast, 2);
    // Another process admits a booking: the admission key moved under this process's plan.
    let other = runtime_on(&w.clock, &w.state, &w.spec, &w.artifacts, "b");
    other
        .lablets()
        .book(w.booking(4, Duration::hours(2)))
        .await
        .unwrap();
    w.api()
        .book(w.booking(5, Duration::hours(2)))
        .await
        .unwrap();
    let c = w.api().admission_counts();
    assert_eq!((c.fast, c.full), (2, 3), "{c:?}");
    // Six taken: both processes now refuse the seventh.
    assert!(w
        .api()
        .book(w.booking(6, Duration::hours(2)))
        .await
        .is_err());
    assert!(other
        .lablets()
        .book(w.booking(7, Duration::hours(2)))
        .await
        .is_err());
    // A plan older than its shelf life is not used either: the same later slot twice, the
    // second time after the plan has aged.
    let later = w.booking(8, Duration::hours(5));
    w.api().book(later.clone()).await.unwrap();
    let mut again = later.clone();
    again.owner_id = "student-9".into();
    let mut third = later.clone();
    third.owner_id = "student-10".into();
    w.api().book(again).await.unwrap();
    let before = w.api().admission_counts();
    w.clock.advance(Duration::seconds(
        ccm_core::api::admission::MAX_AGE_SECS + 1,
    ));
    w.api().book(third).await.unwrap();
    let after = w.api().admission_counts();
    assert_eq!(after.fast, before.fast);
    assert_eq!(after.full, before.full + 1);
}

/// The shape of the booking bench (20 workers, slots spread over 8 hours) on the in-memory
/// store: most bookings take the fast path once the plan covers the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_spread_over_the_day_mostly_take_the_fast_path() {
    let w = world(20).await;
    let api = w.api().clone();
    let mut tasks = Vec::new();
    for i in 0..300usize {
        let api = api.clone();
        let mut r = w.booking(
            i,
            Duration::hours(1) + Duration::minutes((i % 32) as i64 * 15),
        );
        r.owner_id = format!("s-{i}");
        tasks.push(tokio::spawn(async move { api.book(r).await }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    let c = w.api().admission_counts();
    eprintln!("admitted {ok}/300; fast {}, full {}", c.fast, c.full);
    assert_eq!(c.fast + c.full, 300);
    assert!(c.fast > c.full, "{c:?}");
}

/// A refresh (`Lablets::warm`, what `ccm serve` runs at start-up and a booking starts in the
/// background once the kept plan is a second old) plans without holding bookings up: the
/// bookings the fast path commits while it plans are carried into the new plan, which keeps
/// the fast path open past the old plan's shelf life and still refuses the booking that does
/// not fit.
#[tokio::test]
async fn a_refresh_carries_over_what_was_booked_while_it_planned() {
    let w = world(1).await;
    // No plan is kept yet: the refresh makes one, and the first booking fits it.
    assert!(w.api().warm().await.unwrap());
    w.api()
        .book(w.booking(0, Duration::hours(2)))
        .await
        .unwrap();
    assert_eq!(w.api().admission_counts().fast, 1);
    // Three quarters of the shelf life later: a refresh plans while two bookings are
    // committed by the fast path into the plan that is still kept.
    let half = Duration::milliseconds(ccm_core::api::admission::MAX_AGE_SECS * 750);
    w.clock.advance(half);
    let bookings = async {
        let mut out = Vec::new();
        for i in 1..3 {
            out.push(w.api().book(w.booking(i, Duration::hours(2))).await);
        }
        out
    };
    let (kept, out) = tokio::join!(w.api().warm(), bookings);
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert!(kept.unwrap(), "the refresh was dropped");
    let c = w.api().admission_counts();
    assert_eq!((c.fast, c.full), (3, 0), "{c:?}");
    // The old plan would have expired by now; the refreshed one takes three more (six of 8
    // cores on the 48-core worker), then refuses the seventh by the full re-plan.
    w.clock.advance(half);
    for i in 3..6 {
        w.api()
            .book(w.booking(i, Duration::hours(2)))
            .await
            .unwrap();
    }
    let c = w.api().admission_counts();
    assert_eq!((c.fast, c.full), (6, 0), "{c:?}");
    let e = w
        .api()
        .book(w.booking(6, Duration::hours(2)))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Rejected(_)), "{e:?}");
    assert_eq!(w.stored().await, 6);
}

/// Transactions that take a varying while (0–3 ms) on their way, so batches sent one after
/// another are applied out of order, as a busy etcd may; counts how often a transaction
/// overtook one sent before it.
#[derive(Default)]
struct Jitter {
    sent: std::sync::atomic::AtomicU64,
    last_applied: std::sync::Mutex<u64>,
    overtaken: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Interceptor for Jitter {
    async fn before_txn(&self, _inner: &dyn StateStore, _txn: &Txn) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.sent.fetch_add(1, SeqCst) + 1;
        // A fixed pseudo-random delay per transaction (splitmix).
        let mut z = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        tokio::time::sleep(std::time::Duration::from_micros((z >> 33) % 3_000)).await;
        let mut last = self.last_applied.lock().unwrap();
        if n < *last {
            self.overtaken.fetch_add(1, SeqCst);
        }
        *last = (*last).max(n);
        Ok(())
    }
}

/// Fast-path batches are sent while earlier ones are on their way and the store applies them
/// out of order: however they land, exactly what fits is admitted, and binding it all never
/// over-commits; a second process that admits takes the fast path over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_applied_out_of_order_admit_exactly_what_fits() {
    let w = world(8).await;
    let jitter = Arc::new(Intercepted::new(w.state.clone(), Jitter::default()));
    let on_jitter =
        |candidate: &str| runtime_on(&w.clock, &jitter, &w.spec, &w.artifacts, candidate);
    let (a, b) = (on_jitter("a"), on_jitter("b"));
    // Eight workers of 48 cores, 8 each over one slot: 48 fit. Process a admits the first (its
    // claim), then 80 more at once, batched and sent while earlier batches are on their way.
    a.lablets()
        .book(w.booking(0, Duration::hours(2)))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 1..81 {
        let api = a.lablets().clone();
        let r = w.booking(i, Duration::hours(2));
        tasks.push(tokio::spawn(async move { api.book(r).await }));
    }
    let (mut accepted, mut rejected) = (1, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => {
                assert!(o.admission.accepted(), "{:?}", o.admission);
                accepted += 1;
            }
            Err(ApiError::Rejected(_)) => rejected += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let c = a.lablets().admission_counts();
    eprintln!(
        "accepted {accepted}, rejected {rejected}; process a: fast {}, full {}; overtaken {}",
        c.fast,
        c.full,
        jitter.overtaken.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(c.fast > 0, "the fast path was not taken: {c:?}");
    assert!(
        jitter.overtaken.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no transaction overtook another: the test did not reorder"
    );
    assert_eq!((accepted, rejected), (48, 33));
    // Process b takes the admission over (its full re-plan claims it): a's next booking is
    // planned afresh, and both refuse once the slot is full.
    let mut more = w.booking(81, Duration::hours(2));
    more.timeslot_start = more.timeslot_start.map(|t| t + Duration::hours(3));
    more.timeslot_end = more.timeslot_end.map(|t| t + Duration::hours(3));
    b.lablets().book(more.clone()).await.unwrap();
    let before = a.lablets().admission_counts();
    more.owner_id = "student-82".into();
    a.lablets().book(more).await.unwrap();
    assert_eq!(a.lablets().admission_counts().full, before.full + 1);
    assert!(b
        .lablets()
        .book(w.booking(83, Duration::hours(2)))
        .await
        .is_err());
    assert_eq!(w.stored().await, 50);
    // Due: the 48 of the first slot are bound, within the eight workers' capacity.
    w.clock
        .set(w.clock.now() + Duration::hours(2) - Duration::minutes(35));
    let step = w.runtime.step().await.unwrap();
    assert_eq!(step.scheduler.unwrap().bound.len(), 48);
    for v in w.api().workers().await.unwrap() {
        assert!(v.allocated.fits_in(&v.capacity), "{v:?}");
    }
}
