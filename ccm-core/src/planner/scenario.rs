//! Scenario files: a fleet, templates, lablet definitions and booked sessions, for `ccm plan`
//! and the demo (see `config/scenarios/README.md`).
//!
//! ```yaml
//! now: 2026-05-04T06:00:00Z          # the instant the plan is made at (RFC 3339)
//! policy:                            # optional; every field optional (see Policy)
//!   horizon_hours: 24
//!   lead_minutes: 35
//! templates_file: ../worker-templates.yaml   # relative to this file …
//! templates: []                      # … or templates inline (same schema), not both
//! definitions:
//!   - id: ccna-routing               # name defaults to id, version to 1.0.0
//!     resource_requirements: {cpu_cores: 4, memory_gb: 16, storage_gb: 20}
//!     node_count: 5
//!     license_affinity: [PERSONAL]    # optional (empty = any)
//!     ami_requirements: {cml_version_min: "2.9"}   # optional
//!     ports: 5                        # shorthand for port_template p1..p5 (or port_template: […])
//!     max_duration_minutes: 120       # default session length
//! workers:                            # optional: the fleet as it is at `now`
//!   - id: w-1
//!     template: enterprise-large
//!     region: us-east-1               # default: the template's first region
//!     state: RUNNING                  # default RUNNING
//! sessions:                           # optional: explicit bookings
//!   - id: s-1
//!     definition: ccna-routing
//!     start: 2026-05-04T08:00:00Z
//!     duration_minutes: 120           # or end: …; default the definition's max_duration_minutes
//! waves:                              # optional: generated bookings, so files stay small
//!   - name: morning
//!     start: 2026-05-04T08:00:00Z
//!     count: 500
//!     mix: {ccna-routing: 3, ccnp-enterprise: 1}   # weights; counts by largest remainder
//! ```
//!
//! Errors name the file, the line and the field.

use super::pack::need_of;
use super::plan::{PlanInput, PlannedSession};
use super::policy::Policy;
use crate::definition::{AmiRequirements, LabletDefinition, PortTemplate, Protocol};
use crate::license::LicenseType;
use crate::placement::filter::{template_ami_name, template_cml_version, Requirements};
use crate::resources::Resources;
use crate::session::{LabletSession, SessionState};
use crate::template::{parse_templates, WorkerTemplate};
use crate::timeslot::{Timeslot, Timestamp};
use crate::version::CmlVersion;
use crate::worker::{Worker, WorkerState};
use chrono::Duration;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A scenario file that could not be loaded: names the file, line and field.
pub type ScenarioError = crate::template::FileError;

fn v100() -> semver::Version {
    semver::Version::new(1, 0, 0)
}
fn running() -> WorkerState {
    WorkerState::Running
}
fn pending() -> SessionState {
    SessionState::Pending
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    now: Timestamp,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    templates_file: Option<String>,
    #[serde(default)]
    templates: Option<Vec<WorkerTemplate>>,
    #[serde(default)]
    definitions: Vec<DefSpec>,
    #[serde(default)]
    workers: Vec<WorkerSpec>,
    #[serde(default)]
    sessions: Vec<SessionSpec>,
    #[serde(default)]
    waves: Vec<WaveSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefSpec {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "v100")]
    version: semver::Version,
    resource_requirements: Resources,
    node_count: u32,
    #[serde(default)]
    license_affinity: Vec<LicenseType>,
    #[serde(default)]
    ami_requirements: AmiRequirements,
    #[serde(default)]
    ports: Option<u32>,
    #[serde(default)]
    port_template: Vec<PortTemplate>,
    #[serde(default)]
    max_duration_minutes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerSpec {
    id: String,
    template: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default = "running")]
    state: WorkerState,
    #[serde(default)]
    cml_version: Option<CmlVersion>,
    #[serde(default)]
    ami_name: Option<String>,
    #[serde(default)]
    node_definitions: Option<BTreeSet<String>>,
    #[serde(default)]
    launched_at: Option<Timestamp>,
    #[serde(default)]
    drain_started_at: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionSpec {
    id: String,
    definition: String,
    start: Timestamp,
    #[serde(default)]
    end: Option<Timestamp>,
    #[serde(default)]
    duration_minutes: Option<u32>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default = "pending")]
    state: SessionState,
    #[serde(default)]
    worker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaveSpec {
    #[serde(default)]
    name: Option<String>,
    start: Timestamp,
    count: u32,
    #[serde(default)]
    duration_minutes: Option<u32>,
    mix: BTreeMap<String, u32>,
    #[serde(default)]
    region: Option<String>,
}

