//! MongoDB [`SpecStore`]: versioned lablet definitions, worker templates and audit events
//! (feature `mongodb`, crate `mongodb` 3.x).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ccm_core::store::SpecError> {
//! use ccm_adapters::mongo::{MongoOptions, MongoSpecStore};
//! use ccm_core::store::SpecStore;
//! let store = MongoSpecStore::connect(
//!     "mongodb://ccm:secret@db1:27017/?authSource=admin",
//!     "ccm",
//!     MongoOptions::default().with_audit_retention_days(365)?,
//! )
//! .await?;
//! let templates = ccm_core::template::load_templates_file("config/worker-templates.yaml".as_ref())
//!     .map_err(|e| ccm_core::store::SpecError::Backend(e.to_string()))?;
//! let report = store.seed_templates(&templates).await?; // create-if-absent, never overwrites
//! # Ok(()) }
//! ```
//!
//! # Configuration
//!
//! * The connection string and the database name are given to [`MongoSpecStore::connect`]
//!   (`ccm-bin` reads them from `MONGODB_URI` and `MONGODB_DATABASE`, default
//!   [`DEFAULT_DATABASE`]; the adapter reads no environment).
//! * Audit retention: [`MongoOptions::audit_retention_days`], 90 to 365 days, default 180;
//!   anything outside is rejected with an error naming the value and the range.
//!
//! Connecting pings the server (bounded by [`MongoOptions::server_selection_timeout`]); an
//! unreachable server or failed authentication gives [`SpecError::Unavailable`] naming the
//! host(s) and never the password. Indexes are created idempotently at every connect.
//!
//! # Stored schema
//!
//! Integer fields are BSON `long` (int64) unless marked `int`; strings are UTF-8.
//!
//! ## `lablet_definitions` — one document per (name, version)
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `_id` | string | `"{name}@{version}"` |
//! | `id` | string | the definition id (a re-planned draft keeps its id: not unique) |
//! | `name` | string | definition name |
//! | `version` | string | semver text, e.g. `1.10.0` |
//! | `version_key` | string | sortable semver key ([`version_key`]): ascending = semver order |
//! | `lab_artifact_uri` | string | where the lab YAML lives |
//! | `lab_yaml_hash` | string | SHA-256 hex of the lab YAML |
//! | `resource_requirements` | document | `{cpu_cores, memory_gb, storage_gb}` (long) |
//! | `node_count` | long | CML nodes |
//! | `license_affinity` | array of string | `PERSONAL`, `ENTERPRISE`, `EVALUATION` |
//! | `ami_requirements` | document | `{name_pattern, cml_version_min, cml_version_max}` (string or null), `node_definitions_required` (array of string) |
//! | `port_template` | array of document | `{name, protocol ("tcp"/"udp"), description}` |
//! | `max_duration_minutes` | long | longest run |
//! | `created_at` | string or null | RFC 3339 UTC with nanoseconds |
//! | `created_by` | string or null | creator |
//!
//! Indexes: `name_version_unique` (`{name: 1, version: 1}`, unique — a second insert of a
//! (name, version) fails with E11000 and becomes [`SpecError::Conflict`]),
//! `name_version_key` (`{name: 1, version_key: 1}`, for listing and "latest"), `definition_id`
//! (`{id: 1}`).
//!
//! ## `worker_templates` — one document per template
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `_id` | string | template name |
//! | `name` | string | template name (unique index `template_name_unique`) |
//! | `description`, `instance_type`, `ami_pattern` | string | as in `config/worker-templates.yaml` |
//! | `capacity` | document | `{cpu_cores, memory_gb, storage_gb}` (long) |
//! | `license_type` | string | `PERSONAL`, `ENTERPRISE`, `EVALUATION` |
//! | `max_nodes`, `startup_minutes` | long | |
//! | `regions` | array of string | |
//! | `port_range` | document | `{start, end}` (int) |
//! | `drain_timeout_hours`, `cost_per_hour_usd` | double | |
//! | `tags` | document | string → string |
//! | `enabled` | bool | |
//! | `max_workers_per_region` | long, absent when unlimited | |
//!
//! Seeding is `updateOne({_id: name}, {$setOnInsert: template}, {upsert: true})`: a template
//! already present — for example edited by an operator — is never overwritten.
//!
//! ## `audit_events` — one document per event
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `_id` | string | event id (recording an id again is a no-op) |
//! | `subject` | string | session, worker or definition id |
//! | `event_type` | string | e.g. `ccm.scaling.up.requested` |
//! | `time` | date | event time (millisecond precision; the TTL index runs on it) |
//! | `time_ns` | long | event time in nanoseconds since the Unix epoch (exact; queries and order use it) |
//! | `actor` | string | loop name and candidate id, or a user |
//! | `reason` | string | why, for people |
//! | `data` | any | details (JSON mapped to BSON) |
//!
//! Indexes: `audit_subject_time` (`{subject: 1, time_ns: 1, _id: 1}`), `audit_type_time`
//! (`{event_type: 1, time_ns: 1, _id: 1}`), `audit_time` (`{time_ns: 1, _id: 1}`) and the TTL
//! index `audit_ttl` (`{time: 1}`, `expireAfterSeconds` = retention). When the retention changes,
//! the TTL index is updated with `collMod` (or dropped and recreated where `collMod` is not
//! supported). SecantusDB accepts the TTL index (tested). For a server that refuses TTL indexes
//! the store logs a warning, reports it in [`MongoSpecStore::ttl_index_active`], and
//! [`MongoSpecStore::purge_expired_audit`] deletes expired events instead.

