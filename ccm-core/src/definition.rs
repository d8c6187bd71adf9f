//! Lablet definitions: versioned lab recipes with their requirements and port templates.

use crate::glob::Glob;
use crate::license::LicenseType;
use crate::resources::Resources;
use crate::timeslot::Timestamp;
use crate::version::{CmlVersion, VersionRange};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Transport protocol of a named port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A named host port a lab needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortTemplate {
    /// Unique within the definition, e.g. `router1_ssh`.
    pub name: String,
    /// tcp or udp.
    #[serde(default)]
    pub protocol: Protocol,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Image and CML requirements of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AmiRequirements {
    /// AMI name glob the worker must match.
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// Lowest CML version (inclusive, semver).
    #[serde(default)]
    pub cml_version_min: Option<CmlVersion>,
    /// Highest CML version (inclusive, semver; `2.9` admits `2.9.x`).
    #[serde(default)]
    pub cml_version_max: Option<CmlVersion>,
    /// Node definitions that must be installed.
    #[serde(default)]
    pub node_definitions_required: Vec<String>,
}

impl AmiRequirements {
    /// The CML version range.
    pub fn version_range(&self) -> VersionRange {
        VersionRange {
            min: self.cml_version_min.clone(),
            max: self.cml_version_max.clone(),
        }
    }

    /// The AMI glob, if any.
    pub fn glob(&self) -> Option<Glob> {
        self.name_pattern.as_ref().map(|p| Glob::new(p.clone()))
    }
}

/// A versioned lab recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabletDefinition {
    /// Unique id.
    pub id: String,
    /// Name; (name, version) is unique.
    pub name: String,
    /// Semver version.
    pub version: semver::Version,
    /// Where the lab YAML lives: its key in the artifact store (e.g. `definitions/x/1.0.0/cml.yaml`).
    #[serde(default)]
    pub lab_artifact_uri: String,
    /// SHA-256 (hex) of the lab YAML.
    #[serde(default)]
    pub lab_yaml_hash: String,
    /// What one session of it needs.
    pub resource_requirements: Resources,
    /// CML nodes in the lab.
    pub node_count: u32,
    /// Licences it may run under (empty = any).
    #[serde(default)]
    pub license_affinity: Vec<LicenseType>,
    /// Image and CML requirements.
    #[serde(default)]
    pub ami_requirements: AmiRequirements,
    /// Named ports it needs.
    #[serde(default)]
    pub port_template: Vec<PortTemplate>,
    /// Longest run.
    #[serde(default)]
    pub max_duration_minutes: u32,
    /// Created.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// Creator.
    #[serde(default)]
    pub created_by: Option<String>,
}

/// A definition that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// Two port templates share a name.
    #[error("definition {definition}: duplicate port template name {name:?}")]
    DuplicatePort {
        /// Definition name.
        definition: String,
        /// The repeated port name.
        name: String,
    },
    /// A requirement of zero in every resource is allowed, but zero nodes is not.
    #[error("definition {definition}: node_count must be at least 1")]
    NoNodes {
        /// Definition name.
        definition: String,
    },
    /// min > max.
    #[error("definition {definition}: cml_version_min {min} is above cml_version_max {max}")]
    EmptyVersionRange {
        /// Definition name.
        definition: String,
        /// Lower end.
        min: String,
        /// Upper end.
        max: String,
    },
}

impl LabletDefinition {
    /// A definition with what placement needs — resources, CML nodes, TCP ports by name — and
    /// neutral defaults for the rest (version 1.0.0, any licence and AMI, 120 minutes, no
    /// artifact yet).
    ///
    /// ```
    /// use ccm_core::definition::LabletDefinition;
    /// use ccm_core::resources::Resources;
    /// let d = LabletDefinition::new("ccna", Resources { cpu_cores: 4, memory_gb: 16, storage_gb: 20 }, 2, &["ssh", "vnc"]);
    /// assert_eq!(d.port_names(), ["ssh", "vnc"]);
    /// assert!(d.validate().is_ok());
    /// ```
    pub fn new(
        id: impl Into<String>,
        resources: Resources,
        node_count: u32,
        ports: &[&str],
    ) -> Self {
        let id = id.into();
        LabletDefinition {
            name: id.clone(),
            id,
            version: semver::Version::new(1, 0, 0),
            lab_artifact_uri: String::new(),
            lab_yaml_hash: String::new(),
            resource_requirements: resources,
            node_count,
            license_affinity: Vec::new(),
            ami_requirements: AmiRequirements::default(),
            port_template: ports
                .iter()
                .map(|n| PortTemplate {
                    name: (*n).to_string(),
                    protocol: Protocol::Tcp,
                    description: String::new(),
                })
                .collect(),
            max_duration_minutes: 120,
            created_at: None,
            created_by: None,
        }
    }

    /// Checks the definition's own rules (unique port names, ≥ 1 node, non-empty version range).
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let mut seen = BTreeSet::new();
        for p in &self.port_template {
            if !seen.insert(p.name.as_str()) {
                return Err(DefinitionError::DuplicatePort {
                    definition: self.name.clone(),
                    name: p.name.clone(),
                });
            }
        }
        if self.node_count == 0 {
            return Err(DefinitionError::NoNodes {
                definition: self.name.clone(),
            });
        }
        if let (Some(a), Some(b)) = (
            &self.ami_requirements.cml_version_min,
            &self.ami_requirements.cml_version_max,
        ) {
            if !b.admits_as_max(a) {
                return Err(DefinitionError::EmptyVersionRange {
                    definition: self.name.clone(),
                    min: a.to_string(),
                    max: b.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Port names in template order.
    pub fn port_names(&self) -> Vec<String> {
        self.port_template.iter().map(|p| p.name.clone()).collect()
    }
}