/// A loaded scenario: everything [`crate::planner::plan`] needs, plus the definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file it came from.
    pub file: String,
    /// The instant to plan at.
    pub now: Timestamp,
    /// Planner settings.
    pub policy: Policy,
    /// Worker templates.
    pub templates: Vec<WorkerTemplate>,
    /// Lablet definitions.
    pub definitions: Vec<LabletDefinition>,
    /// The fleet at `now`.
    pub workers: Vec<Worker>,
    /// Every session (explicit and generated), sorted by id.
    pub sessions: Vec<PlannedSession>,
    /// The region each session asked for, by session id (only those that asked).
    pub regions: BTreeMap<String, String>,
}

impl Scenario {
    /// The planner input (no previous plan).
    pub fn input(&self) -> PlanInput {
        PlanInput {
            now: self.now,
            sessions: self.sessions.clone(),
            workers: self.workers.clone(),
            templates: self.templates.clone(),
            previous: Vec::new(),
        }
    }

    /// The sessions as domain [`LabletSession`]s (PENDING ones booked at `now`), e.g. to drive
    /// the real loops.
    pub fn lablet_sessions(&self) -> Vec<LabletSession> {
        let versions: BTreeMap<&str, String> = self
            .definitions
            .iter()
            .map(|d| (d.id.as_str(), d.version.to_string()))
            .collect();
        self.sessions
            .iter()
            .map(|s| {
                let mut l = LabletSession::new(
                    s.id.clone(),
                    s.definition_id.clone(),
                    versions
                        .get(s.definition_id.as_str())
                        .cloned()
                        .unwrap_or_default(),
                    "scenario",
                    Some(s.slot),
                    self.now,
                );
                l.state = s.state;
                l.worker_id.clone_from(&s.worker_id);
                l.region = self.regions.get(&s.id).cloned();
                l
            })
            .collect()
    }
}

