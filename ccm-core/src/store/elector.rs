//! Leader election on any [`StateStore`]: a leader key held by a lease, created only if
//! absent, fenced by its create revision.
//!
//! Key layout: `{prefix}/leader/{election}` (default prefix `/ccm`), value = the candidate id
//! (UTF-8), attached to the leader's lease. The fence token of a term is the key's
//! `create_revision`: a later leader can only create the key after it was deleted, so its
//! token is strictly higher, and a deposed leader's fenced transaction fails its compare.
//!
//! ```
//! use ccm_core::memory::state::MemoryStateStore;
//! use ccm_core::store::elector::StoreElector;
//! use ccm_core::store::{LeaderElector, StateStore, Txn, VirtualClock};
//! use chrono::{TimeZone, Utc};
//! use std::{sync::Arc, time::Duration};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = VirtualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
//! let store = Arc::new(MemoryStateStore::new(Arc::new(clock)));
//! let elector = StoreElector::new(store.clone(), "/ccm");
//! let ttl = Duration::from_secs(15);
//! let lead = elector.try_campaign("scheduler", "a", ttl).await.unwrap().unwrap();
//! assert!(elector.try_campaign("scheduler", "b", ttl).await.unwrap().is_none());
//! let write = lead.fence.guard(Txn::new().put("/ccm/x", b"1".to_vec()));
//! assert!(store.txn(write).await.unwrap().succeeded);
//! # });
//! ```

use super::leader::{Fence, LeaderElector, LeaderInfo, Leadership};
use super::state::{Compare, StateStore, StoreError, Txn, TxnOp, TxnOpResponse};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Default key prefix of ccm's state.
pub const DEFAULT_PREFIX: &str = "/ccm";

/// A [`LeaderElector`] over any [`StateStore`] (memory or etcd); see the [module docs](self).
pub struct StoreElector<S: StateStore + ?Sized> {
    store: Arc<S>,
    prefix: String,
}

impl<S: StateStore + ?Sized> Clone for StoreElector<S> {
    fn clone(&self) -> Self {
        StoreElector {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

impl<S: StateStore + ?Sized> std::fmt::Debug for StoreElector<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreElector")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<S: StateStore + ?Sized> StoreElector<S> {
    /// An elector keeping leader keys under `{prefix}/leader/` (a trailing `/` is ignored).
    pub fn new(store: Arc<S>, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.ends_with('/') {
            prefix.pop();
        }
        StoreElector { store, prefix }
    }

    /// The leader key of an election.
    pub fn leader_key(&self, election: &str) -> String {
        format!("{}/leader/{}", self.prefix, election)
    }

    /// The store this elector writes to.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

#[async_trait]
impl<S: StateStore + ?Sized> LeaderElector for StoreElector<S> {
    async fn try_campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Option<Leadership>, StoreError> {
        let key = self.leader_key(election);
        let lease = self.store.grant_lease(ttl).await?;
        let txn = Txn {
            compares: vec![Compare::Missing { key: key.clone() }],
            success: vec![TxnOp::Put {
                key: key.clone(),
                value: candidate.as_bytes().to_vec(),
                lease: Some(lease),
            }],
            failure: vec![],
        };
        let resp = match self.store.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                // Best effort: the lease would expire on its own anyway.
                let _ = self.store.revoke_lease(lease).await;
                return Err(e);
            }
        };
        if !resp.succeeded {
            let _ = self.store.revoke_lease(lease).await;
            return Ok(None);
        }
        tracing::info!(election, candidate, token = resp.revision, "became leader");
        Ok(Some(Leadership {
            election: election.to_string(),
            candidate: candidate.to_string(),
            lease,
            fence: Fence {
                key,
                token: resp.revision,
            },
            ttl,
        }))
    }

    async fn observe(&self, election: &str) -> Result<Option<LeaderInfo>, StoreError> {
        let key = self.leader_key(election);
        Ok(self.store.get(&key).await?.map(|kv| LeaderInfo {
            candidate: String::from_utf8_lossy(&kv.value).into_owned(),
            token: kv.create_revision,
        }))
    }

    async fn keep_alive(&self, leadership: &Leadership) -> Result<(), StoreError> {
        self.store.keep_alive(leadership.lease).await?;
        // Read and check in one round trip: the key must still be this term's.
        let resp = self
            .store
            .txn(Txn {
                compares: vec![leadership.fence.compare()],
                success: vec![],
                failure: vec![TxnOp::Get {
                    key: leadership.fence.key.clone(),
                }],
            })
            .await?;
        if resp.succeeded {
            return Ok(());
        }
        let holder = match resp.responses.first() {
            Some(TxnOpResponse::Get(Some(kv))) => format!(
                "now held by {:?} with token {}",
                String::from_utf8_lossy(&kv.value),
                kv.create_revision
            ),
            _ => "now absent".to_string(),
        };
        Err(StoreError::Backend(format!(
            "leadership of {} lost: leader key {} (our token {}) is {holder}",
            leadership.election, leadership.fence.key, leadership.fence.token
        )))
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), StoreError> {
        match self.store.revoke_lease(leadership.lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => {
                tracing::info!(election = %leadership.election, "resigned leadership");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
