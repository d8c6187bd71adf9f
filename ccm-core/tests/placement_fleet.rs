//! The fast placer's decisions, commits and releases, checked against hand-computed answers
//! and against the naive placer.

mod placement_support;

use ccm_core::license::LicenseType;
use ccm_core::placement::{
    naive, CommitError, Fleet, FleetError, Rejection, Requirements, Scoring, Strategy, Weights,
};
use ccm_core::worker::Worker;
use placement_support::*;

fn personal() -> ccm_core::template::WorkerTemplate {
    seed_templates()[0].clone()
}

fn filled(id: &str, a: (u32, u32, u32, u32)) -> Worker {
    let mut w = worker(id, &personal());
    w.allocated = load(a.0, a.1, a.2, a.3);
    w
}

fn agree(fleet: &Fleet, r: &Requirements) -> String {
    let fast = fleet.place(r).unwrap();
    assert_eq!(
        Ok(fast.clone()),
        naive::place(fleet.workers(), r, fleet.scoring())
    );
    fast.worker
}

#[test]
fn bin_pack_takes_the_fullest_feasible_and_spread_the_emptiest() {
    let ws = vec![
        filled("empty", (0, 0, 0, 0)),
        filled("half", (24, 96, 250, 10)),
        filled("full", (46, 190, 490, 19)), // too full for the request
    ];
    let r = req(4, 8, 20, 2, 1);
    let pack = Fleet::new(ws.clone(), Scoring::default()).unwrap();
    assert_eq!(agree(&pack, &r), "half");
    let spread = Fleet::new(ws, Scoring::spread()).unwrap();
    assert_eq!(agree(&spread, &r), "empty");
}

#[test]
fn equal_scores_go_to_the_smallest_id() {
    let ws = vec![
        filled("w3", (8, 8, 8, 1)),
        filled("w1", (8, 8, 8, 1)),
        filled("w2", (8, 8, 8, 1)),
    ];
    for s in [Scoring::default(), Scoring::spread()] {
        let f = Fleet::new(ws.clone(), s).unwrap();
        let c = f.place(&req(1, 1, 1, 1, 0)).unwrap();
        assert_eq!((c.worker.as_str(), c.worker_index), ("w1", 1));
    }
}

#[test]
fn weights_decide_between_cpu_heavy_and_memory_heavy_workers() {
    let ws = vec![
        filled("cpu-heavy", (40, 20, 0, 0)),
        filled("mem-heavy", (5, 180, 0, 0)),
    ];
    let by = |cpu, memory| Scoring {
        strategy: Strategy::BinPack,
        weights: Weights {
            cpu,
            memory,
            storage: 0,
            nodes: 0,
        },
    };
    let r = req(1, 1, 0, 0, 0);
    assert_eq!(
        agree(&Fleet::new(ws.clone(), by(1, 0)).unwrap(), &r),
        "cpu-heavy"
    );
    assert_eq!(
        agree(&Fleet::new(ws.clone(), by(0, 1)).unwrap(), &r),
        "mem-heavy"
    );
    // 40/48·1 + 20/192·5 ≈ 1.35 < 5/48·1 + 180/192·5 ≈ 4.79
    assert_eq!(agree(&Fleet::new(ws, by(1, 5)).unwrap(), &r), "mem-heavy");
}

#[test]
fn commit_takes_capacity_and_lowest_ports_idempotently() {
    let mut f = Fleet::new(vec![filled("w1", (0, 0, 0, 0))], Scoring::default()).unwrap();
    let r = req(4, 16, 50, 3, 2);
    let c = f.place(&r).unwrap();
    let b1 = f.commit("s1", &c).unwrap();
    assert_eq!(b1.ports.values().copied().collect::<Vec<_>>(), [2000, 2001]);
    assert_eq!(f.commit("s1", &c).unwrap(), b1);
    assert_eq!(f.workers()[0].allocated, load(4, 16, 50, 3));
    let b2 = f.commit("s2", &f.place(&r).unwrap()).unwrap();
    assert_eq!(b2.ports.values().copied().collect::<Vec<_>>(), [2002, 2003]);
    assert_eq!(f.workers()[0].allocated, load(8, 32, 100, 6));
    assert_eq!(f.release("s1"), Some(b1));
    assert_eq!(f.release("s1"), None);
    assert_eq!(f.workers()[0].allocated, load(4, 16, 50, 3));
    // freed ports are reused lowest-first
    let b3 = f.commit("s3", &f.place(&r).unwrap()).unwrap();
    assert_eq!(b3.ports.values().copied().collect::<Vec<_>>(), [2000, 2001]);
    assert_eq!(f.binding("s3"), Some(&b3));
}

#[test]
fn stale_choice_is_refused_and_changes_nothing() {
    let mut f = Fleet::new(vec![filled("w1", (40, 0, 0, 0))], Scoring::default()).unwrap();
    let r = req(6, 1, 1, 1, 1);
    let c = f.place(&r).unwrap();
    f.commit("s1", &c).unwrap();
    let before = f.workers().to_vec();
    let e = f.commit("s2", &c).unwrap_err();
    assert_eq!(
        e,
        CommitError::NoLongerFits {
            worker: "w1".into(),
            reason: Rejection::Cpu { need: 6, free: 2 }
        }
    );
    assert_eq!(
        e.to_string(),
        "worker w1 can no longer take the session: cpu: need 6, free 2"
    );
    assert_eq!(f.workers(), &before[..]);
}

