//! The lab side of a worker: the Cisco Modeling Labs (CML) controller each worker runs.
//!
//! [`LabRuntime`] is what the lab loop drives to instantiate a session: check that the
//! worker's CML answers, import the definition's lab YAML (or reuse a wiped lab of the same
//! definition), write the allocated ports into node tags, start, read the lab and node states
//! until every node has booted, and at the end stop, wipe (kept for reuse) or delete.
//!
//! States are CML's own words ([`LabState`], [`NodeState`]). A lab's state is derived by CML
//! from its nodes: STARTED while any node is queued, started or booted, STOPPED when all are
//! stopped, DEFINED_ON_CORE when all are defined (a new or wiped lab). A lab is ready for a
//! user when it is STARTED and every node is BOOTED ([`LabDetails::is_booted`]).
//!
//! Implementations: [`crate::memory::lab::SimulatedLabs`] (virtual clock, realistic timings,
//! failure injection) and the CML HTTP adapter in `ccm-adapters` (feature `cml`).
//!
//! ```
//! # tokio_test_block_on(async {
//! use ccm_core::memory::lab::{LabTimings, SimulatedLabs};
//! use ccm_core::store::{Clock, LabEndpoint, LabRuntime, LabState, VirtualClock};
//! use chrono::{Duration, TimeZone, Utc};
//! use std::sync::Arc;
//! let clock = VirtualClock::new(Utc.with_ymd_and_hms(2026, 5, 4, 7, 0, 0).unwrap());
//! let labs = SimulatedLabs::new(Arc::new(clock.clone()), LabTimings::instant());
//! let w = LabEndpoint::new("w1", "https://10.0.0.7");
//! assert!(labs.system_info(&w).await.unwrap().ready);
//! let yaml = "lab: {title: t}\nnodes:\n  - {id: n0, label: r1, node_definition: iosv, tags: ['serial:${PORT_R1_SERIAL}']}\nlinks: []\n";
//! let lab = labs.import_lab(&w, "ccm s-1", yaml).await.unwrap();
//! let r1 = labs.lab(&w, &lab).await.unwrap().node_by_label("r1").unwrap().id.clone();
//! labs.set_node_tags(&w, &lab, &r1, &["serial:5041".to_string()]).await.unwrap();
//! labs.start(&w, &lab).await.unwrap();
//! clock.advance(Duration::seconds(1));
//! let d = labs.lab(&w, &lab).await.unwrap();
//! assert!(d.is_booted());
//! assert_eq!(d.nodes[0].tags, ["serial:5041"]);
//! labs.stop(&w, &lab).await.unwrap();
//! labs.wipe(&w, &lab).await.unwrap();
//! assert_eq!(labs.lab(&w, &lab).await.unwrap().state, LabState::DefinedOnCore);
//! labs.delete(&w, &lab).await.unwrap();
//! assert!(labs.list_labs(&w).await.unwrap().is_empty());
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
//! ```

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest lab YAML an import takes (implementations refuse larger ones before sending).
pub const MAX_LAB_YAML_BYTES: usize = 4 * 1024 * 1024;

/// Where a worker's CML controller answers: ccm's worker id (which picks the credentials)
/// and the controller's base URL (`https://host[:port]`, without `/api/v0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabEndpoint {
    /// ccm's worker id.
    pub worker_id: String,
    /// Base URL of the worker's CML controller.
    pub url: String,
}

impl LabEndpoint {
    /// An endpoint for `worker_id` at `url`.
    pub fn new(worker_id: impl Into<String>, url: impl Into<String>) -> Self {
        LabEndpoint {
            worker_id: worker_id.into(),
            url: url.into(),
        }
    }
}

impl fmt::Display for LabEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.worker_id, self.url)
    }
}

/// CML's id of a lab on one worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LabId(pub String);

/// CML's id of a node in a lab (assigned by CML at import; not the `n0` of the YAML).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl fmt::Display for LabId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lab's state as CML reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LabState {
    /// Imported or wiped: defined, nothing allocated on the compute hosts.
    DefinedOnCore,
    /// Waiting for compute resources.
    Queued,
    /// At least one node runs (booting or booted).
    Started,
    /// Every node stopped (disks kept until a wipe).
    Stopped,
    /// A word this version of ccm does not know (kept as not ready).
    #[serde(other)]
    Unknown,
}

