//! Behaviour suite for the [`StateStore`] and [`LeaderElector`] traits.
//!
//! Each check is a pub async fn that panics (with a message saying what broke) when the
//! implementation deviates from etcd v3 semantics. They run against the in-memory store
//! (`ccm-core/tests/state_suite_memory.rs`) and against real etcd (`ccm-adapters/tests/etcd_*.rs`).
//!
//! Every check works under its own key prefix, so checks can share one server and run in
//! parallel: use [`unique_prefix`]. Lease checks need time to pass: hand them a
//! [`TimeTravel`] — [`VirtualTime`] advances a [`VirtualClock`], [`RealTime`] sleeps (use
//! short TTLs; etcd's minimum lease TTL is about 2 s).

use crate::store::clock::VirtualClock;
use crate::store::leader::LeaderElector;
use crate::store::state::{
    CmpOp, Compare, KeyValue, Revision, StateStore, StoreError, Txn, TxnOp, TxnOpResponse,
    WatchEvent, WatchStream,
};
use async_trait::async_trait;
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;

/// How long a check waits for a watch event or an expiry before it fails (real time).
pub const WAIT: Duration = Duration::from_secs(10);

/// Lets time pass for the store's leases.
#[async_trait]
pub trait TimeTravel: Send + Sync {
    /// Makes `d` pass on the clock the store's leases run on.
    async fn pass(&self, d: Duration);
}

/// Time travel on a [`VirtualClock`] (the memory store's leases run on it).
#[derive(Debug, Clone)]
pub struct VirtualTime(pub VirtualClock);

#[async_trait]
impl TimeTravel for VirtualTime {
    async fn pass(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(1));
        self.0.advance(d);
    }
}

/// Real time: sleeps (for servers such as etcd).
#[derive(Debug, Clone, Copy, Default)]
pub struct RealTime;

#[async_trait]
impl TimeTravel for RealTime {
    async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A prefix no other check or run uses: `{base}/{name}-{uuid}`.
pub fn unique_prefix(base: &str, name: &str) -> String {
    format!(
        "{}/{}-{}",
        base.trim_end_matches('/'),
        name,
        uuid::Uuid::new_v4().simple()
    )
}

async fn must<T>(what: &str, r: Result<T, StoreError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

/// Next watch event, failing after [`WAIT`].
pub async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch yielded an error: {e}"),
        Ok(None) => panic!("watch ended unexpectedly"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// Polls `cond` until it holds, failing after [`WAIT`] with `what`.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {WAIT:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get<S: StateStore + ?Sized>(s: &S, key: &str) -> Option<KeyValue> {
    must(&format!("get {key}"), s.get(key).await).await
}

/// Revisions: each write bumps the store revision; create revision stays, mod revision and
/// version follow writes; delete then re-create starts a new version 1.
pub async fn revisions_and_versions<S: StateStore + ?Sized>(s: &S, prefix: &str) {
    let k = format!("{prefix}/k");
    let r0 = must("current_revision", s.current_revision().await).await;
    let r1 = must("put", s.put(&k, b"v1".to_vec(), None).await).await;
    assert!(r1 > r0, "put must bump the revision ({r0} -> {r1})");
    let kv = get(s, &k).await.expect("key written");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r1, 1)
    );
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.lease, None);
    let r2 = must("put", s.put(&k, b"v2".to_vec(), None).await).await;
    assert!(r2 > r1);
    let kv = get(s, &k).await.expect("key written");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert!(must("current_revision", s.current_revision().await).await >= r2);
    assert!(
        must("delete", s.delete(&k).await).await,
        "delete of an existing key"
    );
    assert!(get(s, &k).await.is_none());
    assert!(
        !must("delete", s.delete(&k).await).await,
        "delete of a missing key reports false"
    );
    let r3 = must("put", s.put(&k, b"v3".to_vec(), None).await).await;
    let kv = get(s, &k).await.expect("key re-created");
    assert_eq!(
        (kv.create_revision, kv.version),
        (r3, 1),
        "re-created key starts over"
    );
}

