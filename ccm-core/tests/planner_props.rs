//! Property tests of the planner: no over-commit at any instant, every served session's worker
//! is ready by the slot start, no session is served twice, the same input gives the same plan
//! (whatever the input order), and no plan costs less than its lower bound.

use ccm_core::license::LicenseType;
use ccm_core::placement::filter::Requirements;
use ccm_core::planner::{plan, Plan, PlanInput, PlannedSession, Policy};
use ccm_core::resources::Load;
use ccm_core::session::SessionState;
use ccm_core::template::parse_templates;
use ccm_core::timeslot::Timeslot;
use ccm_core::worker::{Worker, WorkerState};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const TEMPLATES: &str = r#"
templates:
  - name: personal
    instance_type: m5zn.metal
    capacity: {cpu_cores: 16, memory_gb: 64, storage_gb: 200}
    license_type: PERSONAL
    max_nodes: 20
    ami_pattern: "CML-2.9.*"
    regions: [us-east-1, us-west-2]
    port_range: {start: 2000, end: 2011}
    cost_per_hour_usd: 2.0
    max_workers_per_region: 3
  - name: enterprise
    instance_type: m5zn.metal
    capacity: {cpu_cores: 32, memory_gb: 128, storage_gb: 500}
    license_type: ENTERPRISE
    max_nodes: 60
    ami_pattern: "CML-2.9.*"
    regions: [us-east-1]
    cost_per_hour_usd: 3.5
    startup_minutes: 25
"#;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 4, 6, 0, 0).unwrap()
}

fn req(kind: u8, region: Option<&str>) -> Requirements {
    let (cpu, nodes, ports, lic) = match kind % 4 {
        0 => (2, 3, 2, vec![]),
        1 => (4, 6, 3, vec![LicenseType::Personal]),
        2 => (8, 24, 4, vec![LicenseType::Enterprise]),
        _ => (12, 10, 1, vec![]),
    };
    Requirements {
        load: Load {
            cpu_cores: cpu,
            memory_gb: cpu * 4,
            storage_gb: cpu * 10,
            nodes,
        },
        license_affinity: lic,
        cml_versions: Default::default(),
        node_definitions: vec![],
        ami: None,
        ports: (0..ports).map(|p| format!("p{p}")).collect(),
        region: region.map(str::to_string),
    }
}

prop_compose! {
    fn session()(kind in 0u8..4, start in 0i64..(14 * 60), len in 15i64..240, region in 0u8..5)
        -> (u8, i64, i64, u8) { (kind, start, len, region) }
}

prop_compose! {
    fn fleet_worker()(t in 0usize..2, state in 0u8..4, bound in proptest::bool::ANY)
        -> (usize, u8, bool) { (t, state, bound) }
}

fn build(sessions: &[(u8, i64, i64, u8)], fleet: &[(usize, u8, bool)], rotate: usize) -> PlanInput {
    let templates = parse_templates(TEMPLATES, "props").unwrap();
    let mut workers = Vec::new();
    let mut planned = Vec::new();
    for (i, (t, st, bound)) in fleet.iter().enumerate() {
        let state = match st {
            0 => WorkerState::Running,
            1 => WorkerState::Stopped,
            2 => WorkerState::Starting,
            _ => WorkerState::Draining,
        };
        let tpl = &templates[*t];
        let mut w = Worker::from_template(
            format!("w{i}"),
            tpl,
            tpl.regions[0].clone(),
            state,
            "2.9.0".parse().unwrap(),
            "CML-2.9.0",
        );
        w.launched_at = Some(now() - Duration::minutes(5));
        w.drain_started_at = Some(now() - Duration::hours(1));
        if *bound && matches!(state, WorkerState::Running | WorkerState::Draining) {
            planned.push(PlannedSession {
                id: format!("bound{i}"),
                definition_id: "d0".into(),
                requirements: req(0, None),
                slot: Timeslot::new(
                    now() - Duration::minutes(30),
                    now() + Duration::hours(1 + i as i64),
                )
                .unwrap(),
                state: SessionState::Running,
                worker_id: Some(w.id.clone()),
            });
        }
        workers.push(w);
    }
    for (i, (kind, start, len, region)) in sessions.iter().enumerate() {
        let s = now() + Duration::minutes(*start);
        let region = match region {
            0 => Some("us-west-2"),
            1 => Some("eu-west-1"),
            _ => None,
        };
        planned.push(PlannedSession {
            id: format!("s{i:03}"),
            definition_id: format!("d{kind}"),
            requirements: req(*kind, region),
            slot: Timeslot::new(s, s + Duration::minutes(*len)).unwrap(),
            state: SessionState::Pending,
            worker_id: None,
        });
    }
    let n = planned.len().max(1);
    planned.rotate_left(rotate % n);
    workers.reverse();
    PlanInput {
        now: now(),
        sessions: planned,
        workers,
        templates,
        previous: vec![],
    }
}

fn need(input: &PlanInput, id: &str) -> [u32; 5] {
    let s = input.sessions.iter().find(|s| s.id == id).unwrap();
    let d = s.requirements.load.dims();
    [d[0], d[1], d[2], d[3], s.requirements.ports.len() as u32]
}