/// A node's state as CML reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    /// Defined, nothing allocated.
    DefinedOnCore,
    /// Waiting for compute resources.
    Queued,
    /// Running, still booting.
    Started,
    /// Booted: ready for the user.
    Booted,
    /// Stopped.
    Stopped,
    /// The compute host lost contact with the node.
    Disconnected,
    /// A word this version of ccm does not know (kept as not ready).
    #[serde(other)]
    Unknown,
}

impl LabState {
    /// CML's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            LabState::DefinedOnCore => "DEFINED_ON_CORE",
            LabState::Queued => "QUEUED",
            LabState::Started => "STARTED",
            LabState::Stopped => "STOPPED",
            LabState::Unknown => "UNKNOWN",
        }
    }

    /// Parses CML's word; anything else is [`LabState::Unknown`].
    pub fn parse(s: &str) -> Self {
        match s {
            "DEFINED_ON_CORE" => LabState::DefinedOnCore,
            "QUEUED" => LabState::Queued,
            "STARTED" => LabState::Started,
            "STOPPED" => LabState::Stopped,
            _ => LabState::Unknown,
        }
    }
}

impl NodeState {
    /// CML's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::DefinedOnCore => "DEFINED_ON_CORE",
            NodeState::Queued => "QUEUED",
            NodeState::Started => "STARTED",
            NodeState::Booted => "BOOTED",
            NodeState::Stopped => "STOPPED",
            NodeState::Disconnected => "DISCONNECTED",
            NodeState::Unknown => "UNKNOWN",
        }
    }

    /// Parses CML's word; anything else is [`NodeState::Unknown`].
    pub fn parse(s: &str) -> Self {
        match s {
            "DEFINED_ON_CORE" => NodeState::DefinedOnCore,
            "QUEUED" => NodeState::Queued,
            "STARTED" => NodeState::Started,
            "BOOTED" => NodeState::Booted,
            "STOPPED" => NodeState::Stopped,
            "DISCONNECTED" => NodeState::Disconnected,
            _ => NodeState::Unknown,
        }
    }
}

impl fmt::Display for LabState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker's CML says about itself (`GET /api/v0/system_information`, no login needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// Controller version, e.g. `2.9.0`.
    pub version: String,
    /// The controller is ready to take labs.
    pub ready: bool,
}

/// One node of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// CML's node id.
    pub id: NodeId,
    /// The node's label (the `label` of the YAML; port names derive from it).
    pub label: String,
    /// State.
    pub state: NodeState,
    /// Tags (`serial:5041`, `ssh:5042`, ...).
    pub tags: Vec<String>,
}

/// A lab in the list of a worker's labs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSummary {
    /// CML's lab id.
    pub id: LabId,
    /// Title given at import.
    pub title: String,
    /// State.
    pub state: LabState,
    /// Number of nodes.
    pub node_count: u32,
}

/// A lab with its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabDetails {
    /// CML's lab id.
    pub id: LabId,
    /// Title given at import.
    pub title: String,
    /// State.
    pub state: LabState,
    /// Nodes, in CML's order.
    pub nodes: Vec<NodeInfo>,
}

impl LabDetails {
    /// Started and every node booted: the lab is ready for its user.
    pub fn is_booted(&self) -> bool {
        self.state == LabState::Started && self.nodes.iter().all(|n| n.state == NodeState::Booted)
    }

    /// Every node stopped (the lab can be wiped).
    pub fn is_stopped(&self) -> bool {
        self.state == LabState::Stopped && self.nodes.iter().all(|n| n.state == NodeState::Stopped)
    }

    /// Wiped (or never started): can be started again, or deleted.
    pub fn is_wiped(&self) -> bool {
        self.state == LabState::DefinedOnCore
            && self
                .nodes
                .iter()
                .all(|n| n.state == NodeState::DefinedOnCore)
    }

    /// The node with this label.
    pub fn node_by_label(&self, label: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.label == label)
    }
}

