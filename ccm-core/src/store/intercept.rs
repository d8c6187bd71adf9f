//! A state store that passes every call on to another and lets an [`Interceptor`] act before
//! listings and transactions and learn what was written: auditing, fault injection, delays —
//! without writing the ten delegating methods of [`StateStore`] again for each.
//!
//! ```
//! use ccm_core::memory::state::MemoryStateStore;
//! use ccm_core::store::intercept::{Intercepted, Interceptor};
//! use ccm_core::store::{StateStore, SystemClock};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! /// Counts what was written.
//! #[derive(Default)]
//! struct Audit(AtomicU64);
//! impl Interceptor for Audit {
//!     fn written(&self, ok: bool) {
//!         if ok {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! # tokio_test_block_on(async {
//! let store = Intercepted::new(Arc::new(MemoryStateStore::new(Arc::new(SystemClock))), Audit::default());
//! store.put("/k", b"v".to_vec(), None).await.unwrap();
//! assert_eq!(store.0.load(Ordering::Relaxed), 1); // the store derefs to its interceptor
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use super::state::{
    KeyValue, LeaseId, ListResponse, Revision, StateStore, StoreError, Txn, TxnResponse,
    WatchStream,
};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// What an [`Intercepted`] store calls around the calls it passes on. Every method has a
/// default that does nothing.
#[async_trait]
pub trait Interceptor: Send + Sync + 'static {
    /// Before a listing of `prefix` goes to `inner`.
    async fn before_list(&self, _inner: &dyn StateStore, _prefix: &str) {}

    /// Before `txn` goes to `inner`; an error fails the transaction without sending it.
    async fn before_txn(&self, _inner: &dyn StateStore, _txn: &Txn) -> Result<(), StoreError> {
        Ok(())
    }

    /// After a put (`ok`: it was written) or a transaction (`ok`: its guards held).
    fn written(&self, _ok: bool) {}
}

/// A [`StateStore`] over `inner` with `interceptor` around its calls (see the module docs). It
/// derefs to its interceptor, so a test reaches its switches and counters directly.
pub struct Intercepted<I> {
    inner: Arc<dyn StateStore>,
    interceptor: I,
}

impl<I: Interceptor> Intercepted<I> {
    /// `inner` with `interceptor` around its calls.
    pub fn new(inner: Arc<dyn StateStore>, interceptor: I) -> Self {
        Intercepted { inner, interceptor }
    }

    /// The store the calls go to.
    pub fn inner(&self) -> &Arc<dyn StateStore> {
        &self.inner
    }
}

impl<I> std::ops::Deref for Intercepted<I> {
    type Target = I;
    fn deref(&self) -> &I {
        &self.interceptor
    }
}

impl<I> std::fmt::Debug for Intercepted<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercepted").finish_non_exhaustive()
    }
}

#[async_trait]
impl<I: Interceptor> StateStore for Intercepted<I> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResponse, StoreError> {
        self.interceptor
            .before_list(self.inner.as_ref(), prefix)
            .await;
        self.inner.list(prefix).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let r = self.inner.put(key, value, lease).await;
        self.interceptor.written(r.is_ok());
        r
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.interceptor
            .before_txn(self.inner.as_ref(), &txn)
            .await?;
        let r = self.inner.txn(txn).await;
        self.interceptor
            .written(r.as_ref().is_ok_and(|r| r.succeeded));
        r
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
}
