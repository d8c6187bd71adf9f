//! What the façade reads and answers (every type is JSON-serialisable for the REST API).

use crate::definition::{AmiRequirements, LabletDefinition};
use crate::license::LicenseType;
use crate::placement::explain::Unschedulable;
use crate::planner::{Plan, TemplateVerdict};
use crate::resources::{Load, Resources};
use crate::session::{LabletSession, SessionState};
use crate::timeslot::Timestamp;
use crate::worker::WorkerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A definition to register; the port template and the hash come from the lab YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionDraft {
    /// Name (`[a-z0-9][a-z0-9._-]*`, at most 64 characters); (name, version) is unique.
    pub name: String,
    /// Semver version; absent: 1.0.0 for a new name, else the latest's next patch when the
    /// content changed (the latest itself when it did not).
    #[serde(default)]
    pub version: Option<semver::Version>,
    /// What one session needs.
    pub resource_requirements: Resources,
    /// CML nodes; absent: the number of nodes in the lab YAML.
    #[serde(default)]
    pub node_count: Option<u32>,
    /// Licences it may run under (empty = any).
    #[serde(default)]
    pub license_affinity: Vec<LicenseType>,
    /// Image and CML requirements.
    #[serde(default)]
    pub ami_requirements: AmiRequirements,
    /// Longest run in minutes (default 120).
    #[serde(default)]
    pub max_duration_minutes: Option<u32>,
    /// Who registers it.
    #[serde(default)]
    pub created_by: Option<String>,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// The first version of the name.
    Created,
    /// A new version of an existing name.
    NewVersion,
    /// The same content was registered before: nothing written.
    Unchanged,
}

/// The answer of [`super::Lablets::register_definition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// What happened.
    pub outcome: Registration,
    /// The definition stored (or found).
    pub definition: LabletDefinition,
}

/// A booking request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    /// The definition: its id (`name@version`) or its name.
    pub definition_id: String,
    /// Pin this version (default: the id's version, or the name's latest).
    #[serde(default)]
    pub definition_version: Option<semver::Version>,
    /// Slot start; absent with `timeslot_end` absent: as soon as possible.
    #[serde(default)]
    pub timeslot_start: Option<Timestamp>,
    /// Slot end (exclusive).
    #[serde(default)]
    pub timeslot_end: Option<Timestamp>,
    /// Who books it.
    pub owner_id: String,
    /// Region, if the owner needs one.
    #[serde(default)]
    pub region: Option<String>,
    /// External reservation id.
    #[serde(default)]
    pub reservation_id: Option<String>,
    /// The same key twice returns the same session (the request must be the same).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Answer the admission question without writing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Store the booking even when the plan cannot serve it (it waits as PENDING).
    #[serde(default)]
    pub queue: bool,
}

/// Where the plan puts an admitted session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    /// On a worker of the fleet.
    Worker {
        /// Worker id.
        worker_id: String,
        /// Its state now.
        state: WorkerState,
    },
    /// On a worker the plan launches.
    Launch {
        /// Planned worker id (`plan-N`).
        worker_id: String,
        /// Template.
        template: String,
        /// Region.
        region: String,
        /// Launch time.
        launch_at: Timestamp,
    },
    /// Starts after the planning horizon: planned by a later plan.
    BeyondHorizon {
        /// Where the horizon ends now.
        horizon_end: Timestamp,
    },
}

/// Why the plan cannot serve a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The constraint that decided it: `cpu`, `memory`, `nodes`, `ports`, `license`,
    /// `not_ready_in_time`, `max_workers_per_region`, `displaces_others`, …
    pub constraint: String,
    /// One line for people (the planner's reason).
    pub reason: String,
    /// Existing workers rejected, by the first failing filter.
    pub workers_rejected: BTreeMap<String, usize>,
    /// Each template's verdict.
    pub templates: Vec<TemplateVerdict>,
    /// The earliest slot start (same length) within the horizon that would work, if any.
    pub earliest_start: Option<Timestamp>,
}

/// The admission answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Admission {
    /// The plan serves it.
    Accepted {
        /// Where.
        placement: Placement,
        /// When its worker is RUNNING (and it can be bound).
        ready_by: Timestamp,
        /// The slot the plan gave it (an ASAP booking: from `now + lead`).
        start: Timestamp,
        /// The slot end the plan assumed.
        end: Timestamp,
    },
    /// The plan cannot serve it.
    Rejected(Refusal),
}

impl Admission {
    /// Whether the plan serves it.
    pub fn accepted(&self) -> bool {
        matches!(self, Admission::Accepted { .. })
    }
}

/// The answer of [`super::Lablets::book`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingOutcome {
    /// The session stored (`None` for a dry run).
    pub session: Option<LabletSession>,
    /// What the planner said.
    pub admission: Admission,
    /// False when the idempotency key returned an earlier booking.
    pub created: bool,
    /// True when nothing was written (dry run).
    pub dry_run: bool,
    /// True when the plan cannot serve it but the caller asked to queue it.
    pub queued: bool,
}