mod documents;
mod redact;
mod version_key;

pub use version_key::version_key;

use async_trait::async_trait;
use ccm_core::definition::LabletDefinition;
use ccm_core::store::spec::{AuditEvent, AuditQuery, SeedReport, SpecError, SpecStore};
use ccm_core::template::WorkerTemplate;
use ccm_core::timeslot::Timestamp;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use redact::{scrub, uri_facts};
use std::time::Duration;

/// Collection of lablet definitions.
pub const DEFINITIONS: &str = "lablet_definitions";
/// Collection of worker templates.
pub const TEMPLATES: &str = "worker_templates";
/// Collection of audit events.
pub const AUDIT_EVENTS: &str = "audit_events";
/// Database used when `MONGODB_DATABASE` is not set (the same default as `ccm-bin`'s settings).
pub const DEFAULT_DATABASE: &str = "ccm";
/// Shortest audit retention accepted.
pub const MIN_AUDIT_RETENTION_DAYS: u32 = 90;
/// Longest audit retention accepted.
pub const MAX_AUDIT_RETENTION_DAYS: u32 = 365;
/// Audit retention when none is configured.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 180;
/// Name of the TTL index on `audit_events.time`.
pub const AUDIT_TTL_INDEX: &str = "audit_ttl";

const DUPLICATE_KEY: i32 = 11000;
const SECONDS_PER_DAY: u64 = 86_400;

/// Connection and retention settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoOptions {
    /// Days audit events are kept (TTL index), 90–365.
    pub audit_retention_days: u32,
    /// How long to look for a usable server before an operation fails.
    pub server_selection_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

