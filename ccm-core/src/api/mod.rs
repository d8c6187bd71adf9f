//! The typed lablet API: register definitions, book and cancel sessions, ask why.
//!
//! [`Lablets`] is reached from a built runtime ([`crate::runtime::Runtime::lablets`]) and
//! written against the store traits; every decision it takes is a pure function in
//! [`decide`] (admission runs [`crate::planner::plan`] on the live state plus the booking).
//!
//! * **Definitions**: [`Lablets::register_definition`] validates the lab YAML, derives the port
//!   template from its node tags ([`crate::labyaml::port_template`]), stores the YAML in the
//!   [`ArtifactStore`] under `definitions/{name}/{version}/cml.yaml` with its SHA-256, and the
//!   definition in the [`crate::store::SpecStore`]. The same content twice is idempotent;
//!   different content under an existing version is a conflict.
//! * **Bookings**: [`Lablets::book`] validates, then asks the planner: accepted (where, ready
//!   by) or rejected (the deciding constraint and the earliest slot start that would work).
//!   Admissions are serialised through the `{prefix}/admission` key: each admitted booking's
//!   transaction requires the key unchanged since the state was read, so two bookings are
//!   never admitted on the same view of the capacity, in one process or many.
//! * **Fast path** ([`admission`]): an admission plan of the live state is kept (for at most
//!   [`admission::MAX_AGE_SECS`]; refreshed in the background once it is
//!   [`REFRESH_AFTER_SECS`] old, see [`Lablets::warm`]). Bookings waiting for the admission
//!   order are taken together (group commit): each is fitted into the kept plan's free
//!   capacity over time on a worker already billed through its slot, and all of them are
//!   written in one transaction that fails if this process no longer holds the admission
//!   owner key (another process admitted in full and claimed it) or the record of a worker
//!   they go to changed since the plan's snapshot (bound to, drained, stopped, lost). Up to
//!   [`MAX_IN_FLIGHT`] such batches are on their way at once, applied by the store in any
//!   order. A booking that does not fit, or one of a batch not written, gets the full re-plan
//!   on the live state, whose plan is kept for the next ones. Only the full re-plan refuses.
//! * **Cancel** frees the session's capacity and ports in the same transaction as the state
//!   change, guarded by both keys' revisions.
//!
//! Keys added to the layout of [`crate::runtime::keys`]: `{prefix}/admission` (the admission
//! guard, written by every admission), `{prefix}/admission-owner` (the claim of the process
//! whose fast path may admit) and `{prefix}/idempotency/{sha256 of the key}` (the booking a key
//! made).

pub mod admission;
pub mod decide;
mod types;

pub use types::{
    definition_id, Admission, BookingOutcome, BookingRequest, DefinitionDraft, DueAction,
    Explanation, Landscape, LandscapeBucket, Page, Placement, PortUsage, Preview, Refusal,
    Registered, Registration, SessionQuery, WorkerView,
};

use crate::definition::LabletDefinition;
use crate::events::{CcmEvent, EventType};
use crate::runtime::codec;
use crate::runtime::context::Ctx;
use crate::runtime::RuntimeError;
use crate::session::{LabletSession, SessionState};
use crate::store::artifact::{definition_key, sha256_hex};
use crate::store::{
    ArtifactError, ArtifactStore, AuditEvent, AuditQuery, Compare, Revision, SpecError, StoreError,
    Txn, WriteCondition,
};
use crate::template::WorkerTemplate;
use crate::timeslot::{Timeslot, Timestamp};
use crate::worker::Worker;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Largest lab YAML accepted (bytes).
pub const MAX_LAB_YAML_BYTES: usize = 1024 * 1024;
/// Longest owner, reservation or idempotency key (characters).
pub const MAX_TEXT: usize = 256;
/// How often a booking re-plans after another booking was admitted under it.
const ADMISSION_ATTEMPTS: u32 = 64;
/// Most bookings written in one transaction of the fast path (etcd allows 128 operations
/// per transaction by default; a booking takes up to two compares and two puts).
const MAX_BATCH: usize = 48;
/// A booking that finds the kept admission plan this old (seconds) has a fresh one made in the
/// background, so the fast path stays open under a steady stream of bookings (a plan is kept
/// for at most [`admission::MAX_AGE_SECS`]).
pub const REFRESH_AFTER_SECS: i64 = 1;
/// Fast-path batches on their way to the store at once: the next batch is fitted and sent
/// while earlier ones are still being written. Each is guarded on the admission owner (this
/// process's claim), not on the batch before it, so the store may apply them in any order.
pub const MAX_IN_FLIGHT: usize = 4;
/// `Inner::made_at` when no plan is kept.
const NO_PLAN: i64 = i64::MIN;

/// Errors of the façade; each names the field or the record it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Bad input.
    #[error("{field}: {message}")]
    Invalid {
        /// The field (JSON name).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such record.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `definition`, `session`, `worker`, `template`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request conflicts with what is stored.
    #[error("{message}")]
    Conflict {
        /// Stable code: `version_conflict`, `idempotency_mismatch`, `already_ended`,
        /// `not_bound`, `not_ready`, `contention`.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// The plan cannot serve the booking (and the caller did not ask to queue it).
    #[error("booking not admitted: {}", .0.reason)]
    Rejected(Box<Refusal>),
    /// A backend cannot be reached; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A stored record is corrupt (reported, left alone).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Anything else a backend reported.
    #[error("backend: {0}")]
    Backend(String),
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::Rejected(_) => "not_admitted",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Corrupt(_) => "corrupt_record",
            ApiError::Backend(_) => "backend",
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            e @ StoreError::Decode { .. } => ApiError::Corrupt(e.to_string()),
            e => ApiError::Backend(e.to_string()),
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Unavailable(m) => ApiError::Unavailable(m),
            e @ SpecError::Conflict { .. } => ApiError::Conflict {
                code: "version_conflict",
                message: e.to_string(),
            },
            SpecError::Backend(m) => ApiError::Backend(m),
        }
    }
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::Unavailable(m) => ApiError::Unavailable(m),
            e @ ArtifactError::Corrupted { .. } => ApiError::Corrupt(e.to_string()),
            e => ApiError::Backend(e.to_string()),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Store(s) => s.into(),
            RuntimeError::Spec(s) => s.into(),
            e => ApiError::Backend(e.to_string()),
        }
    }
}

/// What an idempotency key made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    session_id: String,
    fingerprint: String,
    admission: Admission,
}

