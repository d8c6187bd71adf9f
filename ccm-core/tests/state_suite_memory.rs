//! The state store + leader elector behaviour suite on the in-memory backend (needs the
//! `testkit` feature, which `cargo test --all-features` turns on).
#![cfg(feature = "testkit")]

use ccm_core::memory::state::MemoryStateStore;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{LeaderElector, StateStore, StoreError, Txn, VirtualClock, WatchEvent};
use ccm_core::testkit::state::{self as suite, VirtualTime};
use chrono::TimeZone;
use futures::StreamExt;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(15);

fn setup() -> (Arc<MemoryStateStore>, VirtualTime) {
    let clock = VirtualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    let store = Arc::new(MemoryStateStore::new(Arc::new(clock.clone())));
    (store, VirtualTime(clock))
}

#[tokio::test]
async fn memory_revisions_and_versions() {
    let (s, _) = setup();
    suite::revisions_and_versions(&*s, "/t").await;
}

#[tokio::test]
async fn memory_cas_on_mod_revision() {
    let (s, _) = setup();
    suite::cas_on_mod_revision(&*s, "/t").await;
}

#[tokio::test]
async fn memory_compare_variants() {
    let (s, _) = setup();
    suite::compare_variants(&*s, "/t").await;
}

#[tokio::test]
async fn memory_txn_is_atomic() {
    let (s, _) = setup();
    suite::txn_is_atomic(&*s, "/t").await;
}

#[tokio::test]
async fn memory_txn_op_limit() {
    let (s, _) = setup();
    suite::txn_op_limit(&*s, "/t").await;
}

#[tokio::test]
async fn memory_prefix_isolation() {
    let (s, _) = setup();
    suite::prefix_isolation(&*s, "/t").await;
}

#[tokio::test]
async fn memory_watch_order_and_resume() {
    let (s, _) = setup();
    suite::watch_order_and_resume(&*s, "/t").await;
}

#[tokio::test]
async fn memory_watch_compacted() {
    let (s, _) = setup();
    let c = s.clone();
    suite::watch_compacted(&*s, "/t", |rev| async move { c.compact(rev) }).await;
}

#[tokio::test]
async fn memory_lease_expiry_deletes_keys() {
    let (s, time) = setup();
    suite::lease_expiry_deletes_keys(&*s, "/t", TTL, &time).await;
}

#[tokio::test]
async fn memory_lease_keep_alive_and_revoke() {
    let (s, time) = setup();
    suite::lease_keep_alive_and_revoke(&*s, "/t", TTL, &time).await;
}

#[tokio::test]
async fn memory_elector_exclusivity() {
    let (s, _) = setup();
    let e = StoreElector::new(s, "/ccm");
    suite::elector_exclusivity(&e, "scheduler", TTL).await;
}

#[tokio::test]
async fn memory_fence_rejects_deposed_leader() {
    let (s, time) = setup();
    let e = StoreElector::new(s.clone(), "/ccm");
    suite::fence_rejects_deposed_leader(&*s, &e, "/t", "scheduler", TTL, &time).await;
}

#[tokio::test]
async fn memory_elector_over_dyn_store() {
    let (s, _) = setup();
    let dyn_store: Arc<dyn StateStore> = s;
    let e = StoreElector::new(dyn_store, "/ccm/");
    assert_eq!(e.leader_key("controller"), "/ccm/leader/controller");
    suite::elector_exclusivity(&e, "controller", TTL).await;
}

#[tokio::test]
async fn memory_lease_expiry_notifies_watch_via_expire_leases() {
    let (s, time) = setup();
    let lease = s.grant_lease(TTL).await.unwrap();
    let rev = s.put("/t/x", vec![], Some(lease)).await.unwrap();
    let mut w = s.watch("/t/", rev + 1).await.unwrap();
    suite::TimeTravel::pass(&time, TTL).await;
    assert_eq!(s.expire_leases(), 1);
    assert!(matches!(
        suite::next_event(&mut w).await,
        WatchEvent::Delete { key, mod_revision } if key == "/t/x" && mod_revision == rev + 1
    ));
}

