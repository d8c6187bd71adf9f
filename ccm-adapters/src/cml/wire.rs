//! The shapes of CML's answers (as `virl2-client` reads them) and their translation.

use ccm_core::store::lab::{
    LabCall, LabDetails, LabEndpoint, LabError, LabId, LabState, LabSummary, NodeId, NodeInfo,
    NodeState,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// `GET system_information`.
#[derive(Debug, Deserialize)]
pub(super) struct SystemInformation {
    pub version: String,
    #[serde(default)]
    pub ready: bool,
}

/// `POST import`.
#[derive(Debug, Deserialize)]
pub(super) struct Imported {
    pub id: String,
}

/// `GET labs/{lab}`.
#[derive(Debug, Deserialize)]
pub(super) struct Lab {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub lab_title: String,
    #[serde(default)]
    pub node_count: u32,
}

/// One entry of `GET labs/{lab}/nodes?data=true`.
#[derive(Debug, Deserialize)]
pub(super) struct Node {
    pub id: String,
    pub label: String,
    pub state: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// CML's error body: `{"code": 404, "description": "Lab not found: ..."}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    description: String,
}

/// Parses a JSON answer, naming the call and the field that did not fit.
pub(super) fn parse<T: DeserializeOwned>(
    call: LabCall,
    at: &LabEndpoint,
    body: &[u8],
) -> Result<T, LabError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| LabError::Invalid {
        call,
        worker: at.worker_id.clone(),
        reason: format!(
            "answer does not have the expected shape at {}: {}",
            e.path(),
            e.inner()
        ),
    })
}

/// CML's description of an error, or the start of the body when it is not CML's shape.
pub(super) fn description(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.description,
        Err(_) => {
            let s = String::from_utf8_lossy(body);
            let mut cut: String = s.chars().take(200).collect();
            if s.chars().count() > 200 {
                cut.push('…');
            }
            if cut.trim().is_empty() {
                "(no description)".into()
            } else {
                cut
            }
        }
    }
}

fn unknown_state(what: &str, s: &str) {
    tracing::warn!(
        state = s,
        "CML reported a {what} state unknown to ccm; taken as not ready"
    );
}

pub(super) fn lab_state(s: &str) -> LabState {
    let st = LabState::parse(s);
    if st == LabState::Unknown {
        unknown_state("lab", s);
    }
    st
}

pub(super) fn node_state(s: &str) -> NodeState {
    let st = NodeState::parse(s);
    if st == NodeState::Unknown {
        unknown_state("node", s);
    }
    st
}

pub(super) fn summary(l: Lab) -> LabSummary {
    LabSummary {
        state: lab_state(&l.state),
        id: LabId(l.id),
        title: l.lab_title,
        node_count: l.node_count,
    }
}

pub(super) fn details(l: Lab, nodes: Vec<Node>) -> LabDetails {
    LabDetails {
        state: lab_state(&l.state),
        id: LabId(l.id),
        title: l.lab_title,
        nodes: nodes
            .into_iter()
            .map(|n| NodeInfo {
                state: node_state(&n.state),
                id: NodeId(n.id),
                label: n.label,
                tags: n.tags,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> LabEndpoint {
        LabEndpoint::new("w-1", "https://x")
    }

    #[test]
    fn a_wrong_shape_names_the_field() {
        let e = parse::<Vec<Node>>(
            LabCall::Lab,
            &at(),
            br#"[{"id":"a","label":"r1","state":"BOOTED","tags":["x"]},{"id":"b","label":7,"state":"BOOTED"}]"#,
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("[1].label"), "{s}");
        assert!(matches!(e, LabError::Invalid { .. }));
    }

    #[test]
    fn real_answers_translate() {
        let l: Lab = parse(
            LabCall::Lab,
            &at(),
            br#"{"id":"l1","state":"STARTED","created":"2026-01-01T00:00:00+00:00","lab_title":"ccm s-1","lab_description":"","lab_notes":"","owner":"u","owner_username":"admin","node_count":2,"link_count":1,"groups":[]}"#,
        )
        .unwrap();
        let nodes: Vec<Node> = parse(
            LabCall::Lab,
            &at(),
            br#"[{"id":"n-1","label":"r1","state":"BOOTED","tags":["serial:5041"],"x":0,"y":0,"lab_id":"l1"},{"id":"n-2","label":"r2","state":"SUSPENDED"}]"#,
        )
        .unwrap();
        let d = details(l, nodes);
        assert_eq!(d.state, LabState::Started);
        assert_eq!(d.title, "ccm s-1");
        assert_eq!(d.nodes[0].tags, ["serial:5041"]);
        assert_eq!(d.nodes[1].state, NodeState::Unknown);
        assert!(d.nodes[1].tags.is_empty());
        assert!(!d.is_booted());
    }

    #[test]
    fn error_descriptions() {
        assert_eq!(
            description(br#"{"code":400,"description":"Lab is running"}"#),
            "Lab is running"
        );
        assert_eq!(description(b""), "(no description)");
        let long = "x".repeat(500);
        assert_eq!(description(long.as_bytes()).chars().count(), 201);
    }
}