struct Inner {
    ctx: Arc<Ctx>,
    artifacts: Arc<dyn ArtifactStore>,
    /// Admissions of this process one batch at a time (the store key orders them across
    /// processes), with the plan the last one left.
    admission: Arc<tokio::sync::Mutex<AdmissionState>>,
    /// Bookings waiting for the admission order; whoever takes the order takes them all.
    waiting: std::sync::Mutex<Vec<Waiting>>,
    /// Bookings admitted by the fast path, and bookings given the full re-plan.
    fast: std::sync::atomic::AtomicU64,
    full: std::sync::atomic::AtomicU64,
    refreshed: std::sync::atomic::AtomicU64,
    /// When the kept plan was made (seconds; [`NO_PLAN`]), readable without the order.
    made_at: std::sync::atomic::AtomicI64,
    /// A background refresh of the kept plan is running.
    refreshing: std::sync::atomic::AtomicBool,
    /// Permits for fast-path batches on their way to the store.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// How this process admitted bookings so far (see [`Lablets::admission_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionCounts {
    /// Fitted into the kept plan and written by the fast path.
    pub fast: u64,
    /// Given the full re-plan (admitted, queued or refused).
    pub full: u64,
    /// Admission plans made by a refresh ([`Lablets::warm`]) and kept.
    pub refreshed: u64,
}

/// What the admission order keeps between bookings.
#[derive(Default)]
struct AdmissionState {
    cache: Option<Cached>,
    /// The placements of the last admission plan when it is no longer kept (the next full
    /// re-plan keeps them where they still fit).
    previous: Vec<crate::planner::PriorAssignment>,
    /// Counts every replacement or loss of the kept plan other than the fast path's own
    /// commits: a refresh planned while it moved is dropped.
    generation: u64,
    /// The fast path's commits since the running refresh started (`None`: none running).
    since_refresh: Option<Vec<Committed>>,
    /// Fast-path batches sent and not answered yet, by sequence number.
    in_flight: std::collections::BTreeMap<u64, Vec<admission::Carried>>,
    /// Fast-path batches sent so far (the last one's sequence number).
    sent: u64,
}

/// An admission plan of the live state (see [`Lablets::warm`]).
struct LivePlan {
    /// The admission key's `mod_revision` and the admission owner, read before the snapshot.
    guard: Revision,
    owner: Option<Vec<u8>>,
    /// The snapshot's revision.
    revision: Revision,
    plan: admission::AdmissionPlan,
    /// The templates it was planned with.
    templates: Vec<WorkerTemplate>,
}

/// A booking the fast path committed while a refresh was planning: carried into its plan.
struct Committed {
    /// The store revision of the commit.
    revision: Revision,
    booking: admission::Carried,
}

/// The last admission plan and what it was made from.
struct Cached {
    plan: admission::AdmissionPlan,
    /// This process's claim on the admission owner key: a batch fitted into this plan is
    /// written only if the key still holds it. Every full admission and every refresh that
    /// found another owner writes a claim of its own (a new id), so an unchanged owner means
    /// every admission since was this process's fast path, which the plan holds.
    claim: Vec<u8>,
    /// The templates it was planned with.
    templates: Vec<WorkerTemplate>,
}

/// A validated booking waiting for its admission.
struct Waiting {
    session: LabletSession,
    def: LabletDefinition,
    templates: Vec<WorkerTemplate>,
    queue: bool,
    /// Idempotency record key and the booking's fingerprint.
    idem: Option<(String, String)>,
    now: Timestamp,
    reply: tokio::sync::oneshot::Sender<Result<BookingOutcome, ApiError>>,
}

