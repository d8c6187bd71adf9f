//! Port template extraction from node tags `protocol:port` (domain.md §7).

use super::placeholder::PLACEHOLDER_PREFIX;
use super::{parse_documents, scan::scan, LabYamlError};
use crate::definition::{PortTemplate, Protocol};
use serde_norway::Value;
use std::collections::BTreeSet;

/// Tag protocols that declare a host port.
pub const PORT_PROTOCOLS: [&str; 7] = ["serial", "vnc", "ssh", "telnet", "tcp", "http", "https"];

/// The protocol of a port tag: `protocol:port` where the protocol is one of [`PORT_PROTOCOLS`]
/// (any case) and the port is a number or a single `${PORT_<NAME>}` placeholder.
fn port_tag_protocol(tag: &str) -> Option<String> {
    let (proto, port) = tag.split_once(':')?;
    let proto = proto.trim().to_ascii_lowercase();
    if !PORT_PROTOCOLS.contains(&proto.as_str()) {
        return None;
    }
    let port = port.trim();
    let numeric = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let placeholder = port.starts_with(PLACEHOLDER_PREFIX)
        && port.ends_with('}')
        && port.len() > PLACEHOLDER_PREFIX.len() + 1
        && port[PLACEHOLDER_PREFIX.len()..port.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (numeric || placeholder).then_some(proto)
}

/// The port template of a lab: one tcp port `{node_label}_{protocol}` per port tag of every
/// node of every document, in file order, duplicates removed; other tags are ignored.
///
/// ```
/// use ccm_core::labyaml::port_template;
/// let lab = "nodes:\n- label: r1\n  tags: ['serial:${PORT_R1_SERIAL}', 'vnc:5900', core, 'ssh:x']\n";
/// let names: Vec<_> = port_template(lab).unwrap().into_iter().map(|p| p.name).collect();
/// assert_eq!(names, ["r1_serial", "r1_vnc"]);
/// ```
pub fn port_template(yaml: &str) -> Result<Vec<PortTemplate>, LabYamlError> {
    let docs = parse_documents(yaml, "input")?;
    let mut node_lines: Option<Vec<Vec<usize>>> = None;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let Some(Value::Sequence(nodes)) = doc.get("nodes") else {
            continue;
        };
        for (i, node) in nodes.iter().enumerate() {
            let Some(Value::Sequence(tags)) = node.get("tags") else {
                continue;
            };
            for tag in tags.iter().filter_map(Value::as_str) {
                let Some(proto) = port_tag_protocol(tag) else {
                    continue;
                };
                let Some(label) = node.get("label").and_then(Value::as_str) else {
                    let lines = match &node_lines {
                        Some(l) => l,
                        None => {
                            node_lines.insert(scan(yaml).map(|s| s.node_lines).unwrap_or_default())
                        }
                    };
                    return Err(LabYamlError::MissingLabel {
                        document: d + 1,
                        index: i,
                        line: lines.get(d).and_then(|l| l.get(i)).copied().unwrap_or(0),
                        tag: tag.to_string(),
                    });
                };
                let name = format!("{label}_{proto}");
                if seen.insert(name.clone()) {
                    out.push(PortTemplate {
                        description: format!("{proto} of node {label} (tag {tag:?})"),
                        name,
                        protocol: Protocol::Tcp,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_ports() {
        assert_eq!(port_tag_protocol("ssh:22").as_deref(), Some("ssh"));
        assert_eq!(
            port_tag_protocol("HTTPS:${PORT_A_1}").as_deref(),
            Some("https")
        );
        assert_eq!(port_tag_protocol("ftp:21"), None);
        assert_eq!(port_tag_protocol("ssh"), None);
        assert_eq!(port_tag_protocol("ssh:"), None);
        assert_eq!(port_tag_protocol("ssh:abc"), None);
        assert_eq!(port_tag_protocol("ssh:${PORT_}"), None);
        assert_eq!(port_tag_protocol("ssh:123456"), None);
    }

    #[test]
    fn duplicates_removed_across_documents() {
        let lab = "nodes:\n- label: r1\n  tags: [ssh:1, ssh:2]\n---\nnodes:\n- label: r1\n  tags: [ssh:3, telnet:4]\n";
        let t = port_template(lab).unwrap();
        let names: Vec<_> = t.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["r1_ssh", "r1_telnet"]);
        assert!(t.iter().all(|p| p.protocol == Protocol::Tcp));
    }

    #[test]
    fn missing_label_names_node_and_line() {
        let lab = "nodes:\n- label: r1\n  tags: []\n- id: n2\n  tags: [vnc:1]\n";
        let e = port_template(lab).unwrap_err();
        assert_eq!(
            e,
            LabYamlError::MissingLabel {
                document: 1,
                index: 1,
                line: 4,
                tag: "vnc:1".into()
            }
        );
    }

    #[test]
    fn invalid_yaml_names_line() {
        let e = port_template("nodes:\n  - label: [\n").unwrap_err();
        assert!(
            matches!(e, LabYamlError::Invalid { line: Some(_), .. }),
            "{e:?}"
        );
    }
}