/// Reads a scenario file (a `templates_file` is resolved relative to it).
pub fn load_scenario(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.display().to_string(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    parse_scenario(&text, &path.display().to_string(), path.parent())
}

/// Best-effort 1-based line of a field path like `sessions[3].definition` or `policy.lead_minutes`.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0usize;
    let mut end = lines.len();
    let mut min_indent: Option<usize> = None;
    let mut found = None;
    for part in path.split('.') {
        let (key, index) = match part.find('[') {
            Some(i) => (
                &part[..i],
                part[i + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (part, None),
        };
        let needle = format!("{key}:");
        let hit = (from..end).find(|&n| {
            let l = lines[n];
            let t = l.trim_start().trim_start_matches("- ");
            let indent = l.len() - l.trim_start().len();
            t.starts_with(&needle) && min_indent.is_none_or(|m| indent >= m)
        })?;
        found = Some(hit);
        let key_indent = lines[hit].len() - lines[hit].trim_start().len();
        // The block of this key ends at the next line with indent <= key indent.
        let block_end = (hit + 1..end)
            .find(|&n| {
                let t = lines[n].trim_start();
                let indent = lines[n].len() - t.len();
                let is_sibling_item = t.starts_with("- ") && indent == key_indent;
                !t.is_empty() && !t.starts_with('#') && indent <= key_indent && !is_sibling_item
            })
            .unwrap_or(end);
        from = hit + 1;
        end = block_end;
        min_indent = Some(key_indent + 1);
        if let Some(idx) = index {
            let mut items = Vec::new();
            let mut item_indent = None;
            for (n, line) in lines.iter().enumerate().take(end).skip(from) {
                let t = line.trim_start();
                if t.starts_with("- ") || t == "-" {
                    let ind = line.len() - t.len();
                    match item_indent {
                        None => {
                            item_indent = Some(ind);
                            items.push(n);
                        }
                        Some(ii) if ii == ind => items.push(n),
                        _ => {}
                    }
                }
            }
            let first = *items.get(idx)?;
            found = Some(first);
            end = items.get(idx + 1).copied().unwrap_or(end);
            from = first;
            min_indent = item_indent;
        }
    }
    found.map(|n| n + 1)
}

/// Parses a scenario from YAML text; `file` names it in errors; `base` resolves `templates_file`.
pub fn parse_scenario(
    text: &str,
    file: &str,
    base: Option<&Path>,
) -> Result<Scenario, ScenarioError> {
    let f: File = crate::template::from_yaml_str(text, file)?;
    let err = |field: String, message: String| ScenarioError {
        file: file.to_string(),
        line: locate(text, &field),
        field: Some(field),
        message,
    };

    // Templates.
    let templates = match (&f.templates_file, &f.templates) {
        (Some(_), Some(_)) => {
            return Err(err(
                "templates".into(),
                "give either templates_file or templates, not both".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "now".into(),
                "missing templates: add templates_file: PATH or templates: [...]".into(),
            ))
        }
        (Some(p), None) => {
            let path = base.map_or_else(|| Path::new(p).to_path_buf(), |b| b.join(p));
            let t = std::fs::read_to_string(&path).map_err(|e| {
                err(
                    "templates_file".into(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            parse_templates(&t, &path.display().to_string()).map_err(|e| ScenarioError {
                file: e.file,
                line: e.line,
                field: e.field,
                message: e.message,
            })?
        }
        (None, Some(inline)) => {
            #[derive(serde::Serialize)]
            struct Wrap<'a> {
                templates: &'a [WorkerTemplate],
            }
            let yaml = serde_norway::to_string(&Wrap { templates: inline })
                .map_err(|e| err("templates".into(), e.to_string()))?;
            parse_templates(&yaml, file).map_err(|e| {
                let field = e.field.clone().unwrap_or_else(|| "templates".into());
                err(field, e.message)
            })?
        }
    };
    let tpl_by_name: BTreeMap<&str, &WorkerTemplate> =
        templates.iter().map(|t| (t.name.as_str(), t)).collect();

    // Definitions.
    let mut definitions = Vec::new();
    let mut defs: BTreeMap<String, (LabletDefinition, u32)> = BTreeMap::new();
    for (i, d) in f.definitions.iter().enumerate() {
        if defs.contains_key(&d.id) {
            return Err(err(
                format!("definitions[{i}].id"),
                format!("duplicate definition id {:?}", d.id),
            ));
        }
        if d.ports.is_some() && !d.port_template.is_empty() {
            return Err(err(
                format!("definitions[{i}].ports"),
                "give either ports (a count) or port_template, not both".into(),
            ));
        }
        let port_template = match d.ports {
            Some(n) => (1..=n)
                .map(|k| PortTemplate {
                    name: format!("p{k}"),
                    protocol: Protocol::Tcp,
                    description: String::new(),
                })
                .collect(),
            None => d.port_template.clone(),
        };
        let def = LabletDefinition {
            id: d.id.clone(),
            name: d.name.clone().unwrap_or_else(|| d.id.clone()),
            version: d.version.clone(),
            lab_artifact_uri: String::new(),
            lab_yaml_hash: String::new(),
            resource_requirements: d.resource_requirements,
            node_count: d.node_count,
            license_affinity: d.license_affinity.clone(),
            ami_requirements: d.ami_requirements.clone(),
            port_template,
            max_duration_minutes: d.max_duration_minutes,
            created_at: None,
            created_by: None,
        };
        def.validate()
            .map_err(|e| err(format!("definitions[{i}]"), e.to_string()))?;
        definitions.push(def.clone());
        defs.insert(d.id.clone(), (def, d.max_duration_minutes));
    }
    let all_node_defs: BTreeSet<String> = definitions
        .iter()
        .flat_map(|d| d.ami_requirements.node_definitions_required.iter().cloned())
        .collect();

    // Workers.
    let mut workers = Vec::new();
    let mut worker_ids = BTreeSet::new();
    for (i, w) in f.workers.iter().enumerate() {
        let Some(t) = tpl_by_name.get(w.template.as_str()) else {
            return Err(err(
                format!("workers[{i}].template"),
                format!(
                    "unknown template {:?} (known: {})",
                    w.template,
                    templates
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if !worker_ids.insert(w.id.clone()) {
            return Err(err(
                format!("workers[{i}].id"),
                format!("duplicate worker id {:?}", w.id),
            ));
        }
        let region = w
            .region
            .clone()
            .unwrap_or_else(|| t.regions.first().cloned().unwrap_or_default());
        let mut worker = Worker::from_template(
            w.id.clone(),
            t,
            region,
            w.state,
            w.cml_version
                .clone()
                .unwrap_or_else(|| template_cml_version(t)),
            w.ami_name.clone().unwrap_or_else(|| template_ami_name(t)),
        );
        worker.node_definitions = w
            .node_definitions
            .clone()
            .unwrap_or_else(|| all_node_defs.clone());
        worker.launched_at = w.launched_at;
        worker.drain_started_at = w.drain_started_at;
        workers.push(worker);
    }

    // Sessions.
    let mut sessions = Vec::new();
    let mut regions = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let make = |id: String,
                def: &LabletDefinition,
                start: Timestamp,
                end: Timestamp,
                region: Option<&str>,
                state: SessionState,
                worker: Option<String>| PlannedSession {
        id,
        definition_id: def.id.clone(),
        requirements: Requirements::of(def, region),
        slot: Timeslot { start, end },
        state,
        worker_id: worker,
    };
    for (i, s) in f.sessions.iter().enumerate() {
        let Some((def, max_d)) = defs.get(&s.definition) else {
            return Err(err(
                format!("sessions[{i}].definition"),
                format!("unknown definition {:?}", s.definition),
            ));
        };
        let end =
            match (s.end, s.duration_minutes) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        format!("sessions[{i}].end"),
                        "give either end or duration_minutes, not both".into(),
                    ))
                }
                (Some(e), None) => e,
                (None, Some(m)) => s.start + Duration::minutes(i64::from(m)),
                (None, None) if *max_d > 0 => s.start + Duration::minutes(i64::from(*max_d)),
                (None, None) => return Err(err(
                    format!("sessions[{i}]"),
                    "no end: give end, duration_minutes, or the definition's max_duration_minutes"
                        .into(),
                )),
            };
        if end <= s.start {
            return Err(err(
                format!("sessions[{i}].end"),
                format!("slot end {end} is not after its start {}", s.start),
            ));
        }
        if let Some(w) = &s.worker {
            if !worker_ids.contains(w) {
                return Err(err(
                    format!("sessions[{i}].worker"),
                    format!("unknown worker {w:?}"),
                ));
            }
        }
        if !ids.insert(s.id.clone()) {
            return Err(err(
                format!("sessions[{i}].id"),
                format!("duplicate session id {:?}", s.id),
            ));
        }
        if let Some(r) = &s.region {
            regions.insert(s.id.clone(), r.clone());
        }
        sessions.push(make(
            s.id.clone(),
            def,
            s.start,
            end,
            s.region.as_deref(),
            s.state,
            s.worker.clone(),
        ));
    }
    for (wi, w) in f.waves.iter().enumerate() {
        let total: u64 = w.mix.values().map(|&x| u64::from(x)).sum();
        if w.count > 0 && total == 0 {
            return Err(err(
                format!("waves[{wi}].mix"),
                "the mix needs at least one definition with a weight above zero".into(),
            ));
        }
        for name in w.mix.keys() {
            if !defs.contains_key(name) {
                return Err(err(
                    format!("waves[{wi}].mix"),
                    format!("unknown definition {name:?} in the mix"),
                ));
            }
        }
        let wave = w.name.clone().unwrap_or_else(|| format!("wave{wi}"));
        for (name, n) in split_counts(w.count, &w.mix) {
            let Some((def, max_d)) = defs.get(name) else {
                continue;
            };
            let minutes = w.duration_minutes.unwrap_or(*max_d);
            if minutes == 0 {
                return Err(err(
                    format!("waves[{wi}].duration_minutes"),
                    format!("no duration: set duration_minutes or {name}'s max_duration_minutes"),
                ));
            }
            for k in 0..n {
                let id = format!("{wave}-{name}-{k:04}");
                if !ids.insert(id.clone()) {
                    return Err(err(
                        format!("waves[{wi}].name"),
                        format!("generated session id {id:?} is not unique"),
                    ));
                }
                if let Some(r) = &w.region {
                    regions.insert(id.clone(), r.clone());
                }
                sessions.push(make(
                    id,
                    def,
                    w.start,
                    w.start + Duration::minutes(i64::from(minutes)),
                    w.region.as_deref(),
                    SessionState::Pending,
                    None,
                ));
            }
        }
    }
    sessions.sort_by(|a, b| a.id.cmp(&b.id));
    // Sanity: every requirement is representable (ports etc.).
    for s in &sessions {
        let _ = need_of(&s.requirements);
    }
    Ok(Scenario {
        file: file.to_string(),
        now: f.now,
        policy: f.policy,
        templates,
        definitions,
        workers,
        sessions,
        regions,
    })
}

/// Splits `count` by the weights of `mix` (largest remainder, ties by name).
fn split_counts(count: u32, mix: &BTreeMap<String, u32>) -> Vec<(&str, u32)> {
    let total: u64 = mix.values().map(|&x| u64::from(x)).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut out: Vec<(&str, u32, u64)> = mix
        .iter()
        .map(|(k, &w)| {
            let exact = u64::from(count) * u64::from(w);
            (k.as_str(), (exact / total) as u32, exact % total)
        })
        .collect();
    let assigned: u32 = out.iter().map(|x| x.1).sum();
    let mut by_rem: Vec<usize> = (0..out.len()).collect();
    by_rem.sort_by(|&a, &b| out[b].2.cmp(&out[a].2).then(a.cmp(&b)));
    for &i in by_rem.iter().take((count - assigned) as usize) {
        out[i].1 += 1;
    }
    out.into_iter().map(|(k, n, _)| (k, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = include_str!("../../../config/scenarios/small.yaml");

    #[test]
    fn split_counts_adds_up_and_is_fair() {
        let mix: BTreeMap<String, u32> = [
            ("a".to_string(), 1),
            ("b".to_string(), 1),
            ("c".to_string(), 1),
        ]
        .into_iter()
        .collect();
        let c = split_counts(10, &mix);
        assert_eq!(c.iter().map(|x| x.1).sum::<u32>(), 10);
        assert_eq!(c, vec![("a", 4), ("b", 3), ("c", 3)]);
    }

    #[test]
    fn small_scenario_loads() {
        let s = parse_scenario(SMALL, "small.yaml", None).unwrap();
        assert!(!s.sessions.is_empty());
        assert!(!s.templates.is_empty());
        let ids: BTreeSet<&str> = s.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), s.sessions.len());
    }

    #[test]
    fn unknown_definition_names_line_and_field() {
        let bad = SMALL.replacen("definition: ccna-routing", "definition: nope", 1);
        let e = parse_scenario(&bad, "small.yaml", None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sessions[0].definition"));
        let line = bad
            .lines()
            .position(|l| l.contains("definition: nope"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.to_string().contains("unknown definition \"nope\""), "{e}");
    }

    #[test]
    fn type_error_names_line_and_field() {
        let bad = SMALL.replacen("node_count: 5", "node_count: five", 1);
        let e = parse_scenario(&bad, "small.yaml", None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("definitions[0].node_count"));
        let line = bad
            .lines()
            .position(|l| l.contains("node_count: five"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(line), "{e}");
    }

    #[test]
    fn unknown_mix_entry_is_rejected() {
        let bad = SMALL.replacen("ccna-routing: 3", "ccna-routin: 3", 1);
        let e = parse_scenario(&bad, "small.yaml", None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("waves[0].mix"));
        assert!(e.message.contains("ccna-routin"), "{e}");
        assert!(e.line.is_some());
    }

    #[test]
    fn inline_template_errors_point_into_the_scenario() {
        let bad = SMALL.replacen("cpu_cores: 48", "cpu_cores: 0", 1);
        let e = parse_scenario(&bad, "small.yaml", None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("templates[0].capacity.cpu_cores"));
        let line = bad
            .lines()
            .position(|l| l.contains("cpu_cores: 0"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(line), "{e}");
    }
}
