//! Property tests: along random sequences of place / commit / release on random mixed fleets,
//! the fast placer returns exactly the naive placer's answer, no worker exceeds any dimension
//! or max_nodes, no port has two owners, and every rejection really violates its filter.

mod placement_support;

use ccm_core::glob::Glob;
use ccm_core::license::LicenseType;
use ccm_core::placement::{
    naive, place_batch, BatchRequest, Fleet, Rejection, Requirements, Scoring, Weights,
};
use ccm_core::resources::Load;
use ccm_core::template::WorkerTemplate;
use ccm_core::version::{CmlVersion, VersionRange};
use ccm_core::worker::{Worker, WorkerState};
use chrono::{TimeZone, Utc};
use placement_support::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

const REGIONS: [&str; 3] = ["us-east-1", "us-west-2", "eu-west-1"];
const VERSIONS: [&str; 4] = ["2.8.0", "2.9.0", "2.9.1", "2.10.0"];
const NODE_DEFS: [&str; 3] = ["iosv", "csr1000v", "nxosv"];
const GLOBS: [&str; 4] = ["CML-2.9.*", "CML-2.*", "CML-2.10.*", "*"];
const LICENSES: [LicenseType; 3] = LicenseType::ALL;

fn templates() -> Vec<WorkerTemplate> {
    let mut ts = seed_templates();
    ts.push(template(
        "eval-odd",
        LicenseType::Evaluation,
        (7, 13, 101),
        5,
        (4000, 4005),
    ));
    ts.push(template(
        "personal-small",
        LicenseType::Personal,
        (12, 48, 200),
        20,
        (2000, 2003),
    ));
    ts
}

#[derive(Debug, Clone)]
struct WorkerSpec {
    template: usize,
    region: usize,
    version: usize,
    node_defs: u8,
    running: bool,
    /// Allocation per dimension, in eighths of capacity (ties on purpose).
    eighths: [u32; 4],
    held_ports: usize,
}

fn worker_spec() -> impl Strategy<Value = WorkerSpec> {
    spec_within(4, 3, 4, 8, 0.0)
}

/// Few static variants, so classes grow past one skip-index block; half the workers have one
/// fill level in every dimension, so blocks of fuller workers really get skipped.
fn dense_worker_spec() -> impl Strategy<Value = WorkerSpec> {
    spec_within(2, 1, 1, 1, 0.5)
}

fn spec_within(
    templates: usize,
    regions: usize,
    versions: usize,
    defs: u8,
    p_uniform: f64,
) -> impl Strategy<Value = WorkerSpec> {
    (
        0..templates,
        0..regions,
        0..versions,
        0..defs,
        prop::bool::weighted(0.85),
        (
            prop::array::uniform4(0..=8u32),
            prop::bool::weighted(p_uniform),
        ),
        0..3usize,
    )
        .prop_map(
            |(template, region, version, node_defs, running, (eighths, uniform), held_ports)| {
                WorkerSpec {
                    template,
                    region,
                    version,
                    node_defs,
                    running,
                    eighths: if uniform { [eighths[0]; 4] } else { eighths },
                    held_ports,
                }
            },
        )
}

fn build_fleet(specs: &[WorkerSpec]) -> Vec<Worker> {
    let ts = templates();
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let t = &ts[s.template];
            let v = VERSIONS[s.version];
            let mut w = Worker::from_template(
                // ids not in input order, unique for < 1000 workers
                format!("w{:03}", (i * 617) % 1000),
                t,
                REGIONS[s.region],
                if s.running {
                    WorkerState::Running
                } else {
                    WorkerState::Draining
                },
                v.parse().unwrap(),
                format!("CML-{v}"),
            );
            for (b, d) in NODE_DEFS.iter().enumerate() {
                if s.node_defs & (1 << b) != 0 {
                    w.node_definitions.insert(d.to_string());
                }
            }
            let c = w.capacity.dims();
            w.allocated = Load::from_dims(std::array::from_fn(|d| c[d] * s.eighths[d] / 8));
            let names: Vec<String> = (0..s.held_ports).map(|k| format!("h{k}")).collect();
            let _ = w.ports.allocate(&format!("pre-{i}"), &names);
            w
        })
        .collect()
}

