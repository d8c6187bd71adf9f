//! The lablet façade on the in-memory backends with a virtual clock: register → book → bound at
//! slot − lead → cancel frees capacity and ports; idempotent booking; admission answers; the
//! race of 200 concurrent bookings for the last capacity.

use ccm_core::api::{
    Admission, ApiError, BookingRequest, DefinitionDraft, Lablets, Placement, Registration,
    SessionQuery,
};
use ccm_core::memory::artifact::MemoryArtifactStore;
use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::resources::{Load, Resources};
use ccm_core::runtime::{Runtime, RuntimeSettings};
use ccm_core::session::SessionState;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{ArtifactStore, Clock, SpecStore, StateStore, VirtualClock};
use ccm_core::template::WorkerTemplate;
use ccm_core::timeslot::Timestamp;
use ccm_core::worker::{Worker, WorkerState};
use chrono::{Duration, TimeZone, Utc};
use std::sync::Arc;

/// The shared test lab: three nodes, ports r1_ssh, r1_vnc, r2_ssh.
const LAB: &str = include_str!("data/labs/ccna-three-routers.yaml");

struct World {
    clock: VirtualClock,
    state: Arc<MemoryStateStore>,
    spec: Arc<MemorySpecStore>,
    artifacts: Arc<MemoryArtifactStore>,
    events: Arc<RecordingSink>,
    runtime: Runtime,
    templates: Vec<WorkerTemplate>,
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 4, 6, 0, 0).unwrap()
}

fn settings(candidate: &str) -> RuntimeSettings {
    RuntimeSettings {
        candidate: candidate.into(),
        controller_enabled: false,
        ..RuntimeSettings::default()
    }
}

async fn world() -> World {
    let clock = VirtualClock::new(t0());
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let state = Arc::new(MemoryStateStore::new(shared.clone()));
    let spec = Arc::new(MemorySpecStore::new());
    let templates = ccm_core::template::seed_templates().unwrap();
    spec.seed_templates(&templates).await.unwrap();
    let artifacts = Arc::new(MemoryArtifactStore::new());
    let events = Arc::new(RecordingSink::new());
    let runtime = runtime_on(&clock, &state, &spec, &artifacts, &events, "a");
    World {
        clock,
        state,
        spec,
        artifacts,
        events,
        runtime,
        templates,
    }
}

fn runtime_on(
    clock: &VirtualClock,
    state: &Arc<MemoryStateStore>,
    spec: &Arc<MemorySpecStore>,
    artifacts: &Arc<MemoryArtifactStore>,
    events: &Arc<RecordingSink>,
    candidate: &str,
) -> Runtime {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    Runtime::builder()
        .state(state.clone())
        .elector(Arc::new(StoreElector::new(state.clone(), "/ccm")))
        .spec(spec.clone())
        .events(events.clone())
        .clock(shared.clone())
        .provider(Arc::new(SimulatedProvider::new(shared)))
        .artifacts(artifacts.clone())
        .settings(settings(candidate))
        .build()
        .unwrap()
}

fn draft(version: Option<&str>) -> DefinitionDraft {
    DefinitionDraft {
        name: "ccna".into(),
        version: version.map(|v| v.parse().unwrap()),
        resource_requirements: Resources {
            cpu_cores: 8,
            memory_gb: 32,
            storage_gb: 40,
        },
        node_count: None,
        license_affinity: vec![],
        ami_requirements: Default::default(),
        max_duration_minutes: Some(180),
        created_by: Some("author".into()),
    }
}

impl World {
    fn api(&self) -> &Lablets {
        self.runtime.lablets()
    }

    async fn running_worker(&self, id: &str) -> Worker {
        let mut w = Worker::from_template(
            id,
            &self.templates[0],
            "us-east-1",
            WorkerState::Running,
            "2.9.0".parse().unwrap(),
            "CML-2.9.0",
        );
        w.ready_at = Some(t0());
        self.api().put_worker(&w).await.unwrap();
        w
    }

