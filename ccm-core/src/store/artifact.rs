//! Lab YAML artifacts with SHA-256 integrity (S3/MinIO in production).

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Metadata of one stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactMeta {
    /// Object key.
    pub key: String,
    /// Hex SHA-256 of the content, stored with the object.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Server version id when versioning is on.
    pub version_id: Option<String>,
    /// Entity tag for conditional writes.
    pub etag: Option<String>,
}

/// Condition of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Overwrite freely.
    Always,
    /// Only when the key does not exist.
    IfAbsent,
    /// Only when the current object has this etag.
    IfMatch(String),
}

/// Errors of an [`ArtifactStore`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// No such key.
    #[error("artifact {0} not found")]
    NotFound(String),
    /// The write condition failed (someone else wrote first).
    #[error("artifact {key}: precondition failed ({condition})")]
    PreconditionFailed {
        /// Key.
        key: String,
        /// Which condition.
        condition: String,
    },
    /// Stored bytes do not match the stored SHA-256.
    #[error("artifact {key} is corrupted: sha256 {actual} but {expected} was stored")]
    Corrupted {
        /// Key.
        key: String,
        /// Stored hash.
        expected: String,
        /// Hash of what was read.
        actual: String,
    },
    /// The store cannot be reached.
    #[error("artifact store unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("artifact store error: {0}")]
    Backend(String),
}

/// Hex SHA-256 of bytes.
///
/// ```
/// assert_eq!(ccm_core::store::artifact::sha256_hex(b"abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// ```
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The key layout of lab YAML: `definitions/{slug}/{version}/cml.yaml`.
pub fn definition_key(slug: &str, version: &semver::Version) -> String {
    format!("definitions/{slug}/{version}/cml.yaml")
}

/// Stores lab YAML.
#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Writes an object with its SHA-256.
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        condition: WriteCondition,
    ) -> Result<ArtifactMeta, ArtifactError>;
    /// Reads and verifies an object.
    async fn get(&self, key: &str) -> Result<(Bytes, ArtifactMeta), ArtifactError>;
    /// Metadata only; `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ArtifactMeta>, ArtifactError>;
    /// Stored versions of a key, newest first (one entry when the backend keeps no versions).
    async fn versions(&self, key: &str) -> Result<Vec<ArtifactMeta>, ArtifactError>;
}
