//! Simulated CML controllers, one per worker, on the injected [`Clock`] (a virtual one in
//! tests and `ccm demo`): an import takes [`LabTimings::import`] before it returns, nodes boot
//! [`LabTimings::boot`] after a start, stop and wipe take their time too; a worker's CML can be
//! down (or come up only from a given time), and the next calls of a kind can fail before
//! they act ([`SimulatedLabs::fail_next`], [`SimulatedLabs::refuse_next`]) or act and lose
//! their answer ([`SimulatedLabs::lose_next_answers`], the case that makes an import run twice
//! unless the caller looks first).
//!
//! Semantics follow CML (and `scripts/cml_server.py`, which the official client runs against):
//! the lab's state is derived from its nodes; `start` of a running lab, `stop` of a stopped
//! one, `wipe` of a wiped one change nothing; a wipe is refused while a node runs or a stop is
//! still under way; a delete is refused unless the lab is stopped and wiped. See
//! [`crate::store::lab`] for an example.

use crate::store::lab::{
    LabCall, LabDetails, LabEndpoint, LabError, LabId, LabRuntime, LabState, LabSummary, NodeId,
    NodeInfo, NodeState, SystemInfo, MAX_LAB_YAML_BYTES,
};
use crate::store::Clock;
use crate::timeslot::Timestamp;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Most tags on one node.
pub const MAX_NODE_TAGS: usize = 64;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 256;
/// The version the simulated controllers report.
pub const SIMULATED_CML_VERSION: &str = "2.9.0";

/// How long the simulated controllers take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabTimings {
    /// A fresh import, until the call returns (the original measured about 90 s).
    pub import: Duration,
    /// From a start until every node is BOOTED.
    pub boot: Duration,
    /// From a stop until every node is STOPPED.
    pub stop: Duration,
    /// From a wipe until the lab is DEFINED_ON_CORE again (reuse instead of a fresh import
    /// costs this plus the tag writes: about 10-20 s in the original).
    pub wipe: Duration,
}

impl LabTimings {
    /// Timings like the original's measurements on bare-metal workers: import 90 s, boot
    /// 4 min, stop 15 s, wipe 10 s.
    pub fn realistic() -> Self {
        LabTimings {
            import: Duration::from_secs(90),
            boot: Duration::from_secs(240),
            stop: Duration::from_secs(15),
            wipe: Duration::from_secs(10),
        }
    }

    /// Everything at once (for tests that do not look at time).
    pub fn instant() -> Self {
        LabTimings {
            import: Duration::ZERO,
            boot: Duration::ZERO,
            stop: Duration::ZERO,
            wipe: Duration::ZERO,
        }
    }
}

impl Default for LabTimings {
    fn default() -> Self {
        Self::realistic()
    }
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[derive(Debug, Clone)]
struct SimNode {
    id: NodeId,
    label: String,
    tags: Vec<String>,
}

#[derive(Debug, Clone)]
struct SimLab {
    /// When CML finishes the import: the lab is invisible before (an import runs on the server
    /// whether or not the caller still waits for its answer).
    appears_at: Timestamp,
    title: String,
    nodes: Vec<SimNode>,
    /// (from, state) of every node, in time order; the first entry is at or before now.
    timeline: Vec<(Timestamp, NodeState)>,
}

impl SimLab {
    fn node_state(&self, now: Timestamp) -> NodeState {
        self.timeline
            .iter()
            .take_while(|(at, _)| *at <= now)
            .last()
            .or(self.timeline.first())
            .map_or(NodeState::DefinedOnCore, |(_, s)| *s)
    }

    fn state(&self, now: Timestamp) -> LabState {
        match self.node_state(now) {
            NodeState::Queued | NodeState::Started | NodeState::Booted => LabState::Started,
            NodeState::Stopped | NodeState::Disconnected => LabState::Stopped,
            NodeState::DefinedOnCore | NodeState::Unknown => LabState::DefinedOnCore,
        }
    }

    /// The state the nodes are heading for (the last one scheduled).
    fn target(&self) -> NodeState {
        self.timeline
            .last()
            .map_or(NodeState::DefinedOnCore, |(_, s)| *s)
    }

    /// Nothing scheduled is still to come.
    fn settled(&self, now: Timestamp) -> bool {
        self.timeline.last().is_none_or(|(at, _)| *at <= now)
    }

    fn schedule(&mut self, now: Timestamp, steps: &[(Duration, NodeState)]) {
        let cur = self.node_state(now);
        self.timeline = std::iter::once((now, cur))
            .chain(steps.iter().map(|(d, s)| (now + chrono(*d), *s)))
            .collect();
    }