impl Default for MongoOptions {
    fn default() -> Self {
        MongoOptions {
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            server_selection_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl MongoOptions {
    /// These options with another audit retention; rejects days outside 90–365.
    ///
    /// ```
    /// use ccm_adapters::mongo::MongoOptions;
    /// assert!(MongoOptions::default().with_audit_retention_days(90).is_ok());
    /// let err = MongoOptions::default().with_audit_retention_days(30).unwrap_err();
    /// assert!(err.to_string().contains("30 days"));
    /// ```
    pub fn with_audit_retention_days(mut self, days: u32) -> Result<Self, SpecError> {
        self.audit_retention_days = days;
        self.validate()?;
        Ok(self)
    }

    /// These options with both server timeouts set to `timeout`.
    pub fn with_timeouts(mut self, timeout: Duration) -> Self {
        self.server_selection_timeout = timeout;
        self.connect_timeout = timeout;
        self
    }

    /// Checks the retention range.
    pub fn validate(&self) -> Result<(), SpecError> {
        let d = self.audit_retention_days;
        if !(MIN_AUDIT_RETENTION_DAYS..=MAX_AUDIT_RETENTION_DAYS).contains(&d) {
            return Err(SpecError::Backend(format!(
                "audit retention of {d} days is outside the allowed range \
                 {MIN_AUDIT_RETENTION_DAYS}–{MAX_AUDIT_RETENTION_DAYS} days"
            )));
        }
        Ok(())
    }

    /// The retention as a duration.
    pub fn audit_retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.audit_retention_days) * SECONDS_PER_DAY)
    }
}

/// A [`SpecStore`] on MongoDB (schema in the [module docs](self)).
#[derive(Debug, Clone)]
pub struct MongoSpecStore {
    client: Client,
    db: Database,
    definitions: Collection<Document>,
    templates: Collection<Document>,
    audit: Collection<Document>,
    hosts: String,
    secrets: Vec<String>,
    options: MongoOptions,
    ttl_active: bool,
}

