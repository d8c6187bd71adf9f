//! The format-preserving rewrite on realistic CML lab files (tests/data/labs): the diff holds
//! only the replaced numbers, and the result parses to the input with the ports substituted.

use ccm_core::labyaml::{port_template, rewrite_ports, LabYamlError, PortBindings};
use std::collections::BTreeMap;

mod labyaml_support;
use labyaml_support::{diff_only_numbers, parse_all, substitute};

fn lab(name: &str) -> String {
    let path = format!("{}/tests/data/labs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
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
