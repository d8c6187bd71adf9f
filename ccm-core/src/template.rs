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

/// Largest `drain_timeout_hours` accepted (ten years): a draining worker is force-stopped at
/// the latest this long after its drain began.
pub const MAX_DRAIN_TIMEOUT_HOURS: f64 = 87_600.0;

/// The drain timeout of `hours` as a duration, without overflow: a negative or non-finite
/// value (a record the loader would refuse) is the default 4 h, a value above
/// [`MAX_DRAIN_TIMEOUT_HOURS`] is that cap.
///
/// ```
/// use ccm_core::template::drain_timeout;
/// assert_eq!(drain_timeout(1.5), chrono::Duration::minutes(90));
/// assert_eq!(drain_timeout(1e13), chrono::Duration::hours(87_600));
/// assert_eq!(drain_timeout(f64::NAN), chrono::Duration::hours(4));
/// ```
pub fn drain_timeout(hours: f64) -> chrono::Duration {
    let h = if hours.is_finite() && hours >= 0.0 {
        hours.min(MAX_DRAIN_TIMEOUT_HOURS)
    } else {
        default_drain_timeout()
    };
    // At most 87,600 h = 3.2e11 ms: far inside i64 and chrono's range.
    chrono::Duration::milliseconds((h * 3_600_000.0).round() as i64)
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

/// Largest YAML text accepted (templates, scenario, lab YAML): 8 MiB.
pub const MAX_YAML_BYTES: usize = 8 * 1024 * 1024;
/// Most values (scalars, sequences, mappings) a YAML text may expand to once its aliases are
/// followed: an alias re-reads its anchor's whole content, so a small file can otherwise
/// expand to gigabytes ("billion laughs").
pub const MAX_YAML_VALUES: u64 = 500_000;

/// Checks the limits every YAML input is held to, before anything is built from it: at most
/// [`MAX_YAML_BYTES`], and at most [`MAX_YAML_VALUES`] values after alias expansion (counted
/// without building them, so the check costs no memory). The error names `file`, the line
/// and the field where the budget ran out.
///
/// ```
/// let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
/// let e = ccm_core::template::check_yaml_limits(bomb, "bomb.yaml").unwrap_err();
/// assert!(e.to_string().starts_with("bomb.yaml:"), "{e}");
/// assert!(e.message.contains("aliases"), "{e}");
/// ```
pub fn check_yaml_limits(text: &str, file: &str) -> Result<(), FileError> {
    check_yaml_limits_with(text, file, MAX_YAML_BYTES, MAX_YAML_VALUES)
}

/// [`check_yaml_limits`] with explicit limits.
pub fn check_yaml_limits_with(
    text: &str,
    file: &str,
    max_bytes: usize,
    max_values: u64,
) -> Result<(), FileError> {
    if text.len() > max_bytes {
        return Err(FileError {
            file: file.to_string(),
            line: None,
            field: None,
            message: format!(
                "the YAML text is {} bytes, more than the limit of {max_bytes}",
                text.len()
            ),
        });
    }
    let budget = std::cell::Cell::new(max_values);
    for doc in serde_norway::Deserializer::from_str(text) {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(doc, &mut track);
        if let Err(e) =
            serde::de::DeserializeSeed::deserialize(budget::Count(&budget, max_values), de)
        {
            let path = track.path().to_string();
            let mut err = yaml_error(e, path, file);
            if err.message.contains("repetition limit exceeded") {
                // serde_norway's own cap on alias replays struck first.
                err.message = format!(
                    "the YAML's aliases expand it beyond the parser's repetition limit (at most {max_values} values; write the reused content out or split the file)"
                );
            }
            if err.line.is_none() {
                // The line of the field's first key, when the parser gave none.
                let key = err
                    .field
                    .as_deref()
                    .map(|f| f.split(['[', '.']).next().unwrap_or(f).to_string());
                err.line = key.and_then(|k| {
                    let needle = format!("{k}:");
                    text.lines()
                        .position(|l| l.trim_start().starts_with(&needle))
                        .map(|n| n + 1)
                });
            }
            return Err(err);
        }
    }
    Ok(())
}

mod budget {
    //! A visitor that walks a YAML document (following aliases, as deserializing does) and
    //! only counts the values, failing once the budget is spent.
    use serde::de::{self, DeserializeSeed, Visitor};
    use std::cell::Cell;
    use std::fmt;

    #[derive(Clone, Copy)]
    pub(super) struct Count<'a>(pub &'a Cell<u64>, pub u64);

    impl Count<'_> {
        fn tick<E: de::Error>(&self) -> Result<(), E> {
            match self.0.get().checked_sub(1) {
                Some(left) => {
                    self.0.set(left);
                    Ok(())
                }
                None => Err(E::custom(format_args!(
                    "the YAML expands to more than {} values once its aliases are followed (aliases reuse anchored content; write it out or split the file)",
                    self.1
                ))),
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    macro_rules! scalar {
        ($($name:ident: $t:ty),*) => {
            $(fn $name<E: de::Error>(self, _v: $t) -> Result<(), E> { self.tick() })*
        };
    }

    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any YAML value")
        }
        scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128,
            visit_u128: u128, visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.deserialize(d)
        }
        fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.deserialize(d)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            self.tick()?;
            while a.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            self.tick()?;
            while a.next_key_seed(self)?.is_some() {
                a.next_value_seed(self)?;
            }
            Ok(())
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, a: A) -> Result<(), A::Error> {
            // A tagged value (`!tag value`): the tag and its value.
            use de::VariantAccess;
            self.tick()?;
            let ((), v) = a.variant_seed(self)?;
            v.newtype_variant_seed(self)
        }
    }
}

