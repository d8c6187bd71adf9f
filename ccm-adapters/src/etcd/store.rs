//! [`EtcdStateStore`]: the live-state store on etcd v3.

use super::client::{Conn, Svc};
use super::config::EtcdConfig;
use super::errors::{is_transient, map_status, never_sent};
use super::pb::{etcdserverpb as pb, mvccpb};
use super::watch::spawn_watch;
use async_trait::async_trait;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{
    CmpOp, Compare, KeyValue, LeaseId, ListResponse, Revision, StateStore, StoreError, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchStream,
};
use futures::StreamExt;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::request_op::Request;
use pb::response_op::Response;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Times a call that could not connect is sent again (see [`EtcdStateStore`]'s unary calls).
pub const NOT_SENT_RETRIES: u32 = 8;

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
    conn: Conn,
    config: Arc<EtcdConfig>,
}

impl std::fmt::Debug for EtcdStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStateStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The end of the key range holding every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or empty): every key from `prefix` on.
    vec![0]
}

impl EtcdStateStore {
    /// Connects to the configured endpoints. The connection is lazy: an unreachable etcd
    /// shows up as `Unavailable` on the first call (use [`Self::ping`] to check at start-up);
    /// bad settings (malformed URL, unreadable certificate) fail here with a message naming
    /// the setting. With a user name and password, the first call authenticates, and a token
    /// etcd no longer accepts (it forgets them when it restarts) is renewed and the call
    /// retried once.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        config
            .validate()
            .map_err(|e| StoreError::Backend(format!("etcd settings: {e}")))?;
        let conn = Conn::new(&config)?;
        tracing::info!(endpoints = ?config.endpoints, tls = config.uses_tls(), auth = config.username.is_some(), "etcd client ready");
        Ok(EtcdStateStore {
            conn,
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

    /// Runs one unary call through the connection (auth renewal included). A call that could
    /// not even connect (one member down: the balanced channel may pick its endpoint) never
    /// reached etcd, so it is sent again — writes included — up to [`NOT_SENT_RETRIES`]
    /// times, a few milliseconds apart, letting the balancer pick a member that answers.
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut tries = 0;
        loop {
            match self.conn.call(&mut f).await {
                Err(s) if never_sent(&s) && tries < NOT_SENT_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }

    /// One KV request through [`Self::call`]: each attempt gets a fresh KV client and a copy
    /// of `req`; a failure is mapped with `lease`, the lease the request is about.
    async fn kv<Req, T, F, Fut>(
        &self,
        req: &Req,
        lease: Option<LeaseId>,
        send: F,
    ) -> Result<T, StoreError>
    where
        Req: Clone,
        F: Fn(KvClient<Svc>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(|| send(self.conn.kv(), req.clone()))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| map_status(&s, lease))
    }

    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, StoreError> {
        self.kv(&req, None, |mut kv, req| async move { kv.range(req).await })
            .await
    }

    /// One round trip to etcd; returns its revision.
    pub async fn ping(&self) -> Result<Revision, StoreError> {
        let r = self
            .range(pb::RangeRequest {
                key: b"\0".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await?;
        header_revision(r.header.as_ref())
    }

    /// Compacts etcd's history up to `revision` (physically): watches from older revisions
    /// then get `StoreError::Compacted`. Retried while etcd is briefly unavailable; asking for
    /// a revision that is already compacted yields `StoreError::Compacted`.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut retried = false;
        self.read("compact", || {
            let first = !retried;
            retried = true;
            async move {
                let res = self
                    .call(|| {
                        let mut kv = self.conn.kv();
                        async move {
                            kv.compact(pb::CompactionRequest {
                                revision,
                                physical: true,
                            })
                            .await
                        }
                    })
                    .await;
                match res {
                    Ok(_) => Ok(()),
                    // A retry after an unacknowledged success finds its own compaction.
                    Err(s) if s.message().contains("compacted") => {
                        if first {
                            Err(StoreError::Compacted {
                                requested: revision,
                                compacted: revision,
                            })
                        } else {
                            Ok(())
                        }
                    }
                    Err(s) => Err(map_status(&s, None)),
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
        let req = pb::DeleteRangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        };
        let r = self
            .kv(&req, None, |mut kv, req| async move {
                kv.delete_range(req).await
            })
            .await?;
        Ok(r.deleted)
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

fn header_revision(h: Option<&pb::ResponseHeader>) -> Result<Revision, StoreError> {
    h.map(|h| h.revision)
        .ok_or_else(|| StoreError::Backend("etcd response without header".into()))
}

/// Converts an etcd key-value.
pub(crate) fn to_kv(kv: &mvccpb::KeyValue) -> Result<KeyValue, StoreError> {
    let key = std::str::from_utf8(&kv.key)
        .map_err(|e| StoreError::Decode {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            message: format!("key is not UTF-8: {e}"),
        })?
        .to_string();
    Ok(KeyValue {
        key,
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: (kv.lease != 0).then_some(kv.lease),
    })
}

fn cmp_op(op: CmpOp) -> CompareResult {
    match op {
        CmpOp::Equal => CompareResult::Equal,
        CmpOp::NotEqual => CompareResult::NotEqual,
        CmpOp::Less => CompareResult::Less,
        CmpOp::Greater => CompareResult::Greater,
    }
}

fn compare(
    key: &str,
    result: CompareResult,
    target: CompareTarget,
    union: TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

fn to_compare(c: &Compare) -> pb::Compare {
    match c {
        Compare::ModRevision { key, op, revision } => compare(
            key,
            cmp_op(*op),
            CompareTarget::Mod,
            TargetUnion::ModRevision(*revision),
        ),
        Compare::CreateRevision { key, op, revision } => compare(
            key,
            cmp_op(*op),
            CompareTarget::Create,
            TargetUnion::CreateRevision(*revision),
        ),
        Compare::Version { key, op, version } => compare(
            key,
            cmp_op(*op),
            CompareTarget::Version,
            TargetUnion::Version(*version),
        ),
        Compare::Exists { key } => compare(
            key,
            CompareResult::Greater,
            CompareTarget::Create,
            TargetUnion::CreateRevision(0),
        ),
        Compare::Missing { key } => compare(
            key,
            CompareResult::Equal,
            CompareTarget::Create,
            TargetUnion::CreateRevision(0),
        ),
        Compare::Value { key, value } => compare(
            key,
            CompareResult::Equal,
            CompareTarget::Value,
            TargetUnion::Value(value.clone()),
        ),
    }
}

fn to_op(op: &TxnOp) -> pb::RequestOp {
    let request = match op {
        TxnOp::Put { key, value, lease } => Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.clone(),
            lease: lease.unwrap_or(0),
            ..Default::default()
        }),
        TxnOp::Delete { key } => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        TxnOp::Get { key } => Request::RequestRange(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
    };
    pb::RequestOp {
        request: Some(request),
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
            let r = self
                .range(pb::RangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await?;
            r.kvs.first().map(to_kv).transpose()
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<ListResponse, StoreError> {
        self.read("list", || async {
            let r = self
                .range(pb::RangeRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    ..Default::default()
                })
                .await?;
            Ok(ListResponse {
                kvs: r.kvs.iter().map(to_kv).collect::<Result<_, _>>()?,
                revision: header_revision(r.header.as_ref())?,
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
        let req = pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease: lease.unwrap_or(0),
            ..Default::default()
        };
        let r = self
            .kv(&req, lease, |mut kv, req| async move { kv.put(req).await })
            .await?;
        header_revision(r.header.as_ref())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let req = pb::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let r = self
            .kv(&req, None, |mut kv, req| async move {
                kv.delete_range(req).await
            })
            .await?;
        Ok(r.deleted > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.check_ops(&txn)?;
        let lease = first_lease(&txn.success).or_else(|| first_lease(&txn.failure));
        let req = pb::TxnRequest {
            compare: txn.compares.iter().map(to_compare).collect(),
            success: txn.success.iter().map(to_op).collect(),
            failure: txn.failure.iter().map(to_op).collect(),
        };
        let r = self
            .kv(&req, lease, |mut kv, req| async move { kv.txn(req).await })
            .await
            .map_err(|e| match e {
                StoreError::Backend(m) if m.contains("too many operations") => {
                    StoreError::TooManyOps {
                        ops: txn.op_count(),
                        limit: self.config.max_txn_ops,
                    }
                }
                other => other,
            })?;
        let mut responses = Vec::new();
        for op in &r.responses {
            responses.push(match &op.response {
                Some(Response::ResponsePut(_)) => TxnOpResponse::Put,
                Some(Response::ResponseDeleteRange(d)) => TxnOpResponse::Delete(d.deleted),
                Some(Response::ResponseRange(g)) => {
                    TxnOpResponse::Get(g.kvs.first().map(to_kv).transpose()?)
                }
                Some(Response::ResponseTxn(_)) => {
                    return Err(StoreError::Backend(
                        "etcd returned a nested transaction response ccm never asks for".into(),
                    ))
                }
                None => {
                    return Err(StoreError::Backend(
                        "etcd returned an empty transaction operation response".into(),
                    ))
                }
            });
        }
        Ok(TxnResponse {
            succeeded: r.succeeded,
            revision: header_revision(r.header.as_ref())?,
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
        spawn_watch(self.conn.clone(), prefix.to_string(), start).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX)
            .max(1);
        let r = self
            .call(|| {
                let mut lease = self.conn.lease();
                async move {
                    lease
                        .lease_grant(pb::LeaseGrantRequest { ttl: secs, id: 0 })
                        .await
                }
            })
            .await
            .map_err(|s| map_status(&s, None))?
            .into_inner();
        if !r.error.is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd lease grant: {}",
                r.error
            )));
        }
        Ok(r.id)
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<Duration, StoreError> {
        // One request on a keep-alive stream (held open until the answer is read).
        let resp = self
            .call(|| {
                let mut lease = self.conn.lease();
                async move {
                    let requests = futures::stream::iter([pb::LeaseKeepAliveRequest { id }])
                        .chain(futures::stream::pending());
                    let mut stream = lease.lease_keep_alive(requests).await?.into_inner();
                    stream.message().await
                }
            })
            .await
            .map_err(|s| map_status(&s, Some(id)))?
            .ok_or_else(|| StoreError::Unavailable("etcd keep-alive stream closed".into()))?;
        if resp.ttl <= 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        Ok(Duration::from_secs(resp.ttl.unsigned_abs()))
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<(), StoreError> {
        self.call(|| {
            let mut lease = self.conn.lease();
            async move { lease.lease_revoke(pb::LeaseRevokeRequest { id }).await }
        })
        .await
        .map_err(|s| map_status(&s, Some(id)))?;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.read("current_revision", || self.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/ccm/"), b"/ccm0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
