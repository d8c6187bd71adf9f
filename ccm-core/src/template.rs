//! Worker templates: the kinds of worker ccm may launch, loaded from `config/worker-templates.yaml`.
//!
//! The file of the original design loads unchanged; optional fields (`cost_per_hour_usd`,
//! `startup_minutes`, `enabled`, `max_workers_per_region`) get documented defaults. Every error
//! names the file, the line and the field.

use crate::glob::Glob;
use crate::license::LicenseType;
use crate::resources::{Load, Resources};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// Default hourly price: AWS on-demand m5zn.metal in us-east-1.
pub const DEFAULT_COST_PER_HOUR_USD: f64 = 3.9641;
/// Default minutes from launch until a worker is RUNNING.
pub const DEFAULT_STARTUP_MINUTES: u32 = 20;

/// Inclusive TCP port range from which a worker hands out host ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Number of ports in the range (0 when `start > end`).
    pub fn len(&self) -> u32 {
        if self.start > self.end {
            0
        } else {
            u32::from(self.end - self.start) + 1
        }
    }

    /// True when the range holds no port.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        port >= self.start && port <= self.end
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            start: 2000,
            end: 9999,
        }
    }
}

fn default_cost() -> f64 {
    DEFAULT_COST_PER_HOUR_USD
}
fn default_startup() -> u32 {
    DEFAULT_STARTUP_MINUTES
}
fn default_true() -> bool {
    true
}
fn default_drain_timeout() -> f64 {
    4.0
}

/// A kind of worker, exactly the schema of `config/worker-templates.yaml` plus optional extras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerTemplate {
    /// Unique name, e.g. `personal-standard`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Cloud instance type, e.g. `m5zn.metal`.
    pub instance_type: String,
    /// What one worker offers.
    pub capacity: Resources,
    /// The CML licence the worker runs with.
    pub license_type: LicenseType,
    /// Maximum Σ node_count of the sessions on one worker.
    pub max_nodes: u32,
    /// AMI name glob the worker image is chosen by.
    pub ami_pattern: String,
    /// Regions the template may launch in.
    pub regions: Vec<String>,
    /// Host ports handed to sessions.
    #[serde(default)]
    pub port_range: PortRange,
    /// Hours a draining worker may keep sessions before it is force-stopped.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_hours: f64,
    /// Cloud tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Hourly price in USD (default: m5zn.metal on-demand, 3.9641).
    #[serde(default = "default_cost")]
    pub cost_per_hour_usd: f64,
    /// Minutes from launch until RUNNING (default 20).
    #[serde(default = "default_startup")]
    pub startup_minutes: u32,
    /// Disabled templates are never launched (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Cap on live workers of this template per region (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers_per_region: Option<u32>,
}

impl WorkerTemplate {
    /// Capacity as the four packed dimensions.
    pub fn load_capacity(&self) -> Load {
        Load::new(self.capacity, self.max_nodes)
    }

    /// The AMI glob.
    pub fn ami_glob(&self) -> Glob {
        Glob::new(self.ami_pattern.clone())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    templates: Vec<WorkerTemplate>,
}

/// A YAML file (templates, scenario) that could not be loaded: names the file, line and field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FileError {
    /// The file (or `<inline>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path such as `templates[1].port_range.start`.
    pub field: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A templates file that could not be loaded.
pub type TemplateError = FileError;

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Deserializes YAML text with serde_norway, turning a failure into a [`FileError`] that names
/// `file`, the line and the field path (via serde_path_to_error).
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, FileError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let message = inner.to_string();
        // serde_norway appends " at line X column Y"; the line is printed separately.
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        FileError {
            file: file.to_string(),
            line,
            field: (path != "." && !path.is_empty()).then_some(path),
            message,
        }
    })
}

