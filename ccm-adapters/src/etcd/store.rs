//! [`EtcdStateStore`]: the live-state store on etcd v3.

use super::config::{read_pem, EtcdConfig};
use super::errors::{is_transient, map_err};
use super::watch::spawn_watch;
use async_trait::async_trait;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{
    CmpOp, Compare, KeyValue, LeaseId, ListResponse, Revision, StateStore, StoreError, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchStream,
};
use etcd_client as ec;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Largest gRPC message accepted from etcd (a listing of many sessions can exceed the 4 MiB
/// default).
const MAX_DECODE: usize = 256 * 1024 * 1024;

/// The leader elector for etcd: leader key `{prefix}/leader/{election}` with a lease,
/// fenced by its create revision.
pub type EtcdElector = StoreElector<EtcdStateStore>;

/// A [`StateStore`] on etcd v3; see the [module docs](super).
///
/// ```no_run
/// use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
/// use ccm_core::store::StateStore;
/// # async fn demo() -> Result<(), ccm_core::store::StoreError> {
/// let store = EtcdStateStore::connect(EtcdConfig::new(["http://127.0.0.1:2379"])).await?;
/// let rev = store.put("/ccm/hello", b"world".to_vec(), None).await?;
/// assert!(rev > 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdStateStore {
    kv: ec::KvClient,
    lease: ec::LeaseClient,
    watch: ec::WatchClient,
    config: Arc<EtcdConfig>,
}

impl std::fmt::Debug for EtcdStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStateStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EtcdStateStore {
    /// Connects to the configured endpoints. The connection is lazy: an unreachable etcd
    /// shows up as `Unavailable` on the first call (use [`Self::ping`] to check at start-up);
    /// bad settings (malformed URL, unreadable certificate) fail here with a message naming
    /// the setting.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        config
            .validate()
            .map_err(|e| StoreError::Backend(format!("etcd settings: {e}")))?;
        let mut opts = ec::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if config.uses_tls() {
            let mut tls = ec::TlsOptions::new();
            if let Some(ca) = &config.ca_cert {
                let pem = read_pem("ETCD_CA_CERT", ca)
                    .map_err(|e| StoreError::Backend(format!("etcd settings: {e}")))?;
                tls = tls.ca_certificate(ec::Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
                let c = read_pem("ETCD_CERT_CERT", cert)
                    .map_err(|e| StoreError::Backend(format!("etcd settings: {e}")))?;
                let k = read_pem("ETCD_CERT_KEY", key)
                    .map_err(|e| StoreError::Backend(format!("etcd settings: {e}")))?;
                tls = tls.identity(ec::Identity::from_pem(c, k));
            }
            opts = opts.with_tls(tls);
        }
        let client = ec::Client::connect(&config.endpoints, Some(opts))
            .await
            .map_err(|e| match map_err(e, None) {
                StoreError::Backend(m) => {
                    StoreError::Backend(format!("etcd endpoints {:?}: {m}", config.endpoints))
                }
                other => other,
            })?;
        tracing::info!(endpoints = ?config.endpoints, tls = config.uses_tls(), "etcd client ready");
        Ok(EtcdStateStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_DECODE)
                .max_encoding_message_size(MAX_DECODE),
            lease: client.lease_client(),
            watch: client.watch_client().max_decoding_message_size(MAX_DECODE),
            config: Arc::new(config),
        })
    }

    /// The settings this store was made with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The fenced leader elector on this store, with leader keys under the configured prefix.
    pub fn elector(self: &Arc<Self>) -> EtcdElector {
        StoreElector::new(self.clone(), self.config.prefix.clone())
    }

    /// One round trip to etcd; returns its revision.
    pub async fn ping(&self) -> Result<Revision, StoreError> {
        let mut kv = self.kv.clone();
        let r = kv
            .get("\0", Some(ec::GetOptions::new().with_count_only()))
            .await
            .map_err(|e| map_err(e, None))?;
        header_revision(r.header())
    }

    /// Compacts etcd's history up to `revision` (physically): watches from older revisions
    /// then get `StoreError::Compacted`. Retried while etcd is briefly unavailable; asking for
    /// a revision that is already compacted yields `StoreError::Compacted`.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut retried = false;
        self.read("compact", || {
            let first = !retried;
            retried = true;
            let mut kv = self.kv.clone();
            async move {
                match kv
                    .compact(revision, Some(ec::CompactionOptions::new().with_physical()))
                    .await
                {
                    Ok(_) => Ok(()),
                    // A retry after an unacknowledged success finds its own compaction.
                    Err(ec::Error::GRpcStatus(s)) if s.message().contains("compacted") => {
                        if first {
                            Err(StoreError::Compacted {
                                requested: revision,
                                compacted: revision,
                            })
                        } else {
                            Ok(())
                        }
                    }
                    Err(e) => Err(map_err(e, None)),
                }
            }
        })
        .await
    }

    /// Deletes every key under `prefix` in one request (test and bench clean-up; ccm itself
    /// never deletes ranges). Returns how many keys went.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<i64, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Backend(
                "refusing to delete with an empty prefix (that is every key)".into(),
            ));
        }
        let mut kv = self.kv.clone();
        let r = kv
            .delete(prefix, Some(ec::DeleteOptions::new().with_prefix()))
            .await
            .map_err(|e| map_err(e, None))?;
        Ok(r.deleted())
    }

    /// Runs an idempotent read, retrying while etcd is unavailable for up to `read_retry`.
    async fn read<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.read_retry;
        let mut backoff = Duration::from_millis(50);
        loop {
            match f().await {
                Err(e) if is_transient(&e) && tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(what, error = %e, "etcd read failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(800));
                }
                other => return other,
            }
        }
    }

    fn check_ops(&self, txn: &Txn) -> Result<(), StoreError> {
        let ops = txn.op_count();
        if ops > self.config.max_txn_ops {
            return Err(StoreError::TooManyOps {
                ops,
                limit: self.config.max_txn_ops,
            });
        }
        Ok(())
    }
}

