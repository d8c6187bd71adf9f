//! The lab runtime behaviour suite on the simulated CML controllers (realistic timings on a
//! virtual clock), plus what only the simulation can show: timings, failure injection, CML
//! down, labs kept per worker. Needs the `testkit` feature (`cargo test --all-features`).
#![cfg(feature = "testkit")]

use ccm_core::memory::lab::{LabTimings, SimulatedLabs};
use ccm_core::store::{Clock, LabCall, LabEndpoint, LabError, LabRuntime, LabState, VirtualClock};
use ccm_core::testkit::lab::{self as suite, Pace};
use chrono::TimeZone;
use proptest::prelude::*;
use std::sync::Arc;

fn setup() -> (SimulatedLabs, LabEndpoint, Pace, VirtualClock) {
    let clock = VirtualClock::new(chrono::Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap());
    let labs = SimulatedLabs::new(Arc::new(clock.clone()), LabTimings::realistic());
    let at = LabEndpoint::new("w-1", "https://10.0.0.7");
    (labs, at, Pace::virtual_time(clock.clone()), clock)
}

#[tokio::test]
async fn memory_system_info_answers() {
    let (labs, at, _, _) = setup();
    suite::system_info_answers(&labs, &at).await;
}

#[tokio::test]
async fn memory_lifecycle() {
    let (labs, at, pace, _) = setup();
    suite::lifecycle(&labs, &at, &pace).await;
}

#[tokio::test]
async fn memory_node_tags() {
    let (labs, at, pace, _) = setup();
    suite::node_tags(&labs, &at, &pace).await;
}

#[tokio::test]
async fn memory_running_lab_refuses_wipe_and_delete() {
    let (labs, at, pace, _) = setup();
    suite::running_lab_refuses_wipe_and_delete(&labs, &at, &pace).await;
}

#[tokio::test]
async fn memory_repeated_orders_are_harmless() {
    let (labs, at, pace, _) = setup();
    suite::repeated_orders_are_harmless(&labs, &at, &pace).await;
}

#[tokio::test]
async fn memory_wiped_lab_is_reused() {
    let (labs, at, pace, _) = setup();
    suite::wiped_lab_is_reused(&labs, &at, &pace).await;
}

#[tokio::test]
async fn memory_unknown_lab_is_not_found() {
    let (labs, at, _, _) = setup();
    suite::unknown_lab_is_not_found(&labs, &at).await;
}

#[tokio::test]
async fn memory_invalid_topology_is_refused() {
    let (labs, at, pace, _) = setup();
    suite::invalid_topology_is_refused(&labs, &at, &pace).await;
}

/// Reusing a wiped lab is far faster than a fresh import: the import alone costs 90 s of
/// virtual time, a reuse costs only the wait for the wipe done at teardown.
#[tokio::test]
async fn reuse_beats_fresh_import_on_the_clock() {
    let (labs, at, pace, clock) = setup();
    let t0 = clock.now();
    let (lab, _) = suite::import(&labs, &at, &pace, "timing").await;
    let import_took = clock.now() - t0;
    assert!(
        (90..=95).contains(&import_took.num_seconds()),
        "fresh import took {import_took}"
    );
    labs.start(&at, &lab).await.unwrap();
    let t1 = clock.now();
    suite::wait_for(&labs, &at, &pace, &lab, "booted", |d| d.is_booted()).await;
    let boot = clock.now() - t1;
    assert!(
        (240..=245).contains(&boot.num_seconds()),
        "boot took {boot}"
    );
    labs.stop(&at, &lab).await.unwrap();
    suite::wait_for(&labs, &at, &pace, &lab, "stopped", |d| d.is_stopped()).await;
    labs.wipe(&at, &lab).await.unwrap();
    let t2 = clock.now();
    suite::wait_for(&labs, &at, &pace, &lab, "wiped", |d| d.is_wiped()).await;
    let wipe = clock.now() - t2;
    assert!(
        wipe < import_took / 4,
        "wipe {wipe} vs import {import_took}"
    );
    assert_eq!(labs.imports(), 1);
}

