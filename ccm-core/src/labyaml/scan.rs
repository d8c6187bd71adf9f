//! Span-aware walk over the YAML event stream (saphyr-parser): finds the scalars at
//! `nodes[].tags[]` and `smart_annotations[].tag` of every document, with their exact byte
//! ranges in the source, and guards against aliases that would make an in-place rewrite
//! disagree with the parsed document.

use super::placeholder::PLACEHOLDER_PREFIX;
use super::LabYamlError;
use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;
use std::ops::Range;

/// Quoting style of a scalar in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted.
    Plain,
    /// `'...'`.
    SingleQuoted,
    /// `"..."`.
    DoubleQuoted,
    /// `|` or `>` block scalar.
    Block,
}

/// A scalar at a rewrite position.
#[derive(Debug, Clone)]
pub struct TargetScalar {
    /// Byte range of the scalar in the source, including any anchor, tag and quotes.
    pub raw: Range<usize>,
    /// The parsed value.
    pub value: String,
    /// Quoting style.
    pub style: Style,
    /// Whether a `!tag` was written on it.
    pub tagged: bool,
    /// 1-based line where it starts.
    pub line: usize,
}

/// Result of a walk.
#[derive(Debug, Default)]
pub struct Scan {
    /// Scalars at rewrite positions, in source order.
    pub targets: Vec<TargetScalar>,
    /// Per document, the start line of each `nodes[i]` entry.
    pub node_lines: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Elem {
    Key(String),
    Index(usize),
    /// Inside a mapping key, or under a non-scalar key.
    Other,
}

#[derive(Debug)]
enum Frame {
    Seq { next: usize, is_key: bool },
    Map { key: Option<Elem>, is_key: bool },
}

#[derive(Debug, Default, Clone, Copy)]
struct AnchorInfo {
    line: usize,
    has_placeholder: bool,
    has_rewritten: bool,
}

fn key_is(e: &Elem, k: &str) -> bool {
    matches!(e, Elem::Key(s) if s == k)
}

/// `nodes[i].tags[j]` or `smart_annotations[i].tag`.
fn is_target(path: &[Elem]) -> bool {
    match path {
        [n, Elem::Index(_), t, Elem::Index(_)] => key_is(n, "nodes") && key_is(t, "tags"),
        [s, Elem::Index(_), t] => key_is(s, "smart_annotations") && key_is(t, "tag"),
        _ => false,
    }
}

/// Positions whose content may hold (or become, through an alias or merge) a rewrite target.
fn may_hold_target(path: &[Elem]) -> bool {
    match path.first() {
        None => true,
        Some(first) => key_is(first, "nodes") || key_is(first, "smart_annotations"),
    }
}

/// Maps saphyr's character indices to byte offsets and lines.
pub struct Positions<'a> {
    text: &'a str,
    char_bytes: Vec<usize>,
}

impl<'a> Positions<'a> {
    /// Index of `text`.
    pub fn new(text: &'a str) -> Self {
        let mut char_bytes: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        char_bytes.push(text.len());
        Positions { text, char_bytes }
    }