fn header_revision(h: Option<&ec::ResponseHeader>) -> Result<Revision, StoreError> {
    h.map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd response without header".into()))
}

/// Converts an etcd key-value.
pub(crate) fn to_kv(kv: &ec::KeyValue) -> Result<KeyValue, StoreError> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|e| StoreError::Decode {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            message: format!("key is not UTF-8: {e}"),
        })?
        .to_string();
    Ok(KeyValue {
        key,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn cmp_op(op: CmpOp) -> ec::CompareOp {
    match op {
        CmpOp::Equal => ec::CompareOp::Equal,
        CmpOp::NotEqual => ec::CompareOp::NotEqual,
        CmpOp::Less => ec::CompareOp::Less,
        CmpOp::Greater => ec::CompareOp::Greater,
    }
}

fn to_compare(c: &Compare) -> ec::Compare {
    match c {
        Compare::ModRevision { key, op, revision } => {
            ec::Compare::mod_revision(key.as_str(), cmp_op(*op), *revision)
        }
        Compare::CreateRevision { key, op, revision } => {
            ec::Compare::create_revision(key.as_str(), cmp_op(*op), *revision)
        }
        Compare::Version { key, op, version } => {
            ec::Compare::version(key.as_str(), cmp_op(*op), *version)
        }
        Compare::Exists { key } => {
            ec::Compare::create_revision(key.as_str(), ec::CompareOp::Greater, 0)
        }
        Compare::Missing { key } => {
            ec::Compare::create_revision(key.as_str(), ec::CompareOp::Equal, 0)
        }
        Compare::Value { key, value } => {
            ec::Compare::value(key.as_str(), ec::CompareOp::Equal, value.clone())
        }
    }
}

fn to_op(op: &TxnOp) -> ec::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => ec::TxnOp::put(
            key.as_str(),
            value.clone(),
            lease.map(|l| ec::PutOptions::new().with_lease(l)),
        ),
        TxnOp::Delete { key } => ec::TxnOp::delete(key.as_str(), None),
        TxnOp::Get { key } => ec::TxnOp::get(key.as_str(), None),
    }
}

