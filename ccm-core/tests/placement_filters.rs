//! One test per filter: a worker that really violates it yields exactly that reason, with
//! numbers, from `filter::check`, from the fast placer's explanation and from the naive one.

mod placement_support;

use ccm_core::glob::Glob;
use ccm_core::license::LicenseType;
use ccm_core::placement::{check, naive, FilterKind, Fleet, Rejection, Requirements, Scoring};
use ccm_core::version::VersionRange;
use ccm_core::worker::{Worker, WorkerState};
use placement_support::*;

/// Asserts `w` is rejected for `r` with `expected` (and its Display), by every path.
fn assert_rejected(w: Worker, r: &Requirements, expected: Rejection, shown: &str) {
    assert_eq!(check(&w, r), Err(expected.clone()));
    assert_eq!(expected.to_string(), shown);
    let kind = expected.kind();
    let fleet = Fleet::new(vec![w.clone()], Scoring::default()).unwrap();
    let fast = fleet.place(r).unwrap_err();
    let slow = naive::place(std::slice::from_ref(&w), r, &Scoring::default()).unwrap_err();
    assert_eq!(fast, slow);
    assert_eq!(fast.rejected(kind), 1, "{kind}");
    assert_eq!(fast.rejected_by.values().sum::<usize>(), 1);
    assert_eq!(fast.reasons.len(), 1);
    assert_eq!(fast.reasons[0].worker, w.id);
    assert_eq!(fast.reasons[0].reason, expected);
}

fn personal() -> ccm_core::template::WorkerTemplate {
    seed_templates()[0].clone()
}

#[test]
fn state_not_running() {
    let mut w = worker("w1", &personal());
    w.state = WorkerState::Draining;
    assert_rejected(
        w.clone(),
        &req(1, 1, 1, 1, 0),
        Rejection::State {
            state: WorkerState::Draining,
        },
        "state: DRAINING, not RUNNING",
    );
    w.state = WorkerState::Running;
    assert!(check(&w, &req(1, 1, 1, 1, 0)).is_ok());
}

#[test]
fn region_mismatch() {
    let w = worker("w1", &personal());
    let mut r = req(1, 1, 1, 1, 0);
    r.region = Some("eu-west-1".into());
    assert_rejected(
        w.clone(),
        &r,
        Rejection::Region {
            wanted: "eu-west-1".into(),
            actual: "us-east-1".into(),
        },
        "region: need eu-west-1, worker in us-east-1",
    );
    r.region = Some("us-east-1".into());
    assert!(check(&w, &r).is_ok());
}

#[test]
fn license_tiers() {
    let p = worker("w1", &personal());
    let mut r = req(1, 1, 1, 1, 0);
    r.license_affinity = vec![LicenseType::Enterprise];
    assert_rejected(
        p.clone(),
        &r,
        Rejection::License {
            worker: LicenseType::Personal,
            wanted: vec![LicenseType::Enterprise],
        },
        "license: PERSONAL does not serve ENTERPRISE",
    );
    // ENTERPRISE serves PERSONAL sessions; EVALUATION serves only EVALUATION.
    let e = worker("w2", &seed_templates()[1]);
    r.license_affinity = vec![LicenseType::Personal];
    assert!(check(&e, &r).is_ok());
    let ev = worker(
        "w3",
        &template("ev", LicenseType::Evaluation, (8, 8, 8), 5, (1, 9)),
    );
    assert!(matches!(check(&ev, &r), Err(Rejection::License { .. })));
    r.license_affinity = vec![LicenseType::Evaluation];
    assert!(check(&ev, &r).is_ok());
    assert!(matches!(check(&e, &r), Err(Rejection::License { .. })));
}

#[test]
fn cml_version_compared_as_semver() {
    let w = worker("w1", &personal()); // 2.9.0
    let mut r = req(1, 1, 1, 1, 0);
    r.cml_versions = VersionRange {
        min: Some("2.10".parse().unwrap()),
        max: None,
    };
    assert_rejected(
        w.clone(),
        &r,
        Rejection::CmlVersion {
            version: "2.9.0".into(),
            range: ">= 2.10".into(),
        },
        "cml_version: 2.9.0 not in >= 2.10",
    );
    // As strings "2.10" < "2.9"; as semver 2.9.0 is below 2.10 and within [2.8, 2.9].
    r.cml_versions = VersionRange {
        min: Some("2.8".parse().unwrap()),
        max: Some("2.9".parse().unwrap()),
    };
    assert!(check(&w, &r).is_ok());
}

#[test]
fn node_definitions_missing() {
    let mut w = worker("w1", &personal());
    w.node_definitions.insert("iosv".into());
    let mut r = req(1, 1, 1, 1, 0);
    r.node_definitions = vec!["iosv".into(), "csr1000v".into(), "nxosv".into()];
    assert_rejected(
        w.clone(),
        &r,
        Rejection::NodeDefinitions {
            missing: vec!["csr1000v".into(), "nxosv".into()],
        },
        "node_definitions: missing csr1000v, nxosv",
    );
    w.node_definitions.insert("csr1000v".into());
    w.node_definitions.insert("nxosv".into());
    assert!(check(&w, &r).is_ok());
}

