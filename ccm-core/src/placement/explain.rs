//! Why a session could not be placed: per-filter counts, the first failing reason per worker,
//! and a hint (a template that would fit, or why none does).

use super::filter::{check, check_template, FilterKind, Rejection, Requirements};
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use crate::worker::Worker;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How many per-worker reasons [`Unschedulable`]'s `Display` prints before summarising.
pub const DISPLAY_REASONS: usize = 10;

/// One worker and the first filter it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRejection {
    /// Worker id.
    pub worker: String,
    /// The first failing filter, with numbers.
    pub reason: Rejection,
}

/// One template and why a fresh worker of it would not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRejection {
    /// Template name.
    pub template: String,
    /// The first failing filter for an empty worker of it.
    pub reason: Rejection,
}

/// What would make the session placeable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hint {
    /// A new worker of this template in this region would take the session.
    Template {
        /// Template name.
        template: String,
        /// Region to launch it in.
        region: String,
    },
    /// No enabled template would take it.
    NoTemplate {
        /// One-line reason for people, e.g. `no template has ≥ 64 cores (largest: 48)`.
        why: String,
        /// Each enabled template's first failing filter.
        templates: Vec<TemplateRejection>,
    },
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hint::Template { template, region } => {
                write!(f, "a new {template} worker in {region} would fit")
            }
            Hint::NoTemplate { why, .. } => f.write_str(why),
        }
    }
}

/// No RUNNING worker can take the session, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unschedulable {
    /// Workers looked at (every worker of the fleet, RUNNING or not).
    pub workers: usize,
    /// How many workers each filter rejected (first failing filter only; all filters listed).
    pub rejected_by: BTreeMap<FilterKind, usize>,
    /// The first failing reason of every worker, by worker id.
    pub reasons: Vec<WorkerRejection>,
    /// What would fix it, when templates were given (boxed to keep `Result`s small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Box<Hint>>,
    /// The earliest time the session would fit on the fleet as planned (filled by the planner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_slot: Option<Timestamp>,
}

impl Unschedulable {
    /// Explains why no worker of `workers` takes `req` (every filter on every worker, reasons
    /// ordered by worker id). Workers that would fit are not listed.
    pub fn explain(workers: &[Worker], req: &Requirements) -> Self {
        let mut rejected_by: BTreeMap<FilterKind, usize> =
            FilterKind::ALL.iter().map(|k| (*k, 0)).collect();
        let mut reasons: Vec<WorkerRejection> = workers
            .iter()
            .filter_map(|w| {
                check(w, req).err().map(|reason| WorkerRejection {
                    worker: w.id.clone(),
                    reason,
                })
            })
            .collect();
        reasons.sort_by(|a, b| a.worker.cmp(&b.worker));
        for r in &reasons {
            *rejected_by.entry(r.reason.kind()).or_insert(0) += 1;
        }
        Unschedulable {
            workers: workers.len(),
            rejected_by,
            reasons,
            hint: None,
            earliest_slot: None,
        }
    }

    /// Adds the template hint for `req` (see [`template_hint`]).
    pub fn with_hint(mut self, req: &Requirements, templates: &[WorkerTemplate]) -> Self {
        self.hint = Some(Box::new(template_hint(req, templates)));
        self
    }

    /// How many workers `kind` rejected.
    pub fn rejected(&self, kind: FilterKind) -> usize {
        self.rejected_by.get(&kind).copied().unwrap_or(0)
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no worker can take the session ({} worker{} considered)",
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )?;
        let counts: Vec<String> = self
            .rejected_by
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !counts.is_empty() {
            write!(f, "\n  rejected by: {}", counts.join(", "))?;
        }
        for r in self.reasons.iter().take(DISPLAY_REASONS) {
            write!(f, "\n  {}: {}", r.worker, r.reason)?;
        }
        if self.reasons.len() > DISPLAY_REASONS {
            write!(f, "\n  … and {} more", self.reasons.len() - DISPLAY_REASONS)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        if let Some(t) = &self.earliest_slot {
            write!(f, "\n  earliest slot that would work: {}", t.to_rfc3339())?;
        }
        Ok(())
    }
}

impl std::error::Error for Unschedulable {}

