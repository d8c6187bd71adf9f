//! The placement filters of domain.md §4, each with a named reason carrying numbers.
//!
//! Filters run in a fixed order — state, region, licence, CML version, node definitions, AMI
//! (the *static* filters, equal for workers of one equivalence class), then cpu, memory,
//! storage, CML nodes and ports (the *dynamic* ones). The first failing filter is the reason.

use crate::definition::LabletDefinition;
use crate::glob::Glob;
use crate::license::LicenseType;
use crate::resources::Load;
use crate::template::WorkerTemplate;
use crate::version::{CmlVersion, VersionRange};
use crate::worker::{Worker, WorkerState};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What one session needs from a worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirements {
    /// cpu / memory / storage and CML nodes.
    pub load: Load,
    /// Licences it may run under (empty = any).
    pub license_affinity: Vec<LicenseType>,
    /// CML versions admitted.
    pub cml_versions: VersionRange,
    /// Node definitions that must be installed.
    pub node_definitions: Vec<String>,
    /// AMI glob.
    pub ami: Option<Glob>,
    /// Port names, in allocation order.
    pub ports: Vec<String>,
    /// Region asked for.
    pub region: Option<String>,
}

impl Requirements {
    /// The requirements of a session of `def`, optionally pinned to `region`.
    pub fn of(def: &LabletDefinition, region: Option<&str>) -> Self {
        Requirements {
            load: Load::new(def.resource_requirements, def.node_count),
            license_affinity: def.license_affinity.clone(),
            cml_versions: def.ami_requirements.version_range(),
            node_definitions: def.ami_requirements.node_definitions_required.clone(),
            ami: def.ami_requirements.glob(),
            ports: def.port_names(),
            region: region.map(str::to_string),
        }
    }
}

/// The filters, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    /// Worker must be RUNNING.
    State,
    /// Region asked for.
    Region,
    /// Licence tier.
    License,
    /// CML version range.
    CmlVersion,
    /// Required node definitions.
    NodeDefinitions,
    /// AMI glob.
    Ami,
    /// Free cores.
    Cpu,
    /// Free memory.
    Memory,
    /// Free storage.
    Storage,
    /// Free CML nodes (max_nodes).
    Nodes,
    /// Free host ports.
    Ports,
}

impl FilterKind {
    /// All filters in evaluation order.
    pub const ALL: [FilterKind; 11] = [
        FilterKind::State,
        FilterKind::Region,
        FilterKind::License,
        FilterKind::CmlVersion,
        FilterKind::NodeDefinitions,
        FilterKind::Ami,
        FilterKind::Cpu,
        FilterKind::Memory,
        FilterKind::Storage,
        FilterKind::Nodes,
        FilterKind::Ports,
    ];

    /// Short name used in messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterKind::State => "state",
            FilterKind::Region => "region",
            FilterKind::License => "license",
            FilterKind::CmlVersion => "cml_version",
            FilterKind::NodeDefinitions => "node_definitions",
            FilterKind::Ami => "ami",
            FilterKind::Cpu => "cpu",
            FilterKind::Memory => "memory",
            FilterKind::Storage => "storage",
            FilterKind::Nodes => "nodes",
            FilterKind::Ports => "ports",
        }
    }

    /// True for filters whose outcome depends only on static worker attributes.
    pub fn is_static(self) -> bool {
        self < FilterKind::Cpu
    }
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one worker cannot take a session, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "filter", rename_all = "snake_case")]
pub enum Rejection {
    /// Not RUNNING.
    State {
        /// Its state.
        state: WorkerState,
    },
    /// Wrong region.
    Region {
        /// Asked for.
        wanted: String,
        /// The worker's.
        actual: String,
    },
    /// Licence does not serve the session.
    License {
        /// The worker's licence.
        worker: LicenseType,
        /// The session's affinity.
        wanted: Vec<LicenseType>,
    },
    /// CML version outside the range.
    CmlVersion {
        /// The worker's version.
        version: String,
        /// Range asked for.
        range: String,
    },
    /// Node definitions missing.
    NodeDefinitions {
        /// Missing ones.
        missing: Vec<String>,
    },
    /// AMI name does not match.
    Ami {
        /// The worker's AMI name.
        ami: String,
        /// Pattern asked for.
        pattern: String,
    },
    /// Not enough free cores.
    Cpu {
        /// Needed.
        need: u32,
        /// Free.
        free: u32,
    },
    /// Not enough free memory (GB).
    Memory {
        /// Needed.
        need: u32,
        /// Free.
        free: u32,
    },
    /// Not enough free storage (GB).
    Storage {
        /// Needed.
        need: u32,
        /// Free.
        free: u32,
    },
    /// Too many CML nodes.
    Nodes {
        /// Needed.
        need: u32,
        /// Free.
        free: u32,
        /// The worker's max_nodes.
        max: u32,
    },
    /// Not enough free ports.
    Ports {
        /// Needed.
        need: u32,
        /// Free.
        free: u32,
    },
}

