//! The format-preserving rewrite of `${PORT_<NAME>}` placeholders.

use super::placeholder::{find_placeholders, placeholder_key, PLACEHOLDER_PREFIX};
use super::scan::{scan, Positions, Style, TargetScalar};
use super::{parse_documents, LabYamlError};
use crate::definition::PortTemplate;
use serde_norway::Value;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// Which placeholder names which port, and the port's allocated number (if any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortBindings {
    /// `placeholder_key(port name)` → (port name, allocated number).
    by_key: BTreeMap<String, (String, Option<u16>)>,
}

impl PortBindings {
    /// Bindings for a definition's port template and a session's allocation (port name → host
    /// port). Ports in the template without an allocation make their placeholders
    /// [`LabYamlError::UnallocatedPlaceholder`]; allocations of ports outside the template are
    /// ignored.
    pub fn new(
        template: &[PortTemplate],
        allocated: &BTreeMap<String, u16>,
    ) -> Result<Self, LabYamlError> {
        Self::build(
            template
                .iter()
                .map(|p| (p.name.clone(), allocated.get(&p.name).copied())),
        )
    }

    /// Bindings where every allocated port is also the template.
    pub fn from_allocation(allocated: &BTreeMap<String, u16>) -> Result<Self, LabYamlError> {
        Self::build(allocated.iter().map(|(n, p)| (n.clone(), Some(*p))))
    }

    fn build(ports: impl Iterator<Item = (String, Option<u16>)>) -> Result<Self, LabYamlError> {
        let mut by_key: BTreeMap<String, (String, Option<u16>)> = BTreeMap::new();
        for (name, port) in ports {
            let key = placeholder_key(&name);
            if let Some((first, _)) = by_key.get(&key) {
                if *first != name {
                    return Err(LabYamlError::AmbiguousPorts {
                        first: first.clone(),
                        second: name,
                        key,
                    });
                }
            }
            by_key.insert(key, (name, port));
        }
        Ok(PortBindings { by_key })
    }

    /// The number for placeholder `<NAME>` found at `line`.
    pub fn resolve(&self, name: &str, line: usize) -> Result<u16, LabYamlError> {
        match self.by_key.get(&placeholder_key(name)) {
            None => Err(LabYamlError::UnknownPlaceholder {
                name: name.to_string(),
                line,
            }),
            Some((port, None)) => Err(LabYamlError::UnallocatedPlaceholder {
                name: name.to_string(),
                port: port.clone(),
                line,
            }),
            Some((_, Some(n))) => Ok(*n),
        }
    }
}

/// One replaced placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// `<NAME>` as written.
    pub name: String,
    /// The number written in its place.
    pub port: u16,
    /// 1-based line.
    pub line: usize,
}

/// Result of [`rewrite_ports`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The rewritten file.
    pub text: String,
    /// What was replaced, in file order.
    pub replacements: Vec<Replacement>,
}

/// Replaces placeholders in a parsed string with their numbers.
fn substitute(value: &str, ports: &HashMap<String, u16>) -> String {
    let Ok(found) = find_placeholders(value, |_| 0) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(value.len());
    let mut at = 0;
    for p in found {
        if let Some(n) = ports.get(&p.name) {
            out.push_str(&value[at..p.range.start]);
            out.push_str(&n.to_string());
            at = p.range.end;
        }
    }
    out.push_str(&value[at..]);
    out
}

/// Whether a plain scalar with this text still reads as this string.
fn plain_stays_string(text: &str) -> bool {
    matches!(serde_norway::from_str::<Value>(text), Ok(Value::String(s)) if s == text)
}