fn check_invariants(input: &PlanInput, p: &Plan) -> Result<(), TestCaseError> {
    // No session served twice, none both served and unserved.
    let mut seen = BTreeSet::new();
    for a in &p.assignments {
        prop_assert!(
            seen.insert(a.session_id.clone()),
            "{} assigned twice",
            a.session_id
        );
    }
    for u in &p.unserved {
        prop_assert!(
            !seen.contains(&u.session_id),
            "{} served and unserved",
            u.session_id
        );
    }
    // Every pending session in the horizon is either served or explained.
    for s in &input.sessions {
        if s.state == SessionState::Pending && s.slot.start < p.horizon_end {
            prop_assert!(
                seen.contains(&s.id) || p.unserved.iter().any(|u| u.session_id == s.id),
                "{} neither served nor unserved",
                s.id
            );
        }
    }
    let workers: BTreeMap<&str, _> = p.workers.iter().map(|w| (w.id.as_str(), w)).collect();
    let mut per_worker: BTreeMap<&str, Vec<&ccm_core::planner::Assignment>> = BTreeMap::new();
    for a in &p.assignments {
        let w = workers.get(a.worker_id.as_str());
        prop_assert!(w.is_some(), "unknown worker {}", a.worker_id);
        let w = w.unwrap();
        per_worker.entry(w.id.as_str()).or_default().push(a);
        // Ready by slot start and billed through the slot.
        if !a.bound {
            prop_assert!(
                w.runs.iter().any(|r| r.launch_at <= r.ready_at
                    && r.ready_at <= a.start
                    && r.stop_at >= a.end
                    && r.launch_at >= p.now),
                "{} on {} is not covered by a run that is ready in time: {:?}",
                a.session_id,
                w.id,
                w.runs
            );
        }
        // Static filters hold (licence, region).
        let s = input
            .sessions
            .iter()
            .find(|s| s.id == a.session_id)
            .unwrap();
        let t = input
            .templates
            .iter()
            .find(|t| t.name == w.template)
            .unwrap();
        prop_assert!(t.license_type.serves_any(&s.requirements.license_affinity));
        if let Some(r) = &s.requirements.region {
            prop_assert_eq!(r, &w.region);
        }
    }
    // No over-commit at any instant, in any dimension (ports included).
    for (wid, list) in per_worker {
        let w = workers[wid];
        let cap = w.capacity.dims();
        let cap = [cap[0], cap[1], cap[2], cap[3], w.ports];
        let mut ev: Vec<(DateTime<Utc>, i64, [u32; 5])> = Vec::new();
        for a in list {
            let n = need(input, &a.session_id);
            ev.push((a.start, 1, n));
            ev.push((a.end, -1, n));
        }
        ev.sort_by_key(|e| (e.0, e.1));
        let mut load = [0i64; 5];
        for (t, sign, n) in ev {
            for d in 0..5 {
                load[d] += sign * i64::from(n[d]);
                prop_assert!(
                    load[d] <= i64::from(cap[d]),
                    "worker {} over capacity in dim {} at {}: {} > {}",
                    wid,
                    d,
                    t,
                    load[d],
                    cap[d]
                );
            }
        }
    }
    // Runs are ordered and do not overlap.
    for w in &p.workers {
        for pair in w.runs.windows(2) {
            prop_assert!(
                pair[0].stop_at <= pair[1].launch_at,
                "{}: runs overlap",
                w.id
            );
        }
    }
    // Nothing costs less than the lower bound.
    prop_assert!(
        p.cost.cost_usd + 1e-6 >= p.cost.lower_bound_usd,
        "cost {} below lower bound {}",
        p.cost.cost_usd,
        p.cost.lower_bound_usd
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_feasible_and_deterministic(
        sessions in proptest::collection::vec(session(), 1..40),
        fleet in proptest::collection::vec(fleet_worker(), 0..5),
        rotate in 0usize..40,
    ) {
        let input = build(&sessions, &fleet, 0);
        let policy = Policy::default();
        let p = plan(&input, &policy);
        check_invariants(&input, &p)?;
        // Same input, same plan; input order does not matter either.
        prop_assert_eq!(&p, &plan(&input, &policy));
        let shuffled = build(&sessions, &fleet, rotate);
        prop_assert_eq!(&p, &plan(&shuffled, &policy));
    }

    #[test]
    fn min_warm_and_short_horizon_keep_invariants(
        sessions in proptest::collection::vec(session(), 1..25),
        fleet in proptest::collection::vec(fleet_worker(), 0..4),
        warm in 0u32..3,
    ) {
        let input = build(&sessions, &fleet, 0);
        let policy = Policy { min_warm_workers: warm, horizon_hours: 8, ..Policy::default() };
        let p = plan(&input, &policy);
        check_invariants(&input, &p)?;
        let warm_count = p.workers.iter().filter(|w| w.warm).count();
        prop_assert!(warm_count <= warm as usize);
        for w in p.workers.iter().filter(|w| w.warm) {
            prop_assert!(w.runs.last().is_some_and(|r| r.stop_at >= p.horizon_end));
        }
    }
}