/// Filters of [`super::Lablets::list`]; every field narrows the result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionQuery {
    /// Only these states (empty: any).
    #[serde(default)]
    pub states: Vec<SessionState>,
    /// Only this owner.
    #[serde(default)]
    pub owner_id: Option<String>,
    /// Only sessions bound to this worker.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Only this definition (id, or name for every version).
    #[serde(default)]
    pub definition: Option<String>,
    /// Only slots ending after this (ASAP sessions: created after it).
    #[serde(default)]
    pub from: Option<Timestamp>,
    /// Only slots starting before this (ASAP sessions: created before it).
    #[serde(default)]
    pub to: Option<Timestamp>,
    /// Page after this session id (ids in ascending order).
    #[serde(default)]
    pub after: Option<String>,
    /// Page size (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One page of sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// Items in id order.
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
    /// Items matching the filters, across every page.
    pub total: usize,
}

/// Why a session is where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Session id.
    pub session_id: String,
    /// Its state.
    pub state: SessionState,
    /// One line for people.
    pub summary: String,
    /// When it becomes due for binding (slot start − lead; `None` for ASAP: due now).
    pub due_at: Option<Timestamp>,
    /// Whether the scheduler would try to bind it now.
    pub due: bool,
    /// The scheduler's view (placement filters on the fleet as it is), when it is due and
    /// fits nowhere.
    pub unschedulable: Option<Unschedulable>,
    /// The worker the scheduler would choose now, when it is due and fits.
    pub fits_on: Option<String>,
    /// The planner's view: where the plan made now puts it.
    pub planned: Option<Admission>,
}

/// Port usage of a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortUsage {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range.
    pub last: u16,
    /// Ports handed out.
    pub allocated: u32,
    /// Ports free.
    pub free: u32,
    /// Ports by session.
    pub by_session: BTreeMap<String, BTreeMap<String, u16>>,
}

/// A worker with its capacity, allocation and ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Worker id.
    pub id: String,
    /// Template.
    pub template: String,
    /// Region.
    pub region: String,
    /// State.
    pub state: WorkerState,
    /// Capacity.
    pub capacity: Load,
    /// Held by bound sessions (derived from the sessions).
    pub allocated: Load,
    /// Capacity − allocated.
    pub free: Load,
    /// Host ports.
    pub ports: PortUsage,
    /// Capacity-holding sessions on it.
    pub sessions: Vec<String>,
    /// CML version.
    pub cml_version: String,
    /// Licence.
    pub license_type: LicenseType,
}

/// One scaling step due now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueAction {
    /// `launch`, `start`, `cancel_drain`, `drain`, `stop`, `terminate`.
    pub action: String,
    /// Worker id.
    pub worker_id: String,
    /// Why.
    pub reason: String,
}

/// The plan the controller would make now, with the actions it would carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The plan.
    pub plan: Plan,
    /// What the controller would do now.
    pub due: Vec<DueAction>,
}

/// One interval of the landscape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandscapeBucket {
    /// Interval start.
    pub start: Timestamp,
    /// Interval end (exclusive).
    pub end: Timestamp,
    /// Sessions holding (or due to hold) capacity during the interval: from the start of
    /// their lab's instantiation (slot start − instantiation time) to the slot end.
    pub sessions: u32,
    /// Their summed needs (a peak bound for the interval).
    pub demand: Load,
    /// Workers billed during the interval.
    pub workers: u32,
    /// Their summed capacity.
    pub capacity: Load,
    /// Sessions the plan cannot serve that overlap the interval.
    pub unserved: u32,
}

/// Demand against billed capacity over the next hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Landscape {
    /// When it was computed.
    pub now: Timestamp,
    /// Interval length in minutes.
    pub bucket_minutes: u32,
    /// Intervals in time order.
    pub buckets: Vec<LandscapeBucket>,
    /// The plan's billed cost over its horizon (USD).
    pub cost_usd: f64,
}

/// The name rule of definitions.
pub(crate) fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The id of one version of a definition.
pub fn definition_id(name: &str, version: &semver::Version) -> String {
    format!("{name}@{version}")
}

/// Whether two definitions have the same content (everything but id and creation data).
pub(crate) fn same_content(a: &LabletDefinition, b: &LabletDefinition) -> bool {
    a.name == b.name
        && a.lab_yaml_hash == b.lab_yaml_hash
        && a.resource_requirements == b.resource_requirements
        && a.node_count == b.node_count
        && a.license_affinity == b.license_affinity
        && a.ami_requirements == b.ami_requirements
        && a.port_template == b.port_template
        && a.max_duration_minutes == b.max_duration_minutes
}