impl Rejection {
    /// The filter that rejected.
    pub fn kind(&self) -> FilterKind {
        match self {
            Rejection::State { .. } => FilterKind::State,
            Rejection::Region { .. } => FilterKind::Region,
            Rejection::License { .. } => FilterKind::License,
            Rejection::CmlVersion { .. } => FilterKind::CmlVersion,
            Rejection::NodeDefinitions { .. } => FilterKind::NodeDefinitions,
            Rejection::Ami { .. } => FilterKind::Ami,
            Rejection::Cpu { .. } => FilterKind::Cpu,
            Rejection::Memory { .. } => FilterKind::Memory,
            Rejection::Storage { .. } => FilterKind::Storage,
            Rejection::Nodes { .. } => FilterKind::Nodes,
            Rejection::Ports { .. } => FilterKind::Ports,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::State { state } => write!(f, "state: {state}, not RUNNING"),
            Rejection::Region { wanted, actual } => {
                write!(f, "region: need {wanted}, worker in {actual}")
            }
            Rejection::License { worker, wanted } => {
                let w: Vec<&str> = wanted.iter().map(|l| l.as_str()).collect();
                write!(f, "license: {worker} does not serve {}", w.join("|"))
            }
            Rejection::CmlVersion { version, range } => {
                write!(f, "cml_version: {version} not in {range}")
            }
            Rejection::NodeDefinitions { missing } => {
                write!(f, "node_definitions: missing {}", missing.join(", "))
            }
            Rejection::Ami { ami, pattern } => write!(f, "ami: {ami} does not match {pattern}"),
            Rejection::Cpu { need, free } => write!(f, "cpu: need {need}, free {free}"),
            Rejection::Memory { need, free } => write!(f, "memory: need {need} GB, free {free} GB"),
            Rejection::Storage { need, free } => {
                write!(f, "storage: need {need} GB, free {free} GB")
            }
            Rejection::Nodes { need, free, max } => {
                write!(f, "nodes: need {need}, free {free} of max_nodes {max}")
            }
            Rejection::Ports { need, free } => write!(f, "ports: need {need}, free {free}"),
        }
    }
}

/// The static attributes of a worker that the static filters look at.
#[derive(Debug, Clone, Copy)]
pub struct StaticView<'a> {
    /// Region.
    pub region: &'a str,
    /// Licence.
    pub license: LicenseType,
    /// CML version.
    pub cml_version: &'a CmlVersion,
    /// Installed node definitions.
    pub node_definitions: &'a std::collections::BTreeSet<String>,
    /// AMI name.
    pub ami_name: &'a str,
}

impl<'a> StaticView<'a> {
    /// The static view of a worker.
    pub fn of(w: &'a Worker) -> Self {
        StaticView {
            region: &w.region,
            license: w.license_type,
            cml_version: &w.cml_version,
            node_definitions: &w.node_definitions,
            ami_name: &w.ami_name,
        }
    }
}

/// The static attributes of a worker, owned (kept where the worker record is not, as in a
/// plan); [`StaticAttrs::view`] is what the static filters read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaticAttrs {
    /// Region it runs in.
    pub region: String,
    /// Licence it carries.
    pub license: LicenseType,
    /// CML version it runs.
    pub cml_version: CmlVersion,
    /// Node definitions it offers.
    pub node_definitions: std::collections::BTreeSet<String>,
    /// AMI it was made from.
    pub ami_name: String,
}

impl StaticAttrs {
    /// The static attributes of `w`.
    pub fn of(w: &Worker) -> Self {
        StaticAttrs {
            region: w.region.clone(),
            license: w.license_type,
            cml_version: w.cml_version.clone(),
            node_definitions: w.node_definitions.clone(),
            ami_name: w.ami_name.clone(),
        }
    }

    /// What the static filters read of them.
    pub fn view(&self) -> StaticView<'_> {
        StaticView {
            region: &self.region,
            license: self.license,
            cml_version: &self.cml_version,
            node_definitions: &self.node_definitions,
            ami_name: &self.ami_name,
        }
    }
}

/// Region, licence, CML version, node definitions and AMI, in that order.
pub fn check_static(v: StaticView<'_>, req: &Requirements) -> Result<(), Rejection> {
    if let Some(r) = &req.region {
        if r != v.region {
            return Err(Rejection::Region {
                wanted: r.clone(),
                actual: v.region.to_string(),
            });
        }
    }
    if !v.license.serves_any(&req.license_affinity) {
        return Err(Rejection::License {
            worker: v.license,
            wanted: req.license_affinity.clone(),
        });
    }
    if !req.cml_versions.contains(v.cml_version) {
        return Err(Rejection::CmlVersion {
            version: v.cml_version.to_string(),
            range: req.cml_versions.to_string(),
        });
    }
    let missing: Vec<String> = req
        .node_definitions
        .iter()
        .filter(|d| !v.node_definitions.contains(*d))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::NodeDefinitions { missing });
    }
    if let Some(g) = &req.ami {
        if !g.matches(v.ami_name) {
            return Err(Rejection::Ami {
                ami: v.ami_name.to_string(),
                pattern: g.to_string(),
            });
        }
    }
    Ok(())
}