fn requirements() -> impl Strategy<Value = Requirements> {
    (
        (0..14u32, 0..60u32, 0..300u32, 0..25u32),
        prop::collection::vec(0..3usize, 0..2),
        prop::option::of((0..4usize, 0..4usize)),
        0..8u8,
        prop::option::of(0..4usize),
        0..4usize,
        prop::option::of(0..3usize),
    )
        .prop_map(|(l, lic, vr, defs, glob, ports, region)| Requirements {
            load: Load {
                cpu_cores: l.0,
                memory_gb: l.1,
                storage_gb: l.2,
                nodes: l.3,
            },
            license_affinity: lic.into_iter().map(|i| LICENSES[i]).collect(),
            cml_versions: match vr {
                None => VersionRange::default(),
                Some((a, b)) => VersionRange {
                    min: Some(VERSIONS[a.min(b)].parse().unwrap()),
                    max: Some(VERSIONS[a.max(b)].parse().unwrap()),
                },
            },
            node_definitions: NODE_DEFS
                .iter()
                .enumerate()
                .filter(|(b, _)| defs & (1 << b) != 0)
                .map(|(_, d)| d.to_string())
                .collect(),
            ami: glob.map(|g| Glob::new(GLOBS[g])),
            ports: (0..ports).map(|k| format!("p{k}")).collect(),
            region: region.map(|r| REGIONS[r].to_string()),
        })
}

/// Requirements the dense fleets' classes can meet statically: load, ports and licence only.
fn load_only_requirements() -> impl Strategy<Value = Requirements> {
    requirements().prop_map(|mut r| {
        r.cml_versions = VersionRange::default();
        r.node_definitions.clear();
        r.ami = None;
        r.region = None;
        r
    })
}

fn scoring() -> impl Strategy<Value = Scoring> {
    (prop::bool::ANY, prop::array::uniform4(0..4u32)).prop_map(|(spread, w)| Scoring {
        strategy: if spread {
            ccm_core::placement::Strategy::Spread
        } else {
            ccm_core::placement::Strategy::BinPack
        },
        weights: Weights {
            cpu: w[0],
            memory: w[1],
            storage: w[2],
            nodes: w[3],
        },
    })
}

#[derive(Debug, Clone)]
enum Op {
    /// Place request `i` and commit it as a new session.
    Place(usize),
    /// Release the `k`-th live session (mod count).
    Release(usize),
    /// Commit an already-committed session again.
    Recommit(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize).prop_map(Op::Place),
        2 => (0..50usize).prop_map(Op::Release),
        1 => (0..50usize).prop_map(Op::Recommit),
    ]
}

/// Independent re-statement of each filter: does `w` really violate `r` for `req`?
fn really_violates(w: &Worker, req: &Requirements, r: &Rejection) -> bool {
    let free = w.capacity.saturating_sub(&w.allocated);
    match r {
        Rejection::State { state } => *state == w.state && w.state != WorkerState::Running,
        Rejection::Region { wanted, actual } => {
            req.region.as_deref() == Some(wanted.as_str())
                && *actual == w.region
                && wanted != actual
        }
        Rejection::License { worker, .. } => {
            *worker == w.license_type
                && !req.license_affinity.is_empty()
                && req
                    .license_affinity
                    .iter()
                    .all(|l| !w.license_type.serves(*l))
        }
        Rejection::CmlVersion { version, .. } => {
            let v: CmlVersion = version.parse().unwrap();
            v == w.cml_version
                && (req.cml_versions.min.as_ref().is_some_and(|m| v < *m)
                    || req
                        .cml_versions
                        .max
                        .as_ref()
                        .is_some_and(|m| !m.admits_as_max(&v)))
        }
        Rejection::NodeDefinitions { missing } => {
            !missing.is_empty()
                && missing
                    .iter()
                    .all(|d| req.node_definitions.contains(d) && !w.node_definitions.contains(d))
        }
        Rejection::Ami { ami, pattern } => {
            *ami == w.ami_name
                && req.ami.as_ref().map(|g| g.as_str()) == Some(pattern.as_str())
                && !Glob::new(pattern.clone()).matches(ami)
        }
        Rejection::Cpu { need, free: f } => {
            *need == req.load.cpu_cores && *f == free.cpu_cores && need > f
        }
        Rejection::Memory { need, free: f } => {
            *need == req.load.memory_gb && *f == free.memory_gb && need > f
        }
        Rejection::Storage { need, free: f } => {
            *need == req.load.storage_gb && *f == free.storage_gb && need > f
        }
        Rejection::Nodes { need, free: f, max } => {
            *need == req.load.nodes && *f == free.nodes && *max == w.capacity.nodes && need > f
        }
        Rejection::Ports { need, free: f } => {
            *need as usize == req.ports.len() && *f == w.ports.free() && need > f
        }
    }
}