#[test]
fn a_session_binds_once() {
    let mut old = filled("w1", (0, 0, 0, 0));
    old.ports.allocate("old", &["ssh".to_string()]).unwrap();
    let mut f = Fleet::new(vec![old, filled("w2", (1, 1, 1, 1))], Scoring::default()).unwrap();
    let r = req(1, 1, 1, 1, 1);
    let c = f.place(&r).unwrap();
    assert_eq!(c.worker, "w2");
    f.commit("s1", &c).unwrap();
    let mut other = c.clone();
    other.worker = "w1".into();
    other.worker_index = 0;
    assert_eq!(
        f.commit("s1", &other),
        Err(CommitError::AlreadyBound {
            session: "s1".into(),
            worker: "w2".into()
        })
    );
    assert_eq!(
        f.commit("old", &c),
        Err(CommitError::AlreadyBound {
            session: "old".into(),
            worker: "w1".into()
        })
    );
    other.worker_index = 7;
    assert!(matches!(
        f.commit("s9", &other),
        Err(CommitError::UnknownWorker { index: 7, .. })
    ));
}

#[test]
fn duplicate_worker_ids_are_rejected() {
    let e = Fleet::new(
        vec![filled("w1", (0, 0, 0, 0)), filled("w1", (1, 0, 0, 0))],
        Scoring::default(),
    )
    .unwrap_err();
    assert_eq!(e, FleetError::DuplicateWorker("w1".into()));
    assert_eq!(
        e.to_string(),
        "worker id \"w1\" appears twice in the snapshot"
    );
}

#[test]
fn classes_group_static_attributes() {
    let t = personal();
    let mut ws: Vec<Worker> = (0..10).map(|i| worker(&format!("w{i}"), &t)).collect();
    ws[3].region = "us-west-2".into();
    ws[4].cml_version = "2.10.0".parse().unwrap();
    ws[5].node_definitions.insert("iosv".into());
    ws[6].state = ccm_core::worker::WorkerState::Stopped;
    ws[7] = worker("w7", &seed_templates()[1]);
    let f = Fleet::new(ws, Scoring::default()).unwrap();
    assert_eq!(f.class_count(), 5);
    let mut r = req(1, 1, 1, 1, 0);
    r.license_affinity = vec![LicenseType::Enterprise];
    assert_eq!(agree(&f, &r), "w7");
}

/// A worker whose load grows moves into an earlier block of the skip index with more free
/// memory than anything that block held before: the index must still find it.
#[test]
fn skip_index_sees_workers_that_moved_between_blocks() {
    let mut ws: Vec<Worker> = (0..32)
        .map(|i| filled(&format!("w{i:02}"), (40, 180, 0, 0)))
        .collect();
    ws.extend((32..39).map(|i| filled(&format!("w{i:02}"), (8, 20, 0, 0))));
    ws.push(filled("w39", (47, 0, 0, 0)));
    let mut f = Fleet::new(ws, Scoring::default()).unwrap();
    // Only w39 has 1 core and 150 GB free among the fuller workers.
    let c = f.place(&req(1, 150, 0, 0, 0)).unwrap();
    assert_eq!(c.worker, "w39");
    f.commit("s1", &c).unwrap();
    // w39 (48/48 cores, 150/192 GB) is now the fullest: first block, 42 GB free.
    assert_eq!(agree(&f, &req(0, 40, 0, 0, 0)), "w39");
    f.release("s1").unwrap();
    assert_eq!(agree(&f, &req(0, 40, 0, 0, 0)), "w39");
    assert_eq!(agree(&f, &req(1, 40, 0, 0, 0)), "w39");
    assert_eq!(agree(&f, &req(2, 40, 0, 0, 0)), "w32");
}

/// Workers added after the snapshot (e.g. planned ones) are placed on as if they had been in
/// it: same choices as the naive placer, equal scores to the smallest id, new classes indexed.
#[test]
fn added_workers_take_part_like_snapshot_workers() {
    let mut f = Fleet::new(vec![filled("w3", (8, 8, 8, 1))], Scoring::default()).unwrap();
    assert_eq!(f.add_worker(filled("w1", (8, 8, 8, 1))).unwrap(), 1);
    assert_eq!(agree(&f, &req(1, 1, 1, 1, 0)), "w1");
    // Another template is another class (the only one serving an enterprise licence).
    let big = worker("w2", &seed_templates()[1]);
    assert_eq!(f.add_worker(big).unwrap(), 2);
    assert_eq!(f.class_count(), 2);
    let mut r = req(1, 1, 1, 1, 0);
    r.license_affinity = vec![LicenseType::Enterprise];
    assert_eq!(agree(&f, &r), "w2");
    let c = f.place(&req(40, 1, 1, 1, 1)).unwrap();
    assert_eq!(c.worker, "w1");
    f.commit("s1", &c).unwrap();
    // w1 has no core left: the fuller of the others.
    assert_eq!(agree(&f, &req(1, 1, 1, 1, 0)), "w3");
    assert_eq!(
        f.add_worker(filled("w3", (0, 0, 0, 0))).unwrap_err(),
        FleetError::DuplicateWorker("w3".into())
    );
    assert_eq!(f.workers().len(), 3);
}