    /// Byte offset of a character index (clamped to the end).
    pub fn byte(&self, char_index: usize) -> usize {
        self.char_bytes
            .get(char_index)
            .copied()
            .unwrap_or(self.text.len())
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, byte: usize) -> usize {
        let end = byte.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

struct Walker {
    frames: Vec<Frame>,
    path: Vec<Elem>,
    open_anchors: Vec<(usize, usize)>,
    anchors: HashMap<usize, AnchorInfo>,
    scan: Scan,
}

impl Walker {
    /// The path element of the node starting now and whether it is a mapping key.
    fn position(&self) -> (Elem, bool) {
        match self.frames.last() {
            None => (Elem::Other, false),
            Some(Frame::Seq { next, .. }) => (Elem::Index(*next), false),
            Some(Frame::Map { key: None, .. }) => (Elem::Other, true),
            Some(Frame::Map { key: Some(k), .. }) => (k.clone(), false),
        }
    }

    fn node_path(&self, elem: &Elem) -> Vec<Elem> {
        let mut p = self.path.clone();
        if !self.frames.is_empty() {
            p.push(elem.clone());
        }
        p
    }

    /// A node finished in the current container.
    fn finish(&mut self, as_key: Option<Elem>) {
        match self.frames.last_mut() {
            Some(Frame::Seq { next, .. }) => *next += 1,
            Some(Frame::Map { key, .. }) => {
                *key = match key.take() {
                    None => Some(as_key.unwrap_or(Elem::Other)),
                    Some(_) => None,
                }
            }
            None => {}
        }
    }

    fn note_anchor(&mut self, id: usize, line: usize) {
        if id != 0 {
            self.anchors.insert(
                id,
                AnchorInfo {
                    line,
                    ..AnchorInfo::default()
                },
            );
        }
    }

    fn mark_placeholder(&mut self, own_anchor: usize, rewritten: bool) {
        let ids: Vec<usize> = self
            .open_anchors
            .iter()
            .map(|(_, id)| *id)
            .chain((own_anchor != 0).then_some(own_anchor))
            .collect();
        for id in ids {
            if let Some(info) = self.anchors.get_mut(&id) {
                info.has_placeholder = true;
                info.has_rewritten |= rewritten;
            }
        }
    }

    fn start_container(&mut self, anchor: usize, line: usize, seq: bool) {
        let (elem, is_key) = self.position();
        let path = self.node_path(&elem);
        if path.len() == 2 && key_is(&path[0], "nodes") && matches!(path[1], Elem::Index(_)) {
            if let Some(doc) = self.scan.node_lines.last_mut() {
                doc.push(line);
            }
        }
        self.note_anchor(anchor, line);
        if !self.frames.is_empty() {
            self.path.push(if is_key { Elem::Other } else { elem });
        }
        self.frames.push(if seq {
            Frame::Seq { next: 0, is_key }
        } else {
            Frame::Map { key: None, is_key }
        });
        if anchor != 0 {
            self.open_anchors.push((self.frames.len(), anchor));
        }
    }

    fn end_container(&mut self) {
        let depth = self.frames.len();
        self.open_anchors.retain(|(d, _)| *d < depth);
        let was_key = match self.frames.pop() {
            Some(Frame::Seq { is_key, .. }) | Some(Frame::Map { is_key, .. }) => is_key,
            None => false,
        };
        if !self.frames.is_empty() {
            self.path.pop();
        }
        self.finish(was_key.then_some(Elem::Other));
    }
}

/// Walks `text` and returns the rewrite targets. `text` must already be valid YAML.
pub fn scan(text: &str) -> Result<Scan, LabYamlError> {
    let pos = Positions::new(text);
    let mut w = Walker {
        frames: Vec::new(),
        path: Vec::new(),
        open_anchors: Vec::new(),
        anchors: HashMap::new(),
        scan: Scan::default(),
    };
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| LabYamlError::Invalid {
            stage: "scan",
            line: Some(e.marker().line()),
            message: e.info().to_string(),
        })?;
        let start = pos.byte(span.start.index());
        let end = pos.byte(span.end.index()).max(start);
        let line = pos.line_of(start);
        match event {
            Event::DocumentStart(_) => {
                w.frames.clear();
                w.path.clear();
                w.open_anchors.clear();
                w.scan.node_lines.push(Vec::new());
            }
            Event::SequenceStart(anchor, _) => w.start_container(anchor, line, true),
            Event::MappingStart(anchor, _) => w.start_container(anchor, line, false),
            Event::SequenceEnd | Event::MappingEnd => w.end_container(),
            Event::Scalar(value, style, anchor, tag) => {
                let (elem, is_key) = w.position();
                w.note_anchor(anchor, line);
                let target = !is_key && is_target(&w.node_path(&elem));
                if value.contains(PLACEHOLDER_PREFIX) {
                    w.mark_placeholder(anchor, target);
                }
                if target {
                    w.scan.targets.push(TargetScalar {
                        raw: start..end,
                        value: value.to_string(),
                        style: match style {
                            ScalarStyle::Plain => Style::Plain,
                            ScalarStyle::SingleQuoted => Style::SingleQuoted,
                            ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                            ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                        },
                        tagged: tag.is_some(),
                        line,
                    });
                }
                w.finish(is_key.then(|| Elem::Key(value.to_string())));
            }
            Event::Alias(id) => {
                let (elem, is_key) = w.position();
                let at = w.node_path(&elem);
                if let Some(info) = w.anchors.get(&id).copied() {
                    if info.has_placeholder && (info.has_rewritten || may_hold_target(&at)) {
                        return Err(LabYamlError::AliasedPlaceholder {
                            anchor_line: info.line,
                            alias_line: line,
                        });
                    }
                }
                w.finish(is_key.then_some(Elem::Other));
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    Ok(w.scan)
}