/// A template whose fresh worker would take `req` (the first enabled one in file order, in
/// the session's region or else the template's first region that fits), or why none would.
///
/// ```
/// use ccm_core::placement::explain::{template_hint, Hint};
/// use ccm_core::placement::filter::Requirements;
/// use ccm_core::resources::Load;
/// let templates = ccm_core::template::seed_templates().unwrap();
/// let mut req = Requirements { load: Load { cpu_cores: 64, memory_gb: 8, storage_gb: 10, nodes: 3 },
///     license_affinity: vec![], cml_versions: Default::default(), node_definitions: vec![],
///     ami: None, ports: vec![], region: None };
/// assert_eq!(template_hint(&req, &templates).to_string(), "no template has ≥ 64 cores (largest: 48)");
/// req.load.cpu_cores = 4;
/// req.load.nodes = 30; // more than PERSONAL's 20
/// assert_eq!(template_hint(&req, &templates),
///     Hint::Template { template: "enterprise-large".into(), region: "us-east-1".into() });
/// ```
pub fn template_hint(req: &Requirements, templates: &[WorkerTemplate]) -> Hint {
    let enabled: Vec<&WorkerTemplate> = templates.iter().filter(|t| t.enabled).collect();
    let mut rejections = Vec::new();
    for t in &enabled {
        let regions: Vec<&str> = match &req.region {
            Some(r) => vec![r.as_str()],
            None => t.regions.iter().map(String::as_str).collect(),
        };
        let mut first_err = None;
        for region in &regions {
            match check_template(t, region, req) {
                Ok(()) => {
                    return Hint::Template {
                        template: t.name.clone(),
                        region: (*region).to_string(),
                    }
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        let reason = first_err.unwrap_or_else(|| Rejection::Region {
            wanted: "any".to_string(),
            actual: String::new(),
        });
        rejections.push(TemplateRejection {
            template: t.name.clone(),
            reason,
        });
    }
    let why = no_template_why(req, &enabled, &rejections);
    Hint::NoTemplate {
        why,
        templates: rejections,
    }
}

fn no_template_why(
    req: &Requirements,
    enabled: &[&WorkerTemplate],
    rejections: &[TemplateRejection],
) -> String {
    let Some(first) = rejections.first() else {
        return "no enabled template".to_string();
    };
    let kind = first.reason.kind();
    if rejections.iter().any(|r| r.reason.kind() != kind) {
        let each: Vec<String> = rejections
            .iter()
            .map(|r| format!("{} ({})", r.template, r.reason))
            .collect();
        return format!("no template fits: {}", each.join("; "));
    }
    let largest = |f: fn(&WorkerTemplate) -> u32| enabled.iter().map(|t| f(t)).max().unwrap_or(0);
    let need = req.load;
    match kind {
        FilterKind::Cpu => format!(
            "no template has ≥ {} cores (largest: {})",
            need.cpu_cores,
            largest(|t| t.capacity.cpu_cores)
        ),
        FilterKind::Memory => format!(
            "no template has ≥ {} GB memory (largest: {} GB)",
            need.memory_gb,
            largest(|t| t.capacity.memory_gb)
        ),
        FilterKind::Storage => format!(
            "no template has ≥ {} GB storage (largest: {} GB)",
            need.storage_gb,
            largest(|t| t.capacity.storage_gb)
        ),
        FilterKind::Nodes => format!(
            "no template allows ≥ {} CML nodes (largest max_nodes: {})",
            need.nodes,
            largest(|t| t.max_nodes)
        ),
        FilterKind::Ports => format!(
            "no template has ≥ {} ports (largest range: {})",
            req.ports.len(),
            largest(|t| t.port_range.len())
        ),
        FilterKind::Region => match &req.region {
            Some(r) => format!("no template launches in {r}"),
            None => "no template has a region".to_string(),
        },
        FilterKind::License => {
            let w: Vec<&str> = req.license_affinity.iter().map(|l| l.as_str()).collect();
            format!("no template's licence serves {}", w.join("|"))
        }
        FilterKind::CmlVersion => {
            format!("no template's image has CML in {}", req.cml_versions)
        }
        FilterKind::Ami => format!(
            "no template's AMI matches {}",
            req.ami.as_ref().map(|g| g.as_str()).unwrap_or("*")
        ),
        FilterKind::State | FilterKind::NodeDefinitions => {
            format!("no template fits: {}", first.reason)
        }
    }
}