fn assert_invariants(ws: &[Worker]) -> Result<(), TestCaseError> {
    for w in ws {
        prop_assert!(
            w.allocated.fits_in(&w.capacity),
            "{} over capacity: {:?} > {:?}",
            w.id,
            w.allocated,
            w.capacity
        );
        let mut seen = BTreeSet::new();
        let mut held = 0u32;
        for (s, m) in w.ports.owners() {
            for p in m.values() {
                prop_assert!(
                    seen.insert(*p),
                    "{}: port {p} has two owners (one is {s})",
                    w.id
                );
                prop_assert!(w.ports.range().contains(*p));
                held += 1;
            }
        }
        prop_assert_eq!(held + w.ports.free(), w.ports.range().len());
    }
    Ok(())
}

/// Fast and naive agree on `req`; on failure every reason really holds.
fn assert_agree(fleet: &Fleet, req: &Requirements) -> Result<(), TestCaseError> {
    let fast = fleet.place(req);
    let slow = naive::place(fleet.workers(), req, fleet.scoring());
    prop_assert_eq!(&fast, &slow);
    if let Err(u) = &fast {
        prop_assert_eq!(u.workers, fleet.workers().len());
        prop_assert_eq!(u.reasons.len(), fleet.workers().len());
        prop_assert_eq!(u.rejected_by.values().sum::<usize>(), u.workers);
        for r in &u.reasons {
            let w = fleet.worker(&r.worker).unwrap();
            prop_assert!(really_violates(w, req, &r.reason), "{} on {w:?}", r.reason);
        }
    }
    Ok(())
}

