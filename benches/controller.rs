//! One controller pass on the exam day at 07:25, when the first wave of 500 sessions falls due
//! (2,000 sessions booked, the scenario's 3 workers up or stopped): the planner-driven pass
//! (list, plan the 24 h horizon, carry out the launches due) against the reactive rule of the
//! original in the same run (list, place due sessions, launch for what fits nowhere), and the
//! pure decision alone (`plan_input` + `plan` + `due_actions` on a snapshot).

use ccm_benches::{memory_runtime, put_json, tokio_current_thread};
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::planner::{parse_scenario, plan, Scenario};
use ccm_core::runtime::{
    due_actions, plan_input, KeyLayout, Runtime, RuntimeSettings, ScalingMode, StateSnapshot,
};
use ccm_core::store::{SpecStore, VirtualClock};
use chrono::TimeZone;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

fn scenario() -> Scenario {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/scenarios");
    parse_scenario(
        include_str!("../config/scenarios/exam-day.yaml"),
        "exam-day.yaml",
        Some(&base),
    )
    .expect("exam-day scenario")
}

struct Setup {
    rt: Runtime,
    clock: VirtualClock,
}

async fn setup(s: &Scenario, scaling: ScalingMode) -> Setup {
    let at = chrono::Utc.with_ymd_and_hms(2026, 5, 4, 7, 25, 0).unwrap();
    let clock = VirtualClock::new(at);
    let store = Arc::new(MemoryStateStore::new(Arc::new(clock.clone())));
    let spec = Arc::new(MemorySpecStore::new());
    spec.seed_templates(&s.templates).await.unwrap();
    for d in &s.definitions {
        spec.insert_definition(d).await.unwrap();
    }
    let keys = KeyLayout::default();
    let provider = Arc::new(SimulatedProvider::new(Arc::new(clock.clone())));
    for w in &s.workers {
        let mut w = w.clone();
        w.provider_id = Some(provider.adopt(&w, 20).unwrap());
        put_json(store.as_ref(), &keys.worker(&w.id), &w).await;
    }
    let rt = memory_runtime(
        store,
        spec,
        &clock,
        provider,
        RuntimeSettings {
            scaling,
            ..RuntimeSettings::default()
        },
    );
    // The booked sessions go in through the façade, as they are (seeding, not timed).
    let seeded = rt.lablets().import(&s.lablet_sessions()).await.unwrap();
    assert!(seeded.existing.is_empty(), "{seeded:?}");
    assert!(rt.campaign_once().await.controller);
    Setup { rt, clock }
}

fn bench(c: &mut Criterion) {
    let rt = tokio_current_thread();
    let s = scenario();
    let mut g = c.benchmark_group("controller_pass_exam_day_0725");
    g.sample_size(10);
    for (name, mode) in [
        ("planner", ScalingMode::Planner),
        ("reactive_baseline", ScalingMode::Reactive),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || rt.block_on(setup(&s, mode)),
                |x| {
                    use ccm_core::store::Clock;
                    let r = rt
                        .block_on(x.rt.controller().reconcile_once(x.clock.now()))
                        .unwrap();
                    assert!(!r.actions.is_empty(), "the first wave needs workers");
                    x
                },
                BatchSize::LargeInput,
            )
        });
    }
    let snap = StateSnapshot::from_values(
        1,
        s.lablet_sessions(),
        s.workers.clone(),
        s.definitions.clone(),
    );
    let settings = RuntimeSettings::default();
    let now = chrono::Utc.with_ymd_and_hms(2026, 5, 4, 7, 25, 0).unwrap();
    g.bench_function("decision_only", |b| {
        b.iter(|| {
            let input = plan_input(black_box(&snap), &s.templates, now, &settings, vec![]);
            let p = plan(&input, &settings.planner_policy());
            let (actions, _) = due_actions(&p, &input, &snap, &s.templates, now);
            assert!(!actions.is_empty());
            actions.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