/// Reads and validates a templates file.
pub fn load_templates_file(path: &Path) -> Result<Vec<WorkerTemplate>, TemplateError> {
    let text = std::fs::read_to_string(path).map_err(|e| TemplateError {
        file: path.display().to_string(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    parse_templates(&text, &path.display().to_string())
}

/// Parses and validates templates from YAML text; `file` is used in error messages.
///
/// ```
/// let yaml = "templates:\n  - name: a\n    instance_type: m5zn.metal\n    capacity: {cpu_cores: 48, memory_gb: 192, storage_gb: 500}\n    license_type: PERSONAL\n    max_nodes: 20\n    ami_pattern: 'CML-2.9.*'\n    regions: [us-east-1]\n";
/// let t = ccm_core::template::parse_templates(yaml, "inline.yaml").unwrap();
/// assert_eq!(t[0].port_range.start, 2000);
/// assert_eq!(t[0].startup_minutes, 20);
/// ```
pub fn parse_templates(text: &str, file: &str) -> Result<Vec<WorkerTemplate>, TemplateError> {
    let file_val: TemplateFile = from_yaml_str(text, file)?;
    validate_templates(&file_val.templates, text, file)?;
    Ok(file_val.templates)
}

fn validate_templates(ts: &[WorkerTemplate], text: &str, file: &str) -> Result<(), TemplateError> {
    let err = |i: usize, field: &str, message: String| TemplateError {
        file: file.to_string(),
        line: locate_field(text, i, field),
        field: Some(format!("templates[{i}].{field}")),
        message,
    };
    let mut seen = BTreeSet::new();
    for (i, t) in ts.iter().enumerate() {
        if t.name.trim().is_empty() {
            return Err(err(i, "name", "template name must not be empty".into()));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(err(
                i,
                "name",
                format!("duplicate template name {:?}: names must be unique", t.name),
            ));
        }
        if t.capacity.cpu_cores == 0 {
            return Err(err(
                i,
                "capacity.cpu_cores",
                "capacity must be greater than zero".into(),
            ));
        }
        if t.capacity.memory_gb == 0 {
            return Err(err(
                i,
                "capacity.memory_gb",
                "capacity must be greater than zero".into(),
            ));
        }
        if t.capacity.storage_gb == 0 {
            return Err(err(
                i,
                "capacity.storage_gb",
                "capacity must be greater than zero".into(),
            ));
        }
        if t.max_nodes == 0 {
            return Err(err(
                i,
                "max_nodes",
                "max_nodes must be greater than zero".into(),
            ));
        }
        if t.port_range.start > t.port_range.end {
            return Err(err(
                i,
                "port_range.start",
                format!(
                    "port_range.start ({}) is greater than port_range.end ({})",
                    t.port_range.start, t.port_range.end
                ),
            ));
        }
        if t.regions.is_empty() {
            return Err(err(i, "regions", "at least one region is required".into()));
        }
        if !(t.cost_per_hour_usd.is_finite() && t.cost_per_hour_usd >= 0.0) {
            return Err(err(
                i,
                "cost_per_hour_usd",
                "must be a non-negative number".into(),
            ));
        }
        if !(t.drain_timeout_hours.is_finite() && t.drain_timeout_hours >= 0.0) {
            return Err(err(
                i,
                "drain_timeout_hours",
                "must be a non-negative number".into(),
            ));
        }
    }
    Ok(())
}

/// Best-effort line of `templates[index].field` in the source text (1-based).
///
/// Finds the `index`-th list item under `templates:` and then the last key of the dotted field
/// path inside it; falls back to the item's first line.
pub fn locate_field(text: &str, index: usize, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with("templates:"))?;
    let mut item_indent: Option<usize> = None;
    let mut items: Vec<usize> = Vec::new();
    for (n, l) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = l.len() - trimmed.len();
        if indent == 0 && !trimmed.starts_with('-') {
            break;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            match item_indent {
                None => {
                    item_indent = Some(indent);
                    items.push(n);
                }
                Some(ii) if ii == indent => items.push(n),
                _ => {}
            }
        }
    }
    let first = *items.get(index)?;
    let end = items.get(index + 1).copied().unwrap_or(lines.len());
    let mut from = first;
    for key in field.split('.') {
        let needle = format!("{key}:");
        let found = (from..end).find(|&n| {
            let t = lines[n].trim_start().trim_start_matches("- ");
            t.starts_with(&needle)
        });
        match found {
            Some(n) => from = n,
            None => return Some(first + 1),
        }
    }
    Some(from + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../config/worker-templates.yaml");

    #[test]
    fn seed_file_loads_unchanged() {
        let ts = parse_templates(SEED, "config/worker-templates.yaml").unwrap();
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[0].name, "personal-standard");
        assert_eq!(ts[0].license_type, LicenseType::Personal);
        assert_eq!(ts[0].max_nodes, 20);
        assert_eq!(ts[1].max_nodes, 500);
        assert_eq!(ts[1].capacity.storage_gb, 1000);
        assert_eq!(
            ts[0].port_range,
            PortRange {
                start: 2000,
                end: 9999
            }
        );
        assert_eq!(ts[0].startup_minutes, DEFAULT_STARTUP_MINUTES);
        assert!(ts[0].enabled);
        assert_eq!(
            ts[1].tags.get("LicenseType").map(String::as_str),
            Some("enterprise")
        );
    }

    #[test]
    fn duplicate_name_is_rejected_with_line() {
        let bad = SEED.replace("enterprise-large", "personal-standard");
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("templates[1].name"));
        assert_eq!(e.line, Some(26));
        assert!(e.to_string().contains("duplicate template name"), "{e}");
        assert!(e.to_string().starts_with("t.yaml:26"), "{e}");
    }

    #[test]
    fn port_range_inverted_is_rejected() {
        let bad = SEED.replacen("start: 2000", "start: 12000", 1);
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("templates[0].port_range.start"));
        assert_eq!(e.line, Some(19));
        assert!(e.message.contains("12000"));
    }

    #[test]
    fn zero_capacity_is_rejected() {
        let bad = SEED.replacen("cpu_cores: 48", "cpu_cores: 0", 1);
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("templates[0].capacity.cpu_cores"));
        assert_eq!(e.line, Some(9));
    }

    #[test]
    fn unknown_license_names_line_and_field() {
        let bad = SEED.replacen("\"PERSONAL\"", "\"GOLD\"", 1);
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("templates[0].license_type"));
        assert_eq!(e.line, Some(12));
        assert!(
            e.message.contains("GOLD") && e.message.contains("PERSONAL"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let bad = SEED.replacen("memory_gb: 192", "memory_gb: lots", 1);
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("templates[0].capacity.memory_gb"));
        assert_eq!(e.line, Some(10));
    }

    #[test]
    fn unknown_field_is_rejected() {
        let bad = SEED.replacen("max_nodes: 20", "max_nodes: 20\n    max_nodez: 3", 1);
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert!(e.message.contains("max_nodez"), "{e}");
        assert!(e.line.is_some());
    }
}
