//! Specs and history: versioned lablet definitions, worker templates (seeded create-if-absent)
//! and audit events (MongoDB in production).

use crate::definition::LabletDefinition;
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Errors of a [`SpecStore`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// (name, version) already exists.
    #[error("definition {name} version {version} already exists")]
    Conflict {
        /// Name.
        name: String,
        /// Version.
        version: String,
    },
    /// The store cannot be reached or refused (message names the host, never a password).
    #[error("spec store unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("spec store error: {0}")]
    Backend(String),
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterOutcome {
    /// First version of the name, or the version given.
    Created(LabletDefinition),
    /// The artifact changed: stored as the next patch version.
    NewVersion(LabletDefinition),
    /// Same hash as the latest version: nothing stored.
    Unchanged(LabletDefinition),
}

impl RegisterOutcome {
    /// The definition stored or found.
    pub fn definition(&self) -> &LabletDefinition {
        match self {
            RegisterOutcome::Created(d)
            | RegisterOutcome::NewVersion(d)
            | RegisterOutcome::Unchanged(d) => d,
        }
    }
}

/// Decides how a draft is registered given the latest stored version (pure; shared by every
/// backend): no latest → as given; same hash as latest → unchanged; draft version above the
/// latest → as given; otherwise → latest's next patch.
pub fn plan_registration(
    latest: Option<&LabletDefinition>,
    draft: &LabletDefinition,
) -> RegisterOutcome {
    match latest {
        None => RegisterOutcome::Created(draft.clone()),
        Some(l) if l.lab_yaml_hash == draft.lab_yaml_hash => RegisterOutcome::Unchanged(l.clone()),
        Some(l) if draft.version > l.version => RegisterOutcome::Created(draft.clone()),
        Some(l) => {
            let mut d = draft.clone();
            d.version = semver::Version::new(l.version.major, l.version.minor, l.version.patch + 1);
            RegisterOutcome::NewVersion(d)
        }
    }
}

/// What seeding templates did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedReport {
    /// Names created.
    pub created: Vec<String>,
    /// Names already present and left as they are.
    pub kept: Vec<String>,
}

/// A recorded decision or state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique id.
    pub id: String,
    /// Session, worker or definition id.
    pub subject: String,
    /// Event type, e.g. `ccm.scaling.up.requested`.
    pub event_type: String,
    /// When.
    pub time: Timestamp,
    /// Who (loop name and candidate id, or a user).
    pub actor: String,
    /// Why, for people.
    pub reason: String,
    /// Details.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Audit query; every field narrows the result. Results are ordered by time, then id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this type.
    pub event_type: Option<String>,
    /// From (inclusive).
    pub from: Option<Timestamp>,
    /// To (exclusive).
    pub to: Option<Timestamp>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// Whether an event matches the filters (not the limit).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.subject.as_ref().is_none_or(|s| &e.subject == s)
            && self.event_type.as_ref().is_none_or(|t| &e.event_type == t)
            && self.from.is_none_or(|f| e.time >= f)
            && self.to.is_none_or(|t| e.time < t)
    }
}

/// Definitions, templates and audit history.
#[async_trait]
pub trait SpecStore: Send + Sync + 'static {
    /// Stores a definition; `Conflict` when (name, version) exists.
    async fn insert_definition(&self, def: &LabletDefinition) -> Result<(), SpecError>;
    /// One version.
    async fn get_definition(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<Option<LabletDefinition>, SpecError>;
    /// By id.
    async fn get_definition_by_id(&self, id: &str) -> Result<Option<LabletDefinition>, SpecError>;
    /// Every version of a name, oldest first (semver order).
    async fn list_definition_versions(
        &self,
        name: &str,
    ) -> Result<Vec<LabletDefinition>, SpecError>;
    /// The highest version of a name.
    async fn latest_definition(&self, name: &str) -> Result<Option<LabletDefinition>, SpecError> {
        Ok(self
            .list_definition_versions(name)
            .await?
            .into_iter()
            .max_by(|a, b| a.version.cmp(&b.version)))
    }
    /// Registers a draft by [`plan_registration`]; a concurrent writer's version wins and this
    /// one is re-planned (up to 3 times).
    async fn register_definition(
        &self,
        draft: &LabletDefinition,
    ) -> Result<RegisterOutcome, SpecError> {
        let mut last = None;
        for _ in 0..3 {
            let latest = self.latest_definition(&draft.name).await?;
            let outcome = plan_registration(latest.as_ref(), draft);
            if let RegisterOutcome::Unchanged(_) = outcome {
                return Ok(outcome);
            }
            match self.insert_definition(outcome.definition()).await {
                Ok(()) => return Ok(outcome),
                Err(e @ SpecError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| SpecError::Backend("registration retries exhausted".into())))
    }
    /// Creates each template whose name is absent; never overwrites.
    async fn seed_templates(&self, templates: &[WorkerTemplate]) -> Result<SeedReport, SpecError>;
    /// Every template, by name.
    async fn list_templates(&self) -> Result<Vec<WorkerTemplate>, SpecError>;
    /// One template.
    async fn get_template(&self, name: &str) -> Result<Option<WorkerTemplate>, SpecError>;
    /// Creates or replaces a template (an operator's edit).
    async fn put_template(&self, template: &WorkerTemplate) -> Result<(), SpecError>;
    /// Records an audit event.
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), SpecError>;
    /// Queries audit events.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, SpecError>;
}
