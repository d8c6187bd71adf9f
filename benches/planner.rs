//! Planner benchmark: 10,000 sessions over 7 days against a fleet of 500 workers, compared in
//! the same run with the original's reactive policy replayed on the same input.

use ccm_core::license::LicenseType;
use ccm_core::placement::filter::Requirements;
use ccm_core::planner::{plan, simulate_baseline, PlanInput, PlannedSession, Policy};
use ccm_core::resources::Load;
use ccm_core::session::SessionState;
use ccm_core::timeslot::Timeslot;
use ccm_core::worker::{Worker, WorkerState};
use chrono::{Duration, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// A small deterministic generator (64-bit LCG) so the input is the same on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn week(sessions: usize, workers: usize) -> PlanInput {
    let templates = ccm_core::template::seed_templates().unwrap_or_default();
    let now = Utc
        .with_ymd_and_hms(2026, 5, 4, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let mut rng = Lcg(42);
    let fleet = (0..workers)
        .map(|i| {
            let t = &templates[i % templates.len()];
            let state = match i % 5 {
                0..=2 => WorkerState::Running,
                3 => WorkerState::Stopped,
                _ => WorkerState::Starting,
            };
            let mut w = Worker::from_template(
                format!("w{i:04}"),
                t,
                t.regions[0].clone(),
                state,
                ccm_core::placement::filter::template_cml_version(t),
                ccm_core::placement::filter::template_ami_name(t),
            );
            w.launched_at = Some(now - Duration::minutes(5));
            w
        })
        .collect();
    let kinds: [(u32, u32, u32, Vec<LicenseType>); 5] = [
        (4, 5, 5, vec![LicenseType::Personal]),
        (2, 4, 4, vec![LicenseType::Personal]),
        (2, 3, 3, vec![]),
        (8, 24, 8, vec![LicenseType::Enterprise]),
        (16, 60, 12, vec![LicenseType::Enterprise]),
    ];
    let sessions = (0..sessions)
        .map(|i| {
            let (cpu, nodes, ports, lic) = &kinds[rng.next(5) as usize];
            // Office hours, on the quarter hour, across 7 days.
            let day = rng.next(7) as i64;
            let minute = (7 * 60 + rng.next(11 * 4) as i64 * 15) + day * 24 * 60;
            let start = now + Duration::minutes(minute);
            let len = Duration::minutes(60 + rng.next(7) as i64 * 30);
            PlannedSession {
                id: format!("s{i:05}"),
                definition_id: format!("d{cpu}"),
                requirements: Requirements {
                    load: Load {
                        cpu_cores: *cpu,
                        memory_gb: cpu * 4,
                        storage_gb: cpu * 10,
                        nodes: *nodes,
                    },
                    license_affinity: lic.clone(),
                    cml_versions: Default::default(),
                    node_definitions: vec![],
                    ami: None,
                    ports: (0..*ports).map(|p| format!("p{p}")).collect(),
                    region: None,
                },
                slot: Timeslot {
                    start,
                    end: start + len,
                },
                state: SessionState::Pending,
                worker_id: None,
            }
        })
        .collect();
    PlanInput {
        now,
        sessions,
        workers: fleet,
        templates,
        previous: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let input = week(10_000, 500);
    let policy = Policy {
        horizon_hours: 7 * 24,
        ..Policy::default()
    };
    let p = plan(&input, &policy);
    let b = simulate_baseline(&input, &policy);
    eprintln!(
        "planner: {} served, {} unserved, {:.0} worker-hours, cost/LB {:.3}; original policy: {:.0} worker-hours",
        p.assignments.len(),
        p.unserved.len(),
        p.cost.worker_hours,
        p.cost.cost_over_lower_bound,
        b.worker_hours
    );
    let mut g = c.benchmark_group("planner_10k_sessions_7d_500_workers");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(20));
    g.bench_function("plan", |bn| bn.iter(|| plan(black_box(&input), &policy)));
    g.bench_function("original_policy_replay", |bn| {
        bn.iter(|| simulate_baseline(black_box(&input), &policy))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
