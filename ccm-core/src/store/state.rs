//! A revisioned key-value store with transactions, prefix watches and leases (the shape of
//! etcd v3), which holds ccm's live state.

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::time::Duration;

/// A store-wide, monotonically increasing revision (etcd's `mod_revision`).
pub type Revision = i64;

/// A lease id; keys attached to a lease are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// One key with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes (ccm writes JSON).
    pub value: Vec<u8>,
    /// Revision at which the key was created (stays until it is deleted).
    pub create_revision: Revision,
    /// Revision of the last write.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
    /// Lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// Result of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListResponse {
    /// Keys in key order.
    pub kvs: Vec<KeyValue>,
    /// Store revision the listing was taken at (watch from `revision + 1`).
    pub revision: Revision,
}

/// Comparison operator of a transaction guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `>`
    Greater,
}

impl CmpOp {
    /// Applies the operator.
    pub fn holds(self, actual: i64, target: i64) -> bool {
        match self {
            CmpOp::Equal => actual == target,
            CmpOp::NotEqual => actual != target,
            CmpOp::Less => actual < target,
            CmpOp::Greater => actual > target,
        }
    }
}

/// A transaction guard. For a missing key, mod/create revision and version read as 0 (as in etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// Compare the key's `mod_revision`.
    ModRevision {
        /// Key.
        key: String,
        /// Operator.
        op: CmpOp,
        /// Target.
        revision: Revision,
    },
    /// Compare the key's `create_revision` (used by leader fences).
    CreateRevision {
        /// Key.
        key: String,
        /// Operator.
        op: CmpOp,
        /// Target.
        revision: Revision,
    },
    /// Compare the key's `version`.
    Version {
        /// Key.
        key: String,
        /// Operator.
        op: CmpOp,
        /// Target.
        version: i64,
    },
    /// The key exists.
    Exists {
        /// Key.
        key: String,
    },
    /// The key does not exist.
    Missing {
        /// Key.
        key: String,
    },
    /// The key exists with exactly this value.
    Value {
        /// Key.
        key: String,
        /// Expected bytes.
        value: Vec<u8>,
    },
}

impl Compare {
    /// Guard: the key was not written since `revision` (0 = must not exist).
    pub fn unchanged_since(key: impl Into<String>, revision: Revision) -> Compare {
        Compare::ModRevision {
            key: key.into(),
            op: CmpOp::Equal,
            revision,
        }
    }

    /// The key this guard looks at.
    pub fn key(&self) -> &str {
        match self {
            Compare::ModRevision { key, .. }
            | Compare::CreateRevision { key, .. }
            | Compare::Version { key, .. }
            | Compare::Exists { key }
            | Compare::Missing { key }
            | Compare::Value { key, .. } => key,
        }
    }

    /// Evaluates the guard against the key's current state (`None` = missing).
    pub fn holds(&self, kv: Option<&KeyValue>) -> bool {
        match self {
            Compare::ModRevision { op, revision, .. } => {
                op.holds(kv.map_or(0, |k| k.mod_revision), *revision)
            }
            Compare::CreateRevision { op, revision, .. } => {
                op.holds(kv.map_or(0, |k| k.create_revision), *revision)
            }
            Compare::Version { op, version, .. } => op.holds(kv.map_or(0, |k| k.version), *version),
            Compare::Exists { .. } => kv.is_some(),
            Compare::Missing { .. } => kv.is_none(),
            Compare::Value { value, .. } => kv.is_some_and(|k| &k.value == value),
        }
    }
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a key.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Attach to a lease.
        lease: Option<LeaseId>,
    },
    /// Delete a key.
    Delete {
        /// Key.
        key: String,
    },
    /// Read a key.
    Get {
        /// Key.
        key: String,
    },
}

/// Result of one [`TxnOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A put happened.
    Put,
    /// A delete happened; how many keys went.
    Delete(i64),
    /// A get's result.
    Get(Option<KeyValue>),
}

/// A compare-and-swap transaction: if every compare holds, run `success`, else `failure`.
/// All writes of one transaction get the same new revision and are seen atomically.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    /// Guards (all must hold).
    pub compares: Vec<Compare>,
    /// Run when all hold.
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Txn::default()
    }
    /// Adds a guard.
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    /// Adds a put to the success branch.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.success.push(TxnOp::Put {
            key: key.into(),
            value,
            lease: None,
        });
        self
    }
    /// Adds a delete to the success branch.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.success.push(TxnOp::Delete { key: key.into() });
        self
    }
    /// Adds a get to the failure branch (to learn what changed).
    pub fn or_get(mut self, key: impl Into<String>) -> Self {
        self.failure.push(TxnOp::Get { key: key.into() });
        self
    }
    /// Number of operations (etcd limits a transaction to 128 by default).
    pub fn op_count(&self) -> usize {
        self.compares
            .len()
            .max(self.success.len().max(self.failure.len()))
    }
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// True when all compares held and `success` ran.
    pub succeeded: bool,
    /// Store revision after the transaction.
    pub revision: Revision,
    /// One response per op of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Key written.
    Put(KeyValue),
    /// Key deleted (also by lease expiry).
    Delete {
        /// Key.
        key: String,
        /// Revision of the delete.
        mod_revision: Revision,
    },
}

impl WatchEvent {
    /// Revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
    /// Key changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// A stream of changes in revision order. An `Err(StoreError::Compacted)` item means the
/// start revision is gone: re-list and watch again.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Errors of a [`StateStore`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (retry later).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The watch start revision was compacted away; re-list from the current revision.
    #[error("revision {requested} is compacted (oldest kept: {compacted})")]
    Compacted {
        /// Revision asked for.
        requested: Revision,
        /// Compaction revision.
        compacted: Revision,
    },
    /// The lease is gone (expired or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// Too many ops in one transaction.
    #[error("transaction has {ops} operations, more than the limit {limit}")]
    TooManyOps {
        /// Ops given.
        ops: usize,
        /// Limit.
        limit: usize,
    },
    /// The store refused a transaction as having too many operations, and its limit when it
    /// says (etcd answers "too many operations in txn request" without the number: its
    /// `--max-txn-ops`, 128 by default). The loops halve their batches and retry.
    #[error("the state store refused a transaction: too many operations (server limit: {})", .limit.map_or_else(|| "not reported; etcd's --max-txn-ops".to_string(), |l| l.to_string()))]
    TooManyOperations {
        /// The store's limit, when it reports one.
        limit: Option<usize>,
    },
    /// A value could not be decoded.
    #[error("cannot decode {key}: {message}")]
    Decode {
        /// Key.
        key: String,
        /// Why.
        message: String,
    },
    /// Anything else the backend reported.
    #[error("state store error: {0}")]
    Backend(String),
}

/// The live-state store (etcd in production, [`crate::memory::MemoryStateStore`] embedded).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// One key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key under `prefix`, in key order, with the store revision.
    async fn list(&self, prefix: &str) -> Result<ListResponse, StoreError>;
    /// Writes a key; returns the new revision.
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;
    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;
    /// Changes under `prefix` from `from_revision` (inclusive) on, in revision order.
    async fn watch(&self, prefix: &str, from_revision: Revision)
        -> Result<WatchStream, StoreError>;
    /// A lease that expires after `ttl` without keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Refreshes a lease; returns its TTL. Fails with `LeaseNotFound` once it expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;
    /// Revokes a lease, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}
