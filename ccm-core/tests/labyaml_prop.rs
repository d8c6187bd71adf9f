//! Property: for generated lab files (quoting styles, flow and block sequences, comments,
//! CRLF, several documents), rewrite-then-parse equals parse-then-substitute, and the rewrite
//! changes no byte outside the placeholders.

use ccm_core::labyaml::{placeholder_key, rewrite_ports, PortBindings};
use proptest::prelude::*;
use std::collections::BTreeMap;

mod labyaml_support;
use labyaml_support::{diff_only_numbers, parse_all, substitute};

const PORTS: [&str; 4] = ["r1_ssh", "r1_vnc", "sw-2_serial", "host_http"];

#[derive(Debug, Clone)]
enum Style {
    Plain,
    Single,
    Double,
}

#[derive(Debug, Clone)]
struct Tag {
    prefix: &'static str,
    port: Option<usize>,
    suffix: &'static str,
    style: Style,
}

impl Tag {
    fn text(&self) -> String {
        let ph = self
            .port
            .map(|p| format!("${{PORT_{}}}", placeholder_key(PORTS[p])))
            .unwrap_or_default();
        format!("{}{}{}", self.prefix, ph, self.suffix)
    }
    fn render(&self, flow: bool) -> String {
        let t = self.text();
        match self.style {
            // Plain scalars can't hold `{`, `}` or `:` in a flow sequence, nor end in `:`.
            Style::Plain if !(t.ends_with(':') || flow && t.contains(['{', ':'])) => t,
            Style::Single | Style::Plain => format!("'{t}'"),
            Style::Double => format!("\"{t}\""),
        }
    }
}

fn tag() -> impl Strategy<Value = Tag> {
    (
        prop::sample::select(vec!["ssh:", "vnc:", "core-", "", "serial:", "x "]),
        prop::option::weighted(0.7, 0..PORTS.len()),
        prop::sample::select(vec!["", "-a", "/x"]),
        prop_oneof![Just(Style::Plain), Just(Style::Single), Just(Style::Double)],
    )
        .prop_map(|(prefix, port, suffix, style)| Tag {
            prefix,
            port,
            suffix,
            style,
        })
        .prop_filter("a tag needs text", |t| !t.text().is_empty())
}

#[derive(Debug, Clone)]
struct Node {
    label: String,
    tags: Vec<Tag>,
    flow: bool,
    comment: bool,
    config_placeholder: bool,
}

fn node() -> impl Strategy<Value = Node> {
    (
        "[a-z][a-z0-9]{0,5}",
        prop::collection::vec(tag(), 0..4),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(label, tags, flow, comment, config_placeholder)| Node {
            label,
            tags,
            flow,
            comment,
            config_placeholder,
        })
}

#[derive(Debug, Clone)]
struct Doc {
    nodes: Vec<Node>,
    annotations: Vec<Tag>,
    indent: usize,
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        prop::collection::vec(node(), 0..4),
        prop::collection::vec(tag(), 0..3),
        1usize..4,
    )
        .prop_map(|(nodes, annotations, indent)| Doc {
            nodes,
            annotations,
            indent,
        })
}

fn render(docs: &[Doc], crlf: bool) -> String {
    let mut out = String::from("# generated lab\n");
    for (d, doc) in docs.iter().enumerate() {
        if d > 0 || docs.len() > 1 {
            out.push_str("---\n");
        }
        let i = " ".repeat(doc.indent);
        out.push_str(&format!("lab:\n{i}title: \"doc {d} ${{PORT_R1_SSH}}\"\n"));
        if !doc.nodes.is_empty() {
            out.push_str("nodes:\n");
        }
        for n in &doc.nodes {
            out.push_str(&format!("{i}- label: {}\n", n.label));
            if n.config_placeholder {
                out.push_str(&format!("{i}  configuration: ssh ${{PORT_R1_VNC}}\n"));
            }
            let comment = if n.comment {
                "  # tags of the node"
            } else {
                ""
            };
            if n.flow || n.tags.is_empty() {
                let items: Vec<String> = n.tags.iter().map(|t| t.render(true)).collect();
                out.push_str(&format!("{i}  tags: [{}]{comment}\n", items.join(", ")));
            } else {
                out.push_str(&format!("{i}  tags:{comment}\n"));
                for t in &n.tags {
                    out.push_str(&format!("{i}  {i}- {}{comment}\n", t.render(false)));
                }
            }
        }
        if !doc.annotations.is_empty() {
            out.push_str("smart_annotations:\n");
            for t in &doc.annotations {
                out.push_str(&format!(
                    "{i}- label: note\n{i}  tag: {}\n",
                    t.render(false)
                ));
            }
        }
    }
    if crlf {
        out = out.replace('\n', "\r\n");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rewrite_then_parse_equals_parse_then_substitute(
        docs in prop::collection::vec(doc(), 1..4),
        crlf in any::<bool>(),
        base in 1024u16..60000,
    ) {
        let text = render(&docs, crlf);
        let ports: BTreeMap<String, u16> =
            PORTS.iter().enumerate().map(|(i, n)| (n.to_string(), base + i as u16)).collect();
        let out = rewrite_ports(&text, &PortBindings::from_allocation(&ports).unwrap())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let mut expected = parse_all(&text);
        substitute(&mut expected, &ports);
        prop_assert_eq!(parse_all(&out.text), expected);

        // Outside the placeholders nothing changed.
        let (replaced, _) = diff_only_numbers(&text, &out.text, &ports);
        prop_assert_eq!(replaced, out.replacements.len());
        prop_assert_eq!(out.text.matches("\r\n").count(), text.matches("\r\n").count());
    }

    #[test]
    fn rewriter_never_panics_on_noise(s in "\\PC{0,200}") {
        let ports = BTreeMap::from([("a".to_string(), 1u16)]);
        let _ = rewrite_ports(&s, &PortBindings::from_allocation(&ports).unwrap());
        let _ = ccm_core::labyaml::port_template(&s);
    }
}