/// Compare-and-swap on mod revision: a guard on the revision read succeeds once; a second
/// writer with the same stale revision fails and its failure branch reads the winner.
pub async fn cas_on_mod_revision<S: StateStore + ?Sized>(s: &S, prefix: &str) {
    let k = format!("{prefix}/cas");
    let created = must(
        "create-if-absent",
        s.txn(
            Txn::new()
                .when(Compare::unchanged_since(&k, 0))
                .put(&k, b"first".to_vec()),
        )
        .await,
    )
    .await;
    assert!(created.succeeded, "create-if-absent on a missing key");
    let again = must(
        "create-if-absent twice",
        s.txn(
            Txn::new()
                .when(Compare::unchanged_since(&k, 0))
                .put(&k, b"second".to_vec())
                .or_get(&k),
        )
        .await,
    )
    .await;
    assert!(
        !again.succeeded,
        "create-if-absent must fail when the key exists"
    );
    let read = get(s, &k).await.expect("exists");
    let a = must(
        "cas a",
        s.txn(
            Txn::new()
                .when(Compare::unchanged_since(&k, read.mod_revision))
                .put(&k, b"a".to_vec()),
        )
        .await,
    )
    .await;
    assert!(a.succeeded);
    let b = must(
        "cas b",
        s.txn(
            Txn::new()
                .when(Compare::unchanged_since(&k, read.mod_revision))
                .put(&k, b"b".to_vec())
                .or_get(&k),
        )
        .await,
    )
    .await;
    assert!(!b.succeeded, "stale mod revision must fail");
    match b.responses.as_slice() {
        [TxnOpResponse::Get(Some(kv))] => {
            assert_eq!(kv.value, b"a", "failure branch reads the winner");
            assert_eq!(kv.mod_revision, a.revision);
        }
        other => panic!("failure branch should return one get, got {other:?}"),
    }
    assert_eq!(get(s, &k).await.expect("exists").value, b"a");
}

/// Every [`Compare`] variant and operator, including a missing key reading as 0.
pub async fn compare_variants<S: StateStore + ?Sized>(s: &S, prefix: &str) {
    let k = format!("{prefix}/c");
    let missing = format!("{prefix}/missing");
    s.put(&k, b"x".to_vec(), None).await.expect("put");
    let kv = s.put(&k, b"y".to_vec(), None).await.expect("put");
    let cur = get(s, &k).await.expect("exists");
    assert_eq!(cur.mod_revision, kv);
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::Exists { key: k.clone() }, true),
        (
            Compare::Exists {
                key: missing.clone(),
            },
            false,
        ),
        (
            Compare::Missing {
                key: missing.clone(),
            },
            true,
        ),
        (Compare::Missing { key: k.clone() }, false),
        (
            Compare::Value {
                key: k.clone(),
                value: b"y".to_vec(),
            },
            true,
        ),
        (
            Compare::Value {
                key: k.clone(),
                value: b"x".to_vec(),
            },
            false,
        ),
        (
            Compare::Value {
                key: missing.clone(),
                value: vec![],
            },
            false,
        ),
        (
            Compare::Version {
                key: k.clone(),
                op: CmpOp::Equal,
                version: 2,
            },
            true,
        ),
        (
            Compare::Version {
                key: k.clone(),
                op: CmpOp::NotEqual,
                version: 2,
            },
            false,
        ),
        (
            Compare::Version {
                key: k.clone(),
                op: CmpOp::Greater,
                version: 1,
            },
            true,
        ),
        (
            Compare::Version {
                key: k.clone(),
                op: CmpOp::Less,
                version: 2,
            },
            false,
        ),
        (
            Compare::Version {
                key: k.clone(),
                op: CmpOp::Less,
                version: 3,
            },
            true,
        ),
        (
            Compare::Version {
                key: missing.clone(),
                op: CmpOp::Equal,
                version: 0,
            },
            true,
        ),
        (
            Compare::ModRevision {
                key: k.clone(),
                op: CmpOp::Equal,
                revision: cur.mod_revision,
            },
            true,
        ),
        (
            Compare::ModRevision {
                key: k.clone(),
                op: CmpOp::Less,
                revision: cur.mod_revision,
            },
            false,
        ),
        (
            Compare::ModRevision {
                key: k.clone(),
                op: CmpOp::Greater,
                revision: cur.mod_revision - 1,
            },
            true,
        ),
        (
            Compare::ModRevision {
                key: missing.clone(),
                op: CmpOp::Equal,
                revision: 0,
            },
            true,
        ),
        (
            Compare::CreateRevision {
                key: k.clone(),
                op: CmpOp::Equal,
                revision: cur.create_revision,
            },
            true,
        ),
        (
            Compare::CreateRevision {
                key: k.clone(),
                op: CmpOp::NotEqual,
                revision: cur.create_revision,
            },
            false,
        ),
        (
            Compare::CreateRevision {
                key: missing.clone(),
                op: CmpOp::Equal,
                revision: 0,
            },
            true,
        ),
        (
            Compare::CreateRevision {
                key: missing.clone(),
                op: CmpOp::Greater,
                revision: 0,
            },
            false,
        ),
    ];
    for (c, expect) in cases {
        let r = must(
            &format!("txn {c:?}"),
            s.txn(Txn::new().when(c.clone())).await,
        )
        .await;
        assert_eq!(r.succeeded, expect, "compare {c:?}");
        assert_eq!(
            c.holds(Some(&cur).filter(|_| c.key() == k)),
            expect,
            "Compare::holds agrees for {c:?}"
        );
    }
    // All compares must hold (AND).
    let both = s
        .txn(
            Txn::new()
                .when(Compare::Exists { key: k.clone() })
                .when(Compare::Exists {
                    key: missing.clone(),
                }),
        )
        .await
        .expect("txn");
    assert!(!both.succeeded, "one failing compare fails the transaction");
}

