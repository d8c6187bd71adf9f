//! The format-preserving rewrite on realistic CML lab files (tests/data/labs): the diff holds
//! only the replaced numbers, and the result parses to the input with the ports substituted.

use ccm_core::labyaml::{
    placeholder_key, port_template, rewrite_ports, LabYamlError, PortBindings,
};
use serde_norway::Value;
use std::collections::BTreeMap;

fn lab(name: &str) -> String {
    let path = format!("{}/tests/data/labs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse_all(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

/// Independent oracle: substitute placeholders in the parsed tags.
fn substitute(docs: &mut [Value], ports: &BTreeMap<String, u16>) {
    fn sub(v: &mut Value, ports: &BTreeMap<String, u16>) {
        let s = match v {
            Value::String(s) => s,
            Value::Tagged(t) => return sub(&mut t.value, ports),
            _ => return,
        };
        for (name, port) in ports {
            *s = s.replace(
                &format!("${{PORT_{}}}", placeholder_key(name)),
                &port.to_string(),
            );
        }
    }
    for doc in docs {
        if let Some(Value::Sequence(nodes)) = doc.get_mut("nodes") {
            for node in nodes {
                if let Some(Value::Sequence(tags)) = node.get_mut("tags") {
                    tags.iter_mut().for_each(|t| sub(t, ports));
                }
            }
        }
        if let Some(Value::Sequence(notes)) = doc.get_mut("smart_annotations") {
            for n in notes {
                if let Some(t) = n.get_mut("tag") {
                    sub(t, ports);
                }
            }
        }
    }
}

/// Walks input and output together; the only differences allowed are a placeholder replaced
/// by its number (optionally wrapped in double quotes when it stood alone as a plain tag).
/// Returns (replaced, kept) placeholder counts.
fn diff_only_numbers(input: &str, output: &str, ports: &BTreeMap<String, u16>) -> (usize, usize) {
    let by_key: BTreeMap<String, u16> = ports
        .iter()
        .map(|(n, p)| (placeholder_key(n), *p))
        .collect();
    let (a, b) = (input.as_bytes(), output.as_bytes());
    let (mut i, mut j, mut replaced, mut kept) = (0, 0, 0, 0);
    while i < a.len() {
        if a[i..].starts_with(b"${PORT_") {
            let close = i + a[i..].iter().position(|&c| c == b'}').unwrap();
            let ph = &a[i..=close];
            if b[j..].starts_with(ph) {
                kept += 1;
                i = close + 1;
                j += ph.len();
                continue;
            }
            let key = std::str::from_utf8(&ph[7..ph.len() - 1]).unwrap();
            let num = by_key[key].to_string();
            let quoted = format!("\"{num}\"");
            if b[j..].starts_with(num.as_bytes()) {
                j += num.len();
            } else if b[j..].starts_with(quoted.as_bytes()) {
                j += quoted.len();
            } else {
                panic!("at input byte {i}: {key} was not replaced by {num}");
            }
            replaced += 1;
            i = close + 1;
            continue;
        }
        assert_eq!(
            a[i] as char,
            b[j] as char,
            "byte {i} of the input changed (output byte {j}): {:?} vs {:?}",
            String::from_utf8_lossy(&a[i..(i + 30).min(a.len())]),
            String::from_utf8_lossy(&b[j..(j + 30).min(b.len())])
        );
        i += 1;
        j += 1;
    }
    assert_eq!(j, b.len(), "output has trailing bytes");
    (replaced, kept)
}

/// Allocates 2000, 2001, ... to the template (plus extras) and rewrites.
fn check(file: &str, extra: &[&str], want_replaced: usize, want_kept: usize) -> (String, String) {
    let input = lab(file);
    let mut names: Vec<String> = port_template(&input)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.extend(extra.iter().map(|s| s.to_string()));
    let ports: BTreeMap<String, u16> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), 2000 + i as u16))
        .collect();
    let out = rewrite_ports(&input, &PortBindings::from_allocation(&ports).unwrap())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let (replaced, kept) = diff_only_numbers(&input, &out.text, &ports);
    assert_eq!(replaced, want_replaced, "{file}: replaced placeholders");
    assert_eq!(kept, want_kept, "{file}: placeholders left alone");
    assert_eq!(
        out.replacements.len(),
        want_replaced,
        "{file}: reported replacements"
    );
    let mut expected = parse_all(&input);
    substitute(&mut expected, &ports);
    assert_eq!(
        parse_all(&out.text),
        expected,
        "{file}: parse(rewrite) != substitute(parse)"
    );
    assert_eq!(input.matches('\n').count(), out.text.matches('\n').count());
    assert_eq!(
        input.matches("\r\n").count(),
        out.text.matches("\r\n").count(),
        "{file}: line endings"
    );
    assert_eq!(
        input.matches('#').count(),
        out.text.matches('#').count(),
        "{file}: comments"
    );
    (input, out.text)
}

