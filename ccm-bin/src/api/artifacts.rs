//! The daemon's artifact store: S3/MinIO from the `ARTIFACT_STORAGE_*` settings, connected on
//! first use (so a daemon that never registers a definition never needs S3); a failed connect
//! answers `Unavailable` and is tried again on the next call.

use async_trait::async_trait;
use bytes::Bytes;
use ccm_core::store::{ArtifactError, ArtifactMeta, ArtifactStore, WriteCondition};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Connects an artifact store.
pub type Connect = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, Result<Arc<dyn ArtifactStore>, ArtifactError>>
        + Send
        + Sync,
>;

/// An artifact store connected on first use.
pub struct LazyArtifacts {
    what: String,
    connect: Connect,
    store: OnceCell<Arc<dyn ArtifactStore>>,
}

impl LazyArtifacts {
    /// `what` names the store in errors (never a secret).
    pub fn new(what: impl Into<String>, connect: Connect) -> Self {
        LazyArtifacts {
            what: what.into(),
            connect,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&Arc<dyn ArtifactStore>, ArtifactError> {
        self.store
            .get_or_try_init(|| (self.connect)())
            .await
            .map_err(|e| match e {
                ArtifactError::Unavailable(m) => {
                    ArtifactError::Unavailable(format!("{}: {m}", self.what))
                }
                other => ArtifactError::Unavailable(format!("{}: {other}", self.what)),
            })
    }
}

#[async_trait]
impl ArtifactStore for LazyArtifacts {
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        condition: WriteCondition,
    ) -> Result<ArtifactMeta, ArtifactError> {
        self.store().await?.put(key, data, condition).await
    }
    async fn get(&self, key: &str) -> Result<(Bytes, ArtifactMeta), ArtifactError> {
        self.store().await?.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ArtifactMeta>, ArtifactError> {
        self.store().await?.head(key).await
    }
    async fn versions(&self, key: &str) -> Result<Vec<ArtifactMeta>, ArtifactError> {
        self.store().await?.versions(key).await
    }
}

/// The S3 store of the settings, connected on first use.
#[cfg(feature = "all-adapters")]
pub fn s3(settings: &crate::settings::ArtifactSettings) -> Arc<dyn ArtifactStore> {
    use ccm_adapters::s3::{S3ArtifactStore, S3Config};
    let mut cfg = S3Config::new(
        &settings.endpoint,
        &settings.access_key,
        settings.secret_key.expose(),
    );
    cfg.bucket.clone_from(&settings.bucket);
    cfg.region.clone_from(&settings.region);
    cfg.use_ssl = settings.use_ssl;
    let what = format!("S3 {} bucket {}", cfg.endpoint_url(), cfg.bucket);
    let connect: Connect = Arc::new(move || {
        let cfg = cfg.clone();
        Box::pin(async move {
            let s = S3ArtifactStore::connect(cfg).await?;
            Ok(Arc::new(s) as Arc<dyn ArtifactStore>)
        })
    });
    Arc::new(LazyArtifacts::new(what, connect))
}

/// Without the S3 adapter: every call is `Unavailable`, naming why.
#[cfg(not(feature = "all-adapters"))]
pub fn s3(_settings: &crate::settings::ArtifactSettings) -> Arc<dyn ArtifactStore> {
    let connect: Connect = Arc::new(|| {
        Box::pin(async {
            Err(ArtifactError::Unavailable(
                "this ccm was built without the S3 adapter (feature all-adapters)".into(),
            ))
        })
    });
    Arc::new(LazyArtifacts::new("S3", connect))
}