fn first_lease(ops: &[TxnOp]) -> Option<LeaseId> {
    ops.iter().find_map(|o| match o {
        TxnOp::Put { lease, .. } => *lease,
        _ => None,
    })
}

#[async_trait]
impl StateStore for EtcdStateStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.read("get", || async {
            let mut kv = self.kv.clone();
            let r = kv.get(key, None).await.map_err(|e| map_err(e, None))?;
            r.kvs().first().map(to_kv).transpose()
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<ListResponse, StoreError> {
        self.read("list", || async {
            let mut kv = self.kv.clone();
            let r = kv
                .get(prefix, Some(ec::GetOptions::new().with_prefix()))
                .await
                .map_err(|e| map_err(e, None))?;
            Ok(ListResponse {
                kvs: r.kvs().iter().map(to_kv).collect::<Result<_, _>>()?,
                revision: header_revision(r.header())?,
            })
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let mut kv = self.kv.clone();
        let r = kv
            .put(
                key,
                value,
                lease.map(|l| ec::PutOptions::new().with_lease(l)),
            )
            .await
            .map_err(|e| map_err(e, lease))?;
        header_revision(r.header())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut kv = self.kv.clone();
        let r = kv.delete(key, None).await.map_err(|e| map_err(e, None))?;
        Ok(r.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.check_ops(&txn)?;
        let lease = first_lease(&txn.success).or_else(|| first_lease(&txn.failure));
        let req = ec::Txn::new()
            .when(txn.compares.iter().map(to_compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(to_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(to_op).collect::<Vec<_>>());
        let mut kv = self.kv.clone();
        let r = kv.txn(req).await.map_err(|e| match map_err(e, lease) {
            StoreError::Backend(m) if m.contains("too many operations") => StoreError::TooManyOps {
                ops: txn.op_count(),
                limit: self.config.max_txn_ops,
            },
            other => other,
        })?;
        let mut responses = Vec::new();
        for op in r.op_responses() {
            responses.push(match op {
                ec::TxnOpResponse::Put(_) => TxnOpResponse::Put,
                ec::TxnOpResponse::Delete(d) => TxnOpResponse::Delete(d.deleted()),
                ec::TxnOpResponse::Get(g) => {
                    TxnOpResponse::Get(g.kvs().first().map(to_kv).transpose()?)
                }
                ec::TxnOpResponse::Txn(_) => {
                    return Err(StoreError::Backend(
                        "etcd returned a nested transaction response ccm never asks for".into(),
                    ))
                }
            });
        }
        Ok(TxnResponse {
            succeeded: r.succeeded(),
            revision: header_revision(r.header())?,
            responses,
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let start = if from_revision <= 0 {
            self.current_revision().await? + 1
        } else {
            from_revision
        };
        spawn_watch(self.watch.clone(), prefix.to_string(), start).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX)
            .max(1);
        let mut lease = self.lease.clone();
        let r = lease
            .grant(secs, None)
            .await
            .map_err(|e| map_err(e, None))?;
        if !r.error().is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd lease grant: {}",
                r.error()
            )));
        }
        Ok(r.id())
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<Duration, StoreError> {
        let mut lease = self.lease.clone();
        // The first round trip happens inside `keep_alive` (and fails for an unknown lease);
        // a second one reports the TTL.
        let (mut keeper, mut stream) = lease
            .keep_alive(id)
            .await
            .map_err(|e| map_err(e, Some(id)))?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| map_err(e, Some(id)))?;
        let resp = stream
            .message()
            .await
            .map_err(|e| map_err(e, Some(id)))?
            .ok_or_else(|| StoreError::Unavailable("etcd keep-alive stream closed".into()))?;
        if resp.ttl() <= 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        Ok(Duration::from_secs(resp.ttl().unsigned_abs()))
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<(), StoreError> {
        let mut lease = self.lease.clone();
        lease.revoke(id).await.map_err(|e| map_err(e, Some(id)))?;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.read("current_revision", || self.ping()).await
    }
}