/// Edits for one target scalar.
fn edits_for(
    yaml: &str,
    pos: &Positions<'_>,
    t: &TargetScalar,
    bindings: &PortBindings,
    ports: &mut HashMap<String, u16>,
    replacements: &mut Vec<Replacement>,
) -> Result<Vec<(Range<usize>, String)>, LabYamlError> {
    let in_value = find_placeholders(&t.value, |_| t.line)?;
    if in_value.is_empty() {
        return Ok(Vec::new());
    }
    let raw = yaml
        .get(t.raw.clone())
        .ok_or_else(|| LabYamlError::NotInPlace {
            line: t.line,
            why: "scalar span is not on character boundaries".to_string(),
        })?;
    let in_raw = find_placeholders(raw, |b| pos.line_of(t.raw.start + b))?;
    let names_value: Vec<&str> = in_value.iter().map(|p| p.name.as_str()).collect();
    let names_raw: Vec<&str> = in_raw.iter().map(|p| p.name.as_str()).collect();
    if names_value != names_raw {
        return Err(LabYamlError::NotInPlace {
            line: t.line,
            why: format!(
                "the source text holds placeholders {names_raw:?} but the value holds {names_value:?} \
                 (escaped or broken over lines)"
            ),
        });
    }
    let mut edits = Vec::new();
    for p in &in_raw {
        let line = pos.line_of(t.raw.start + p.range.start);
        let port = bindings.resolve(&p.name, line)?;
        ports.insert(p.name.clone(), port);
        replacements.push(Replacement {
            name: p.name.clone(),
            port,
            line,
        });
        edits.push((
            t.raw.start + p.range.start..t.raw.start + p.range.end,
            port.to_string(),
        ));
    }
    if t.style == Style::Plain && !t.tagged {
        let new_value = substitute(&t.value, ports);
        if !plain_stays_string(&new_value) {
            // `${PORT_X}` alone would become a number: quote the scalar's content.
            let content_start = if raw.starts_with('&') {
                raw.find(char::is_whitespace)
                    .map(|i| i + raw[i..].len() - raw[i..].trim_start().len())
                    .unwrap_or(raw.len())
            } else {
                0
            };
            let content = &raw[content_start..];
            if content.contains(['"', '\\', '\n', '\r']) {
                return Err(LabYamlError::NotInPlace {
                    line: t.line,
                    why: format!("plain tag {content:?} would stop being a string"),
                });
            }
            let mut quoted = String::from("\"");
            let mut at = 0;
            for p in &in_raw {
                quoted.push_str(&content[at..p.range.start - content_start]);
                quoted.push_str(&ports.get(&p.name).copied().unwrap_or_default().to_string());
                at = p.range.end - content_start;
            }
            quoted.push_str(&content[at..]);
            quoted.push('"');
            return Ok(vec![(t.raw.start + content_start..t.raw.end, quoted)]);
        }
    }
    Ok(edits)
}

/// Substitutes placeholders at the rewrite positions of parsed documents (the reference the
/// rewritten text is checked against).
fn substitute_documents(docs: &mut [Value], ports: &HashMap<String, u16>) {
    fn sub(v: &mut Value, ports: &HashMap<String, u16>) {
        match v {
            Value::String(s) if s.contains(PLACEHOLDER_PREFIX) => *s = substitute(s, ports),
            Value::Tagged(t) => sub(&mut t.value, ports),
            _ => {}
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
            for note in notes {
                if let Some(tag) = note.get_mut("tag") {
                    sub(tag, ports);
                }
            }
        }
    }
}