/// All writes of one transaction commit together at one revision; a failed transaction
/// writes nothing; a read-only transaction does not bump the revision.
pub async fn txn_is_atomic<S: StateStore + ?Sized>(s: &S, prefix: &str) {
    let guard = format!("{prefix}/guard");
    let keys: Vec<String> = (0..10).map(|i| format!("{prefix}/m/{i:02}")).collect();
    let mut t = Txn::new().when(Compare::Missing { key: guard.clone() });
    for k in &keys {
        t = t.put(k, k.as_bytes().to_vec());
    }
    t = t.put(&guard, vec![]);
    let r = s.txn(t.clone()).await.expect("txn");
    assert!(r.succeeded);
    assert_eq!(r.responses.len(), keys.len() + 1);
    let listed = s.list(&format!("{prefix}/m/")).await.expect("list");
    assert_eq!(listed.kvs.len(), keys.len());
    assert!(
        listed.kvs.iter().all(|kv| kv.mod_revision == r.revision),
        "all writes of a txn share its revision"
    );
    // Second run: guard fails, nothing written, revision unchanged.
    let before = s.current_revision().await.expect("rev");
    let r2 = s.txn(t).await.expect("txn");
    assert!(!r2.succeeded);
    assert!(r2.responses.is_empty());
    assert_eq!(s.current_revision().await.expect("rev"), before);
    // Mixed delete + put + get in one branch.
    let r3 = s
        .txn(Txn {
            compares: vec![],
            success: vec![
                TxnOp::Delete {
                    key: keys[0].clone(),
                },
                TxnOp::Put {
                    key: format!("{prefix}/m/new"),
                    value: b"n".to_vec(),
                    lease: None,
                },
                TxnOp::Get {
                    key: keys[1].clone(),
                },
                TxnOp::Delete {
                    key: format!("{prefix}/m/none"),
                },
            ],
            failure: vec![],
        })
        .await
        .expect("txn");
    assert!(r3.succeeded);
    assert!(matches!(r3.responses[0], TxnOpResponse::Delete(1)));
    assert!(matches!(r3.responses[1], TxnOpResponse::Put));
    assert!(matches!(&r3.responses[2], TxnOpResponse::Get(Some(kv)) if kv.key == keys[1]));
    assert!(matches!(r3.responses[3], TxnOpResponse::Delete(0)));
    assert!(get(s, &keys[0]).await.is_none());
    // Read-only txn does not bump the revision.
    let before = s.current_revision().await.expect("rev");
    let ro = s
        .txn(Txn {
            compares: vec![],
            success: vec![TxnOp::Get {
                key: keys[2].clone(),
            }],
            failure: vec![],
        })
        .await
        .expect("txn");
    assert_eq!(ro.revision, before);
}