/// The calls of a [`LabRuntime`], for failure injection, counters and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabCall {
    /// [`LabRuntime::system_info`].
    SystemInfo,
    /// [`LabRuntime::import_lab`].
    Import,
    /// [`LabRuntime::set_node_tags`].
    SetNodeTags,
    /// [`LabRuntime::start`].
    Start,
    /// [`LabRuntime::lab`].
    Lab,
    /// [`LabRuntime::stop`].
    Stop,
    /// [`LabRuntime::wipe`].
    Wipe,
    /// [`LabRuntime::delete`].
    Delete,
    /// [`LabRuntime::list_labs`].
    ListLabs,
}

impl LabCall {
    /// Every call.
    pub const ALL: [LabCall; 9] = [
        LabCall::SystemInfo,
        LabCall::Import,
        LabCall::SetNodeTags,
        LabCall::Start,
        LabCall::Lab,
        LabCall::Stop,
        LabCall::Wipe,
        LabCall::Delete,
        LabCall::ListLabs,
    ];

    /// A short name (`import`, `start`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LabCall::SystemInfo => "system_info",
            LabCall::Import => "import",
            LabCall::SetNodeTags => "set_node_tags",
            LabCall::Start => "start",
            LabCall::Lab => "lab",
            LabCall::Stop => "stop",
            LabCall::Wipe => "wipe",
            LabCall::Delete => "delete",
            LabCall::ListLabs => "list_labs",
        }
    }
}

impl fmt::Display for LabCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of a [`LabRuntime`]. Only [`LabError::Unavailable`] is worth retrying as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabError {
    /// The lab or node does not exist on that worker.
    #[error("{call} on {worker}: {what} not found")]
    NotFound {
        /// The call.
        call: LabCall,
        /// Worker id.
        worker: String,
        /// What was missing (`lab 3f2a…`, `node 9c1d… of lab 3f2a…`).
        what: String,
    },
    /// The controller cannot be reached or answered with a server error: retry later.
    #[error("{call} on {worker}: CML unavailable: {reason}")]
    Unavailable {
        /// The call.
        call: LabCall,
        /// Worker id.
        worker: String,
        /// Why (connection refused, timeout, HTTP 503, ...).
        reason: String,
    },
    /// The controller refused the request as it stands (a running lab cannot be wiped, the
    /// YAML is invalid, ...): retrying the same call will not help.
    #[error("{call} on {worker} refused: {reason}")]
    Refused {
        /// The call.
        call: LabCall,
        /// Worker id.
        worker: String,
        /// CML's description.
        reason: String,
    },
    /// The credentials were rejected (or no credentials for this worker).
    #[error("{call} on {worker}: authentication failed: {reason}")]
    Auth {
        /// The call.
        call: LabCall,
        /// Worker id.
        worker: String,
        /// Why (never the secret).
        reason: String,
    },
    /// The endpoint or the answer cannot be used: a malformed URL, plain http where https is
    /// required, a certificate that does not verify, an answer of the wrong shape or too large.
    #[error("{call} on {worker}: {reason}")]
    Invalid {
        /// The call.
        call: LabCall,
        /// Worker id.
        worker: String,
        /// What was wrong.
        reason: String,
    },
}

impl LabError {
    /// Worth retrying unchanged (after a back-off).
    pub fn is_retryable(&self) -> bool {
        matches!(self, LabError::Unavailable { .. })
    }

    /// The call that failed.
    pub fn call(&self) -> LabCall {
        match self {
            LabError::NotFound { call, .. }
            | LabError::Unavailable { call, .. }
            | LabError::Refused { call, .. }
            | LabError::Auth { call, .. }
            | LabError::Invalid { call, .. } => *call,
        }
    }
}

