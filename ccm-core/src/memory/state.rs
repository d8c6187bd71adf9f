//! In-memory state backend with etcd v3 semantics.
//!
//! [`MemoryStateStore`] behaves like a single etcd member:
//!
//! * one store-wide revision (a fresh store stands at revision 1, like etcd); every write bumps
//!   it, and all writes of one transaction share one new revision;
//! * per key `create_revision`, `mod_revision` and `version`; a missing key reads as 0 in
//!   compares;
//! * transactions of at most [`MAX_TXN_OPS`] operations, with etcd's rule that one branch may
//!   not write the same key twice;
//! * watches on a prefix from a revision: the kept history is replayed first, then live
//!   changes follow, all in revision order. History is bounded ([`MemoryStateStore::with_history_limit`])
//!   and [`MemoryStateStore::compact`] drops it explicitly; a watch from a compacted revision
//!   yields one `Err(StoreError::Compacted)` item and ends;
//! * leases whose TTL runs on the injected [`Clock`]: expiry (checked lazily on every call
//!   and by [`MemoryStateStore::expire_leases`]) deletes the attached keys at one revision and
//!   notifies watchers; keep-alive and revoke as in etcd.
//!
//! For tests, [`MemoryStateStore::set_drop_watch_events`] makes live watch delivery lossy, so
//! a reconcile loop can prove that its periodic re-list catches what a watch missed.
//!
//! ```
//! use ccm_core::memory::state::MemoryStateStore;
//! use ccm_core::store::{Compare, StateStore, Txn, VirtualClock};
//! use chrono::{TimeZone, Utc};
//! use std::sync::Arc;
//! # tokio_test_block(async {
//! let clock = VirtualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
//! let store = MemoryStateStore::new(Arc::new(clock));
//! let rev = store.put("/ccm/a", b"1".to_vec(), None).await.unwrap();
//! let ok = store
//!     .txn(Txn::new().when(Compare::unchanged_since("/ccm/a", rev)).put("/ccm/a", b"2".to_vec()))
//!     .await
//!     .unwrap();
//! assert!(ok.succeeded);
//! let stale = store
//!     .txn(Txn::new().when(Compare::unchanged_since("/ccm/a", rev)).put("/ccm/a", b"3".to_vec()))
//!     .await
//!     .unwrap();
//! assert!(!stale.succeeded);
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use crate::store::clock::Clock;
use crate::store::state::{
    KeyValue, LeaseId, ListResponse, Revision, StateStore, StoreError, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchEvent, WatchStream,
};
use crate::timeslot::Timestamp;
use async_trait::async_trait;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Default number of watch events kept for watches that start in the past.
pub const DEFAULT_HISTORY_LIMIT: usize = 100_000;

/// First lease id handed out (etcd ids are opaque; these are just distinct and non-zero).
const FIRST_LEASE_ID: LeaseId = 0x7c00_0000_0000;

type WatchItem = Result<WatchEvent, StoreError>;

struct Watcher {
    prefix: String,
    /// Revision the watch started from (events before it are not delivered).
    start: Revision,
    tx: mpsc::UnboundedSender<WatchItem>,
}

struct Lease {
    ttl: Duration,
    deadline: Timestamp,
    keys: BTreeSet<String>,
}

struct Inner {
    revision: Revision,
    kvs: BTreeMap<String, KeyValue>,
    /// Events with revision `>= compacted`, in revision order.
    history: VecDeque<WatchEvent>,
    /// Oldest revision a watch may start from (revisions below it are compacted).
    compacted: Revision,
    history_limit: usize,
    max_txn_ops: usize,
    /// Whether a too-large transaction is refused without naming the limit (as etcd does).
    hide_txn_limit: bool,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
    drop_watch_events: bool,
    dropped_events: u64,
}