#[tokio::test]
async fn memory_watch_from_zero_starts_now() {
    let (s, _) = setup();
    s.put("/t/old", vec![], None).await.unwrap();
    let mut w = s.watch("/t/", 0).await.unwrap();
    let r = s.put("/t/new", vec![], None).await.unwrap();
    assert_eq!(suite::next_event(&mut w).await.revision(), r);
    drop(w);
    assert_eq!(s.watcher_count(), 0, "dropped watches are cleaned up");
}

#[tokio::test]
async fn memory_compact_rejects_future_revision() {
    let (s, _) = setup();
    let err = s.compact(1_000).unwrap_err();
    assert!(err.to_string().contains("1000"), "{err}");
    s.compact(1).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(s.compact(1), Err(StoreError::Compacted { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_cas_increments_never_lose_updates() {
    let (s, _) = setup();
    s.put("/t/n", b"0".to_vec(), None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 50 {
                let kv = s.get("/t/n").await.unwrap().unwrap();
                let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                let t = Txn::new()
                    .when(ccm_core::store::Compare::unchanged_since(
                        "/t/n",
                        kv.mod_revision,
                    ))
                    .put("/t/n", (n + 1).to_string().into_bytes());
                if s.txn(t).await.unwrap().succeeded {
                    done += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let kv = s.get("/t/n").await.unwrap().unwrap();
    assert_eq!(kv.value, b"400");
    assert_eq!(kv.version, 401);
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Delete(u8),
    Txn(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Put),
        (0u8..6).prop_map(Op::Delete),
        proptest::collection::btree_set(0u8..6, 1..4)
            .prop_map(|s| Op::Txn(s.into_iter().collect())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Invariants over any sequence of writes: revisions strictly grow per write, a watch from
    /// the start sees every change in revision order, and replaying it rebuilds the final list.
    #[test]
    fn memory_watch_replay_rebuilds_state(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (s, _) = setup();
            let start = s.current_revision().await.unwrap() + 1;
            let mut last = start - 1;
            for o in &ops {
                let before = s.current_revision().await.unwrap();
                match o {
                    Op::Put(k) => { s.put(&format!("/p/{k}"), vec![*k], None).await.unwrap(); }
                    Op::Delete(k) => { s.delete(&format!("/p/{k}")).await.unwrap(); }
                    Op::Txn(ks) => {
                        let mut t = Txn::new();
                        for k in ks { t = t.put(format!("/p/{k}"), vec![*k, 1]); }
                        s.txn(t).await.unwrap();
                    }
                }
                let after = s.current_revision().await.unwrap();
                prop_assert!(after == before || after == before + 1);
                last = after;
            }
            let mut w = s.watch("/p/", start).await.unwrap();
            let mut state = std::collections::BTreeMap::new();
            let mut prev = 0;
            loop {
                let ev = match tokio::time::timeout(Duration::from_millis(20), w.next()).await {
                    Ok(Some(ev)) => ev.unwrap(),
                    _ => break,
                };
                prop_assert!(ev.revision() >= prev);
                prev = ev.revision();
                match ev {
                    WatchEvent::Put(kv) => { state.insert(kv.key.clone(), kv.value.clone()); }
                    WatchEvent::Delete { key, .. } => { state.remove(&key); }
                }
            }
            prop_assert!(prev <= last);
            let listed: std::collections::BTreeMap<_, _> = s.list("/p/").await.unwrap().kvs
                .into_iter().map(|kv| (kv.key, kv.value)).collect();
            prop_assert_eq!(state, listed);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn memory_elector_try_campaign_releases_losing_lease() {
    let (s, _) = setup();
    let e = StoreElector::new(s.clone(), "/ccm");
    let a = e.try_campaign("x", "a", TTL).await.unwrap().unwrap();
    assert!(e.try_campaign("x", "b", TTL).await.unwrap().is_none());
    assert_eq!(
        s.lease_count(),
        1,
        "the loser's lease is revoked, only the leader's remains"
    );
    e.resign(&a).await.unwrap();
    assert_eq!(s.lease_count(), 0);
}