    fn details(&self, id: &LabId, now: Timestamp) -> LabDetails {
        let state = self.node_state(now);
        LabDetails {
            id: id.clone(),
            title: self.title.clone(),
            state: self.state(now),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeInfo {
                    id: n.id.clone(),
                    label: n.label.clone(),
                    state,
                    tags: n.tags.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct SimWorker {
    labs: BTreeMap<LabId, SimLab>,
    down: bool,
    up_from: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Fails before acting (HTTP 503).
    Unavailable,
    /// Refused before acting (HTTP 400).
    Refused,
    /// Acts, then the answer is lost (a timeout after the server did it).
    LostAnswer,
}

#[derive(Debug, Default)]
struct Inner {
    workers: BTreeMap<String, SimWorker>,
    faults: BTreeMap<LabCall, Vec<Fault>>,
    calls: BTreeMap<LabCall, u64>,
    imports: u64,
    next_lab: u64,
}

/// The simulated [`LabRuntime`]: one CML per worker id, created on first use and up unless
/// told otherwise.
#[derive(Clone)]
pub struct SimulatedLabs {
    clock: Arc<dyn Clock>,
    timings: Arc<Mutex<LabTimings>>,
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for SimulatedLabs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedLabs")
            .field("timings", &self.timings())
            .finish_non_exhaustive()
    }
}

impl SimulatedLabs {
    /// Controllers on `clock` with `timings`.
    pub fn new(clock: Arc<dyn Clock>, timings: LabTimings) -> Self {
        SimulatedLabs {
            clock,
            timings: Arc::new(Mutex::new(timings)),
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current timings.
    pub fn timings(&self) -> LabTimings {
        *self.timings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the timings of what is started from now on.
    pub fn set_timings(&self, t: LabTimings) {
        *self.timings.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    fn push_fault(&self, call: LabCall, n: u32, f: Fault) {
        let mut g = self.lock();
        let q = g.faults.entry(call).or_default();
        q.extend(std::iter::repeat_n(f, n as usize));
    }

    /// The next `n` calls of `call` (on any worker) fail as unavailable (HTTP 5xx) before
    /// they act.
    pub fn fail_next(&self, call: LabCall, n: u32) {
        self.push_fault(call, n, Fault::Unavailable);
    }

    /// The next `n` calls of `call` are refused (HTTP 4xx) before they act.
    pub fn refuse_next(&self, call: LabCall, n: u32) {
        self.push_fault(call, n, Fault::Refused);
    }

    /// The next `n` calls of `call` act, then fail as unavailable (the answer was lost).
    pub fn lose_next_answers(&self, call: LabCall, n: u32) {
        self.push_fault(call, n, Fault::LostAnswer);
    }

    /// The worker's CML is down (`true`: every call, system information too, is unavailable)
    /// or up again. Its labs are kept.
    pub fn set_down(&self, worker_id: &str, down: bool) {
        self.lock()
            .workers
            .entry(worker_id.to_string())
            .or_default()
            .down = down;
    }

    /// The worker's CML answers only from `at` on (a booting machine).
    pub fn up_from(&self, worker_id: &str, at: Timestamp) {
        self.lock()
            .workers
            .entry(worker_id.to_string())
            .or_default()
            .up_from = Some(at);
    }

    /// Calls of `call` made so far (failed ones included).
    pub fn calls(&self, call: LabCall) -> u64 {
        self.lock().calls.get(&call).copied().unwrap_or(0)
    }

    /// Imports that created a lab.
    pub fn imports(&self) -> u64 {
        self.lock().imports
    }

    /// Labs on a worker, uncounted (for checks).
    pub fn labs_on(&self, worker_id: &str) -> Vec<LabSummary> {
        let now = self.clock.now();
        self.lock()
            .workers
            .get(worker_id)
            .map(|w| summaries(w, now))
            .unwrap_or_default()
    }

    /// Counts the call, applies CML-down and the injected fault that acts before the call.
    /// Returns whether the answer is to be lost after acting.
    fn enter(&self, call: LabCall, at: &LabEndpoint) -> Result<bool, LabError> {
        let now = self.clock.now();
        let mut g = self.lock();
        *g.calls.entry(call).or_default() += 1;
        let w = g.workers.entry(at.worker_id.clone()).or_default();
        if w.down || w.up_from.is_some_and(|t| now < t) {
            return Err(unavailable(call, at, "connection refused (CML down)"));
        }
        let fault = g.faults.get_mut(&call).and_then(|q| {
            if q.is_empty() {
                None
            } else {
                Some(q.remove(0))
            }
        });
        match fault {
            None => Ok(false),
            Some(Fault::Unavailable) => Err(unavailable(call, at, "HTTP 503 (injected failure)")),
            Some(Fault::Refused) => Err(refused(call, at, "HTTP 400 (injected failure)")),
            Some(Fault::LostAnswer) => Ok(true),
        }
    }

    fn leave<T>(call: LabCall, at: &LabEndpoint, lose: bool, v: T) -> Result<T, LabError> {
        if lose {
            Err(unavailable(
                call,
                at,
                "timed out waiting for the answer (injected failure)",
            ))
        } else {
            Ok(v)
        }
    }

    /// Runs `f` on the lab (lab not found → NotFound).
    fn with_lab<T>(
        &self,
        call: LabCall,
        at: &LabEndpoint,
        lab: &LabId,
        f: impl FnOnce(&mut SimLab, Timestamp) -> Result<T, LabError>,
    ) -> Result<T, LabError> {
        let now = self.clock.now();
        let mut g = self.lock();
        let l = g
            .workers
            .get_mut(&at.worker_id)
            .and_then(|w| w.labs.get_mut(lab))
            .filter(|l| l.appears_at <= now)
            .ok_or_else(|| not_found(call, at, format!("lab {lab}")))?;
        f(l, now)
    }
}

fn summaries(w: &SimWorker, now: Timestamp) -> Vec<LabSummary> {
    w.labs
        .iter()
        .filter(|(_, l)| l.appears_at <= now)
        .map(|(id, l)| LabSummary {
            id: id.clone(),
            title: l.title.clone(),
            state: l.state(now),
            node_count: u32::try_from(l.nodes.len()).unwrap_or(u32::MAX),
        })
        .collect()
}

fn unavailable(call: LabCall, at: &LabEndpoint, reason: &str) -> LabError {
    LabError::Unavailable {
        call,
        worker: at.worker_id.clone(),
        reason: reason.to_string(),
    }
}

fn refused(call: LabCall, at: &LabEndpoint, reason: impl Into<String>) -> LabError {
    LabError::Refused {
        call,
        worker: at.worker_id.clone(),
        reason: reason.into(),
    }
}

fn not_found(call: LabCall, at: &LabEndpoint, what: String) -> LabError {
    LabError::NotFound {
        call,
        worker: at.worker_id.clone(),
        what,
    }
}

/// Validates tags as CML would: a list of at most [`MAX_NODE_TAGS`] non-empty strings of at
/// most [`MAX_TAG_LEN`] bytes.
fn check_tags(call: LabCall, at: &LabEndpoint, tags: &[String]) -> Result<(), LabError> {
    if tags.len() > MAX_NODE_TAGS {
        return Err(refused(
            call,
            at,
            format!("{} tags, at most {MAX_NODE_TAGS}", tags.len()),
        ));
    }
    if let Some(t) = tags.iter().find(|t| t.is_empty() || t.len() > MAX_TAG_LEN) {
        return Err(refused(
            call,
            at,
            format!("tag {t:?} is empty or over {MAX_TAG_LEN} bytes"),
        ));
    }
    Ok(())
}

/// The nodes of a CML topology YAML: `(label, tags)` of each `nodes[]` entry, checked the way
/// the controller checks an import (id, label and node_definition present, ids unique).
fn parse_nodes(
    call: LabCall,
    at: &LabEndpoint,
    yaml: &str,
) -> Result<Vec<(String, Vec<String>)>, LabError> {
    if yaml.len() > MAX_LAB_YAML_BYTES {
        return Err(refused(
            call,
            at,
            format!(
                "lab YAML of {} bytes is over {MAX_LAB_YAML_BYTES}",
                yaml.len()
            ),
        ));
    }
    let doc: serde_norway::Value = serde_norway::from_str(yaml)
        .map_err(|e| refused(call, at, format!("lab YAML does not parse: {e}")))?;
    let nodes = doc
        .get("nodes")
        .and_then(|n| n.as_sequence())
        .ok_or_else(|| refused(call, at, "topology has no nodes list"))?;
    let mut ids = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let field = |k: &str| {
            n.get(k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| refused(call, at, format!("nodes[{i}].{k} is missing")))
        };
        let id = field("id")?;
        let label = field("label")?.to_string();
        field("node_definition")?;
        if !ids.insert(id.to_string()) {
            return Err(refused(
                call,
                at,
                format!("nodes[{i}].id {id:?} is used twice"),
            ));
        }
        let tags = match n.get("tags") {
            None | Some(serde_norway::Value::Null) => Vec::new(),
            Some(serde_norway::Value::Sequence(s)) => s
                .iter()
                .map(|t| {
                    t.as_str().map(str::to_string).ok_or_else(|| {
                        refused(call, at, format!("nodes[{i}].tags must be strings"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(refused(call, at, format!("nodes[{i}].tags must be a list"))),
        };
        check_tags(call, at, &tags)?;
        out.push((label, tags));
    }
    Ok(out)
}

#[async_trait]
impl LabRuntime for SimulatedLabs {
    async fn system_info(&self, at: &LabEndpoint) -> Result<SystemInfo, LabError> {
        let lose = self.enter(LabCall::SystemInfo, at)?;
        let info = SystemInfo {
            version: SIMULATED_CML_VERSION.to_string(),
            ready: true,
        };
        Self::leave(LabCall::SystemInfo, at, lose, info)
    }

    async fn import_lab(
        &self,
        at: &LabEndpoint,
        title: &str,
        yaml: &str,
    ) -> Result<LabId, LabError> {
        let call = LabCall::Import;
        let lose = self.enter(call, at)?;
        let nodes = parse_nodes(call, at, yaml)?;
        // CML takes the import at once and finishes it `import` later, even when the caller
        // gives up waiting (or dies) meanwhile.
        let done = self.clock.now() + chrono(self.timings().import);
        let id = {
            let mut g = self.lock();
            g.next_lab += 1;
            g.imports += 1;
            let n = g.next_lab;
            let id = LabId(format!("{n:08x}-0000-4000-8000-{:012x}", n));
            let lab = SimLab {
                appears_at: done,
                title: title.to_string(),
                nodes: nodes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (label, tags))| SimNode {
                        id: NodeId(format!("{n:08x}-{i:04x}-4000-8000-00000000000d")),
                        label,
                        tags,
                    })
                    .collect(),
                timeline: vec![(done, NodeState::DefinedOnCore)],
            };
            g.workers
                .entry(at.worker_id.clone())
                .or_default()
                .labs
                .insert(id.clone(), lab);
            id
        };
        self.clock.sleep_until(done).await;
        Self::leave(call, at, lose, id)
    }

    async fn set_node_tags(
        &self,
        at: &LabEndpoint,
        lab: &LabId,
        node: &NodeId,
        tags: &[String],
    ) -> Result<(), LabError> {
        let call = LabCall::SetNodeTags;
        let lose = self.enter(call, at)?;
        check_tags(call, at, tags)?;
        self.with_lab(call, at, lab, |l, _| {
            let n = l
                .nodes
                .iter_mut()
                .find(|n| &n.id == node)
                .ok_or_else(|| not_found(call, at, format!("node {node} of lab {lab}")))?;
            n.tags = tags.to_vec();
            Ok(())
        })?;
        Self::leave(call, at, lose, ())
    }

    async fn start(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        let call = LabCall::Start;
        let lose = self.enter(call, at)?;
        let t = self.timings();
        self.with_lab(call, at, lab, |l, now| {
            if l.state(now) != LabState::Started || l.target() == NodeState::Stopped {
                l.schedule(
                    now,
                    &[
                        (Duration::ZERO, NodeState::Started),
                        (t.boot, NodeState::Booted),
                    ],
                );
            }
            Ok(())
        })?;
        Self::leave(call, at, lose, ())
    }

    async fn lab(&self, at: &LabEndpoint, lab: &LabId) -> Result<LabDetails, LabError> {
        let call = LabCall::Lab;
        let lose = self.enter(call, at)?;
        let d = self.with_lab(call, at, lab, |l, now| Ok(l.details(lab, now)))?;
        Self::leave(call, at, lose, d)
    }

    async fn stop(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        let call = LabCall::Stop;
        let lose = self.enter(call, at)?;
        let t = self.timings();
        self.with_lab(call, at, lab, |l, now| {
            if l.state(now) == LabState::Started && l.target() != NodeState::Stopped {
                l.schedule(now, &[(t.stop, NodeState::Stopped)]);
            }
            Ok(())
        })?;
        Self::leave(call, at, lose, ())
    }

    async fn wipe(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        let call = LabCall::Wipe;
        let lose = self.enter(call, at)?;
        let t = self.timings();
        self.with_lab(call, at, lab, |l, now| {
            if l.state(now) == LabState::Started {
                return Err(refused(
                    call,
                    at,
                    format!("lab {lab} is running: stop it before a wipe"),
                ));
            }
            if l.target() != NodeState::DefinedOnCore {
                l.schedule(now, &[(t.wipe, NodeState::DefinedOnCore)]);
            }
            Ok(())
        })?;
        Self::leave(call, at, lose, ())
    }

    async fn delete(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        let call = LabCall::Delete;
        let lose = self.enter(call, at)?;
        self.with_lab(call, at, lab, |l, now| {
            if l.state(now) != LabState::DefinedOnCore || !l.settled(now) {
                return Err(refused(
                    call,
                    at,
                    format!("lab {lab} is not stopped and wiped"),
                ));
            }
            Ok(())
        })?;
        if let Some(w) = self.lock().workers.get_mut(&at.worker_id) {
            w.labs.remove(lab);
        }
        Self::leave(call, at, lose, ())
    }

    async fn list_labs(&self, at: &LabEndpoint) -> Result<Vec<LabSummary>, LabError> {
        let call = LabCall::ListLabs;
        let lose = self.enter(call, at)?;
        let now = self.clock.now();
        let list = self
            .lock()
            .workers
            .get(&at.worker_id)
            .map(|w| summaries(w, now))
            .unwrap_or_default();
        Self::leave(call, at, lose, list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VirtualClock;
    use chrono::TimeZone;

    const YAML: &str = "lab: {title: x}\nnodes:\n  - id: n0\n    label: r1\n    node_definition: iosv\n    tags: [serial:1]\n  - {id: n1, label: r2, node_definition: iosv}\nlinks: []\n";

    fn setup() -> (VirtualClock, SimulatedLabs, LabEndpoint) {
        let clock = VirtualClock::new(chrono::Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap());
        let labs = SimulatedLabs::new(Arc::new(clock.clone()), LabTimings::realistic());
        (clock, labs, LabEndpoint::new("w1", "https://w1"))
    }

    async fn import(clock: &VirtualClock, labs: &SimulatedLabs, w: &LabEndpoint) -> LabId {
        let fut = labs.import_lab(w, "t", YAML);
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => return r.unwrap(),
                _ = tokio::task::yield_now() => clock.advance(chrono::Duration::seconds(1)),
            }
        }
    }

    #[tokio::test]
    async fn import_takes_its_time_and_boot_follows_the_clock() {
        let (clock, labs, w) = setup();
        let t0 = clock.now();
        let lab = import(&clock, &labs, &w).await;
        let took = clock.now() - t0;
        assert!(
            took >= chrono::Duration::seconds(90) && took <= chrono::Duration::seconds(92),
            "{took}"
        );
        labs.start(&w, &lab).await.unwrap();
        let d = labs.lab(&w, &lab).await.unwrap();
        assert_eq!(d.state, LabState::Started);
        assert!(d.nodes.iter().all(|n| n.state == NodeState::Started));
        clock.advance(chrono::Duration::seconds(239));
        assert!(!labs.lab(&w, &lab).await.unwrap().is_booted());
        clock.advance(chrono::Duration::seconds(1));
        assert!(labs.lab(&w, &lab).await.unwrap().is_booted());
        assert_eq!(labs.imports(), 1);
    }

    #[tokio::test]
    async fn a_lost_answer_still_imports_and_a_failure_does_not() {
        let (clock, labs, w) = setup();
        labs.set_timings(LabTimings::instant());
        labs.fail_next(LabCall::Import, 1);
        let e = labs.import_lab(&w, "t", YAML).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(labs.labs_on("w1").is_empty());
        labs.lose_next_answers(LabCall::Import, 1);
        let e = labs.import_lab(&w, "t", YAML).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert_eq!(labs.labs_on("w1").len(), 1, "the import happened");
        assert_eq!(labs.calls(LabCall::Import), 2);
        let _ = clock;
    }

    #[tokio::test]
    async fn cml_down_and_up_from() {
        let (clock, labs, w) = setup();
        labs.up_from("w1", clock.now() + chrono::Duration::minutes(5));
        assert!(labs.system_info(&w).await.unwrap_err().is_retryable());
        clock.advance(chrono::Duration::minutes(5));
        assert!(labs.system_info(&w).await.unwrap().ready);
        labs.set_down("w1", true);
        assert!(matches!(
            labs.list_labs(&w).await,
            Err(LabError::Unavailable { .. })
        ));
        labs.set_down("w1", false);
        assert!(labs.list_labs(&w).await.unwrap().is_empty());
    }
}