/// The lablet API over a runtime's stores (cheap to clone; clones share the admission order).
#[derive(Clone)]
pub struct Lablets {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lablets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lablets")
            .field("prefix", &self.inner.ctx.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl Lablets {
    pub(crate) fn new(ctx: Arc<Ctx>, artifacts: Arc<dyn ArtifactStore>) -> Self {
        Lablets {
            inner: Arc::new(Inner {
                ctx,
                artifacts,
                admission: Arc::new(tokio::sync::Mutex::new(AdmissionState::default())),
                waiting: std::sync::Mutex::new(Vec::new()),
                fast: Default::default(),
                full: Default::default(),
                refreshed: Default::default(),
                made_at: std::sync::atomic::AtomicI64::new(NO_PLAN),
                refreshing: Default::default(),
                in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            }),
        }
    }

    fn ctx(&self) -> &Ctx {
        &self.inner.ctx
    }

    /// How many bookings this process admitted by the fast path and how many it gave the full
    /// re-plan (dry runs and idempotent replays are not counted).
    pub fn admission_counts(&self) -> AdmissionCounts {
        use std::sync::atomic::Ordering::Relaxed;
        AdmissionCounts {
            fast: self.inner.fast.load(Relaxed),
            full: self.inner.full.load(Relaxed),
            refreshed: self.inner.refreshed.load(Relaxed),
        }
    }

    fn admission_key(&self) -> String {
        format!("{}/admission", self.ctx().keys.prefix())
    }

    /// Who may admit by the fast path: the claim of the process that admitted in full (or
    /// refreshed its plan) last.
    fn owner_key(&self) -> String {
        format!("{}/admission-owner", self.ctx().keys.prefix())
    }

    fn idempotency_key(&self, key: &str) -> String {
        format!(
            "{}/idempotency/{}",
            self.ctx().keys.prefix(),
            sha256_hex(key.as_bytes())
        )
    }

    /// The clock's now.
    pub fn now(&self) -> Timestamp {
        self.ctx().clock.now()
    }

    // ---- definitions ----------------------------------------------------------------------

    /// Registers a definition with its lab YAML (see the module docs).
    pub async fn register_definition(
        &self,
        draft: DefinitionDraft,
        lab_yaml: &str,
    ) -> Result<Registered, ApiError> {
        let ctx = self.ctx();
        if !types::valid_name(&draft.name) {
            return Err(ApiError::invalid(
                "name",
                format!(
                    "{:?} is not a definition name (1-64 of a-z 0-9 . _ -, starting with a letter or digit)",
                    draft.name
                ),
            ));
        }
        if lab_yaml.len() > MAX_LAB_YAML_BYTES {
            return Err(ApiError::invalid(
                "lab_yaml",
                format!(
                    "{} bytes, more than the limit of {MAX_LAB_YAML_BYTES}",
                    lab_yaml.len()
                ),
            ));
        }
        if lab_yaml.trim().is_empty() {
            return Err(ApiError::invalid("lab_yaml", "is empty"));
        }
        let ports = crate::labyaml::port_template(lab_yaml)
            .map_err(|e| ApiError::invalid("lab_yaml", e.to_string()))?;
        let nodes = count_nodes(lab_yaml);
        let node_count = match draft.node_count {
            Some(n) => n,
            None if nodes > 0 => nodes,
            None => {
                return Err(ApiError::invalid(
                    "node_count",
                    "not given and the lab YAML has no nodes",
                ))
            }
        };
        let max_duration_minutes = draft.max_duration_minutes.unwrap_or(120);
        if max_duration_minutes == 0 {
            return Err(ApiError::invalid(
                "max_duration_minutes",
                "must be at least 1",
            ));
        }
        let hash = sha256_hex(lab_yaml.as_bytes());
        let now = self.now();
        let versions = ctx.spec.list_definition_versions(&draft.name).await?;
        let latest = versions.iter().max_by(|a, b| a.version.cmp(&b.version));
        let mut def = LabletDefinition {
            id: String::new(),
            name: draft.name.clone(),
            version: semver::Version::new(1, 0, 0),
            lab_artifact_uri: String::new(),
            lab_yaml_hash: hash,
            resource_requirements: draft.resource_requirements,
            node_count,
            license_affinity: draft.license_affinity.clone(),
            ami_requirements: draft.ami_requirements.clone(),
            port_template: ports,
            max_duration_minutes,
            created_at: Some(now),
            created_by: draft.created_by.clone(),
        };
        // Which version: the one given, or the latest when unchanged, or its next patch.
        let version = match (&draft.version, latest) {
            (Some(v), _) => v.clone(),
            (None, None) => semver::Version::new(1, 0, 0),
            (None, Some(l)) => {
                let mut probe = def.clone();
                probe.version = l.version.clone();
                probe.lab_artifact_uri = l.lab_artifact_uri.clone();
                if types::same_content(l, &probe) {
                    return Ok(Registered {
                        outcome: Registration::Unchanged,
                        definition: l.clone(),
                    });
                }
                semver::Version::new(l.version.major, l.version.minor, l.version.patch + 1)
            }
        };
        def.version = version.clone();
        def.id = definition_id(&def.name, &version);
        let key = definition_key(&def.name, &version);
        def.lab_artifact_uri = key.clone();
        def.validate()
            .map_err(|e| ApiError::invalid("definition", e.to_string()))?;
        if let Some(existing) = versions.iter().find(|d| d.version == version) {
            return if types::same_content(existing, &def) {
                Ok(Registered {
                    outcome: Registration::Unchanged,
                    definition: existing.clone(),
                })
            } else {
                Err(ApiError::Conflict {
                    code: "version_conflict",
                    message: format!(
                        "definition {} version {version} exists with different content; register a new version",
                        def.name
                    ),
                })
            };
        }
        self.put_artifact(&key, lab_yaml, &def.lab_yaml_hash)
            .await?;
        match ctx.spec.insert_definition(&def).await {
            Ok(()) => {}
            Err(SpecError::Conflict { .. }) => {
                // A concurrent registration of the same version won: same content is fine.
                return match ctx.spec.get_definition(&def.name, &version).await? {
                    Some(d) if types::same_content(&d, &def) => Ok(Registered {
                        outcome: Registration::Unchanged,
                        definition: d,
                    }),
                    _ => Err(ApiError::Conflict {
                        code: "version_conflict",
                        message: format!(
                            "definition {} version {version} was registered concurrently with different content",
                            def.name
                        ),
                    }),
                };
            }
            Err(e) => return Err(e.into()),
        }
        let previous = latest.map(|l| l.version.clone());
        let event = CcmEvent::definition(&def, previous.as_ref());
        let audit = AuditEvent {
            id: uuid::Uuid::new_v4().to_string(),
            subject: def.id.clone(),
            event_type: event.event_type().type_name().to_string(),
            time: now,
            actor: def.created_by.clone().unwrap_or_else(|| "api".into()),
            reason: format!("registered {} version {version}", def.name),
            data: serde_json::json!({ "name": def.name, "version": version.to_string() }),
        };
        if let Err(e) = ctx.spec.record_audit(&audit).await {
            tracing::warn!(error = %e, definition = %def.id, "audit record of a registration failed");
        }
        ctx.emit(event, now).await;
        Ok(Registered {
            outcome: if previous.is_some() {
                Registration::NewVersion
            } else {
                Registration::Created
            },
            definition: def,
        })
    }

    async fn put_artifact(&self, key: &str, yaml: &str, hash: &str) -> Result<(), ApiError> {
        let data = bytes::Bytes::copy_from_slice(yaml.as_bytes());
        match self
            .inner
            .artifacts
            .put(key, data.clone(), WriteCondition::IfAbsent)
            .await
        {
            Ok(_) => Ok(()),
            Err(ArtifactError::PreconditionFailed { .. }) => {
                match self.inner.artifacts.head(key).await? {
                    Some(m) if m.sha256 == hash => Ok(()),
                    // Left by a registration that stopped before its definition was stored
                    // (no definition refers to it): replace it.
                    _ => {
                        self.inner
                            .artifacts
                            .put(key, data, WriteCondition::Always)
                            .await?;
                        Ok(())
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every definition name's latest version, by name.
    pub async fn definitions(&self) -> Result<Vec<LabletDefinition>, ApiError> {
        let ctx = self.ctx();
        let events = ctx
            .spec
            .query_audit(&AuditQuery {
                event_type: Some(EventType::DefinitionCreated.type_name().to_string()),
                ..AuditQuery::default()
            })
            .await?;
        let names: std::collections::BTreeSet<String> = events
            .iter()
            .filter_map(|e| e.data.get("name").and_then(|n| n.as_str()))
            .map(str::to_string)
            .collect();
        let mut out = Vec::new();
        for n in names {
            if let Some(d) = ctx.spec.latest_definition(&n).await? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// A definition by id (`name@version`), or a name's latest version.
    pub async fn definition(&self, id_or_name: &str) -> Result<LabletDefinition, ApiError> {
        let ctx = self.ctx();
        if let Some(d) = ctx.spec.get_definition_by_id(id_or_name).await? {
            return Ok(d);
        }
        if let Some((name, v)) = id_or_name.split_once('@') {
            if let Ok(v) = semver::Version::parse(v) {
                if let Some(d) = ctx.spec.get_definition(name, &v).await? {
                    return Ok(d);
                }
            }
        } else if let Some(d) = ctx.spec.latest_definition(id_or_name).await? {
            return Ok(d);
        }
        Err(ApiError::NotFound {
            kind: "definition",
            id: id_or_name.to_string(),
        })
    }

    /// Every version of a name, oldest first.
    pub async fn definition_versions(&self, name: &str) -> Result<Vec<LabletDefinition>, ApiError> {
        let name = name.split_once('@').map_or(name, |x| x.0);
        let v = self.ctx().spec.list_definition_versions(name).await?;
        if v.is_empty() {
            return Err(ApiError::NotFound {
                kind: "definition",
                id: name.to_string(),
            });
        }
        Ok(v)
    }

    /// The definition a booking names.
    async fn resolve(&self, req: &BookingRequest) -> Result<LabletDefinition, ApiError> {
        let ctx = self.ctx();
        let id = req.definition_id.trim();
        if id.is_empty() {
            return Err(ApiError::invalid("definition_id", "is empty"));
        }
        let not_found = || ApiError::NotFound {
            kind: "definition",
            id: id.to_string(),
        };
        let def = match (id.split_once('@'), &req.definition_version) {
            (Some(_), pinned) => {
                let d = self.definition(id).await.map_err(|_| not_found())?;
                if let Some(p) = pinned {
                    if *p != d.version {
                        return Err(ApiError::invalid(
                            "definition_version",
                            format!("{p} differs from the version in definition_id {id}"),
                        ));
                    }
                }
                d
            }
            (None, Some(v)) => match ctx.spec.get_definition(id, v).await? {
                Some(d) => d,
                None => {
                    return Err(ApiError::NotFound {
                        kind: "definition",
                        id: definition_id(id, v),
                    })
                }
            },
            (None, None) => self.definition(id).await.map_err(|_| not_found())?,
        };
        Ok(def)
    }

    // ---- bookings -------------------------------------------------------------------------

    /// Books a session (see the module docs): validates, asks the planner, stores it PENDING.
    pub async fn book(&self, req: BookingRequest) -> Result<BookingOutcome, ApiError> {
        let ctx = self.ctx();
        let now = self.now();
        check_text("owner_id", &req.owner_id, true)?;
        if let Some(r) = &req.reservation_id {
            check_text("reservation_id", r, true)?;
        }
        if let Some(k) = &req.idempotency_key {
            check_text("idempotency_key", k, true)?;
        }
        if let Some(r) = &req.region {
            check_text("region", r, true)?;
        }
        let def = self.resolve(&req).await?;
        let slot = match (req.timeslot_start, req.timeslot_end) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ApiError::invalid(
                    "timeslot_end",
                    "missing: give both timeslot_start and timeslot_end, or neither for as soon as possible",
                ))
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    "timeslot_start",
                    "missing: give both timeslot_start and timeslot_end, or neither for as soon as possible",
                ))
            }
            (Some(a), Some(b)) => {
                let slot = Timeslot::new(a, b).map_err(|e| {
                    ApiError::invalid("timeslot_end", e.to_string())
                })?;
                if a < now {
                    return Err(ApiError::invalid(
                        "timeslot_start",
                        format!("{} is in the past (now {})", a.to_rfc3339(), now.to_rfc3339()),
                    ));
                }
                let max = chrono::Duration::minutes(i64::from(def.max_duration_minutes));
                if def.max_duration_minutes > 0 && slot.duration() > max {
                    return Err(ApiError::invalid(
                        "timeslot_end",
                        format!(
                            "the slot is {} minutes, longer than {}'s max_duration_minutes {}",
                            slot.duration().num_minutes(),
                            def.id,
                            def.max_duration_minutes
                        ),
                    ));
                }
                Some(slot)
            }
        };
        let fingerprint = fingerprint(&req, &def);
        let idem_key = req
            .idempotency_key
            .as_deref()
            .map(|k| self.idempotency_key(k));
        if let Some(k) = &idem_key {
            if let Some(found) = self.replay(k, &fingerprint).await? {
                return Ok(found);
            }
        }
        let mut session = LabletSession::new(
            uuid::Uuid::new_v4().to_string(),
            def.id.clone(),
            def.version.to_string(),
            req.owner_id.clone(),
            slot,
            now,
        );
        session.region = req.region.clone();
        session.reservation_id = req.reservation_id.clone();
        let templates = ctx.spec.list_templates().await?;
        if req.dry_run {
            let snap = crate::runtime::snapshot::load(ctx).await?;
            let admission = decide::admit(&snap, &templates, now, &ctx.settings, &session, &def);
            return Ok(BookingOutcome {
                queued: !admission.accepted() && req.queue,
                session: None,
                admission,
                created: false,
                dry_run: true,
            });
        }
        self.refresh_if_old(now);
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Waiting {
                session,
                def,
                templates,
                queue: req.queue,
                idem: idem_key.map(|k| (k, fingerprint)),
                now,
                reply,
            });
        // Whoever takes the admission order takes every booking waiting then (this one, unless
        // an earlier batch took it already); the batch runs on its own task, so a caller that
        // goes away never leaves the others of its batch without an answer.
        let order = self.inner.admission.clone().lock_owned().await;
        let batch = std::mem::take(
            &mut *self
                .inner
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if batch.is_empty() {
            drop(order);
        } else {
            let me = self.clone();
            tokio::spawn(async move {
                let mut order = order;
                me.admit_batch(&mut order, batch).await;
            });
        }
        answer.await.map_err(|_| {
            ApiError::Backend("the admission of this booking stopped before it answered".into())
        })?
    }

    /// Admits `batch` in order: the fast path for what fits the kept plan, the full re-plan
    /// for the rest; answers each booking.
    async fn admit_batch(&self, st: &mut AdmissionState, mut batch: Vec<Waiting>) {
        while !batch.is_empty() {
            let n = batch.len().min(MAX_BATCH);
            let chunk: Vec<Waiting> = batch.drain(..n).collect();
            for w in self.admit_fast(st, chunk).await {
                let answer = self.admit_full(st, &w).await;
                // The caller may have gone; the booking stands either way.
                let _ = w.reply.send(answer);
            }
        }
        self.kept(st);
    }

    /// Publishes when the kept plan was made.
    fn kept(&self, st: &AdmissionState) {
        let made = st
            .cache
            .as_ref()
            .map_or(NO_PLAN, |c| c.plan.made_at().timestamp());
        self.inner
            .made_at
            .store(made, std::sync::atomic::Ordering::Release);
    }

    /// Starts a background refresh when the kept plan is [`REFRESH_AFTER_SECS`] old (none
    /// when no plan is kept: the next booking's full re-plan makes one).
    fn refresh_if_old(&self, now: Timestamp) {
        use std::sync::atomic::Ordering;
        let made = self.inner.made_at.load(Ordering::Acquire);
        if made == NO_PLAN || now.timestamp().saturating_sub(made) < REFRESH_AFTER_SECS {
            return;
        }
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.warm().await {
                tracing::debug!(error = %e, "refreshing the admission plan failed");
            }
            me.inner.refreshing.store(false, Ordering::Release);
        });
    }

    /// Makes the admission plan of the live state now and keeps it for the fast path, without
    /// holding up bookings while it plans: what `ccm serve` does at start-up, and what a booking
    /// starts in the background when the kept plan is [`REFRESH_AFTER_SECS`] old. Bookings the
    /// fast path commits meanwhile are carried into the new plan (on the worker they went to
    /// where they still fit there). Returns whether the plan is kept: a full re-plan or a
    /// failed commit meanwhile (the older plan moved under it), or a booking that cannot be
    /// carried over, drops it.
    pub async fn warm(&self) -> Result<bool, ApiError> {
        let (generation, previous) = {
            let mut st = self.inner.admission.lock().await;
            if st.since_refresh.is_some() {
                return Ok(false);
            }
            st.since_refresh = Some(Vec::new());
            let previous = st
                .cache
                .as_ref()
                .map_or_else(|| st.previous.clone(), |c| c.plan.prior().to_vec());
            (st.generation, previous)
        };
        let made = self.plan_live(previous).await;
        let mut st = self.inner.admission.lock().await;
        let since = st.since_refresh.take().unwrap_or_default();
        let LivePlan {
            guard,
            owner,
            revision: snapshot_revision,
            mut plan,
            templates,
        } = made?;
        if st.generation != generation {
            return Ok(false);
        }
        // The fast path's batches since the start, and those on their way: what the snapshot
        // did not read of them is carried over — the committed ones by revision, the ones still
        // on their way unless the plan holds them.
        let held: std::collections::BTreeSet<&str> =
            plan.prior().iter().map(|p| p.session_id.as_str()).collect();
        let unread: Vec<admission::Carried> = since
            .iter()
            .filter(|c| c.revision > snapshot_revision)
            .map(|c| &c.booking)
            .chain(
                st.in_flight
                    .values()
                    .flatten()
                    .filter(|b| !held.contains(b.session.id.as_str())),
            )
            .cloned()
            .collect();
        if plan.carry(&unread, &self.ctx().settings).is_none() {
            return Ok(false);
        }
        // Still this process's claim: every admission since the owner was read is ours, and
        // the plan holds them. Otherwise claim it, if nobody admitted since the snapshot's guard
        // (this process's own fast path does not run on another's claim).
        let ours = st
            .cache
            .as_ref()
            .is_some_and(|c| owner.as_deref() == Some(c.claim.as_slice()));
        let claim = if ours {
            owner.unwrap_or_default()
        } else {
            let claim = uuid::Uuid::new_v4().to_string().into_bytes();
            let txn = Txn::new()
                .when(Compare::unchanged_since(self.admission_key(), guard))
                .put(self.owner_key(), claim.clone());
            if !self.ctx().state.txn(txn).await?.succeeded {
                return Ok(false);
            }
            claim
        };
        st.cache = Some(Cached {
            plan,
            claim,
            templates,
        });
        self.kept(&st);
        self.inner
            .refreshed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// The admission plan of the live state now, planned off the async threads.
    async fn plan_live(
        &self,
        previous: Vec<crate::planner::PriorAssignment>,
    ) -> Result<LivePlan, ApiError> {
        let ctx = self.ctx();
        let guard = ctx
            .state
            .get(&self.admission_key())
            .await?
            .map_or(0, |kv| kv.mod_revision);
        let owner = ctx.state.get(&self.owner_key()).await?.map(|kv| kv.value);
        let snap = crate::runtime::snapshot::load(ctx).await?;
        let templates = ctx.spec.list_templates().await?;
        let now = self.now();
        let settings = ctx.settings.clone();
        let with = templates.clone();
        let (revision, plan) = tokio::task::spawn_blocking(move || {
            let (plan, input) = decide::plan_keeping(&snap, &with, now, &settings, &previous);
            (
                snap.revision,
                admission::AdmissionPlan::new(&plan, &input, &snap),
            )
        })
        .await
        .map_err(|e| ApiError::Backend(format!("planning the admission plan failed: {e}")))?;
        Ok(LivePlan {
            guard,
            owner,
            revision,
            plan,
            templates,
        })
    }

    /// The fast path (see the module docs): answers the bookings of `chunk` that fit the kept
    /// plan, written in one transaction; returns the others for the full re-plan.
    async fn admit_fast(&self, st: &mut AdmissionState, chunk: Vec<Waiting>) -> Vec<Waiting> {
        let ctx = self.ctx();
        // Taken out; put back only after a commit under it, or when nothing was tried.
        let Some(cache) = st.cache.take() else {
            return chunk;
        };
        let now = self.now();
        // Fitted in place (no copy of the plan per batch): a failed commit drops the plan anyway,
        // and a batch that wrote nothing only over-reserves until the next refresh.
        let Cached {
            mut plan,
            claim,
            templates,
        } = cache;
        let mut keys = std::collections::BTreeSet::new();
        let mut hosts = std::collections::BTreeSet::new();
        let mut fast = Vec::new();
        let mut slow = Vec::new();
        for w in chunk {
            // Two bookings with one idempotency key in one transaction: the second one replays.
            let repeated = w
                .idem
                .as_ref()
                .is_some_and(|(k, _)| !keys.insert(k.clone()));
            let fit = if repeated || w.templates != templates {
                None
            } else {
                plan.fit(&w.session, &w.def, now, &ctx.settings)
            };
            match fit {
                Some(f) => {
                    plan.take(&f);
                    hosts.insert(f.host);
                    let host = plan.hosts().get(f.host).map(|h| h.id().to_owned());
                    fast.push((w, f.admission, host.unwrap_or_default()));
                }
                None => slow.push(w),
            }
        }
        if fast.is_empty() {
            st.cache = Some(Cached {
                plan,
                claim,
                templates,
            });
            return slow;
        }
        let akey = self.admission_key();
        let mut txn = Txn::new().when(Compare::Value {
            key: self.owner_key(),
            value: claim.clone(),
        });
        // The workers these bookings go to are as the plan saw them (not bound to, drained,
        // stopped or lost since).
        for h in hosts.iter().filter_map(|&i| plan.hosts().get(i)) {
            if let Some(rev) = h.revision() {
                txn = txn.when(Compare::unchanged_since(ctx.keys.worker(h.id()), rev));
            }
        }
        let mut last = String::new();
        let mut written = Vec::with_capacity(fast.len());
        for (w, admission, host) in fast {
            let skey = ctx.keys.session(&w.session.id);
            let record = codec::encode(&skey, &w.session).and_then(|s| match &w.idem {
                Some((k, fp)) => {
                    let rec = IdempotencyRecord {
                        session_id: w.session.id.clone(),
                        fingerprint: fp.clone(),
                        admission: admission.clone(),
                    };
                    Ok((s, Some((k.clone(), codec::encode(k, &rec)?))))
                }
                None => Ok((s, None)),
            });
            let (session, idem) = match record {
                Ok(r) => r,
                Err(e) => {
                    let _ = w.reply.send(Err(e.into()));
                    continue;
                }
            };
            txn = txn
                .when(Compare::Missing { key: skey.clone() })
                .put(skey, session);
            if let Some((k, rec)) = idem {
                txn = txn.when(Compare::Missing { key: k.clone() }).put(k, rec);
            }
            last.clone_from(&w.session.id);
            written.push((w, admission, host));
        }
        if written.is_empty() {
            st.cache = Some(Cached {
                plan,
                claim,
                templates,
            });
            return slow;
        }
        // Sent now; answered by its own task, so the next batch is fitted while this one is on
        // its way (at most MAX_IN_FLIGHT of them); the plan already holds it. The admission key
        // is written all the same: a full admission planning meanwhile (here or elsewhere) must
        // see that the state moved under its snapshot.
        let txn = txn.put(akey, last.into_bytes());
        let permit = match self.inner.in_flight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => {
                // Never closed; answer by the full re-plan rather than not at all.
                slow.extend(written.into_iter().map(|(w, _, _)| w));
                return slow;
            }
        };
        st.sent = st.sent.wrapping_add(1);
        let seq = st.sent;
        st.in_flight.insert(
            seq,
            written
                .iter()
                .map(|(w, _, host)| admission::Carried {
                    session: w.session.clone(),
                    def: w.def.clone(),
                    host: host.clone(),
                    now: w.now,
                })
                .collect(),
        );
        let generation = st.generation;
        st.cache = Some(Cached {
            plan,
            claim,
            templates,
        });
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.ctx().state.txn(txn).await;
            // Released before the answer takes the admission order: the batch after this one
            // may be waiting for the permit with the order held.
            drop(permit);
            me.answer_batch(seq, generation, written, result).await;
        });
        slow
    }