impl Inner {
    /// Records events of one revision in history and delivers them to live watchers.
    fn publish(&mut self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        if self.drop_watch_events {
            self.dropped_events += events.len() as u64;
        } else {
            self.watchers.retain(|w| {
                for ev in &events {
                    if ev.revision() >= w.start
                        && ev.key().starts_with(&w.prefix)
                        && w.tx.send(Ok(ev.clone())).is_err()
                    {
                        return false;
                    }
                }
                !w.tx.is_closed()
            });
        }
        self.history.extend(events);
        self.trim_history();
    }

    /// Drops whole revisions from the front until the history fits its limit.
    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            let Some(front) = self.history.front().map(WatchEvent::revision) else {
                break;
            };
            while self.history.front().is_some_and(|e| e.revision() == front) {
                self.history.pop_front();
            }
            self.compacted = self.compacted.max(front + 1);
        }
    }

    /// Deletes a key at `rev` (no revision bump here); returns the event.
    fn remove_key(&mut self, key: &str, rev: Revision) -> Option<WatchEvent> {
        let old = self.kvs.remove(key)?;
        if let Some(lease) = old.lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
        Some(WatchEvent::Delete {
            key: key.to_string(),
            mod_revision: rev,
        })
    }

    /// Writes a key at `rev` (no revision bump here); the lease must exist.
    fn write_key(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
        rev: Revision,
    ) -> WatchEvent {
        let (create_revision, version, old_lease) = match self.kvs.get(key) {
            Some(old) => (old.create_revision, old.version + 1, old.lease),
            None => (rev, 1, None),
        };
        if old_lease != lease {
            if let Some(l) = old_lease.and_then(|id| self.leases.get_mut(&id)) {
                l.keys.remove(key);
            }
        }
        if let Some(l) = lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.insert(key.to_string());
        }
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
            version,
            lease,
        };
        self.kvs.insert(key.to_string(), kv.clone());
        WatchEvent::Put(kv)
    }

    /// Removes a lease and deletes its keys at one new revision.
    fn drop_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        if lease.keys.is_empty() {
            return true;
        }
        let rev = self.revision + 1;
        let events: Vec<WatchEvent> = lease
            .keys
            .iter()
            .filter_map(|k| self.remove_key(k, rev))
            .collect();
        if !events.is_empty() {
            self.revision = rev;
            self.publish(events);
        }
        true
    }

    fn expire(&mut self, now: Timestamp) -> usize {
        let mut due: Vec<(Timestamp, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        due.sort();
        for (_, id) in &due {
            tracing::debug!(lease = id, "memory state store: lease expired");
            self.drop_lease(*id);
        }
        due.len()
    }

    fn check_lease(&self, lease: Option<LeaseId>) -> Result<(), StoreError> {
        match lease {
            Some(id) if !self.leases.contains_key(&id) => Err(StoreError::LeaseNotFound(id)),
            _ => Ok(()),
        }
    }
}

/// An in-memory [`StateStore`] with etcd semantics; see the [module docs](self).
///
/// Cheap to share: wrap it in an `Arc` and hand clones to every runtime that should see the
/// same state (two runtimes on one store behave like two daemons on one etcd).
pub struct MemoryStateStore {
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("MemoryStateStore")
            .field("revision", &g.revision)
            .field("keys", &g.kvs.len())
            .field("leases", &g.leases.len())
            .field("watchers", &g.watchers.len())
            .finish()
    }
}