impl MongoSpecStore {
    /// Connects to `uri`, checks the server answers (and accepts the credentials), and creates
    /// the indexes (idempotent).
    ///
    /// Errors: [`SpecError::Unavailable`] naming the host(s) — never the password — when the
    /// server cannot be reached or refuses authentication; [`SpecError::Backend`] for a bad
    /// connection string, database name or retention.
    pub async fn connect(
        uri: &str,
        database: &str,
        options: MongoOptions,
    ) -> Result<Self, SpecError> {
        options.validate()?;
        let facts = uri_facts(uri);
        let hosts = if facts.hosts.is_empty() {
            "<no host>".to_string()
        } else {
            facts.hosts.join(",")
        };
        let secrets = facts.secrets;
        if database.is_empty() || database.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
            return Err(SpecError::Backend(format!(
                "invalid MongoDB database name {database:?}: must be non-empty without / \\ . space \" $"
            )));
        }
        let mut client_options = ClientOptions::parse(uri).await.map_err(|e| {
            SpecError::Backend(format!(
                "invalid MongoDB connection string for host(s) {hosts}: {}",
                scrub(&e.to_string(), &secrets)
            ))
        })?;
        client_options.server_selection_timeout = Some(options.server_selection_timeout);
        client_options.connect_timeout = Some(options.connect_timeout);
        if client_options.app_name.is_none() {
            client_options.app_name = Some("ccm".to_string());
        }
        let user = client_options
            .credential
            .as_ref()
            .and_then(|c| c.username.clone());
        let client = Client::with_options(client_options).map_err(|e| {
            SpecError::Backend(format!(
                "cannot configure MongoDB client for host(s) {hosts}: {}",
                scrub(&e.to_string(), &secrets)
            ))
        })?;
        let db = client.database(database);
        if let Err(e) = db.run_command(doc! { "ping": 1 }).await {
            let cause = scrub(&e.to_string(), &secrets);
            let auth = matches!(*e.kind, ErrorKind::Authentication { .. })
                || cause.to_ascii_lowercase().contains("auth");
            return Err(SpecError::Unavailable(if auth {
                format!(
                    "MongoDB at {hosts} refused authentication{}: {cause}",
                    user.map(|u| format!(" for user {u:?}")).unwrap_or_default()
                )
            } else {
                format!(
                    "cannot reach MongoDB at {hosts} within {:?}: {cause}",
                    options.server_selection_timeout
                )
            }));
        }
        let mut store = MongoSpecStore {
            definitions: db.collection(DEFINITIONS),
            templates: db.collection(TEMPLATES),
            audit: db.collection(AUDIT_EVENTS),
            client,
            db,
            hosts,
            secrets,
            options,
            ttl_active: false,
        };
        store.ensure_indexes().await?;
        tracing::info!(
            hosts = %store.hosts,
            database,
            retention_days = store.options.audit_retention_days,
            ttl = store.ttl_active,
            "connected MongoDB spec store"
        );
        Ok(store)
    }

    /// The database in use.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The driver client (shared connection pool).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The options in force.
    pub fn options(&self) -> &MongoOptions {
        &self.options
    }

    /// Whether the server accepted the TTL index on `audit_events.time` (if not, call
    /// [`purge_expired_audit`](Self::purge_expired_audit) periodically).
    pub fn ttl_index_active(&self) -> bool {
        self.ttl_active
    }

    /// Deletes audit events older than the retention before `now`; returns how many. The TTL
    /// index does this by itself where the server supports it.
    pub async fn purge_expired_audit(&self, now: Timestamp) -> Result<u64, SpecError> {
        let retention = chrono::Duration::days(i64::from(self.options.audit_retention_days));
        let cutoff = documents::time_ns(now - retention)?;
        let res = self
            .audit
            .delete_many(doc! { "time_ns": { "$lt": cutoff } })
            .await
            .map_err(|e| self.error("purge expired audit events", e))?;
        Ok(res.deleted_count)
    }

    fn error(&self, what: &str, e: MongoError) -> SpecError {
        let msg = scrub(&e.to_string(), &self.secrets);
        let unavailable = matches!(
            *e.kind,
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::Authentication { .. }
                | ErrorKind::DnsResolve { .. }
        );
        if unavailable {
            SpecError::Unavailable(format!("MongoDB at {}: {what}: {msg}", self.hosts))
        } else {
            SpecError::Backend(format!("MongoDB {what}: {msg}"))
        }
    }

    async fn ensure_indexes(&mut self) -> Result<(), SpecError> {
        let named = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_string())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        };
        self.definitions
            .create_indexes(vec![
                named(
                    doc! { "name": 1, "version": 1 },
                    "name_version_unique",
                    true,
                ),
                named(
                    doc! { "name": 1, "version_key": 1 },
                    "name_version_key",
                    false,
                ),
                named(doc! { "id": 1 }, "definition_id", false),
            ])
            .await
            .map_err(|e| self.error("create indexes on lablet_definitions", e))?;
        self.templates
            .create_indexes(vec![named(
                doc! { "name": 1 },
                "template_name_unique",
                true,
            )])
            .await
            .map_err(|e| self.error("create indexes on worker_templates", e))?;
        self.audit
            .create_indexes(vec![
                named(
                    doc! { "subject": 1, "time_ns": 1, "_id": 1 },
                    "audit_subject_time",
                    false,
                ),
                named(
                    doc! { "event_type": 1, "time_ns": 1, "_id": 1 },
                    "audit_type_time",
                    false,
                ),
                named(doc! { "time_ns": 1, "_id": 1 }, "audit_time", false),
            ])
            .await
            .map_err(|e| self.error("create indexes on audit_events", e))?;
        self.ttl_active = self.ensure_ttl_index().await?;
        Ok(())
    }

    /// Creates the TTL index, or brings its `expireAfterSeconds` to the configured retention.
    /// Returns whether a TTL index is in force.
    async fn ensure_ttl_index(&self) -> Result<bool, SpecError> {
        let retention = self.options.audit_retention();
        let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let model = || {
            IndexModel::builder()
                .keys(doc! { "time": 1 })
                .options(
                    IndexOptions::builder()
                        .name(AUDIT_TTL_INDEX.to_string())
                        .expire_after(Some(retention))
                        .build(),
                )
                .build()
        };
        match self.audit.create_index(model()).await {
            Ok(_) if self.ttl_matches(seconds).await? => return Ok(true),
            // Accepted but left an older expireAfterSeconds in place: update it below.
            Ok(_) => {}
            // 85 IndexOptionsConflict / 86 IndexKeySpecsConflict: an index of that name
            // exists with another expireAfterSeconds (the retention changed): update it below.
            Err(e) if matches!(command_code(&e), Some(85) | Some(86)) => {}
            Err(e) => {
                tracing::warn!(
                    error = %scrub(&e.to_string(), &self.secrets),
                    "MongoDB refused the audit TTL index; expired audit events must be purged \
                     with purge_expired_audit"
                );
                return Ok(false);
            }
        }
        let coll_mod = self
            .db
            .run_command(doc! {
                "collMod": AUDIT_EVENTS,
                "index": { "name": AUDIT_TTL_INDEX, "expireAfterSeconds": seconds },
            })
            .await;
        if coll_mod.is_ok() && self.ttl_matches(seconds).await? {
            tracing::info!(seconds, "audit TTL index retention updated with collMod");
            return Ok(true);
        }
        // Drop and recreate where collMod is not supported.
        if let Err(e) = self.audit.drop_index(AUDIT_TTL_INDEX).await {
            tracing::debug!(error = %scrub(&e.to_string(), &self.secrets), "drop audit TTL index");
        }
        match self.audit.create_index(model()).await {
            Ok(_) => self.ttl_matches(seconds).await,
            Err(e) => {
                tracing::warn!(
                    error = %scrub(&e.to_string(), &self.secrets),
                    "MongoDB refused the audit TTL index; expired audit events must be purged \
                     with purge_expired_audit"
                );
                Ok(false)
            }
        }
    }

    /// Whether the TTL index exists with `expireAfterSeconds == seconds`.
    async fn ttl_matches(&self, seconds: i64) -> Result<bool, SpecError> {
        let indexes: Vec<IndexModel> = self
            .audit
            .list_indexes()
            .await
            .map_err(|e| self.error("list audit_events indexes", e))?
            .try_collect()
            .await
            .map_err(|e| self.error("list audit_events indexes", e))?;
        Ok(indexes.iter().any(|ix| {
            ix.options.as_ref().is_some_and(|o| {
                o.name.as_deref() == Some(AUDIT_TTL_INDEX)
                    && o.expire_after.map(|d| d.as_secs() as i64) == Some(seconds)
            })
        }))
    }

    async fn find_definitions(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<LabletDefinition>, SpecError> {
        let mut find = self.definitions.find(filter).sort(sort);
        if let Some(l) = limit {
            find = find.limit(l);
        }
        let docs: Vec<Document> = find
            .await
            .map_err(|e| self.error("find lablet definitions", e))?
            .try_collect()
            .await
            .map_err(|e| self.error("read lablet definitions", e))?;
        docs.into_iter().map(documents::definition_from).collect()
    }
}