#[test]
fn ccna_basic_only_numbers_change() {
    let (_, out) = check("ccna-basic.yaml", &[], 8, 2);
    assert!(
        out.contains("      - serial:2000      # console\n"),
        "{out}"
    );
    assert!(
        out.contains("tags: [serial:22, \"telnet:"),
        "flow sequence kept"
    );
}

#[test]
fn crlf_file_keeps_crlf() {
    let (input, out) = check("crlf-windows.yaml", &[], 5, 0);
    assert!(input.contains("\r\n") && !out.replace("\r\n", "").contains('\n'));
}

#[test]
fn multi_document_with_anchors_merges_and_directives() {
    let (_, out) = check("multi-document.yaml", &[], 7, 1);
    assert!(out.starts_with("%YAML 1.1\n---\n# Document 1"));
    assert!(
        out.contains("tags: &edge_tags ['ssh:2000', \"vnc:2001\", edge]"),
        "{out}"
    );
    assert!(out.contains("notes: \"${PORT_NOT_A_TAG} stays\""));
    assert!(out.contains("${HOME}"));
}

#[test]
fn sparse_file_quotes_a_bare_placeholder() {
    let (_, out) = check("sparse-ports.yaml", &["Branch Router_tcp"], 4, 0);
    assert!(
        out.contains("  - \"2002\"\n"),
        "bare plain placeholder must stay a string: {out}"
    );
    assert!(out.contains("!!str \"ssh:2000\""));
}

#[test]
fn template_of_the_files() {
    let names = |f: &str| -> Vec<String> {
        port_template(&lab(f))
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(
        names("ccna-basic.yaml"),
        [
            "r1_serial",
            "r1_ssh",
            "r1_vnc",
            "r2_serial",
            "r2_telnet",
            "r2_http",
            "jump-host_ssh",
            "jump-host_https"
        ]
    );
    assert_eq!(
        names("multi-document.yaml"),
        [
            "edge-1_ssh",
            "edge-1_vnc",
            "edge-2_ssh",
            "edge-2_vnc",
            "monitor_https",
            "monitor_http"
        ]
    );
    assert_eq!(
        names("sparse-ports.yaml"),
        ["Branch Router_ssh", "Branch Router_serial"]
    );
    assert_eq!(
        names("crlf-windows.yaml"),
        ["sw1_telnet", "sw1_serial", "srv_http", "srv_tcp"]
    );
}

#[test]
fn unallocated_placeholder_names_it_and_its_line() {
    let input = lab("ccna-basic.yaml");
    let template = port_template(&input).unwrap();
    let ports: BTreeMap<String, u16> = template
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name != "r2_http")
        .map(|(i, p)| (p.name.clone(), 3000 + i as u16))
        .collect();
    let err = rewrite_ports(&input, &PortBindings::new(&template, &ports).unwrap()).unwrap_err();
    let line = input
        .lines()
        .position(|l| l.contains("${PORT_R2_HTTP}"))
        .unwrap()
        + 1;
    assert_eq!(
        err,
        LabYamlError::UnallocatedPlaceholder {
            name: "R2_HTTP".into(),
            port: "r2_http".into(),
            line
        }
    );
    let err = rewrite_ports(&input, &PortBindings::from_allocation(&ports).unwrap()).unwrap_err();
    assert_eq!(
        err,
        LabYamlError::UnknownPlaceholder {
            name: "R2_HTTP".into(),
            line
        }
    );
    assert!(err.to_string().contains(&format!("line {line}")));
}

#[test]
fn invalid_input_is_rejected_before_rewriting() {
    let err =
        rewrite_ports("nodes:\n  - tags: [a\n  - b: c\n", &PortBindings::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LabYamlError::Invalid {
                stage: "input",
                line: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
}
