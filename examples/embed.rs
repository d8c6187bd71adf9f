//! Embedding ccm-core in another service that keeps its OWN store.
//!
//! The host service here wraps the in-memory state store in its own layer (`Audit`, an
//! `Interceptor` around the store), which counts every write it commits — the place where a
//! real service would add its own tracing or tenancy (or implement `StateStore` itself over its
//! own persistence). ccm's scheduler runs on it through the `StateStore` trait. Everything goes through the typed lablet API
//! (`runtime.lablets()`): the definition is registered with its lab YAML, seven sessions are
//! booked (each admitted by the planner), the scheduler places them on two workers and the
//! program prints where each one landed.
//!
//! Run: `cargo run -p ccm-examples --example embed`

use ccm_core::prelude::*;
use chrono::{Duration, TimeZone, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The host service's own layer around the store: counts committed writes.
#[derive(Default)]
struct Audit {
    committed: AtomicU64,
}

impl Interceptor for Audit {
    fn written(&self, ok: bool) {
        if ok {
            self.committed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The lab: two routers whose SSH and VNC ports are named in their node tags.
const LAB_YAML: &str = "\
lab:
  title: ccna
nodes:
  - label: r1
    tags: ['ssh:${PORT_R1_SSH}', 'vnc:${PORT_R1_VNC}']
  - label: r2
    tags: [core]
  - label: r3
    tags: [core]
  - label: r4
    tags: [core]
";

fn definition() -> DefinitionDraft {
    DefinitionDraft {
        name: "ccna-lab".into(),
        version: None,
        resource_requirements: Resources {
            cpu_cores: 8,
            memory_gb: 32,
            storage_gb: 40,
        },
        node_count: None,
        license_affinity: vec![],
        ami_requirements: Default::default(),
        max_duration_minutes: Some(180),
        created_by: Some("host-service".into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let t0 = Utc
        .with_ymd_and_hms(2026, 5, 4, 8, 0, 0)
        .single()
        .ok_or_else(|| anyhow::anyhow!("bad date"))?;
    let clock = VirtualClock::new(t0);
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = Arc::new(Intercepted::new(
        Arc::new(MemoryStateStore::new(shared.clone())),
        Audit::default(),
    ));
    let spec = Arc::new(MemorySpecStore::new());
    let templates = seed_templates()?;
    spec.seed_templates(&templates).await?;
    let runtime = Runtime::builder()
        .state(store.clone())
        .elector(Arc::new(StoreElector::new(store.clone(), "/ccm")))
        .spec(spec)
        .events(Arc::new(RecordingSink::new()))
        .clock(shared.clone())
        .provider(Arc::new(SimulatedProvider::new(shared)))
        .settings(RuntimeSettings {
            candidate: "host-service".into(),
            controller_enabled: false,
            ..RuntimeSettings::default()
        })
        .build()?;
    let api = runtime.lablets();
    let def = api.register_definition(definition(), LAB_YAML).await?;
    println!(
        "registered {} ({:?}), ports {:?}",
        def.definition.id,
        def.outcome,
        def.definition.port_names()
    );

    // The host's fleet: two RUNNING personal workers.
    for id in ["w-a", "w-b"] {
        let mut w = Worker::from_template(
            id,
            &templates[0],
            "us-east-1",
            WorkerState::Running,
            "2.9.0".parse()?,
            "CML-2.9.0",
        );
        w.ready_at = Some(t0);
        api.put_worker(&w).await?;
    }
    // Seven sessions starting in 30 minutes (due now: lead time 35 min), each admitted.
    for i in 0..7 {
        let out = api
            .book(BookingRequest {
                definition_id: def.definition.id.clone(),
                timeslot_start: Some(t0 + Duration::minutes(30)),
                timeslot_end: Some(t0 + Duration::minutes(150)),
                owner_id: format!("student-{i}"),
                idempotency_key: Some(format!("host-booking-{i}")),
                ..BookingRequest::default()
            })
            .await?;
        anyhow::ensure!(out.admission.accepted(), "booking {i}: {:?}", out.admission);
    }

    let report = runtime.step().await?;
    let bound = report.scheduler.map(|s| s.bound).unwrap_or_default();
    for b in &bound {
        println!("{} -> {} ports {:?}", b.session, b.worker, b.ports);
    }
    println!(
        "placed {} of 7 sessions; the host store committed {} writes",
        bound.len(),
        store.committed.load(Ordering::Relaxed)
    );
    anyhow::ensure!(bound.len() == 7, "expected all 7 sessions placed");
    Ok(())
}