/// More than 128 operations are rejected with `TooManyOps`; 128 are fine.
pub async fn txn_op_limit<S: StateStore + ?Sized>(s: &S, prefix: &str) {
    let mut t = Txn::new();
    for i in 0..128 {
        t = t.put(format!("{prefix}/op/{i:03}"), vec![]);
    }
    let ok = s.txn(t.clone()).await.expect("128 ops are allowed");
    assert!(ok.succeeded);
    let t = t.put(format!("{prefix}/op/128"), vec![]);
    match s.txn(t).await {
        Err(StoreError::TooManyOps {
            ops: 129,
            limit: 128,
        }) => {}
        other => panic!("129 ops must fail with TooManyOps {{129, 128}}, got {other:?}"),
    }
    assert!(get(s, &format!("{prefix}/op/128")).await.is_none());
}

/// Listing a prefix returns exactly the keys under it, in key order, with the store revision.
pub async fn prefix_isolation<S: StateStore + ?Sized>(s: &S, prefix: &str) {
    for k in ["a/2", "a/1", "a/10", "ab/1", "b/1", "a"] {
        s.put(&format!("{prefix}/{k}"), k.as_bytes().to_vec(), None)
            .await
            .expect("put");
    }
    let l = s.list(&format!("{prefix}/a/")).await.expect("list");
    let keys: Vec<&str> = l.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            format!("{prefix}/a/1"),
            format!("{prefix}/a/10"),
            format!("{prefix}/a/2")
        ],
        "prefix list must be exact and in key order"
    );
    assert!(l.revision >= l.kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0));
    assert_eq!(
        s.list(&format!("{prefix}/")).await.expect("list").kvs.len(),
        6
    );
    assert!(s
        .list(&format!("{prefix}/zzz/"))
        .await
        .expect("list")
        .kvs
        .is_empty());
}

/// A watch from a revision delivers changes under its prefix only, in revision order, with
/// deletes; a new watch from a past revision replays from there (resume after a disconnect).
pub async fn watch_order_and_resume<S: StateStore + ?Sized>(s: &S, prefix: &str) {
    let p = format!("{prefix}/w/");
    let start = s.list(&p).await.expect("list").revision + 1;
    let mut w = s.watch(&p, start).await.expect("watch");
    s.put(&format!("{prefix}/other"), vec![], None)
        .await
        .expect("put");
    let r1 = s
        .put(&format!("{p}1"), b"a".to_vec(), None)
        .await
        .expect("put");
    let r2 = s
        .put(&format!("{p}2"), b"b".to_vec(), None)
        .await
        .expect("put");
    s.delete(&format!("{p}1")).await.expect("delete");
    let t = s
        .txn(
            Txn::new()
                .put(format!("{p}3"), vec![])
                .put(format!("{p}4"), vec![]),
        )
        .await
        .expect("txn");
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_event(&mut w).await);
    }
    let revs: Vec<Revision> = seen.iter().map(WatchEvent::revision).collect();
    assert!(
        revs.windows(2).all(|p| p[0] <= p[1]),
        "revision order: {revs:?}"
    );
    assert!(
        seen.iter().all(|e| e.key().starts_with(&p)),
        "prefix filter: {seen:?}"
    );
    assert!(matches!(&seen[0], WatchEvent::Put(kv) if kv.mod_revision == r1 && kv.value == b"a"));
    assert!(matches!(&seen[1], WatchEvent::Put(kv) if kv.mod_revision == r2));
    assert!(matches!(&seen[2], WatchEvent::Delete { key, .. } if key == &format!("{p}1")));
    assert_eq!(seen[3].revision(), t.revision);
    assert_eq!(seen[4].revision(), t.revision);
    drop(w);
    // Resume from just after the delete: exactly the txn's two events come back.
    let mut resumed = s.watch(&p, seen[2].revision() + 1).await.expect("watch");
    let a = next_event(&mut resumed).await;
    let b = next_event(&mut resumed).await;
    let mut keys = vec![a.key().to_string(), b.key().to_string()];
    keys.sort();
    assert_eq!(keys, vec![format!("{p}3"), format!("{p}4")]);
    // And live events follow the replay.
    let r5 = s.put(&format!("{p}5"), vec![], None).await.expect("put");
    assert_eq!(next_event(&mut resumed).await.revision(), r5);
}