#[test]
fn ami_glob() {
    let w = worker("w1", &personal());
    let mut r = req(1, 1, 1, 1, 0);
    r.ami = Some(Glob::new("CML-2.10.*"));
    assert_rejected(
        w.clone(),
        &r,
        Rejection::Ami {
            ami: "CML-2.9.0".into(),
            pattern: "CML-2.10.*".into(),
        },
        "ami: CML-2.9.0 does not match CML-2.10.*",
    );
    r.ami = Some(Glob::new("CML-2.9.*"));
    assert!(check(&w, &r).is_ok());
}

#[test]
fn cpu_memory_storage_with_numbers() {
    let mut w = worker("w1", &personal()); // 48 / 192 / 500 / 20
    w.allocated = load(46, 100, 480, 0);
    assert_rejected(
        w.clone(),
        &req(4, 8, 10, 1, 0),
        Rejection::Cpu { need: 4, free: 2 },
        "cpu: need 4, free 2",
    );
    assert_rejected(
        w.clone(),
        &req(2, 93, 10, 1, 0),
        Rejection::Memory { need: 93, free: 92 },
        "memory: need 93 GB, free 92 GB",
    );
    assert_rejected(
        w.clone(),
        &req(2, 92, 21, 1, 0),
        Rejection::Storage { need: 21, free: 20 },
        "storage: need 21 GB, free 20 GB",
    );
    assert!(check(&w, &req(2, 92, 20, 1, 0)).is_ok());
}

#[test]
fn nodes_against_max_nodes() {
    let mut w = worker("w1", &personal()); // max_nodes 20 on PERSONAL
    w.allocated = load(0, 0, 0, 15);
    assert_rejected(
        w.clone(),
        &req(1, 1, 1, 6, 0),
        Rejection::Nodes {
            need: 6,
            free: 5,
            max: 20,
        },
        "nodes: need 6, free 5 of max_nodes 20",
    );
    assert!(check(&w, &req(1, 1, 1, 5, 0)).is_ok());
}

#[test]
fn ports_free_count() {
    let t = template(
        "tiny-ports",
        LicenseType::Personal,
        (48, 192, 500),
        20,
        (3000, 3002),
    );
    let mut w = worker("w1", &t);
    w.ports.allocate("held", &["a".to_string()]).unwrap();
    assert_rejected(
        w.clone(),
        &req(1, 1, 1, 1, 3),
        Rejection::Ports { need: 3, free: 2 },
        "ports: need 3, free 2",
    );
    assert!(check(&w, &req(1, 1, 1, 1, 2)).is_ok());
}

#[test]
fn first_failing_filter_in_order_is_the_reason() {
    let mut w = worker("w1", &personal());
    w.allocated = load(48, 192, 500, 20);
    let mut r = req(4, 4, 4, 4, 1);
    r.region = Some("us-west-2".into());
    r.license_affinity = vec![LicenseType::Evaluation];
    // region precedes licence precedes cpu
    assert_eq!(check(&w, &r).unwrap_err().kind(), FilterKind::Region);
    r.region = None;
    assert_eq!(check(&w, &r).unwrap_err().kind(), FilterKind::License);
    r.license_affinity.clear();
    assert_eq!(check(&w, &r).unwrap_err().kind(), FilterKind::Cpu);
    w.state = WorkerState::Stopped;
    assert_eq!(check(&w, &r).unwrap_err().kind(), FilterKind::State);
}

#[test]
fn counts_cover_a_mixed_fleet() {
    let p = personal();
    let mut full = worker("a-full", &p);
    full.allocated = load(48, 0, 0, 0);
    let mut west = worker("b-west", &p);
    west.region = "us-west-2".into();
    let mut draining = worker("c-drain", &p);
    draining.state = WorkerState::Draining;
    let mut old = worker("d-old", &p);
    old.cml_version = "2.8.0".parse().unwrap();
    let mut r = req(1, 1, 1, 1, 0);
    r.region = Some("us-east-1".into());
    r.cml_versions.min = Some("2.9".parse().unwrap());
    let ws = vec![old, draining, west, full];
    let u = Fleet::new(ws.clone(), Scoring::default())
        .unwrap()
        .place(&r)
        .unwrap_err();
    assert_eq!(u, naive::place(&ws, &r, &Scoring::default()).unwrap_err());
    assert_eq!(u.workers, 4);
    for k in [
        FilterKind::Cpu,
        FilterKind::Region,
        FilterKind::State,
        FilterKind::CmlVersion,
    ] {
        assert_eq!(u.rejected(k), 1, "{k}");
    }
    assert_eq!(u.rejected(FilterKind::Memory), 0);
    let ids: Vec<&str> = u.reasons.iter().map(|r| r.worker.as_str()).collect();
    assert_eq!(ids, ["a-full", "b-west", "c-drain", "d-old"]);
}
