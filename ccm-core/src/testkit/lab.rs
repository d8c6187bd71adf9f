//! Behaviour suite for the [`LabRuntime`] trait.
//!
//! Each check is a pub async fn that panics (saying what broke) when the implementation
//! deviates from CML's behaviour. They run against the simulated controllers
//! (`ccm-core/tests/lab_suite_memory.rs`) and against the CML adapter talking to the CML test
//! server (`ccm-adapters/tests/cml_runtime.rs`), the server the official `virl2-client` is
//! tested against first.
//!
//! Every check imports its own labs under a unique title, so checks can share one controller
//! and run in parallel. Nodes change state over time: hand the checks a [`Pace`] —
//! [`Pace::virtual_time`] advances a [`VirtualClock`], [`Pace::real_time`] sleeps.

use crate::store::clock::VirtualClock;
use crate::store::lab::{
    LabDetails, LabEndpoint, LabError, LabId, LabRuntime, LabState, NodeId, NodeState,
};
use crate::testkit::state::{RealTime, TimeTravel, VirtualTime};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A real-looking CML topology: two routers and a jump host, two links, port tags.
pub const LAB_YAML: &str = r#"annotations: []
lab:
  description: Two routers and a jump host, OSPF between r1 and r2.
  notes: ''
  title: CCNA Basic Routing
  version: 0.2.2
links:
  - id: l0
    i1: i1
    i2: i1
    n1: n0
    n2: n1
    label: r1-GigabitEthernet0/1<->r2-GigabitEthernet0/1
  - id: l1
    i1: i2
    i2: i0
    n1: n0
    n2: n2
    label: r1-GigabitEthernet0/2<->jump-ens2
nodes:
  - boot_disk_size: null
    configuration: |-
      hostname r1
    cpu_limit: null
    id: n0
    image_definition: null
    label: r1
    node_definition: iosv
    ram: 512
    tags:
      - serial:5041
      - ssh:5042
    x: -200
    y: 0
    interfaces:
      - {id: i0, label: Loopback0, type: loopback}
      - {id: i1, label: GigabitEthernet0/1, slot: 1, type: physical}
      - {id: i2, label: GigabitEthernet0/2, slot: 2, type: physical}
  - id: n1
    label: r2
    node_definition: iosv
    tags: [serial:5043]
    x: 200
    y: 0
    interfaces:
      - {id: i1, label: GigabitEthernet0/1, slot: 1, type: physical}
  - id: n2
    label: jump-host
    node_definition: ubuntu
    tags: ["ssh:5044"]
    x: 0
    y: 200
    interfaces:
      - {id: i0, label: ens2, slot: 0, type: physical}
"#;

/// The node labels of [`LAB_YAML`], sorted.
pub const LAB_LABELS: [&str; 3] = ["jump-host", "r1", "r2"];

/// How the checks let time pass while they wait for nodes: `step` between looks, at most
/// `limit` in all.
#[derive(Clone)]
pub struct Pace {
    /// Lets time pass.
    pub time: Arc<dyn TimeTravel>,
    /// Time passed between two looks.
    pub step: Duration,
    /// Time after which a wait fails.
    pub limit: Duration,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("step", &self.step)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Pace {
    /// Virtual time: 5 s steps, up to 2 h (realistic timings take minutes).
    pub fn virtual_time(clock: VirtualClock) -> Self {
        Pace {
            time: Arc::new(VirtualTime(clock)),
            step: Duration::from_secs(5),
            limit: Duration::from_secs(7200),
        }
    }

    /// Real time: 50 ms steps, up to 30 s (for a server with short timings).
    pub fn real_time() -> Self {
        Pace {
            time: Arc::new(RealTime),
            step: Duration::from_millis(50),
            limit: Duration::from_secs(30),
        }
    }

    /// Drives `fut` to completion, letting time pass while it waits (an import on the
    /// virtual clock only returns when time moves).
    pub async fn drive<F: Future>(&self, fut: F) -> F::Output {
        tokio::pin!(fut);
        let mut passed = Duration::ZERO;
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                _ = self.time.pass(self.step) => {
                    passed += self.step;
                    assert!(passed <= self.limit, "a call did not return within {:?}", self.limit);
                }
            }
        }
    }
}

