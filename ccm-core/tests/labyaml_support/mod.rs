//! Oracles shared by the lab YAML tests: parse every document, substitute placeholders in the
//! parsed tags (independently of the rewriter), and walk input and output byte by byte.
#![allow(dead_code)]

use ccm_core::labyaml::placeholder_key;
use serde_norway::Value;
use std::collections::BTreeMap;

pub fn parse_all(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

/// Independent oracle: substitute placeholders in the parsed tags.
pub fn substitute(docs: &mut [Value], ports: &BTreeMap<String, u16>) {
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
pub fn diff_only_numbers(
    input: &str,
    output: &str,
    ports: &BTreeMap<String, u16>,
) -> (usize, usize) {
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