/// A watch from a compacted revision yields `Compacted` (then re-list). `compact` is the
/// backend's compaction (memory: `MemoryStateStore::compact`; etcd: the compact RPC).
pub async fn watch_compacted<S, F, Fut>(s: &S, prefix: &str, compact: F)
where
    S: StateStore + ?Sized,
    F: FnOnce(Revision) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let k = format!("{prefix}/compact");
    let old = s.put(&k, b"1".to_vec(), None).await.expect("put");
    s.put(&k, b"2".to_vec(), None).await.expect("put");
    let now = s.put(&k, b"3".to_vec(), None).await.expect("put");
    compact(now).await.expect("compact");
    let mut w = s
        .watch(&format!("{prefix}/"), old)
        .await
        .expect("watch call");
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Err(StoreError::Compacted {
            requested,
            compacted,
        }))) => {
            assert_eq!(requested, old);
            assert!(compacted >= now, "compacted {compacted} < {now}");
        }
        other => panic!("watch from a compacted revision must yield Compacted, got {other:?}"),
    }
    // Watching from the compaction revision itself still works.
    let mut ok = s.watch(&format!("{prefix}/"), now).await.expect("watch");
    assert!(matches!(next_event(&mut ok).await, WatchEvent::Put(kv) if kv.value == b"3"));
}

/// Lease expiry (no keep-alive) deletes attached keys and a watch sees the deletes; keys not
/// on the lease stay; the lease is gone afterwards.
pub async fn lease_expiry_deletes_keys<S: StateStore + ?Sized>(
    s: &S,
    prefix: &str,
    ttl: Duration,
    time: &dyn TimeTravel,
) {
    let lease = s.grant_lease(ttl).await.expect("grant");
    let a = format!("{prefix}/l/a");
    let b = format!("{prefix}/l/b");
    let keep = format!("{prefix}/l/keep");
    let start = s.put(&a, vec![], Some(lease)).await.expect("put") + 1;
    s.put(&keep, vec![], None).await.expect("put");
    s.txn(Txn {
        compares: vec![],
        success: vec![TxnOp::Put {
            key: b.clone(),
            value: vec![],
            lease: Some(lease),
        }],
        failure: vec![],
    })
    .await
    .expect("txn put with lease");
    assert_eq!(get(s, &a).await.expect("a").lease, Some(lease));
    let mut w = s
        .watch(&format!("{prefix}/l/"), start)
        .await
        .expect("watch");
    time.pass(ttl + ttl / 2).await;
    eventually("keys on an expired lease are deleted", || async {
        s.get(&a).await.ok().flatten().is_none() && s.get(&b).await.ok().flatten().is_none()
    })
    .await;
    assert!(
        get(s, &keep).await.is_some(),
        "a key without the lease stays"
    );
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        match next_event(&mut w).await {
            WatchEvent::Delete { key, .. } => deleted.push(key),
            WatchEvent::Put(kv) => assert!(kv.key == keep || kv.key == b, "unexpected put {kv:?}"),
        }
    }
    deleted.sort();
    assert_eq!(deleted, vec![a, b]);
    assert_eq!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(lease))
    );
    match s
        .put(&format!("{prefix}/l/late"), vec![], Some(lease))
        .await
    {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("put on an expired lease must fail with LeaseNotFound, got {other:?}"),
    }
}

/// Keep-alive holds a lease past its TTL; revoke deletes its keys at once; keep-alive or
/// revoke of a revoked lease fails with `LeaseNotFound`.
pub async fn lease_keep_alive_and_revoke<S: StateStore + ?Sized>(
    s: &S,
    prefix: &str,
    ttl: Duration,
    time: &dyn TimeTravel,
) {
    let lease = s.grant_lease(ttl).await.expect("grant");
    let k = format!("{prefix}/ka");
    s.put(&k, vec![], Some(lease)).await.expect("put");
    for _ in 0..3 {
        time.pass(ttl / 2).await;
        let got = s
            .keep_alive(lease)
            .await
            .expect("keep-alive of a live lease");
        assert!(
            got >= ttl.saturating_sub(Duration::from_secs(1))
                && got <= ttl + Duration::from_secs(1),
            "keep-alive returns the TTL {ttl:?}, got {got:?}"
        );
    }
    assert!(
        get(s, &k).await.is_some(),
        "kept-alive lease keeps its key past the TTL"
    );
    s.revoke_lease(lease).await.expect("revoke");
    assert!(
        get(s, &k).await.is_none(),
        "revoke deletes attached keys at once"
    );
    assert_eq!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(lease))
    );
    assert_eq!(
        s.revoke_lease(lease).await,
        Err(StoreError::LeaseNotFound(lease))
    );
}