/// A title no other check or run uses.
pub fn unique_title(name: &str) -> String {
    format!("ccm-test {name} {}", uuid::Uuid::new_v4().simple())
}

fn must<T>(what: &str, r: Result<T, LabError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

/// Imports [`LAB_YAML`] under a unique title.
pub async fn import<R: LabRuntime + ?Sized>(
    rt: &R,
    at: &LabEndpoint,
    pace: &Pace,
    name: &str,
) -> (LabId, String) {
    let title = unique_title(name);
    let id = must(
        "import",
        pace.drive(rt.import_lab(at, &title, LAB_YAML)).await,
    );
    (id, title)
}

/// Looks at the lab until `cond` holds, failing after the pace's limit.
pub async fn wait_for<R: LabRuntime + ?Sized>(
    rt: &R,
    at: &LabEndpoint,
    pace: &Pace,
    lab: &LabId,
    what: &str,
    cond: impl Fn(&LabDetails) -> bool,
) -> LabDetails {
    let mut passed = Duration::ZERO;
    loop {
        let d = must(what, rt.lab(at, lab).await);
        if cond(&d) {
            return d;
        }
        assert!(
            passed < pace.limit,
            "not within {:?}: {what}; the lab is {} with nodes {:?}",
            pace.limit,
            d.state,
            d.nodes
                .iter()
                .map(|n| (&n.label, n.state))
                .collect::<Vec<_>>()
        );
        pace.time.pass(pace.step).await;
        passed += pace.step;
    }
}

fn labels(d: &LabDetails) -> Vec<String> {
    let mut l: Vec<String> = d.nodes.iter().map(|n| n.label.clone()).collect();
    l.sort();
    l
}

/// The controller answers system information: ready, with a version.
pub async fn system_info_answers<R: LabRuntime + ?Sized>(rt: &R, at: &LabEndpoint) {
    let info = must("system_info", rt.system_info(at).await);
    assert!(info.ready, "CML reports itself not ready: {info:?}");
    assert!(
        info.version.split('.').count() >= 2,
        "version {:?}",
        info.version
    );
}

/// The whole life of a lab: import (DEFINED_ON_CORE, nodes and tags as in the YAML, listed
/// with its title), start → STARTED → every node BOOTED, stop → STOPPED, wipe →
/// DEFINED_ON_CORE, delete → gone (not listed, not found).
pub async fn lifecycle<R: LabRuntime + ?Sized>(rt: &R, at: &LabEndpoint, pace: &Pace) {
    let (lab, title) = import(rt, at, pace, "lifecycle").await;
    let d = must("lab", rt.lab(at, &lab).await);
    assert_eq!(d.id, lab);
    assert_eq!(d.title, title);
    assert_eq!(
        d.state,
        LabState::DefinedOnCore,
        "a new lab is defined only"
    );
    assert_eq!(labels(&d), LAB_LABELS);
    assert!(d.is_wiped());
    let r1 = d.node_by_label("r1").expect("node r1");
    assert_eq!(r1.tags, ["serial:5041", "ssh:5042"]);
    assert_ne!(r1.id.0, "n0", "CML assigns its own node ids");
    let listed = must("list_labs", rt.list_labs(at).await);
    let mine = listed
        .iter()
        .find(|l| l.id == lab)
        .unwrap_or_else(|| panic!("imported lab {lab} not listed: {listed:?}"));
    assert_eq!(
        (mine.title.as_str(), mine.state, mine.node_count),
        (title.as_str(), LabState::DefinedOnCore, 3)
    );

    must("start", rt.start(at, &lab).await);
    let d = must("lab", rt.lab(at, &lab).await);
    assert_eq!(d.state, LabState::Started, "STARTED right after the start");
    let d = wait_for(rt, at, pace, &lab, "every node BOOTED", |d| d.is_booted()).await;
    assert!(d.nodes.iter().all(|n| n.state == NodeState::Booted));

    must("stop", rt.stop(at, &lab).await);
    wait_for(rt, at, pace, &lab, "every node STOPPED", |d| d.is_stopped()).await;
    must("wipe", rt.wipe(at, &lab).await);
    let d = wait_for(rt, at, pace, &lab, "wiped", |d| d.is_wiped()).await;
    assert_eq!(labels(&d), LAB_LABELS, "a wipe keeps the topology");

    must("delete", rt.delete(at, &lab).await);
    let listed = must("list_labs", rt.list_labs(at).await);
    assert!(
        listed.iter().all(|l| l.id != lab),
        "deleted lab still listed"
    );
    assert!(
        matches!(rt.lab(at, &lab).await, Err(LabError::NotFound { .. })),
        "a deleted lab is not found"
    );
}

/// Tags are replaced per node (how allocated ports reach CML); other nodes keep theirs; an
/// unknown node is not found.
pub async fn node_tags<R: LabRuntime + ?Sized>(rt: &R, at: &LabEndpoint, pace: &Pace) {
    let (lab, _) = import(rt, at, pace, "tags").await;
    let d = must("lab", rt.lab(at, &lab).await);
    let r1 = d.node_by_label("r1").expect("r1").id.clone();
    let tags = vec![
        "serial:30001".to_string(),
        "ssh:30002".to_string(),
        "core".to_string(),
    ];
    must(
        "set_node_tags",
        rt.set_node_tags(at, &lab, &r1, &tags).await,
    );
    let d = must("lab", rt.lab(at, &lab).await);
    assert_eq!(d.node_by_label("r1").expect("r1").tags, tags);
    assert_eq!(
        d.node_by_label("r2").expect("r2").tags,
        ["serial:5043"],
        "other nodes keep their tags"
    );
    must("set_node_tags", rt.set_node_tags(at, &lab, &r1, &[]).await);
    let d = must("lab", rt.lab(at, &lab).await);
    assert!(d.node_by_label("r1").expect("r1").tags.is_empty());
    let ghost = NodeId(uuid::Uuid::new_v4().to_string());
    assert!(
        matches!(
            rt.set_node_tags(at, &lab, &ghost, &tags).await,
            Err(LabError::NotFound { .. })
        ),
        "tags of an unknown node"
    );
    cleanup(rt, at, pace, &lab).await;
}

/// While nodes run, a wipe and a delete are refused (not retryable) and change nothing.
pub async fn running_lab_refuses_wipe_and_delete<R: LabRuntime + ?Sized>(
    rt: &R,
    at: &LabEndpoint,
    pace: &Pace,
) {
    let (lab, _) = import(rt, at, pace, "refuse").await;
    must("start", rt.start(at, &lab).await);
    for (what, r) in [
        ("wipe", rt.wipe(at, &lab).await),
        ("delete", rt.delete(at, &lab).await),
    ] {
        match r {
            Err(e @ LabError::Refused { .. }) => assert!(!e.is_retryable()),
            other => panic!("{what} of a running lab: expected Refused, got {other:?}"),
        }
    }
    let d = must("lab", rt.lab(at, &lab).await);
    assert_eq!(d.state, LabState::Started, "a refused call changed the lab");
    cleanup(rt, at, pace, &lab).await;
}

/// Orders repeated change nothing: start of a started lab, stop of a stopped one, wipe of a
/// wiped one succeed; the lab ends where one order would have left it.
pub async fn repeated_orders_are_harmless<R: LabRuntime + ?Sized>(
    rt: &R,
    at: &LabEndpoint,
    pace: &Pace,
) {
    let (lab, _) = import(rt, at, pace, "repeat").await;
    must("wipe of a new lab", rt.wipe(at, &lab).await);
    must("start", rt.start(at, &lab).await);
    wait_for(rt, at, pace, &lab, "booted", |d| d.is_booted()).await;
    must("start again", rt.start(at, &lab).await);
    let d = must("lab", rt.lab(at, &lab).await);
    assert!(d.is_booted(), "a second start must not reboot the nodes");
    must("stop", rt.stop(at, &lab).await);
    wait_for(rt, at, pace, &lab, "stopped", |d| d.is_stopped()).await;
    must("stop again", rt.stop(at, &lab).await);
    assert!(must("lab", rt.lab(at, &lab).await).is_stopped());
    must("wipe", rt.wipe(at, &lab).await);
    wait_for(rt, at, pace, &lab, "wiped", |d| d.is_wiped()).await;
    must("wipe again", rt.wipe(at, &lab).await);
    must("delete", rt.delete(at, &lab).await);
}

/// A wiped lab is reusable: its node ids and the tags written before stay, and it boots
/// again (the fast path instead of a fresh import).
pub async fn wiped_lab_is_reused<R: LabRuntime + ?Sized>(rt: &R, at: &LabEndpoint, pace: &Pace) {
    let (lab, _) = import(rt, at, pace, "reuse").await;
    must("start", rt.start(at, &lab).await);
    wait_for(rt, at, pace, &lab, "booted", |d| d.is_booted()).await;
    must("stop", rt.stop(at, &lab).await);
    wait_for(rt, at, pace, &lab, "stopped", |d| d.is_stopped()).await;
    must("wipe", rt.wipe(at, &lab).await);
    let before = wait_for(rt, at, pace, &lab, "wiped", |d| d.is_wiped()).await;
    let r2 = before.node_by_label("r2").expect("r2").id.clone();
    let tags = vec!["serial:31001".to_string()];
    must(
        "set_node_tags",
        rt.set_node_tags(at, &lab, &r2, &tags).await,
    );
    must("start again", rt.start(at, &lab).await);
    let after = wait_for(rt, at, pace, &lab, "booted again", |d| d.is_booted()).await;
    let ids = |d: &LabDetails| {
        let mut v: Vec<(String, NodeId)> = d
            .nodes
            .iter()
            .map(|n| (n.label.clone(), n.id.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&before), ids(&after), "node ids survive a wipe");
    assert_eq!(after.node_by_label("r2").expect("r2").tags, tags);
    cleanup(rt, at, pace, &lab).await;
}

/// Every call on a lab that does not exist is NotFound (not retryable).
pub async fn unknown_lab_is_not_found<R: LabRuntime + ?Sized>(rt: &R, at: &LabEndpoint) {
    let lab = LabId(uuid::Uuid::new_v4().to_string());
    let node = NodeId(uuid::Uuid::new_v4().to_string());
    let results = [
        ("lab", rt.lab(at, &lab).await.map(|_| ())),
        ("start", rt.start(at, &lab).await),
        ("stop", rt.stop(at, &lab).await),
        ("wipe", rt.wipe(at, &lab).await),
        ("delete", rt.delete(at, &lab).await),
        (
            "set_node_tags",
            rt.set_node_tags(at, &lab, &node, &[]).await,
        ),
    ];
    for (what, r) in results {
        match r {
            Err(e @ LabError::NotFound { .. }) => assert!(!e.is_retryable()),
            other => panic!("{what} of an unknown lab: expected NotFound, got {other:?}"),
        }
    }
}

/// A topology CML would reject (a node without node_definition, YAML that does not parse) is
/// refused with a reason naming the problem, and creates no lab.
pub async fn invalid_topology_is_refused<R: LabRuntime + ?Sized>(
    rt: &R,
    at: &LabEndpoint,
    pace: &Pace,
) {
    let title = unique_title("invalid");
    let bad = "lab: {title: x}\nnodes:\n  - id: n0\n    label: r1\nlinks: []\n";
    match pace.drive(rt.import_lab(at, &title, bad)).await {
        Err(LabError::Refused { reason, .. }) => {
            assert!(reason.contains("node_definition"), "reason: {reason}")
        }
        other => panic!("import without node_definition: expected Refused, got {other:?}"),
    }
    match pace
        .drive(rt.import_lab(at, &title, "nodes: [unclosed\n"))
        .await
    {
        Err(LabError::Refused { .. }) => {}
        other => panic!("import of broken YAML: expected Refused, got {other:?}"),
    }
    let listed = must("list_labs", rt.list_labs(at).await);
    assert!(
        listed.iter().all(|l| l.title != title),
        "a refused import left a lab"
    );
}

/// Stops, wipes and deletes a lab a check made.
pub async fn cleanup<R: LabRuntime + ?Sized>(rt: &R, at: &LabEndpoint, pace: &Pace, lab: &LabId) {
    must("stop", rt.stop(at, lab).await);
    wait_for(rt, at, pace, lab, "stopped or never started", |d| {
        d.is_stopped() || d.is_wiped()
    })
    .await;
    must("wipe", rt.wipe(at, lab).await);
    wait_for(rt, at, pace, lab, "wiped", |d| d.is_wiped()).await;
    must("delete", rt.delete(at, lab).await);
}