impl MemoryStateStore {
    /// An empty store at revision 1 whose leases run on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryStateStore {
            clock,
            inner: Mutex::new(Inner {
                revision: 1,
                kvs: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                history_limit: DEFAULT_HISTORY_LIMIT,
                max_txn_ops: MAX_TXN_OPS,
                hide_txn_limit: false,
                leases: HashMap::new(),
                next_lease: FIRST_LEASE_ID,
                watchers: Vec::new(),
                drop_watch_events: false,
                dropped_events: 0,
            }),
        }
    }

    /// Keeps at most `limit` events of history (older revisions are compacted automatically).
    pub fn with_history_limit(self, limit: usize) -> Self {
        {
            let mut g = self.lock();
            g.history_limit = limit;
            g.trim_history();
        }
        self
    }

    /// Refuses transactions of more than `limit` operations (etcd's `--max-txn-ops`;
    /// [`MAX_TXN_OPS`] by default) with [`StoreError::TooManyOps`] naming it.
    pub fn with_max_txn_ops(self, limit: usize) -> Self {
        self.lock().max_txn_ops = limit;
        self
    }

    /// Like [`MemoryStateStore::with_max_txn_ops`], but refuses with
    /// [`StoreError::TooManyOperations`] without the number, as etcd does.
    pub fn with_unreported_max_txn_ops(self, limit: usize) -> Self {
        {
            let mut g = self.lock();
            g.max_txn_ops = limit;
            g.hide_txn_limit = true;
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the store after expiring every lease that is due on the clock.
    fn lock_fresh(&self) -> MutexGuard<'_, Inner> {
        let now = self.clock.now();
        let mut g = self.lock();
        g.expire(now);
        g
    }

    /// Expires every lease whose TTL has run out on the clock (deleting its keys and
    /// notifying watchers); returns how many expired. Every other call does this too.
    pub fn expire_leases(&self) -> usize {
        let now = self.clock.now();
        self.lock().expire(now)
    }

    /// The earliest time a live lease expires, if any (for a task that sleeps until then).
    pub fn next_lease_deadline(&self) -> Option<Timestamp> {
        self.lock().leases.values().map(|l| l.deadline).min()
    }

    /// Discards history below `revision` (like `etcdctl compact`): a watch from an older
    /// revision then yields `StoreError::Compacted`. `revision` may not exceed the current one.
    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut g = self.lock();
        if revision > g.revision {
            return Err(StoreError::Backend(format!(
                "cannot compact to revision {revision}: the store is only at {}",
                g.revision
            )));
        }
        if revision <= g.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: g.compacted,
            });
        }
        while g.history.front().is_some_and(|e| e.revision() < revision) {
            g.history.pop_front();
        }
        g.compacted = revision;
        Ok(())
    }

    /// The oldest revision a watch may start from.
    pub fn compacted_revision(&self) -> Revision {
        self.lock().compacted
    }

    /// While `true`, changes are not delivered to live watches (they stay in history, so a
    /// watch started later from an older revision still sees them). Simulates lost events.
    pub fn set_drop_watch_events(&self, drop: bool) {
        self.lock().drop_watch_events = drop;
    }

    /// How many events were withheld from live watches by [`Self::set_drop_watch_events`].
    pub fn dropped_watch_events(&self) -> u64 {
        self.lock().dropped_events
    }

    /// Number of live leases.
    pub fn lease_count(&self) -> usize {
        self.lock_fresh().leases.len()
    }

    /// Number of open watches.
    pub fn watcher_count(&self) -> usize {
        let mut g = self.lock();
        g.watchers.retain(|w| !w.tx.is_closed());
        g.watchers.len()
    }

    /// Applies one branch of a transaction at `rev`; returns the responses and events.
    fn apply(g: &mut Inner, ops: &[TxnOp], rev: Revision) -> (Vec<TxnOpResponse>, Vec<WatchEvent>) {
        let mut responses = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => {
                    events.push(g.write_key(key, value.clone(), *lease, rev));
                    responses.push(TxnOpResponse::Put);
                }
                TxnOp::Delete { key } => match g.remove_key(key, rev) {
                    Some(ev) => {
                        events.push(ev);
                        responses.push(TxnOpResponse::Delete(1));
                    }
                    None => responses.push(TxnOpResponse::Delete(0)),
                },
                TxnOp::Get { key } => responses.push(TxnOpResponse::Get(g.kvs.get(key).cloned())),
            }
        }
        (responses, events)
    }

    /// etcd's checks on one branch: leases exist, no key written twice.
    fn validate_branch(g: &Inner, ops: &[TxnOp]) -> Result<(), StoreError> {
        let mut written = HashSet::new();
        for op in ops {
            let key = match op {
                TxnOp::Put { key, lease, .. } => {
                    g.check_lease(*lease)?;
                    key
                }
                TxnOp::Delete { key } => key,
                TxnOp::Get { .. } => continue,
            };
            if !written.insert(key.as_str()) {
                return Err(StoreError::Backend(format!(
                    "duplicate key given in txn request: {key}"
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock_fresh().kvs.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<ListResponse, StoreError> {
        let g = self.lock_fresh();
        let kvs = g
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(ListResponse {
            kvs,
            revision: g.revision,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let mut g = self.lock_fresh();
        g.check_lease(lease)?;
        let rev = g.revision + 1;
        let ev = g.write_key(key, value, lease, rev);
        g.revision = rev;
        g.publish(vec![ev]);
        Ok(rev)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut g = self.lock_fresh();
        let rev = g.revision + 1;
        match g.remove_key(key, rev) {
            Some(ev) => {
                g.revision = rev;
                g.publish(vec![ev]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let ops = txn.op_count();
        let mut g = self.lock_fresh();
        if ops > g.max_txn_ops {
            return Err(if g.hide_txn_limit {
                StoreError::TooManyOperations { limit: None }
            } else {
                StoreError::TooManyOps {
                    ops,
                    limit: g.max_txn_ops,
                }
            });
        }
        Self::validate_branch(&g, &txn.success)?;
        Self::validate_branch(&g, &txn.failure)?;
        let succeeded = txn.compares.iter().all(|c| c.holds(g.kvs.get(c.key())));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let rev = g.revision + 1;
        let (responses, events) = Self::apply(&mut g, branch, rev);
        if !events.is_empty() {
            g.revision = rev;
            g.publish(events);
        }
        Ok(TxnResponse {
            succeeded,
            revision: g.revision,
            responses,
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let mut g = self.lock_fresh();
        let start = if from_revision <= 0 {
            g.revision + 1
        } else {
            from_revision
        };
        if start < g.compacted {
            let err = StoreError::Compacted {
                requested: start,
                compacted: g.compacted,
            };
            return Ok(futures::stream::once(async move { Err(err) }).boxed());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for ev in g
            .history
            .iter()
            .filter(|e| e.revision() >= start && e.key().starts_with(prefix))
        {
            // The receiver is alive: it is in this scope.
            let _ = tx.send(Ok(ev.clone()));
        }
        g.watchers.push(Watcher {
            prefix: prefix.to_string(),
            start,
            tx,
        });
        Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let deadline = self.clock.now() + to_chrono(ttl)?;
        let mut g = self.lock_fresh();
        let id = g.next_lease;
        g.next_lease += 1;
        g.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let now = self.clock.now();
        let mut g = self.lock_fresh();
        let l = g
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        l.deadline = now + to_chrono(l.ttl)?;
        Ok(l.ttl)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut g = self.lock_fresh();
        if g.drop_lease(lease) {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock_fresh().revision)
    }
}

fn to_chrono(d: Duration) -> Result<chrono::Duration, StoreError> {
    chrono::Duration::from_std(d)
        .map_err(|e| StoreError::Backend(format!("lease TTL {d:?} out of range: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::Compare;
    use crate::store::VirtualClock;
    use chrono::TimeZone;

    fn store() -> (VirtualClock, MemoryStateStore) {
        let clock = VirtualClock::new(chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let s = MemoryStateStore::new(Arc::new(clock.clone()));
        (clock, s)
    }

    #[tokio::test]
    async fn txn_writes_share_one_revision_and_history_trims_whole_revisions() {
        let (_c, s) = store();
        let s = s.with_history_limit(3);
        let r = s
            .txn(Txn::new().put("/a", b"1".to_vec()).put("/b", b"1".to_vec()))
            .await
            .unwrap();
        assert_eq!(r.revision, 2);
        assert_eq!(s.get("/a").await.unwrap().unwrap().mod_revision, 2);
        assert_eq!(s.get("/b").await.unwrap().unwrap().mod_revision, 2);
        s.put("/c", vec![], None).await.unwrap();
        s.put("/d", vec![], None).await.unwrap();
        // 4 events > 3: revision 2 (two events) goes as a whole.
        assert_eq!(s.compacted_revision(), 3);
        let mut w = s.watch("/", 3).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().key(), "/c");
        let mut old = s.watch("/", 2).await.unwrap();
        assert!(matches!(
            old.next().await.unwrap(),
            Err(StoreError::Compacted {
                requested: 2,
                compacted: 3
            })
        ));
        assert!(old.next().await.is_none());
    }

    #[tokio::test]
    async fn watch_from_a_future_revision_skips_earlier_changes() {
        let (_c, s) = store();
        let mut w = s.watch("/", 4).await.unwrap();
        s.put("/r2", vec![], None).await.unwrap();
        s.put("/r3", vec![], None).await.unwrap();
        s.put("/r4", vec![], None).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().key(), "/r4");
    }

    #[tokio::test]
    async fn duplicate_key_in_a_branch_is_rejected() {
        let (_c, s) = store();
        let err = s
            .txn(Txn::new().put("/a", vec![]).delete("/a"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
        assert_eq!(s.current_revision().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn dropped_events_stay_in_history() {
        let (_c, s) = store();
        let mut live = s.watch("/", 0).await.unwrap();
        s.set_drop_watch_events(true);
        s.put("/lost", vec![], None).await.unwrap();
        s.set_drop_watch_events(false);
        s.put("/seen", vec![], None).await.unwrap();
        assert_eq!(live.next().await.unwrap().unwrap().key(), "/seen");
        assert_eq!(s.dropped_watch_events(), 1);
        let mut replay = s.watch("/", 2).await.unwrap();
        assert_eq!(replay.next().await.unwrap().unwrap().key(), "/lost");
    }

    #[tokio::test]
    async fn lease_expiry_is_lazy_and_explicit() {
        let (c, s) = store();
        let l = s.grant_lease(Duration::from_secs(10)).await.unwrap();
        s.put("/k", vec![], Some(l)).await.unwrap();
        assert_eq!(
            s.next_lease_deadline(),
            Some(c.now() + chrono::Duration::seconds(10))
        );
        c.advance(chrono::Duration::seconds(9));
        assert_eq!(s.expire_leases(), 0);
        c.advance(chrono::Duration::seconds(1));
        assert_eq!(s.expire_leases(), 1);
        assert_eq!(s.lease_count(), 0);
        assert!(s.get("/k").await.unwrap().is_none());
        assert_eq!(
            s.put("/k2", vec![], Some(l)).await,
            Err(StoreError::LeaseNotFound(l))
        );
    }

    #[tokio::test]
    async fn rewriting_a_key_without_lease_detaches_it() {
        let (_c, s) = store();
        let l = s.grant_lease(Duration::from_secs(10)).await.unwrap();
        s.put("/k", vec![], Some(l)).await.unwrap();
        s.put("/k", b"x".to_vec(), None).await.unwrap();
        s.revoke_lease(l).await.unwrap();
        assert_eq!(s.get("/k").await.unwrap().unwrap().version, 2);
    }

    #[tokio::test]
    async fn compare_on_missing_key_reads_zero() {
        let (_c, s) = store();
        let r = s
            .txn(
                Txn::new()
                    .when(Compare::unchanged_since("/none", 0))
                    .put("/none", vec![]),
            )
            .await
            .unwrap();
        assert!(r.succeeded);
    }
}