#[tokio::test]
async fn labs_are_per_worker_and_survive_cml_down() {
    let (labs, a, pace, _) = setup();
    let b = LabEndpoint::new("w-2", "https://10.0.0.8");
    let (lab, _) = suite::import(&labs, &a, &pace, "per-worker").await;
    assert!(labs.list_labs(&b).await.unwrap().is_empty());
    assert!(matches!(
        labs.lab(&b, &lab).await,
        Err(LabError::NotFound { .. })
    ));
    labs.set_down("w-1", true);
    for r in [
        labs.system_info(&a).await.map(|_| ()),
        labs.start(&a, &lab).await,
        labs.list_labs(&a).await.map(|_| ()),
    ] {
        assert!(matches!(r, Err(LabError::Unavailable { .. })), "{r:?}");
    }
    assert!(labs.system_info(&b).await.is_ok(), "only w-1 is down");
    labs.set_down("w-1", false);
    assert_eq!(
        labs.lab(&a, &lab).await.unwrap().state,
        LabState::DefinedOnCore
    );
}

#[tokio::test]
async fn injected_failures_are_counted_and_act_as_told() {
    let (labs, at, pace, _) = setup();
    let (lab, _) = suite::import(&labs, &at, &pace, "faults").await;
    labs.fail_next(LabCall::Start, 2);
    for _ in 0..2 {
        let e = labs.start(&at, &lab).await.unwrap_err();
        assert!(e.is_retryable() && e.call() == LabCall::Start, "{e}");
    }
    assert_eq!(
        labs.lab(&at, &lab).await.unwrap().state,
        LabState::DefinedOnCore,
        "failed before acting"
    );
    labs.refuse_next(LabCall::Start, 1);
    assert!(matches!(
        labs.start(&at, &lab).await,
        Err(LabError::Refused { .. })
    ));
    labs.lose_next_answers(LabCall::Start, 1);
    assert!(labs.start(&at, &lab).await.unwrap_err().is_retryable());
    assert_eq!(
        labs.lab(&at, &lab).await.unwrap().state,
        LabState::Started,
        "acted, answer lost"
    );
    assert_eq!(labs.calls(LabCall::Start), 4);
    labs.start(&at, &lab).await.unwrap();
    assert_eq!(labs.calls(LabCall::Start), 5);
}

/// Random orders on a lab never break CML's rules: the derived lab state always matches the
/// nodes, a wipe or delete of a running lab is refused, and a lab booted means started with
/// every node booted.
#[derive(Debug, Clone, Copy)]
enum Op {
    Start,
    Stop,
    Wipe,
    Delete,
    Pass(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Start),
        Just(Op::Stop),
        Just(Op::Wipe),
        Just(Op::Delete),
        (0u16..400).prop_map(Op::Pass),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_orders_keep_cml_rules(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let (labs, at, pace, clock) = setup();
            let (lab, _) = suite::import(&labs, &at, &pace, "prop").await;
            let mut deleted = false;
            for op in ops {
                let before = labs.lab(&at, &lab).await;
                let r = match op {
                    Op::Start => labs.start(&at, &lab).await,
                    Op::Stop => labs.stop(&at, &lab).await,
                    Op::Wipe => labs.wipe(&at, &lab).await,
                    Op::Delete => labs.delete(&at, &lab).await,
                    Op::Pass(s) => { clock.advance(chrono::Duration::seconds(i64::from(s))); Ok(()) }
                };
                if deleted {
                    let gone = matches!(r, Err(LabError::NotFound { .. })) || matches!(op, Op::Pass(_));
                    prop_assert!(gone, "{:?} after the delete: {:?}", op, r);
                    continue;
                }
                let before = before.unwrap();
                match op {
                    Op::Wipe => prop_assert_eq!(
                        r.is_ok(), before.state != LabState::Started,
                        "wipe with the lab {}: {:?}", before.state, r),
                    Op::Delete => prop_assert_eq!(
                        r.is_ok(), before.is_wiped(), "delete of {:?}: {:?}", before, r),
                    _ => prop_assert!(r.is_ok(), "{:?}: {:?}", op, r),
                }
                if let Err(e) = &r {
                    prop_assert!(matches!(e, LabError::Refused { .. }), "{e}");
                }
                if matches!((op, &r), (Op::Delete, Ok(()))) {
                    deleted = true;
                    continue;
                }
                let d = labs.lab(&at, &lab).await.unwrap();
                let started = d.nodes.iter().any(|n| matches!(n.state, ccm_core::store::NodeState::Started | ccm_core::store::NodeState::Booted | ccm_core::store::NodeState::Queued));
                prop_assert_eq!(started, d.state == LabState::Started);
                if d.is_booted() { prop_assert_eq!(d.state, LabState::Started); }
            }
            Ok(())
        })?;
    }
}