fn yaml_error(inner: serde_norway::Error, path: String, file: &str) -> FileError {
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
}

/// Deserializes YAML text with serde_norway, turning a failure into a [`FileError`] that names
/// `file`, the line and the field path (via serde_path_to_error). The text is first held to
/// [`check_yaml_limits`] (size, alias expansion).
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, FileError> {
    check_yaml_limits(text, file)?;
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        yaml_error(e.into_inner(), path, file)
    })
}

/// Reads a UTF-8 text file of at most `max_bytes` without reading more than that (an error
/// names the file and the limit).
pub fn read_capped(path: &Path, max_bytes: usize) -> Result<String, FileError> {
    use std::io::Read;
    let err = |message: String| FileError {
        file: path.display().to_string(),
        line: None,
        field: None,
        message,
    };
    let f = std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut buf = Vec::new();
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    f.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if buf.len() > max_bytes {
        return Err(err(format!(
            "the file is larger than the limit of {max_bytes} bytes"
        )));
    }
    String::from_utf8(buf).map_err(|e| err(format!("not UTF-8 text: {e}")))
}

/// Reads and validates a templates file.
pub fn load_templates_file(path: &Path) -> Result<Vec<WorkerTemplate>, TemplateError> {
    let text = read_capped(path, MAX_YAML_BYTES)?;
    parse_templates(&text, &path.display().to_string())
}

/// The seed worker templates of the original design, as shipped in
/// `config/worker-templates.yaml` (the one place the file is compiled in).
pub const SEED_TEMPLATES_YAML: &str = include_str!("../../config/worker-templates.yaml");

/// The seed templates ([`SEED_TEMPLATES_YAML`]) parsed and validated.
///
/// ```
/// let seed = ccm_core::template::seed_templates().unwrap();
/// assert_eq!(seed[0].name, "personal-standard");
/// ```
pub fn seed_templates() -> Result<Vec<WorkerTemplate>, TemplateError> {
    parse_templates(SEED_TEMPLATES_YAML, "config/worker-templates.yaml")
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
        if !(t.drain_timeout_hours.is_finite()
            && (0.0..=MAX_DRAIN_TIMEOUT_HOURS).contains(&t.drain_timeout_hours))
        {
            return Err(err(
                i,
                "drain_timeout_hours",
                format!(
                    "must be a number of hours from 0 to {MAX_DRAIN_TIMEOUT_HOURS}, got {}",
                    t.drain_timeout_hours
                ),
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

    const SEED: &str = SEED_TEMPLATES_YAML;

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
    fn huge_drain_timeout_is_rejected_with_line() {
        let bad = SEED.replacen("drain_timeout_hours: 4", "drain_timeout_hours: 1e13", 1);
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("templates[0].drain_timeout_hours"));
        assert_eq!(e.line, Some(21), "{e}");
        assert!(e.message.contains("87600"), "{e}");
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        // 10 anchors each reusing the previous one 10 times: 10^10 values once expanded.
        let mut y = String::from("templates: []\nx0: &a0 [v, v, v, v, v, v, v, v, v, v]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            y.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
        }
        let e = parse_templates(&y, "bomb.yaml").unwrap_err();
        assert!(e.message.contains("aliases"), "{e}");
        assert!(e.line.is_some(), "{e}");
        assert!(
            e.field.as_deref().is_some_and(|f| f.starts_with('x')),
            "{e}"
        );
        // A few aliases are fine (and then the unknown keys are the error).
        let small = "templates: []\nx: &a [1, 2]\ny: *a\n";
        let e = parse_templates(small, "ok.yaml").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn size_limit_names_the_file() {
        let e = check_yaml_limits_with("a: 1\nb: 2\n", "big.yaml", 4, 100).unwrap_err();
        assert_eq!(e.file, "big.yaml");
        assert!(e.message.contains("more than the limit of 4"), "{e}");
        let dir = std::env::temp_dir().join(format!("ccm-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.yaml");
        std::fs::write(&p, "x".repeat(100)).unwrap();
        let e = read_capped(&p, 10).unwrap_err();
        assert!(e.message.contains("larger than the limit of 10"), "{e}");
        assert_eq!(read_capped(&p, 100).unwrap().len(), 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_field_is_rejected() {
        let bad = SEED.replacen("max_nodes: 20", "max_nodes: 20\n    max_nodez: 3", 1);
        let e = parse_templates(&bad, "t.yaml").unwrap_err();
        assert!(e.message.contains("max_nodez"), "{e}");
        assert!(e.line.is_some());
    }
}