    async fn disable_templates(&self) {
        for t in &self.templates {
            let mut t = t.clone();
            t.enabled = false;
            self.spec.put_template(&t).await.unwrap();
        }
    }

    fn booking(&self, start_in: Duration, hours: i64) -> BookingRequest {
        let start = self.clock.now() + start_in;
        BookingRequest {
            definition_id: "ccna".into(),
            timeslot_start: Some(start),
            timeslot_end: Some(start + Duration::hours(hours)),
            owner_id: "student-1".into(),
            reservation_id: Some("r-1".into()),
            ..BookingRequest::default()
        }
    }

    async fn raw_worker(&self, id: &str) -> Worker {
        let kv = self
            .state
            .get(&format!("/ccm/workers/{id}"))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&kv.value).unwrap()
    }
}

#[tokio::test]
async fn register_book_bind_at_lead_then_cancel_frees_capacity_and_ports() {
    let w = world().await;
    let reg = w.api().register_definition(draft(None), LAB).await.unwrap();
    assert_eq!(reg.outcome, Registration::Created);
    let def = reg.definition;
    assert_eq!(def.id, "ccna@1.0.0");
    assert_eq!(def.node_count, 3, "node count from the YAML");
    assert_eq!(def.port_names(), ["r1_ssh", "r1_vnc", "r2_ssh"]);
    // The YAML is in the artifact store under its SHA-256.
    let (bytes, meta) = w.artifacts.get(&def.lab_artifact_uri).await.unwrap();
    assert_eq!(bytes.as_ref(), LAB.as_bytes());
    assert_eq!(meta.sha256, def.lab_yaml_hash);
    assert_eq!(
        meta.sha256,
        ccm_core::store::artifact::sha256_hex(LAB.as_bytes())
    );
    // The same content again: nothing new. Different content under 1.0.0: conflict.
    let again = w.api().register_definition(draft(None), LAB).await.unwrap();
    assert_eq!(again.outcome, Registration::Unchanged);
    assert_eq!(again.definition.id, def.id);
    let same_pinned = w
        .api()
        .register_definition(draft(Some("1.0.0")), LAB)
        .await
        .unwrap();
    assert_eq!(same_pinned.outcome, Registration::Unchanged);
    let changed = LAB.replace("title: ccna", "title: ccna v2");
    let e = w
        .api()
        .register_definition(draft(Some("1.0.0")), &changed)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "version_conflict", "{e}");
    let v2 = w
        .api()
        .register_definition(draft(None), &changed)
        .await
        .unwrap();
    assert_eq!(v2.outcome, Registration::NewVersion);
    assert_eq!(v2.definition.version.to_string(), "1.0.1");
    let types = w.events.types();
    assert!(
        types.contains(&"ccm.lablet.definition.created".to_string()),
        "{types:?}"
    );
    assert!(
        types.contains(&"ccm.lablet.definition.version.created".to_string()),
        "{types:?}"
    );
    let listed = w.api().definitions().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version.to_string(), "1.0.1");
    assert_eq!(w.api().definition_versions("ccna").await.unwrap().len(), 2);

    let worker = w.running_worker("w-a").await;
    let mut req = w.booking(Duration::hours(2), 2);
    req.definition_id = "ccna@1.0.0".into();
    let out = w.api().book(req).await.unwrap();
    assert!(out.created);
    let session = out.session.clone().unwrap();
    assert_eq!(session.state, SessionState::Pending);
    assert_eq!(session.definition_id, "ccna@1.0.0");
    match &out.admission {
        Admission::Accepted { placement, .. } => assert_eq!(
            placement,
            &Placement::Worker {
                worker_id: "w-a".into(),
                state: WorkerState::Running
            }
        ),
        other => panic!("expected accepted, got {other:?}"),
    }
    // Not due yet: the scheduler leaves it alone and explain says why.
    w.runtime.step().await.unwrap();
    assert_eq!(
        w.api().get(&session.id).await.unwrap().state,
        SessionState::Pending
    );
    let why = w.api().explain(&session.id).await.unwrap();
    assert!(!why.due);
    assert!(why.summary.contains("not due yet"), "{}", why.summary);
    assert_eq!(why.due_at, Some(t0() + Duration::minutes(120 - 35)));
    let e = w.api().session_lab_yaml(&session.id).await.unwrap_err();
    assert_eq!(e.code(), "not_bound");

    // One second before slot − lead: still PENDING; at slot − lead: bound.
    w.clock
        .set(t0() + Duration::minutes(85) - Duration::seconds(1));
    w.runtime.step().await.unwrap();
    assert_eq!(
        w.api().get(&session.id).await.unwrap().state,
        SessionState::Pending
    );
    w.clock.set(t0() + Duration::minutes(85));
    let step = w.runtime.step().await.unwrap();
    assert_eq!(step.scheduler.unwrap().bound.len(), 1);
    let bound = w.api().get(&session.id).await.unwrap();
    assert_eq!(bound.state, SessionState::Scheduled);
    assert_eq!(bound.worker_id.as_deref(), Some("w-a"));
    assert_eq!(bound.allocated_ports.len(), 3);
    let views = w.api().workers().await.unwrap();
    assert_eq!(views[0].allocated, Load::new(def.resource_requirements, 3));
    assert_eq!(views[0].ports.allocated, 3);
    assert_eq!(views[0].sessions, vec![session.id.clone()]);
    let listed = w
        .api()
        .list(&SessionQuery {
            worker_id: Some("w-a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.total, 1);

    // The session's lab YAML: placeholders replaced by its ports, every other byte kept.
    let yaml = w.api().session_lab_yaml(&session.id).await.unwrap();
    let p = &bound.allocated_ports;
    let expected = LAB
        .replace("${PORT_R1_SSH}", &p["r1_ssh"].to_string())
        .replace("${PORT_R1_VNC}", &p["r1_vnc"].to_string())
        .replace("${PORT_R2_SSH}", &p["r2_ssh"].to_string());
    assert_eq!(yaml, expected);
    // A tampered artifact is reported, not served.
    w.artifacts.tamper(
        &def.lab_artifact_uri,
        bytes::Bytes::from_static(b"nodes: []\n"),
    );
    let e = w.api().session_lab_yaml(&session.id).await.unwrap_err();
    assert!(matches!(e, ApiError::Corrupt(_)), "{e:?}");

    // Cancel: TERMINATED, and the worker record gives back capacity and ports in the same write.
    let cancelled = w.api().cancel(&session.id, "student left").await.unwrap();
    assert_eq!(cancelled.state, SessionState::Terminated);
    assert!(cancelled.allocated_ports.is_empty());
    let raw = w.raw_worker("w-a").await;
    assert_eq!(raw.allocated, Load::default());
    assert_eq!(raw.ports.free(), worker.ports.free());
    let views = w.api().workers().await.unwrap();
    assert_eq!(views[0].allocated, Load::default());
    assert_eq!(views[0].ports.allocated, 0);
    // Cancelling again returns it unchanged.
    let twice = w.api().cancel(&session.id, "again").await.unwrap();
    assert_eq!(twice, cancelled);
    let e = w.api().cancel("nope", "x").await.unwrap_err();
    assert_eq!(e.code(), "not_found");
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_session() {
    let w = world().await;
    w.api().register_definition(draft(None), LAB).await.unwrap();
    w.running_worker("w-a").await;
    let mut req = w.booking(Duration::hours(3), 2);
    req.idempotency_key = Some("lms-42".into());
    let a = w.api().book(req.clone()).await.unwrap();
    let b = w.api().book(req.clone()).await.unwrap();
    assert!(a.created);
    assert!(!b.created);
    assert_eq!(
        a.session.as_ref().unwrap().id,
        b.session.as_ref().unwrap().id
    );
    assert_eq!(a.admission, b.admission);
    let mut other = req.clone();
    other.owner_id = "someone-else".into();
    let e = w.api().book(other).await.unwrap_err();
    assert_eq!(e.code(), "idempotency_mismatch", "{e}");
    let page = w.api().list(&SessionQuery::default()).await.unwrap();
    assert_eq!(page.total, 1, "one session in the store");
    // Concurrent requests with one key: one session.
    req.idempotency_key = Some("lms-43".into());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let api = w.api().clone();
        let r = req.clone();
        tasks.push(tokio::spawn(async move { api.book(r).await }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap().session.unwrap().id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(
        w.api().list(&SessionQuery::default()).await.unwrap().total,
        2
    );
}

#[tokio::test]
async fn validation_names_the_field() {
    let w = world().await;
    w.api().register_definition(draft(None), LAB).await.unwrap();
    let mut r = w.booking(Duration::hours(1), 1);
    r.definition_id = "nope".into();
    assert_eq!(w.api().book(r).await.unwrap_err().code(), "not_found");
    let mut r = w.booking(Duration::hours(1), 1);
    r.timeslot_end = r.timeslot_start;
    let e = w.api().book(r).await.unwrap_err();
    assert!(
        matches!(&e, ApiError::Invalid { field, .. } if field == "timeslot_end"),
        "{e}"
    );
    let r = w.booking(Duration::hours(1), 4);
    let e = w.api().book(r).await.unwrap_err();
    assert!(e.to_string().contains("max_duration_minutes 180"), "{e}");
    let r = w.booking(-Duration::minutes(1), 1);
    let e = w.api().book(r).await.unwrap_err();
    assert!(
        matches!(&e, ApiError::Invalid { field, .. } if field == "timeslot_start"),
        "{e}"
    );
    let mut r = w.booking(Duration::hours(1), 1);
    r.timeslot_end = None;
    let e = w.api().book(r).await.unwrap_err();
    assert!(
        matches!(&e, ApiError::Invalid { field, .. } if field == "timeslot_end"),
        "{e}"
    );
    let mut r = w.booking(Duration::hours(1), 1);
    r.owner_id = " ".into();
    let e = w.api().book(r).await.unwrap_err();
    assert!(
        matches!(&e, ApiError::Invalid { field, .. } if field == "owner_id"),
        "{e}"
    );
    let e = w
        .api()
        .register_definition(draft(None), "nodes: [\n")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApiError::Invalid { field, .. } if field == "lab_yaml"),
        "{e}"
    );
    let mut d = draft(None);
    d.name = "Bad Name".into();
    let e = w.api().register_definition(d, LAB).await.unwrap_err();
    assert!(
        matches!(&e, ApiError::Invalid { field, .. } if field == "name"),
        "{e}"
    );
    assert_eq!(
        w.api().list(&SessionQuery::default()).await.unwrap().total,
        0
    );
}

#[tokio::test]
async fn admission_rejects_what_the_plan_cannot_serve_naming_the_constraint_and_earliest_slot() {
    let w = world().await;
    w.api().register_definition(draft(None), LAB).await.unwrap();
    // No worker up, and the slot starts in 10 minutes: a new worker boots in 20.
    let r = w.booking(Duration::minutes(10), 1);
    let e = w.api().book(r.clone()).await.unwrap_err();
    let ApiError::Rejected(refusal) = &e else {
        panic!("expected a rejection, got {e:?}")
    };
    assert_eq!(refusal.constraint, "not_ready_in_time", "{refusal:?}");
    let earliest = refusal.earliest_start.expect("an earliest slot");
    // Boot (20 min) and then the lab's instantiation (15 min) before the slot.
    assert_eq!(earliest, t0() + Duration::minutes(35), "{earliest}");
    // The earliest slot it names is admitted.
    let mut later = r.clone();
    later.timeslot_start = Some(earliest);
    later.timeslot_end = Some(earliest + Duration::hours(1));
    later.dry_run = true;
    let dry = w.api().book(later.clone()).await.unwrap();
    assert!(dry.dry_run && dry.session.is_none());
    match &dry.admission {
        Admission::Accepted {
            placement,
            ready_by,
            ..
        } => {
            assert!(
                matches!(placement, Placement::Launch { .. }),
                "{placement:?}"
            );
            assert!(*ready_by <= earliest);
        }
        other => panic!("expected accepted, got {other:?}"),
    }
    // A dry run writes nothing.
    assert_eq!(
        w.api().list(&SessionQuery::default()).await.unwrap().total,
        0
    );
    // queue = true stores it anyway, PENDING, marked queued.
    let mut q = r.clone();
    q.queue = true;
    let queued = w.api().book(q).await.unwrap();
    assert!(queued.queued);
    assert!(!queued.admission.accepted());
    assert_eq!(queued.session.unwrap().state, SessionState::Pending);
    // More cpu than any worker or template has: the constraint is cpu, no slot would work.
    let mut big = draft(None);
    big.name = "huge".into();
    big.resource_requirements.cpu_cores = 64;
    w.api().register_definition(big, LAB).await.unwrap();
    w.running_worker("w-a").await;
    let mut r = w.booking(Duration::hours(2), 1);
    r.definition_id = "huge".into();
    let ApiError::Rejected(refusal) = w.api().book(r).await.unwrap_err() else {
        panic!("expected a rejection")
    };
    assert_eq!(refusal.constraint, "cpu", "{refusal:?}");
    assert_eq!(refusal.earliest_start, None);
    assert!(refusal.reason.contains("cpu"), "{}", refusal.reason);
    // And no template could take it either: each names why.
    assert!(!refusal.templates.is_empty());
    assert!(
        refusal.templates.iter().all(|t| t.rejection.is_some()),
        "{:?}",
        refusal.templates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_bookings_for_the_last_capacity_admit_exactly_what_fits() {
    let w = world().await;
    w.api().register_definition(draft(None), LAB).await.unwrap();
    w.disable_templates().await;
    let worker = w.running_worker("w-a").await;
    // A second process on the same store books too (the admission key orders them).
    let other = runtime_on(&w.clock, &w.state, &w.spec, &w.artifacts, &w.events, "b");
    let need = Load::new(
        Resources {
            cpu_cores: 8,
            memory_gb: 32,
            storage_gb: 40,
        },
        3,
    );
    let cap = worker.capacity.dims();
    let fits = (0..4)
        .map(|d| cap[d] / need.dims()[d])
        .min()
        .unwrap()
        .min(worker.ports.free() / 3) as usize;
    assert!(fits > 0 && fits < 200);
    let req = w.booking(Duration::hours(1), 2);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let api = if i % 2 == 0 {
            w.api().clone()
        } else {
            other.lablets().clone()
        };
        let mut r = req.clone();
        r.owner_id = format!("student-{i}");
        tasks.push(tokio::spawn(async move { api.book(r).await }));
    }
    let (mut accepted, mut rejected) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => {
                assert!(o.admission.accepted());
                accepted += 1;
            }
            Err(ApiError::Rejected(r)) => {
                // The worker is full over the slot; the next chance is when those sessions end.
                assert!(!r.constraint.is_empty());
                let end = req.timeslot_end.unwrap();
                assert!(r.earliest_start.is_none_or(|t| t >= end), "{r:?}");
                rejected += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(accepted, fits, "admitted exactly what fits");
    assert_eq!(rejected, 200 - fits);
    // On the store: exactly `fits` sessions; binding them all never over-commits.
    let page = w.api().list(&SessionQuery::default()).await.unwrap();
    assert_eq!(page.total, fits);
    w.clock
        .set(req.timeslot_start.unwrap() - Duration::minutes(35));
    let step = w.runtime.step().await.unwrap();
    assert_eq!(step.scheduler.unwrap().bound.len(), fits);
    let raw = w.raw_worker("w-a").await;
    assert!(raw.allocated.fits_in(&raw.capacity), "{:?}", raw.allocated);
    let views = w.api().workers().await.unwrap();
    assert_eq!(views[0].sessions.len(), fits);
}

#[tokio::test]
async fn preview_and_landscape_show_the_planned_launch() {
    let w = world().await;
    w.api().register_definition(draft(None), LAB).await.unwrap();
    let r = w.booking(Duration::hours(3), 2);
    let out = w.api().book(r).await.unwrap();
    assert!(matches!(
        out.admission,
        Admission::Accepted {
            placement: Placement::Launch { .. },
            ..
        }
    ));
    let preview = w.api().preview(w.clock.now()).await.unwrap();
    assert_eq!(preview.plan.assignments.len(), 1);
    assert!(
        preview.due.is_empty(),
        "launch is not due yet: {:?}",
        preview.due
    );
    let at_launch = t0() + Duration::hours(3) - Duration::minutes(35);
    let later = w.api().preview(at_launch).await.unwrap();
    assert_eq!(later.due.len(), 1);
    assert_eq!(later.due[0].action, "launch");
    let land = w.api().landscape(w.clock.now()).await.unwrap();
    assert_eq!(land.buckets.len(), 96);
    assert_eq!(land.bucket_minutes, 15);
    // Demand in the buckets of the slot (3 h..5 h = buckets 12..20) and in the one before,
    // where its lab is instantiated (15 min); none earlier.
    assert_eq!(land.buckets[10].sessions, 0);
    assert_eq!(land.buckets[11].sessions, 1);
    assert_eq!(land.buckets[12].sessions, 1);
    assert_eq!(land.buckets[19].sessions, 1);
    assert_eq!(land.buckets[20].sessions, 0);
    // Billed capacity covers the demand where there is demand.
    for b in &land.buckets {
        if b.sessions > 0 {
            assert!(b.demand.fits_in(&b.capacity), "{b:?}");
        }
    }
    assert_eq!(
        land.buckets[0].workers, 0,
        "nothing billed before the launch"
    );
}

#[tokio::test]
async fn connect_turns_a_ready_session_running_and_refuses_any_other_state() {
    let w = world().await;
    w.api().register_definition(draft(None), LAB).await.unwrap();
    w.running_worker("w-a").await;
    let out = w
        .api()
        .book(w.booking(Duration::hours(2), 1))
        .await
        .unwrap();
    let session = out.session.unwrap();
    // PENDING: not yet.
    let e = w.api().connect(&session.id).await.unwrap_err();
    assert_eq!(e.code(), "not_ready", "{e:?}");
    assert_eq!(
        w.api().get(&session.id).await.unwrap().state,
        SessionState::Pending
    );
    let e = w.api().connect("nope").await.unwrap_err();
    assert_eq!(e.code(), "not_found");
    // Bound, its lab instantiated and booted (as the scheduler and the lab loop leave it):
    // READY, an hour before its slot.
    let key = format!("/ccm/sessions/{}", session.id);
    let mut s = w.api().get(&session.id).await.unwrap();
    let now = w.clock.now();
    s.transition(SessionState::Scheduled, now, "bound").unwrap();
    s.worker_id = Some("w-a".into());
    s.transition(SessionState::Instantiating, now, "lab created")
        .unwrap();
    s.transition(SessionState::Ready, now, "every node booted")
        .unwrap();
    w.state
        .put(&key, serde_json::to_vec(&s).unwrap(), None)
        .await
        .unwrap();
    w.clock.advance(Duration::minutes(5));
    let before = w.events.types().len();
    let running = w.api().connect(&session.id).await.unwrap();
    assert_eq!(running.state, SessionState::Running);
    assert_eq!(running.worker_id.as_deref(), Some("w-a"));
    let last = running.state_history.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.at),
        (SessionState::Ready, SessionState::Running, w.clock.now())
    );
    assert_eq!(last.reason, "user connected");
    // On the store, and announced.
    let kv = w.state.get(&key).await.unwrap().unwrap();
    let stored: ccm_core::session::LabletSession = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored.state, SessionState::Running);
    assert_eq!(w.events.types().len(), before + 1);
    // Connecting again is a no-op; after it ended, a conflict.
    let again = w.api().connect(&session.id).await.unwrap();
    assert_eq!(again.state_history.len(), running.state_history.len());
    assert_eq!(
        w.state.get(&key).await.unwrap().unwrap().mod_revision,
        kv.mod_revision
    );
    w.api().cancel(&session.id, "done").await.unwrap();
    let e = w.api().connect(&session.id).await.unwrap_err();
    assert_eq!(e.code(), "not_ready", "{e:?}");
}

/// Sessions from another system are imported as they are: ids, states, bindings and ports
/// kept, counted on their worker, never overwritten, and a bad one stops the import before
/// anything is written, naming the session and the field.
#[tokio::test]
async fn import_keeps_ids_states_and_bindings_and_never_overwrites() {
    use ccm_core::session::LabletSession;
    use ccm_core::timeslot::Timeslot;
    let w = world().await;
    let def = w
        .api()
        .register_definition(draft(None), LAB)
        .await
        .unwrap()
        .definition;
    w.running_worker("w1").await;
    let start = t0() + Duration::hours(1);
    let slot = Timeslot::new(start, start + Duration::hours(2)).unwrap();
    let mut bound = LabletSession::new("legacy-1", &def.id, "1.0.0", "alice", Some(slot), t0());
    bound
        .transition(SessionState::Scheduled, t0(), "imported")
        .unwrap();
    bound.worker_id = Some("w1".into());
    bound.allocated_ports = [("r1_ssh".to_string(), 5000), ("r1_vnc".to_string(), 5001)]
        .into_iter()
        .collect();
    let pending = LabletSession::new("legacy-2", &def.id, "1.0.0", "bob", Some(slot), t0());

    // A bound state without its worker: refused, naming it; the good one before it is not
    // written either.
    let mut orphan = bound.clone();
    orphan.id = "legacy-3".into();
    orphan.worker_id = None;
    let e = w
        .api()
        .import(&[pending.clone(), orphan])
        .await
        .unwrap_err();
    match &e {
        ApiError::Invalid { field, .. } => assert_eq!(field, "sessions[legacy-3].worker_id"),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert!(w.api().get("legacy-2").await.is_err(), "nothing written");

    let done = w
        .api()
        .import(&[bound.clone(), pending.clone()])
        .await
        .unwrap();
    assert_eq!(done.created, ["legacy-1", "legacy-2"]);
    assert!(done.existing.is_empty());
    let got = w.api().get("legacy-1").await.unwrap();
    assert_eq!(got, bound);
    assert_eq!(
        w.api().get("legacy-2").await.unwrap().state,
        SessionState::Pending
    );
    // The bound one counts on its worker: capacity and both ports.
    let view = w
        .api()
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.id == "w1")
        .unwrap();
    assert_eq!(
        view.allocated.cpu_cores,
        def.resource_requirements.cpu_cores
    );
    assert_eq!(view.sessions, ["legacy-1"]);
    // Imported again, changed: reported as existing and left as it was.
    let before = w
        .state
        .get("/ccm/sessions/legacy-1")
        .await
        .unwrap()
        .unwrap();
    let mut changed = bound.clone();
    changed.owner_id = "mallory".into();
    let again = w.api().import(&[changed]).await.unwrap();
    assert!(again.created.is_empty());
    assert_eq!(again.existing, ["legacy-1"]);
    let after = w
        .state
        .get("/ccm/sessions/legacy-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.value, before.value);
    assert_eq!(after.mod_revision, before.mod_revision);
}