    /// Answers a fast-path batch once the store has: each booking admitted, or — when the
    /// batch was not written (another process admitted first, a worker it used changed, an
    /// idempotency key was taken, or a batch before it was not written) — given the full
    /// re-plan; the kept plan, which holds the batch, is dropped unless a newer one replaced it.
    async fn answer_batch(
        &self,
        seq: u64,
        generation: u64,
        written: Vec<(Waiting, Admission, String)>,
        result: Result<crate::store::TxnResponse, StoreError>,
    ) {
        let ctx = self.ctx();
        match result {
            Ok(resp) if resp.succeeded => {
                self.inner
                    .fast
                    .fetch_add(written.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for (w, admission, _) in written {
                    ctx.emit(CcmEvent::session(&w.session), w.now).await;
                    let _ = w.reply.send(Ok(BookingOutcome {
                        queued: false,
                        session: Some(w.session),
                        admission,
                        created: true,
                        dry_run: false,
                    }));
                }
                // Answered first; then a refresh learns it was written.
                let mut st = self.inner.admission.lock().await;
                let batch = st.in_flight.remove(&seq).unwrap_or_default();
                if let Some(since) = &mut st.since_refresh {
                    since.extend(batch.into_iter().map(|booking| Committed {
                        revision: resp.revision,
                        booking,
                    }));
                }
            }
            other => {
                let mut st = self.inner.admission.lock().await;
                st.in_flight.remove(&seq);
                if st.generation == generation {
                    if let Some(c) = st.cache.take() {
                        st.previous = c.plan.prior().to_vec();
                    }
                    st.generation += 1;
                }
                match other {
                    Ok(_) => {
                        tracing::debug!(
                            "the store moved under the kept admission plan; planning again"
                        );
                        for (w, _, _) in written {
                            let answer = self.admit_full(&mut st, &w).await;
                            let _ = w.reply.send(answer);
                        }
                    }
                    Err(e) => {
                        let e = ApiError::from(e);
                        for (w, _, _) in written {
                            let _ = w.reply.send(Err(e.clone()));
                        }
                    }
                }
                self.kept(&st);
            }
        }
    }

    /// The full re-plan of one booking (the live state plus this booking), written with the
    /// admission guard; its plan is kept for the fast path when nothing else was written.
    async fn admit_full(
        &self,
        st: &mut AdmissionState,
        w: &Waiting,
    ) -> Result<BookingOutcome, ApiError> {
        let ctx = self.ctx();
        self.inner
            .full
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let akey = self.admission_key();
        let skey = ctx.keys.session(&w.session.id);
        let now = w.now;
        for attempt in 0..ADMISSION_ATTEMPTS {
            let guard = ctx.state.get(&akey).await?.map_or(0, |kv| kv.mod_revision);
            let snap = crate::runtime::snapshot::load(ctx).await?;
            let (admission, plan, input) = decide::admit_planned(
                &snap,
                &w.templates,
                now,
                &ctx.settings,
                &w.session,
                &w.def,
                st.cache
                    .as_ref()
                    .map_or(st.previous.as_slice(), |c| c.plan.prior()),
            );
            if let Admission::Rejected(r) = &admission {
                if !w.queue {
                    return Err(ApiError::Rejected(Box::new(r.clone())));
                }
            }
            let mut txn = Txn::new()
                .when(Compare::unchanged_since(akey.clone(), guard))
                .when(Compare::Missing { key: skey.clone() })
                .put(skey.clone(), codec::encode(&skey, &w.session)?)
                .put(akey.clone(), w.session.id.clone().into_bytes())
                // This process's claim: its fast path may admit under the plan it keeps.
                .put(self.owner_key(), w.session.id.clone().into_bytes());
            if let Some((k, fingerprint)) = &w.idem {
                let rec = IdempotencyRecord {
                    session_id: w.session.id.clone(),
                    fingerprint: fingerprint.clone(),
                    admission: admission.clone(),
                };
                txn = txn
                    .when(Compare::Missing { key: k.clone() })
                    .put(k.clone(), codec::encode(k, &rec)?);
            }
            let resp = ctx.state.txn(txn).await?;
            if resp.succeeded {
                // Its plan (with this booking in it) is kept for the next bookings; the
                // admission key written here and the revisions of the workers' records in the
                // snapshot guard them.
                st.cache = Some(Cached {
                    plan: admission::AdmissionPlan::new(&plan, &input, &snap),
                    claim: w.session.id.clone().into_bytes(),
                    templates: w.templates.clone(),
                });
                st.generation += 1;
                ctx.emit(CcmEvent::session(&w.session), now).await;
                return Ok(BookingOutcome {
                    queued: !admission.accepted(),
                    session: Some(w.session.clone()),
                    admission,
                    created: true,
                    dry_run: false,
                });
            }
            if let Some(c) = st.cache.take() {
                st.previous = c.plan.prior().to_vec();
            }
            st.generation += 1;
            if let Some((k, fingerprint)) = &w.idem {
                if let Some(found) = self.replay(k, fingerprint).await? {
                    return Ok(found);
                }
            }
            tracing::debug!(
                attempt,
                "another booking was admitted first; planning again"
            );
        }
        Err(ApiError::Conflict {
            code: "contention",
            message: format!(
                "{ADMISSION_ATTEMPTS} other bookings were admitted while this one was planned; retry"
            ),
        })
    }

    /// The booking an idempotency key already made, if any.
    async fn replay(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<BookingOutcome>, ApiError> {
        let ctx = self.ctx();
        let Some(kv) = ctx.state.get(key).await? else {
            return Ok(None);
        };
        let rec: IdempotencyRecord = codec::decode(key, &kv.value)?;
        if rec.fingerprint != fingerprint {
            return Err(ApiError::Conflict {
                code: "idempotency_mismatch",
                message: format!(
                    "idempotency_key was used for a different booking (session {})",
                    rec.session_id
                ),
            });
        }
        let session = self.get(&rec.session_id).await?;
        Ok(Some(BookingOutcome {
            queued: !rec.admission.accepted(),
            session: Some(session),
            admission: rec.admission,
            created: false,
            dry_run: false,
        }))
    }

    /// Cancels a session: TERMINATED, its capacity and ports released in the same transaction
    /// (guarded by the revisions of the session and its worker). Cancelling a TERMINATED
    /// session returns it unchanged.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<LabletSession, ApiError> {
        let ctx = self.ctx();
        let skey = ctx.keys.session(id);
        for _ in 0..ADMISSION_ATTEMPTS {
            let Some(kv) = ctx.state.get(&skey).await? else {
                return Err(ApiError::NotFound {
                    kind: "session",
                    id: id.to_string(),
                });
            };
            let s: LabletSession = codec::decode(&skey, &kv.value)?;
            if s.state == SessionState::Terminated {
                return Ok(s);
            }
            if s.state.is_final() {
                return Err(ApiError::Conflict {
                    code: "already_ended",
                    message: format!("session {id} is {} and cannot be cancelled", s.state),
                });
            }
            let now = self.now();
            let mut next = s.clone();
            let why = if reason.trim().is_empty() {
                "cancelled".to_string()
            } else {
                format!("cancelled: {}", reason.trim())
            };
            next.transition(SessionState::Terminated, now, why)
                .map_err(|e| ApiError::Conflict {
                    code: "already_ended",
                    message: e.to_string(),
                })?;
            next.allocated_ports.clear();
            let mut txn = Txn::new()
                .when(Compare::unchanged_since(skey.clone(), kv.mod_revision))
                .put(skey.clone(), codec::encode(&skey, &next)?);
            if let (true, Some(wid)) = (s.holds_capacity(), &s.worker_id) {
                let wkey = ctx.keys.worker(wid);
                if let Some(wkv) = ctx.state.get(&wkey).await? {
                    let mut w: Worker = codec::decode(&wkey, &wkv.value)?;
                    if let Some(def) = ctx.definition(&s.definition_id).await? {
                        let load =
                            crate::resources::Load::new(def.resource_requirements, def.node_count);
                        w.allocated = w.allocated.saturating_sub(&load);
                    }
                    w.ports.release(&s.id);
                    w.last_activity_at = Some(now);
                    txn = txn
                        .when(Compare::unchanged_since(wkey.clone(), wkv.mod_revision))
                        .put(wkey.clone(), codec::encode(&wkey, &w)?);
                }
            }
            if ctx.state.txn(txn).await?.succeeded {
                ctx.emit(CcmEvent::session(&next), now).await;
                return Ok(next);
            }
        }
        Err(ApiError::Conflict {
            code: "contention",
            message: format!("session {id} kept changing while it was cancelled; retry"),
        })
    }

    /// The user connected to a READY session: RUNNING now, not only at its slot start (the
    /// state change is written only if the session record is unchanged since it was read). A
    /// RUNNING session is returned unchanged; any other state is a conflict (`not_ready`).
    pub async fn connect(&self, id: &str) -> Result<LabletSession, ApiError> {
        let ctx = self.ctx();
        let skey = ctx.keys.session(id);
        for _ in 0..ADMISSION_ATTEMPTS {
            let Some(kv) = ctx.state.get(&skey).await? else {
                return Err(ApiError::NotFound {
                    kind: "session",
                    id: id.to_string(),
                });
            };
            let s: LabletSession = codec::decode(&skey, &kv.value)?;
            match s.state {
                SessionState::Running => return Ok(s),
                SessionState::Ready => {}
                other => {
                    return Err(ApiError::Conflict {
                        code: "not_ready",
                        message: format!(
                            "session {id} is {other}: it can be connected to once it is READY"
                        ),
                    })
                }
            }
            let now = self.now();
            let mut next = s.clone();
            next.transition(SessionState::Running, now, "user connected")
                .map_err(|e| ApiError::Conflict {
                    code: "not_ready",
                    message: e.to_string(),
                })?;
            let txn = Txn::new()
                .when(Compare::unchanged_since(skey.clone(), kv.mod_revision))
                .put(skey.clone(), codec::encode(&skey, &next)?);
            if ctx.state.txn(txn).await?.succeeded {
                ctx.emit(CcmEvent::session(&next), now).await;
                return Ok(next);
            }
        }
        Err(ApiError::Conflict {
            code: "contention",
            message: format!("session {id} kept changing while it was connected; retry"),
        })
    }

    /// One session.
    pub async fn get(&self, id: &str) -> Result<LabletSession, ApiError> {
        let key = self.ctx().keys.session(id);
        match self.ctx().state.get(&key).await? {
            Some(kv) => Ok(codec::decode(&key, &kv.value)?),
            None => Err(ApiError::NotFound {
                kind: "session",
                id: id.to_string(),
            }),
        }
    }

    /// Sessions matching `q`, one page (undecodable records are reported in the log and skipped).
    pub async fn list(&self, q: &SessionQuery) -> Result<Page<LabletSession>, ApiError> {
        let ctx = self.ctx();
        let list = ctx.state.list(&ctx.keys.sessions()).await?;
        let mut sessions = Vec::with_capacity(list.kvs.len());
        for kv in &list.kvs {
            match codec::decode::<LabletSession>(&kv.key, &kv.value) {
                Ok(s) => sessions.push(s),
                Err(e) => tracing::warn!(error = %e, "session record skipped"),
            }
        }
        Ok(decide::page(q, sessions))
    }

    /// Why a session is (still) PENDING, from the scheduler's placement and the planner.
    pub async fn explain(&self, id: &str) -> Result<Explanation, ApiError> {
        let ctx = self.ctx();
        let snap = crate::runtime::snapshot::load(ctx).await?;
        let s = match snap.sessions.get(id) {
            Some(s) => s.value.clone(),
            None => self.get(id).await?,
        };
        let templates = ctx.spec.list_templates().await?;
        Ok(decide::explain(
            &snap,
            &templates,
            self.now(),
            &ctx.settings,
            &s,
        ))
    }

    // ---- fleet and plan -------------------------------------------------------------------

    /// Every worker with its capacity, allocation (derived from the sessions) and ports.
    pub async fn workers(&self) -> Result<Vec<WorkerView>, ApiError> {
        let snap = crate::runtime::snapshot::load(self.ctx()).await?;
        Ok(decide::worker_views(&snap))
    }

    /// One worker.
    pub async fn worker(&self, id: &str) -> Result<WorkerView, ApiError> {
        self.workers()
            .await?
            .into_iter()
            .find(|w| w.id == id)
            .ok_or_else(|| ApiError::NotFound {
                kind: "worker",
                id: id.to_string(),
            })
    }

    /// Every worker template.
    pub async fn templates(&self) -> Result<Vec<WorkerTemplate>, ApiError> {
        Ok(self.ctx().spec.list_templates().await?)
    }

    /// One worker template.
    pub async fn template(&self, name: &str) -> Result<WorkerTemplate, ApiError> {
        self.ctx()
            .spec
            .get_template(name)
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind: "template",
                id: name.to_string(),
            })
    }

    /// The plan the controller would make at `now`, with the actions due then.
    pub async fn preview(&self, now: Timestamp) -> Result<Preview, ApiError> {
        let ctx = self.ctx();
        let snap = crate::runtime::snapshot::load(ctx).await?;
        let templates = ctx.spec.list_templates().await?;
        let (plan, input) = decide::plan_now(&snap, &templates, now, &ctx.settings);
        let (actions, _) = crate::runtime::due_actions(&plan, &input, &snap, &templates, now);
        Ok(Preview {
            due: actions.iter().map(decide::due_action).collect(),
            plan,
        })
    }

    /// Demand against billed capacity per 15 minutes over the next 24 hours from `now`.
    pub async fn landscape(&self, now: Timestamp) -> Result<Landscape, ApiError> {
        let ctx = self.ctx();
        let snap = crate::runtime::snapshot::load(ctx).await?;
        let templates = ctx.spec.list_templates().await?;
        let (plan, input) = decide::plan_now(&snap, &templates, now, &ctx.settings);
        Ok(decide::landscape(
            &plan,
            &input,
            now,
            chrono::Duration::minutes(15),
            chrono::Duration::hours(24),
        ))
    }

    /// The lab YAML of a bound session with its ports filled in: the format-preserving rewrite
    /// of the stored artifact, after its SHA-256 was checked against the definition's.
    pub async fn session_lab_yaml(&self, id: &str) -> Result<String, ApiError> {
        let ctx = self.ctx();
        let s = self.get(id).await?;
        if !s.holds_capacity() || s.worker_id.is_none() {
            return Err(ApiError::Conflict {
                code: "not_bound",
                message: format!(
                    "session {id} is {}: its ports are known once it is bound",
                    s.state
                ),
            });
        }
        let def = ctx
            .definition(&s.definition_id)
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind: "definition",
                id: s.definition_id.clone(),
            })?;
        if def.lab_artifact_uri.is_empty() {
            return Err(ApiError::NotFound {
                kind: "lab YAML of definition",
                id: def.id.clone(),
            });
        }
        let (data, meta) = self.inner.artifacts.get(&def.lab_artifact_uri).await?;
        if !def.lab_yaml_hash.is_empty() && meta.sha256 != def.lab_yaml_hash {
            return Err(ApiError::Corrupt(format!(
                "artifact {}: sha256 {} but definition {} expects {}",
                def.lab_artifact_uri, meta.sha256, def.id, def.lab_yaml_hash
            )));
        }
        let text = std::str::from_utf8(&data)
            .map_err(|e| ApiError::Corrupt(format!("artifact {}: {e}", def.lab_artifact_uri)))?;
        let bindings = crate::labyaml::PortBindings::new(&def.port_template, &s.allocated_ports)
            .map_err(|e| ApiError::Corrupt(format!("definition {}: {e}", def.id)))?;
        let out = crate::labyaml::rewrite_ports(text, &bindings)
            .map_err(|e| ApiError::Corrupt(format!("artifact {}: {e}", def.lab_artifact_uri)))?;
        Ok(out.text)
    }

    /// Puts a worker record into the state store (for embedders that bring their own fleet,
    /// tests and demos; the controller adopts it like any other). Its allocation is derived
    /// from the sessions bound to it.
    pub async fn put_worker(&self, w: &Worker) -> Result<(), ApiError> {
        let key = self.ctx().keys.worker(&w.id);
        self.ctx()
            .state
            .put(&key, codec::encode(&key, w)?, None)
            .await?;
        Ok(())
    }

    /// Imports sessions as they are — ids, states, bindings and ports kept — where no session
    /// has that id yet: a migration from another booking system, a restore, a test world. No
    /// admission runs; the scheduler, the controller and the lab loop take them up from the
    /// store as they find them (a bound session's capacity and ports count on its worker).
    /// Each is checked first (id, owner, a state that holds capacity names its worker, ports
    /// only with a worker); one that fails stops the import before anything is written, with
    /// the field and the session named. Returns the ids written and the ids that existed
    /// (left as they are).
    pub async fn import(&self, sessions: &[LabletSession]) -> Result<Imported, ApiError> {
        let ctx = self.ctx();
        let mut seen = std::collections::BTreeSet::new();
        for s in sessions {
            let named = |e: ApiError| match e {
                ApiError::Invalid { field, message } => ApiError::Invalid {
                    field: format!("sessions[{}].{field}", s.id),
                    message,
                },
                e => e,
            };
            check_text("id", &s.id, true).map_err(named)?;
            if s.id.contains('/') {
                return Err(named(ApiError::invalid("id", "contains '/'")));
            }
            check_text("owner_id", &s.owner_id, true).map_err(named)?;
            if s.holds_capacity() && s.worker_id.is_none() {
                return Err(named(ApiError::invalid(
                    "worker_id",
                    format!(
                        "missing: a {:?} session holds capacity on a worker",
                        s.state
                    ),
                )));
            }
            if s.worker_id.is_none() && !s.allocated_ports.is_empty() {
                return Err(named(ApiError::invalid(
                    "allocated_ports",
                    "ports without a worker",
                )));
            }
            if !seen.insert(s.id.as_str()) {
                return Err(named(ApiError::invalid("id", "given twice")));
            }
        }
        let mut out = Imported::default();
        for chunk in sessions.chunks(MAX_BATCH) {
            let mut txn = Txn::new();
            for s in chunk {
                let key = ctx.keys.session(&s.id);
                txn = txn
                    .when(Compare::Missing { key: key.clone() })
                    .put(key.clone(), codec::encode(&key, s)?);
            }
            if ctx.state.txn(txn).await?.succeeded {
                out.created.extend(chunk.iter().map(|s| s.id.clone()));
                continue;
            }
            // Some exist: one at a time.
            for s in chunk {
                let key = ctx.keys.session(&s.id);
                let txn = Txn::new()
                    .when(Compare::Missing { key: key.clone() })
                    .put(key.clone(), codec::encode(&key, s)?);
                if ctx.state.txn(txn).await?.succeeded {
                    out.created.push(s.id.clone());
                } else {
                    out.existing.push(s.id.clone());
                }
            }
        }
        Ok(out)
    }
}