fn command_code(e: &MongoError) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

fn is_duplicate_key(e: &MongoError) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|ws| ws.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    }
}

#[async_trait]
impl SpecStore for MongoSpecStore {
    async fn insert_definition(&self, def: &LabletDefinition) -> Result<(), SpecError> {
        let document = documents::definition_to(def)?;
        match self.definitions.insert_one(document).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(SpecError::Conflict {
                name: def.name.clone(),
                version: def.version.to_string(),
            }),
            Err(e) => Err(self.error("insert lablet definition", e)),
        }
    }

    async fn get_definition(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<Option<LabletDefinition>, SpecError> {
        Ok(self
            .find_definitions(
                doc! { "name": name, "version": version.to_string() },
                doc! { "version_key": 1 },
                Some(1),
            )
            .await?
            .pop())
    }

    async fn get_definition_by_id(&self, id: &str) -> Result<Option<LabletDefinition>, SpecError> {
        // Ids may repeat across versions: the highest version wins (as in memory).
        Ok(self
            .find_definitions(
                doc! { "id": id },
                doc! { "version_key": -1, "name": -1 },
                Some(1),
            )
            .await?
            .pop())
    }

    async fn list_definition_versions(
        &self,
        name: &str,
    ) -> Result<Vec<LabletDefinition>, SpecError> {
        self.find_definitions(doc! { "name": name }, doc! { "version_key": 1 }, None)
            .await
    }

    async fn latest_definition(&self, name: &str) -> Result<Option<LabletDefinition>, SpecError> {
        Ok(self
            .find_definitions(doc! { "name": name }, doc! { "version_key": -1 }, Some(1))
            .await?
            .pop())
    }

    async fn seed_templates(&self, templates: &[WorkerTemplate]) -> Result<SeedReport, SpecError> {
        let mut report = SeedReport::default();
        for t in templates {
            let document = documents::template_to(t)?;
            let res = self
                .templates
                .update_one(doc! { "_id": &t.name }, doc! { "$setOnInsert": document })
                .upsert(true)
                .await;
            match res {
                Ok(r) if r.upserted_id.is_some() => report.created.push(t.name.clone()),
                Ok(_) => report.kept.push(t.name.clone()),
                // A concurrent seeder inserted it between our match and our insert.
                Err(e) if is_duplicate_key(&e) => report.kept.push(t.name.clone()),
                Err(e) => return Err(self.error(&format!("seed template {:?}", t.name), e)),
            }
        }
        tracing::info!(created = ?report.created, kept = ?report.kept, "seeded worker templates");
        Ok(report)
    }

    async fn list_templates(&self) -> Result<Vec<WorkerTemplate>, SpecError> {
        let docs: Vec<Document> = self
            .templates
            .find(doc! {})
            .sort(doc! { "name": 1 })
            .await
            .map_err(|e| self.error("find worker templates", e))?
            .try_collect()
            .await
            .map_err(|e| self.error("read worker templates", e))?;
        docs.into_iter().map(documents::template_from).collect()
    }

    async fn get_template(&self, name: &str) -> Result<Option<WorkerTemplate>, SpecError> {
        self.templates
            .find_one(doc! { "_id": name })
            .await
            .map_err(|e| self.error("find worker template", e))?
            .map(documents::template_from)
            .transpose()
    }

    async fn put_template(&self, template: &WorkerTemplate) -> Result<(), SpecError> {
        let document = documents::template_to(template)?;
        self.templates
            .replace_one(doc! { "_id": &template.name }, document)
            .upsert(true)
            .await
            .map_err(|e| self.error(&format!("put template {:?}", template.name), e))?;
        Ok(())
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), SpecError> {
        let document = documents::audit_to(event)?;
        match self.audit.insert_one(document).await {
            Ok(_) => Ok(()),
            // Same id already recorded (a retried producer): keep the first.
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(self.error("record audit event", e)),
        }
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, SpecError> {
        let mut filter = Document::new();
        if let Some(s) = &query.subject {
            filter.insert("subject", s.as_str());
        }
        if let Some(t) = &query.event_type {
            filter.insert("event_type", t.as_str());
        }
        let mut range = Document::new();
        if let Some(f) = query.from {
            range.insert("$gte", documents::time_ns(f)?);
        }
        if let Some(t) = query.to {
            range.insert("$lt", documents::time_ns(t)?);
        }
        if !range.is_empty() {
            filter.insert("time_ns", Bson::Document(range));
        }
        let mut find = self
            .audit
            .find(filter)
            .sort(doc! { "time_ns": 1, "_id": 1 });
        if let Some(l) = query.limit {
            if l == 0 {
                return Ok(Vec::new());
            }
            find = find.limit(i64::try_from(l).unwrap_or(i64::MAX));
        }
        let docs: Vec<Document> = find
            .await
            .map_err(|e| self.error("query audit events", e))?
            .try_collect()
            .await
            .map_err(|e| self.error("read audit events", e))?;
        docs.into_iter().map(documents::audit_from).collect()
    }
}