fn run_ops(
    specs: &[WorkerSpec],
    reqs: &[Requirements],
    scoring: Scoring,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut fleet = Fleet::new(build_fleet(specs), scoring).unwrap();
    assert_invariants(fleet.workers())?;
    let mut live: Vec<String> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Place(i) => {
                let req = &reqs[*i];
                assert_agree(&fleet, req)?;
                if let Ok(choice) = fleet.place(req) {
                    prop_assert!(ccm_core::placement::check(
                        &fleet.workers()[choice.worker_index],
                        req
                    )
                    .is_ok());
                    let s = format!("s{n}");
                    let b = fleet.commit(&s, &choice).unwrap();
                    prop_assert_eq!(&b.worker, &choice.worker);
                    prop_assert_eq!(b.ports.len(), req.ports.len());
                    // lowest-first: no port below the highest one given is still free
                    let w = fleet.worker(&b.worker).unwrap();
                    if let Some(max) = b.ports.values().max() {
                        prop_assert!(w.ports.peek_lowest(1).first().is_none_or(|p| p > max));
                    }
                    live.push(s);
                }
            }
            Op::Release(k) if !live.is_empty() => {
                let s = live.remove(k % live.len());
                let before = fleet.binding(&s).cloned().unwrap();
                let after = fleet.release(&s).unwrap();
                prop_assert_eq!(before, after);
                prop_assert!(fleet.release(&s).is_none());
            }
            Op::Recommit(k) if !live.is_empty() => {
                let s = &live[k % live.len()];
                let b = fleet.binding(s).cloned().unwrap();
                let w = fleet.worker(&b.worker).unwrap().clone();
                let choice = ccm_core::placement::Choice {
                    worker: b.worker.clone(),
                    worker_index: fleet
                        .workers()
                        .iter()
                        .position(|x| x.id == b.worker)
                        .unwrap(),
                    score: naive::place(
                        std::slice::from_ref(&w),
                        &req(0, 0, 0, 0, 0),
                        fleet.scoring(),
                    )
                    .unwrap()
                    .score,
                    load: b.load,
                    ports: b.ports.keys().cloned().collect(),
                };
                prop_assert_eq!(fleet.commit(s, &choice).unwrap(), b);
                prop_assert_eq!(
                    fleet.worker(&w.id).unwrap(),
                    &w,
                    "idempotent commit changed the worker"
                );
            }
            _ => {}
        }
        assert_invariants(fleet.workers())?;
        for r in reqs {
            assert_agree(&fleet, r)?;
        }
    }
    // releasing everything restores the snapshot
    for s in &live {
        fleet.release(s).unwrap();
    }
    let fresh = build_fleet(specs);
    prop_assert_eq!(fleet.workers(), &fresh[..]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fast_equals_naive_along_commits_and_releases(
        specs in prop::collection::vec(worker_spec(), 0..60),
        reqs in prop::collection::vec(requirements(), 6),
        scoring in scoring(),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        run_ops(&specs, &reqs, scoring, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn fast_equals_naive_in_large_classes(
        specs in prop::collection::vec(dense_worker_spec(), 60..160),
        reqs in prop::collection::vec(load_only_requirements(), 6),
        scoring in scoring(),
        ops in prop::collection::vec(op(), 20..80),
    ) {
        run_ops(&specs, &reqs, scoring, &ops)?;
    }

    #[test]
    fn batch_equals_sequential_naive(
        specs in prop::collection::vec(worker_spec(), 0..40),
        reqs in prop::collection::vec((requirements(), 0..4i64), 0..25),
        scoring in scoring(),
    ) {
        let base = Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap();
        let batch: Vec<BatchRequest> = reqs
            .iter()
            .enumerate()
            .map(|(i, (r, h))| BatchRequest {
                session: format!("s{:02}", (i * 7) % 100),
                requirements: r.clone(),
                slot_start: base + chrono::Duration::hours(*h),
            })
            .collect();
        let mut fleet = Fleet::new(build_fleet(&specs), scoring).unwrap();
        let out = place_batch(&mut fleet, batch.clone(), &templates());
        assert_invariants(fleet.workers())?;
        prop_assert!(out.refused.is_empty());

        // the same by hand: sort, naive place, apply
        let mut order = batch.clone();
        order.sort_by(|a, b| (a.slot_start, &a.session).cmp(&(b.slot_start, &b.session)));
        let mut ws = build_fleet(&specs);
        let (mut bound, mut unplaced) = (Vec::new(), Vec::new());
        for r in &order {
            match naive::place(&ws, &r.requirements, &scoring) {
                Ok(c) => {
                    let w = &mut ws[c.worker_index];
                    w.allocated = w.allocated.saturating_add(&c.load);
                    w.ports.allocate(&r.session, &c.ports).unwrap();
                    bound.push((r.session.clone(), c.worker));
                }
                Err(_) => unplaced.push(r.session.clone()),
            }
        }
        let got: Vec<(String, String)> = out.bindings.iter().map(|b| (b.session.clone(), b.worker.clone())).collect();
        prop_assert_eq!(got, bound);
        let got_un: Vec<String> = out.unschedulable.iter().map(|u| u.session.clone()).collect();
        prop_assert_eq!(got_un, unplaced);
        prop_assert_eq!(fleet.workers(), &ws[..]);
        for u in &out.unschedulable {
            prop_assert!(u.why.hint.is_some());
        }
    }
}