/// Only one candidate leads; observe names it; after resign another wins with a higher token.
pub async fn elector_exclusivity<E: LeaderElector + ?Sized>(e: &E, election: &str, ttl: Duration) {
    assert_eq!(
        e.observe(election).await.expect("observe"),
        None,
        "fresh election has no leader"
    );
    let a = e
        .try_campaign(election, "cand-a", ttl)
        .await
        .expect("campaign")
        .expect("first candidate leads");
    assert_eq!(a.candidate, "cand-a");
    assert_eq!(a.election, election);
    for _ in 0..3 {
        assert!(
            e.try_campaign(election, "cand-b", ttl)
                .await
                .expect("campaign")
                .is_none(),
            "second candidate must not lead while the first holds"
        );
    }
    let seen = e.observe(election).await.expect("observe").expect("leader");
    assert_eq!(seen.candidate, "cand-a");
    assert_eq!(seen.token, a.fence.token);
    e.keep_alive(&a).await.expect("leader keep-alive");
    e.resign(&a).await.expect("resign");
    assert_eq!(
        e.observe(election).await.expect("observe"),
        None,
        "resign frees the election at once"
    );
    e.resign(&a).await.expect("resign twice is harmless");
    let b = e
        .try_campaign(election, "cand-b", ttl)
        .await
        .expect("campaign")
        .expect("standby takes over after resign");
    assert!(b.fence.token > a.fence.token, "tokens grow across terms");
    assert!(
        e.keep_alive(&a).await.is_err(),
        "old term's keep-alive fails"
    );
    e.resign(&b).await.expect("resign");
}

/// A deposed leader (its lease expired; another leads now) cannot write through its fence,
/// and its keep-alive reports the loss; the new leader's fenced writes succeed.
pub async fn fence_rejects_deposed_leader<S, E>(
    s: &S,
    e: &E,
    prefix: &str,
    election: &str,
    ttl: Duration,
    time: &dyn TimeTravel,
) where
    S: StateStore + ?Sized,
    E: LeaderElector + ?Sized,
{
    let data = format!("{prefix}/fenced");
    let old = e
        .try_campaign(election, "old", ttl)
        .await
        .expect("campaign")
        .expect("leads");
    let w = s
        .txn(old.fence.guard(Txn::new().put(&data, b"old-1".to_vec())))
        .await
        .expect("txn");
    assert!(w.succeeded, "leader's fenced write succeeds");
    // The old leader stalls: no keep-alive while time passes.
    time.pass(ttl + ttl / 2).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let new = loop {
        if let Some(l) = e
            .try_campaign(election, "new", ttl)
            .await
            .expect("campaign")
        {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no standby took over within {WAIT:?} after the old lease expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(new.fence.token > old.fence.token);
    let stale = s
        .txn(
            old.fence
                .guard(Txn::new().put(&data, b"old-2".to_vec()))
                .or_get(&data),
        )
        .await
        .expect("txn");
    assert!(
        !stale.succeeded,
        "deposed leader's write must be rejected by the fence"
    );
    assert_eq!(get(s, &data).await.expect("data").value, b"old-1");
    assert!(
        e.keep_alive(&old).await.is_err(),
        "deposed leader's keep-alive fails"
    );
    let fresh = s
        .txn(new.fence.guard(Txn::new().put(&data, b"new-1".to_vec())))
        .await
        .expect("txn");
    assert!(fresh.succeeded, "new leader's fenced write succeeds");
    // Resign of the deposed term must not remove the new leader.
    e.resign(&old)
        .await
        .expect("resign of an expired term is harmless");
    let seen = e.observe(election).await.expect("observe").expect("leader");
    assert_eq!(
        (seen.candidate.as_str(), seen.token),
        ("new", new.fence.token)
    );
    e.resign(&new).await.expect("resign");
}
