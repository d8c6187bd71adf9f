//! In-memory artifact backend.
//!
//! Semantics follow a versioned S3 bucket: every write adds a version (newest first in
//! [`ArtifactStore::versions`]), the entity tag is derived from the content (equal bytes give
//! equal etags, as S3's MD5 etags do), conditional writes are checked atomically under one lock,
//! and the SHA-256 recorded at write time is verified on every read.
//!
//! [`MemoryArtifactStore::tamper`] is a test hook that swaps the stored bytes while keeping the
//! recorded hash, the way a bit flip or an out-of-band overwrite would.
//!
//! ```
//! use bytes::Bytes;
//! use ccm_core::memory::artifact::MemoryArtifactStore;
//! use ccm_core::store::{ArtifactError, ArtifactStore, WriteCondition};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryArtifactStore::new();
//! let meta = store.put("k", Bytes::from_static(b"lab"), WriteCondition::IfAbsent).await.unwrap();
//! assert!(matches!(
//!     store.put("k", Bytes::from_static(b"other"), WriteCondition::IfAbsent).await,
//!     Err(ArtifactError::PreconditionFailed { .. })
//! ));
//! store.tamper("k", Bytes::from_static(b"evil"));
//! assert!(matches!(store.get("k").await, Err(ArtifactError::Corrupted { .. })));
//! # let _ = meta; });
//! ```

use crate::store::artifact::{
    sha256_hex, ArtifactError, ArtifactMeta, ArtifactStore, WriteCondition,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// One stored version.
#[derive(Debug, Clone)]
struct Version {
    data: Bytes,
    meta: ArtifactMeta,
}

#[derive(Debug, Default)]
struct Inner {
    /// Versions per key, oldest first.
    objects: HashMap<String, Vec<Version>>,
    /// Monotonic counter for version ids.
    next_version: u64,
}

/// An [`ArtifactStore`] kept in process memory.
#[derive(Debug, Default)]
pub struct MemoryArtifactStore {
    inner: Mutex<Inner>,
}

/// Entity tag of content: quoted, like S3's, derived from the bytes.
fn etag_of(sha256: &str) -> String {
    format!("\"{}\"", &sha256[..32.min(sha256.len())])
}

impl MemoryArtifactStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-call; the map itself is
        // always left consistent (every mutation is a single push or assignment).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Test hook: replaces the bytes of the newest version of `key` while keeping its recorded
    /// SHA-256, so the next [`ArtifactStore::get`] must report [`ArtifactError::Corrupted`].
    /// Returns false when the key does not exist.
    pub fn tamper(&self, key: &str, data: Bytes) -> bool {
        let mut inner = self.lock();
        match inner.objects.get_mut(key).and_then(|v| v.last_mut()) {
            Some(latest) => {
                latest.data = data;
                true
            }
            None => false,
        }
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ArtifactStore for MemoryArtifactStore {
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        condition: WriteCondition,
    ) -> Result<ArtifactMeta, ArtifactError> {
        let sha256 = sha256_hex(&data);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(key)
            .and_then(|v| v.last())
            .map(|v| v.meta.clone());
        match (&condition, &current) {
            (WriteCondition::Always, _) | (WriteCondition::IfAbsent, None) => {}
            (WriteCondition::IfMatch(etag), Some(cur)) if cur.etag.as_deref() == Some(etag) => {}
            (WriteCondition::IfAbsent, Some(_)) => {
                return Err(ArtifactError::PreconditionFailed {
                    key: key.to_string(),
                    condition: "if-absent: the key exists".to_string(),
                })
            }
            (WriteCondition::IfMatch(etag), cur) => {
                return Err(ArtifactError::PreconditionFailed {
                    key: key.to_string(),
                    condition: format!(
                        "if-match {etag}: current etag is {}",
                        cur.as_ref()
                            .and_then(|c| c.etag.clone())
                            .unwrap_or_else(|| "absent".to_string())
                    ),
                })
            }
        }
        inner.next_version += 1;
        let meta = ArtifactMeta {
            key: key.to_string(),
            etag: Some(etag_of(&sha256)),
            sha256,
            size: data.len() as u64,
            version_id: Some(format!("v{:08}", inner.next_version)),
        };
        inner
            .objects
            .entry(key.to_string())
            .or_default()
            .push(Version {
                data,
                meta: meta.clone(),
            });
        tracing::debug!(key, size = meta.size, "artifact stored in memory");
        Ok(meta)
    }

    async fn get(&self, key: &str) -> Result<(Bytes, ArtifactMeta), ArtifactError> {
        let latest = self
            .lock()
            .objects
            .get(key)
            .and_then(|v| v.last())
            .cloned()
            .ok_or_else(|| ArtifactError::NotFound(key.to_string()))?;
        let actual = sha256_hex(&latest.data);
        if actual != latest.meta.sha256 {
            return Err(ArtifactError::Corrupted {
                key: key.to_string(),
                expected: latest.meta.sha256,
                actual,
            });
        }
        Ok((latest.data, latest.meta))
    }

    async fn head(&self, key: &str) -> Result<Option<ArtifactMeta>, ArtifactError> {
        Ok(self
            .lock()
            .objects
            .get(key)
            .and_then(|v| v.last())
            .map(|v| v.meta.clone()))
    }

    async fn versions(&self, key: &str) -> Result<Vec<ArtifactMeta>, ArtifactError> {
        Ok(self
            .lock()
            .objects
            .get(key)
            .map(|v| v.iter().rev().map(|v| v.meta.clone()).collect())
            .unwrap_or_default())
    }
}