/// cpu, memory, storage, nodes and ports against what is free.
pub fn check_dynamic(
    capacity: &Load,
    allocated: &Load,
    ports_free: u32,
    req: &Requirements,
) -> Result<(), Rejection> {
    let free = capacity.saturating_sub(allocated);
    let need = req.load;
    if need.cpu_cores > free.cpu_cores {
        return Err(Rejection::Cpu {
            need: need.cpu_cores,
            free: free.cpu_cores,
        });
    }
    if need.memory_gb > free.memory_gb {
        return Err(Rejection::Memory {
            need: need.memory_gb,
            free: free.memory_gb,
        });
    }
    if need.storage_gb > free.storage_gb {
        return Err(Rejection::Storage {
            need: need.storage_gb,
            free: free.storage_gb,
        });
    }
    if need.nodes > free.nodes {
        return Err(Rejection::Nodes {
            need: need.nodes,
            free: free.nodes,
            max: capacity.nodes,
        });
    }
    let need_ports = req.ports.len() as u32;
    if need_ports > ports_free {
        return Err(Rejection::Ports {
            need: need_ports,
            free: ports_free,
        });
    }
    Ok(())
}

/// Every filter on one worker, in order; the first failure is returned.
///
/// ```
/// use ccm_core::placement::filter::{check, Requirements, Rejection};
/// use ccm_core::resources::Load;
/// use ccm_core::worker::{Worker, WorkerState};
/// let t = &ccm_core::template::seed_templates().unwrap()[0];
/// let mut w = Worker::from_template("w1", t, "us-east-1", WorkerState::Running, "2.9.0".parse().unwrap(), "CML-2.9.0");
/// w.allocated.cpu_cores = 46;
/// let req = Requirements { load: Load { cpu_cores: 4, memory_gb: 8, storage_gb: 10, nodes: 3 },
///     license_affinity: vec![], cml_versions: Default::default(), node_definitions: vec![],
///     ami: None, ports: vec!["ssh".into()], region: None };
/// assert_eq!(check(&w, &req), Err(Rejection::Cpu { need: 4, free: 2 }));
/// assert_eq!(check(&w, &req).unwrap_err().to_string(), "cpu: need 4, free 2");
/// ```
pub fn check(w: &Worker, req: &Requirements) -> Result<(), Rejection> {
    if w.state != WorkerState::Running {
        return Err(Rejection::State { state: w.state });
    }
    check_static(StaticView::of(w), req)?;
    check_dynamic(&w.capacity, &w.allocated, w.ports.free(), req)
}

/// The AMI name a new worker of `t` is assumed to boot: the template's pattern with every
/// wildcard read as `0` (`CML-2.9.*` → `CML-2.9.0`).
pub fn template_ami_name(t: &WorkerTemplate) -> String {
    t.ami_pattern.replace(['*', '?'], "0")
}

/// The CML version a new worker of `t` is assumed to run: the first dotted number in its
/// representative AMI name (`CML-2.9.0` → `2.9.0`); `0.0.0` when there is none.
pub fn template_cml_version(t: &WorkerTemplate) -> CmlVersion {
    let name = template_ami_name(t);
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'.') {
                j += 1;
            }
            let s = name[i..j].trim_end_matches('.');
            if let Ok(v) = s.parse() {
                return v;
            }
        }
        i += 1;
    }
    CmlVersion::zero()
}

/// Whether an empty new worker of template `t` in `region` could take the session:
/// the filters as they would apply to a fresh worker (node definitions are assumed installed
/// when the template's image is chosen for them, so they are not checked here).
pub fn check_template(
    t: &WorkerTemplate,
    region: &str,
    req: &Requirements,
) -> Result<(), Rejection> {
    if !t.regions.iter().any(|r| r == region) {
        return Err(Rejection::Region {
            wanted: region.to_string(),
            actual: t.regions.join("|"),
        });
    }
    let ami = template_ami_name(t);
    let version = template_cml_version(t);
    let none = std::collections::BTreeSet::new();
    let mut r = req.clone();
    r.node_definitions.clear();
    r.region = None;
    check_static(
        StaticView {
            region,
            license: t.license_type,
            cml_version: &version,
            node_definitions: &none,
            ami_name: &ami,
        },
        &r,
    )?;
    check_dynamic(
        &t.load_capacity(),
        &Load::default(),
        t.port_range.len(),
        req,
    )
}