/// What [`Lablets::import`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    /// Ids of the sessions written.
    pub created: Vec<String>,
    /// Ids that existed already (left as they were).
    pub existing: Vec<String>,
}

fn check_text(field: &str, v: &str, required: bool) -> Result<(), ApiError> {
    if required && v.trim().is_empty() {
        return Err(ApiError::invalid(field, "is empty"));
    }
    if v.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid(
            field,
            format!("longer than {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

/// What identifies a booking for its idempotency key.
fn fingerprint(req: &BookingRequest, def: &LabletDefinition) -> String {
    let v = serde_json::json!({
        "definition": def.id,
        "start": req.timeslot_start,
        "end": req.timeslot_end,
        "owner": req.owner_id,
        "region": req.region,
        "reservation": req.reservation_id,
        "queue": req.queue,
    });
    sha256_hex(v.to_string().as_bytes())
}

/// Nodes in every document of a lab YAML (0 when it does not parse; the port template
/// extraction has reported that already).
fn count_nodes(yaml: &str) -> u32 {
    use serde::Deserialize;
    let mut n = 0u32;
    for doc in serde_norway::Deserializer::from_str(yaml) {
        if let Ok(v) = serde_norway::Value::deserialize(doc) {
            if let Some(serde_norway::Value::Sequence(nodes)) = v.get("nodes") {
                n = n.saturating_add(u32::try_from(nodes.len()).unwrap_or(u32::MAX));
            }
        }
    }
    n
}