/// Replaces every `${PORT_<NAME>}` in `nodes[].tags` and `smart_annotations[].tag` with its
/// allocated port, leaving every other byte unchanged; see the [module docs](super) for the
/// rules. The input is validated before, and the output after: it must parse to exactly the
/// input's documents with the placeholders substituted.
pub fn rewrite_ports(yaml: &str, bindings: &PortBindings) -> Result<Rewritten, LabYamlError> {
    let mut expected = parse_documents(yaml, "input")?;
    let scanned = scan(yaml)?;
    let pos = Positions::new(yaml);
    let mut ports = HashMap::new();
    let mut replacements = Vec::new();
    let mut edits = Vec::new();
    for t in &scanned.targets {
        edits.extend(edits_for(
            yaml,
            &pos,
            t,
            bindings,
            &mut ports,
            &mut replacements,
        )?);
    }
    edits.sort_by_key(|(r, _)| r.start);
    let mut text = String::with_capacity(yaml.len());
    let mut at = 0;
    for (range, new) in &edits {
        if range.start < at {
            return Err(LabYamlError::VerificationFailed(format!(
                "overlapping edits at byte {}",
                range.start
            )));
        }
        text.push_str(&yaml[at..range.start]);
        text.push_str(new);
        at = range.end;
    }
    text.push_str(&yaml[at..]);

    let actual = parse_documents(&text, "output")?;
    substitute_documents(&mut expected, &ports);
    if actual != expected {
        let doc = actual
            .iter()
            .zip(&expected)
            .position(|(a, e)| a != e)
            .map_or_else(
                || "the document count".to_string(),
                |d| format!("document {}", d + 1),
            );
        return Err(LabYamlError::VerificationFailed(format!(
            "the rewritten file differs from the substituted input in {doc}"
        )));
    }
    tracing::debug!(replaced = replacements.len(), "lab YAML ports rewritten");
    Ok(Rewritten { text, replacements })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(pairs: &[(&str, u16)]) -> PortBindings {
        PortBindings::from_allocation(&pairs.iter().map(|(n, p)| (n.to_string(), *p)).collect())
            .unwrap()
    }

    #[test]
    fn plain_alone_gets_quoted() {
        let out = rewrite_ports(
            "nodes:\n- tags:\n  - ${PORT_A}\n  - &x ${PORT_A}\n",
            &bind(&[("a", 7)]),
        )
        .unwrap();
        assert_eq!(out.text, "nodes:\n- tags:\n  - \"7\"\n  - &x \"7\"\n");
    }

    #[test]
    fn unknown_and_unallocated_name_line() {
        let lab = "nodes:\n- label: r1\n  tags:\n  - ssh:${PORT_R1_SSH}\n  - vnc:${PORT_NOPE}\n";
        let e = rewrite_ports(lab, &bind(&[("r1_ssh", 2000)])).unwrap_err();
        assert_eq!(
            e,
            LabYamlError::UnknownPlaceholder {
                name: "NOPE".into(),
                line: 5
            }
        );
        let t = vec![PortTemplate {
            name: "r1_ssh".into(),
            protocol: Default::default(),
            description: String::new(),
        }];
        let b = PortBindings::new(&t, &BTreeMap::new()).unwrap();
        let e = rewrite_ports(lab, &b).unwrap_err();
        assert_eq!(
            e,
            LabYamlError::UnallocatedPlaceholder {
                name: "R1_SSH".into(),
                port: "r1_ssh".into(),
                line: 4
            }
        );
        assert!(e.to_string().contains("${PORT_R1_SSH}") && e.to_string().contains("line 4"));
    }

    #[test]
    fn escaped_placeholder_is_not_in_place() {
        let lab = "nodes:\n- tags: [\"\\x24{PORT_A}\"]\n";
        assert!(matches!(
            rewrite_ports(lab, &bind(&[("a", 1)])),
            Err(LabYamlError::NotInPlace { line: 2, .. })
        ));
    }

    #[test]
    fn aliased_rewritten_anchor_is_rejected() {
        let lab = "nodes:\n- tags: &t [\"ssh:${PORT_A}\"]\n- tags: *t\n";
        assert_eq!(
            rewrite_ports(lab, &bind(&[("a", 1)])),
            Err(LabYamlError::AliasedPlaceholder {
                anchor_line: 2,
                alias_line: 3
            })
        );
        let lab = "defaults: &t [\"ssh:${PORT_A}\"]\nnodes:\n- tags: *t\n";
        assert!(matches!(
            rewrite_ports(lab, &bind(&[("a", 1)])),
            Err(LabYamlError::AliasedPlaceholder { .. })
        ));
        let lab = "defaults: &t [\"ssh:${PORT_A}\"]\nother: *t\nnodes: []\n";
        assert_eq!(rewrite_ports(lab, &bind(&[("a", 1)])).unwrap().text, lab);
    }

    #[test]
    fn ambiguous_ports_rejected() {
        let e = PortBindings::from_allocation(&BTreeMap::from([
            ("r-1_ssh".to_string(), 1),
            ("r_1_ssh".to_string(), 2),
        ]))
        .unwrap_err();
        assert!(matches!(e, LabYamlError::AmbiguousPorts { .. }));
    }

    #[test]
    fn elsewhere_left_alone() {
        let lab = "lab:\n  notes: \"${PORT_A}\"\nnodes:\n- label: r1\n  configuration: ${PORT_A}\n  tags: [\"x:${PORT_A}\"]\n";
        let out = rewrite_ports(lab, &bind(&[("a", 9)])).unwrap();
        assert_eq!(out.text, lab.replace("x:${PORT_A}", "x:9"));
    }
}
