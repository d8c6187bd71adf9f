//! etcd failure tests against the real servers: one member of the 3-member cluster stops
//! (`CCM_TEST_ETCD_CLUSTER`) and guarded writes go on; the single etcd (`CCM_TEST_ETCD`)
//! restarts mid-run and the store reconnects, its watch resuming with nothing lost or
//! duplicated. Members are stopped and started with `$CCM_TEST_SERVICES member ...`.
#![cfg(feature = "etcd")]

mod support;

use ccm_adapters::etcd::EtcdStateStore;
use ccm_core::store::{Compare, StateStore, StoreError, Txn, WatchEvent};
use ccm_core::testkit::state::unique_prefix;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use support::env;
use support::etcd::{
    connect, create_once, fast_config, listed_eventually, spawn_writer, stop_member, watch_from_now,
};
use tokio::sync::Mutex;

/// The two tests restart servers: never at the same time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Guarded increment (read, CAS on mod revision, retry on conflict or unavailability).
async fn increment(s: &EtcdStateStore, key: &str) -> (u32, u32) {
    let (mut conflicts, mut unavailable) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "increment of {key} not done in 60 s"
        );
        let kv = match s.get(key).await {
            Ok(kv) => kv,
            Err(StoreError::Unavailable(_)) => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!("get {key}: {e}"),
        };
        let (n, rev) = kv
            .map(|kv| {
                (
                    String::from_utf8(kv.value)
                        .expect("utf8")
                        .parse::<u64>()
                        .expect("number"),
                    kv.mod_revision,
                )
            })
            .unwrap_or((0, 0));
        let t = Txn::new()
            .when(Compare::unchanged_since(key, rev))
            .put(key, (n + 1).to_string().into_bytes());
        match s.txn(t).await {
            Ok(r) if r.succeeded => return (conflicts, unavailable),
            Ok(_) => conflicts += 1,
            Err(StoreError::Unavailable(_)) => {
                // Unknown outcome: re-read decides (the guard makes a double apply impossible,
                // but an applied write we did not hear about counts as done only if we see it).
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("txn on {key}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_member_down_writes_go_on() {
    let _serial = SERIAL.lock().await;
    let s = connect(fast_config(&env("CCM_TEST_ETCD_CLUSTER"))).await;
    let prefix = unique_prefix("/ccm-test", "cluster");
    let mut w = watch_from_now(&s, &format!("{prefix}/")).await;
    for i in 0..20 {
        create_once(&s, &format!("{prefix}/before/{i:03}"), vec![]).await;
    }
    let restart = stop_member("etcd-m2");
    let mut unavailable = 0;
    for i in 0..100 {
        unavailable += create_once(&s, &format!("{prefix}/during/{i:03}"), vec![]).await;
    }
    let counter = format!("{prefix}/counter");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = 0;
            for _ in 0..50 {
                c += increment(&s, &counter).await.0;
            }
            c
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let kv = s.get(&counter).await.expect("get").expect("counter");
    assert_eq!(
        kv.value, b"100",
        "100 guarded increments on 2 members, none lost"
    );
    assert_eq!(
        s.list(&format!("{prefix}/during/"))
            .await
            .expect("list")
            .kvs
            .len(),
        100
    );
    // The watch saw every change once, in order, even if its member was the one stopped.
    let mut seen = BTreeMap::new();
    let mut last = 0;
    while seen.len() < 220 {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(ev))) => {
                assert!(ev.revision() >= last, "revision order");
                last = ev.revision();
                *seen
                    .entry((ev.key().to_string(), ev.revision()))
                    .or_insert(0) += 1;
            }
            other => panic!("watch after {} events: {other:?}", seen.len()),
        }
    }
    assert!(seen.values().all(|n| *n == 1), "no event delivered twice");
    drop(restart);
    // The member is back and serves reads of what was written while it was down.
    let m2 = connect(fast_config("http://127.0.0.1:23792")).await;
    let got = listed_eventually(&m2, &format!("{prefix}/during/"), 100).await;
    assert_eq!(got, 100, "restarted member caught up");
    eprintln!("cluster test: {unavailable} unavailable retries while etcd-m2 was down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_single_restart_store_reconnects_and_watch_resumes() {
    let _serial = SERIAL.lock().await;
    let s = connect(fast_config(&env("CCM_TEST_ETCD"))).await;
    let prefix = unique_prefix("/ccm-test", "restart");
    let mut w = watch_from_now(&s, &format!("{prefix}/")).await;
    const N: usize = 300;
    let writer = spawn_writer(&s, &prefix, N);
    // Let some writes land, then restart etcd under the writer and the watch.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let restart = stop_member("etcd-single");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(restart);
    let unavailable = writer.await.expect("writer");
    assert!(
        unavailable > 0,
        "the writer must have hit the outage (else the restart was not mid-run)"
    );
    let mut by_key: BTreeMap<String, u32> = BTreeMap::new();
    let mut last = 0;
    while by_key.len() < N {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => {
                assert!(kv.mod_revision > last, "revision order");
                last = kv.mod_revision;
                assert_eq!(kv.version, 1, "every key written once");
                *by_key.entry(kv.key).or_insert(0) += 1;
            }
            other => panic!("watch after {} keys: {other:?}", by_key.len()),
        }
    }
    assert!(by_key.values().all(|n| *n == 1), "no event duplicated");
    // Nothing more arrives (no duplicates trailing).
    assert!(tokio::time::timeout(Duration::from_millis(500), w.next())
        .await
        .is_err());
    let listed = s
        .list(&format!("{prefix}/k/"))
        .await
        .expect("list after restart");
    assert_eq!(listed.kvs.len(), N, "nothing lost");
}