/// The lab side of workers (one CML controller per worker).
///
/// Calls are not idempotent by themselves (an import twice makes two labs); the caller keeps
/// its progress (the lab id) and lists labs after a crash. `start` of a started lab, `stop`
/// of a stopped one and `wipe` of a wiped one change nothing. `start`, `stop` and `wipe`
/// return when CML took the order; the nodes change state over time ([`LabRuntime::lab`]).
#[async_trait]
pub trait LabRuntime: Send + Sync + 'static {
    /// The controller's version and readiness; an error when it does not answer. Needs no
    /// credentials.
    async fn system_info(&self, at: &LabEndpoint) -> Result<SystemInfo, LabError>;
    /// Imports a lab from CML topology YAML under `title`; returns once the lab exists
    /// (DEFINED_ON_CORE).
    async fn import_lab(
        &self,
        at: &LabEndpoint,
        title: &str,
        yaml: &str,
    ) -> Result<LabId, LabError>;
    /// Replaces a node's tags (how allocated ports reach CML).
    async fn set_node_tags(
        &self,
        at: &LabEndpoint,
        lab: &LabId,
        node: &NodeId,
        tags: &[String],
    ) -> Result<(), LabError>;
    /// Starts every node.
    async fn start(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError>;
    /// The lab's state and its nodes.
    async fn lab(&self, at: &LabEndpoint, lab: &LabId) -> Result<LabDetails, LabError>;
    /// Stops every node (disks are kept).
    async fn stop(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError>;
    /// Wipes a stopped lab back to DEFINED_ON_CORE (topology and tags kept: reusable).
    /// Refused while any node runs.
    async fn wipe(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError>;
    /// Deletes a wiped lab. Refused unless the lab is stopped and wiped.
    async fn delete(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError>;
    /// Every lab on the worker (of every owner).
    async fn list_labs(&self, at: &LabEndpoint) -> Result<Vec<LabSummary>, LabError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(state: LabState, nodes: &[NodeState]) -> LabDetails {
        LabDetails {
            id: LabId("l".into()),
            title: "t".into(),
            state,
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, s)| NodeInfo {
                    id: NodeId(format!("n{i}")),
                    label: format!("r{i}"),
                    state: *s,
                    tags: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn states_use_cml_words_and_unknown_words_are_not_ready() {
        for s in [
            LabState::DefinedOnCore,
            LabState::Queued,
            LabState::Started,
            LabState::Stopped,
        ] {
            assert_eq!(LabState::parse(s.as_str()), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        let n: NodeState = serde_json::from_str("\"BOOTED\"").unwrap();
        assert_eq!(n, NodeState::Booted);
        let n: NodeState = serde_json::from_str("\"HIBERNATING\"").unwrap();
        assert_eq!(n, NodeState::Unknown);
        assert_eq!(LabState::parse("booted"), LabState::Unknown, "case matters");
        let d = details(LabState::Started, &[NodeState::Booted, NodeState::Unknown]);
        assert!(!d.is_booted());
    }

    #[test]
    fn booted_needs_every_node_booted() {
        assert!(details(LabState::Started, &[NodeState::Booted, NodeState::Booted]).is_booted());
        assert!(!details(LabState::Started, &[NodeState::Booted, NodeState::Started]).is_booted());
        assert!(!details(LabState::Stopped, &[NodeState::Booted]).is_booted());
        assert!(details(LabState::Stopped, &[NodeState::Stopped]).is_stopped());
        assert!(!details(LabState::Stopped, &[NodeState::Booted]).is_stopped());
        assert!(details(LabState::DefinedOnCore, &[NodeState::DefinedOnCore]).is_wiped());
        assert!(!details(LabState::DefinedOnCore, &[NodeState::Stopped]).is_wiped());
    }

    #[test]
    fn only_unavailable_is_retryable() {
        let e =
            |f: fn(LabCall, String, String) -> LabError| f(LabCall::Start, "w".into(), "x".into());
        assert!(e(|call, worker, reason| LabError::Unavailable {
            call,
            worker,
            reason
        })
        .is_retryable());
        for err in [
            e(|call, worker, what| LabError::NotFound { call, worker, what }),
            e(|call, worker, reason| LabError::Refused {
                call,
                worker,
                reason,
            }),
            e(|call, worker, reason| LabError::Auth {
                call,
                worker,
                reason,
            }),
            e(|call, worker, reason| LabError::Invalid {
                call,
                worker,
                reason,
            }),
        ] {
            assert!(!err.is_retryable(), "{err}");
            assert_eq!(err.call(), LabCall::Start);
        }
    }
}
