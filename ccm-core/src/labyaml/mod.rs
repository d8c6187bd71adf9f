//! Lab YAML: port templates from node tags and format-preserving `${PORT_<NAME>}` rewriting.
//!
//! A CML lab file names the host ports it needs in its node tags (`ssh:${PORT_R1_SSH}`,
//! `serial:${PORT_R1_SERIAL}`, ...). [`port_template`] turns those tags into a definition's port
//! template (domain.md §7); [`rewrite_ports`] replaces the placeholders in `nodes[].tags` and
//! `smart_annotations[].tag` with the ports a worker allocated, changing **no other byte**:
//! comments, quoting, anchors, key order, indentation, line endings (CRLF), BOM and document
//! markers all stay as they were.
//!
//! ```
//! use ccm_core::labyaml::{port_template, rewrite_ports, PortBindings};
//! use std::collections::BTreeMap;
//! let lab = "nodes:\n  - label: r1   # edge router\n    tags: [\"ssh:${PORT_R1_SSH}\", core]\n";
//! let template = port_template(lab).unwrap();
//! assert_eq!(template[0].name, "r1_ssh");
//! let ports = BTreeMap::from([("r1_ssh".to_string(), 2001u16)]);
//! let bindings = PortBindings::new(&template, &ports).unwrap();
//! let out = rewrite_ports(lab, &bindings).unwrap();
//! assert_eq!(out.text, "nodes:\n  - label: r1   # edge router\n    tags: [\"ssh:2001\", core]\n");
//! ```
//!
//! # Why these parsers
//!
//! `serde_yaml` is deprecated and unmaintained upstream, so it is not used. Two maintained
//! parsers split the work:
//!
//! * **`serde_norway`** (the maintained fork of serde_yaml, already the workspace's YAML crate,
//!   libyaml-based) validates: the input is parsed before the rewrite and the output after it,
//!   and the output must equal the input's parse with the placeholders substituted — so a
//!   rewrite can never silently produce a different lab.
//! * **`saphyr-parser`** (the maintained successor of yaml-rust/yaml-rust2's parser, pure Rust,
//!   YAML 1.2) supplies the *event stream with source spans*. No maintained Rust YAML crate
//!   round-trips a document with its comments and layout (there is no ruamel.yaml equivalent),
//!   and serde-based crates discard positions. With spans we locate exactly the bytes of each
//!   target scalar and replace only the `${PORT_<NAME>}` text inside them, copying every other
//!   byte of the file verbatim. That is simpler and safer than re-emitting YAML.
//!
//! # Rules
//!
//! * A placeholder `${PORT_<NAME>}` names the port whose [`placeholder_key`] is `<NAME>`
//!   (upper case, non-alphanumerics as `_`): `${PORT_IOSV_0_SSH}` is port `iosv-0_ssh`.
//! * Only scalars at `nodes[i].tags[j]` and `smart_annotations[i].tag` are rewritten, in every
//!   document of a multi-document file. Placeholders anywhere else are left alone.
//! * A placeholder whose name matches no port is [`LabYamlError::UnknownPlaceholder`]; one whose
//!   port has no allocation is [`LabYamlError::UnallocatedPlaceholder`]; both name the
//!   placeholder and its line.
//! * A plain (unquoted) tag that would turn into a number after the rewrite (`${PORT_X}` alone
//!   → `2001`) is wrapped in double quotes so it stays a string: the only case where bytes
//!   other than the placeholder change.
//! * A placeholder written so it cannot be replaced in place (an escape sequence such as
//!   `"\x24{PORT_X}"`, or a placeholder broken over lines) is [`LabYamlError::NotInPlace`];
//!   an alias that would copy a rewritten placeholder to another place (or pull an unrewritten
//!   one into a tag position) is [`LabYamlError::AliasedPlaceholder`].

mod placeholder;
mod rewrite;
mod scan;
mod template;

pub use placeholder::{find_placeholders, placeholder_for, placeholder_key, Placeholder};
pub use rewrite::{rewrite_ports, PortBindings, Replacement, Rewritten};
pub use template::{port_template, PORT_PROTOCOLS};

/// Errors of lab YAML handling. Every variant names what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabYamlError {
    /// The YAML does not parse.
    #[error("lab YAML ({stage}) is invalid{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Invalid {
        /// `input`, `output` or `scan`.
        stage: &'static str,
        /// 1-based line when known.
        line: Option<usize>,
        /// Parser message.
        message: String,
    },
    /// `${PORT_` without a well-formed name and closing brace.
    #[error("malformed port placeholder {text:?} at line {line}")]
    MalformedPlaceholder {
        /// The text from `${PORT_` on (shortened).
        text: String,
        /// 1-based line.
        line: usize,
    },
    /// The placeholder names no port of the template.
    #[error(
        "unknown port placeholder ${{PORT_{name}}} at line {line}: no such port in the template"
    )]
    UnknownPlaceholder {
        /// `<NAME>` as written.
        name: String,
        /// 1-based line.
        line: usize,
    },
    /// The placeholder's port has no allocated number.
    #[error("port placeholder ${{PORT_{name}}} at line {line}: port {port:?} is not allocated")]
    UnallocatedPlaceholder {
        /// `<NAME>` as written.
        name: String,
        /// The port it names.
        port: String,
        /// 1-based line.
        line: usize,
    },
    /// The placeholder's source text cannot be replaced in place.
    #[error("port placeholder in the tag at line {line} cannot be rewritten in place: {why}")]
    NotInPlace {
        /// 1-based line of the scalar.
        line: usize,
        /// Why.
        why: String,
    },
    /// An alias would spread a rewrite beyond its scalar (or hide a placeholder from it).
    #[error("anchor at line {anchor_line} holds a port placeholder and is aliased at line {alias_line} where a rewrite would be inconsistent; write the tag out instead of aliasing it")]
    AliasedPlaceholder {
        /// Line of the anchor.
        anchor_line: usize,
        /// Line of the alias.
        alias_line: usize,
    },
    /// Two port names map to the same placeholder.
    #[error("ports {first:?} and {second:?} both map to placeholder ${{PORT_{key}}}")]
    AmbiguousPorts {
        /// One port.
        first: String,
        /// The other.
        second: String,
        /// The shared `<NAME>`.
        key: String,
    },
    /// A node with port tags has no label to name its ports.
    #[error("document {document}, nodes[{index}] (line {line}): port tag {tag:?} on a node without a string label")]
    MissingLabel {
        /// 1-based document number.
        document: usize,
        /// Index in `nodes`.
        index: usize,
        /// 1-based line of the node (0 when unknown).
        line: usize,
        /// The tag.
        tag: String,
    },
    /// The rewritten text does not parse to the substituted input (a bug guard; never expected).
    #[error("rewrite verification failed: {0}")]
    VerificationFailed(String),
}

/// Parses every document of a YAML stream with serde_norway.
pub(crate) fn parse_documents(
    text: &str,
    stage: &'static str,
) -> Result<Vec<serde_norway::Value>, LabYamlError> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(doc).map_err(|e| LabYamlError::Invalid {
            stage,
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })?;
        docs.push(value);
    }
    Ok(docs)
}
