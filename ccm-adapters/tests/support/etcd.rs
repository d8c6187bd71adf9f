//! etcd for the adapter tests: stores on the test servers (`CCM_TEST_ETCD`, the single etcd;
//! `CCM_TEST_ETCD_CLUSTER`, the 3-member cluster), members stopped for the length of a test,
//! and writes that ride out an outage.

use super::services;
use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_core::store::{Compare, StateStore, StoreError, Txn, WatchStream};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The endpoints of a comma-separated list, as the environment gives them.
pub fn endpoints(list: &str) -> Vec<String> {
    list.split(',').map(str::to_string).collect()
}

/// The default settings for the single etcd (`CCM_TEST_ETCD`).
pub fn single_etcd() -> EtcdConfig {
    EtcdConfig::new(endpoints(&super::env("CCM_TEST_ETCD")))
}

/// The default settings for `endpoints` with 1 s connect and 3 s request timeouts (so a
/// stopped member is noticed quickly).
pub fn fast_config(endpoints: &str) -> EtcdConfig {
    let mut cfg = EtcdConfig::new(self::endpoints(endpoints));
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.request_timeout = Duration::from_secs(3);
    cfg
}

/// A store with `cfg` that has answered a ping.
pub async fn connect(cfg: EtcdConfig) -> Arc<EtcdStateStore> {
    let eps = cfg.endpoints.clone();
    let s = EtcdStateStore::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("connect to etcd at {eps:?}: {e}"));
    s.ping()
        .await
        .unwrap_or_else(|e| panic!("etcd at {eps:?} does not answer: {e}"));
    Arc::new(s)
}

/// A watch on `prefix` from the next revision (sees every change made after this returns).
pub async fn watch_from_now(s: &EtcdStateStore, prefix: &str) -> WatchStream {
    let start = s.current_revision().await.expect("rev") + 1;
    s.watch(prefix, start).await.expect("watch")
}

/// A stopped member (`etcd-single`, `etcd-m1`, ...): started again when this is dropped, also
/// when the test panics.
pub struct Stopped(&'static str);

impl Drop for Stopped {
    fn drop(&mut self) {
        services(&["member", "start", self.0]);
    }
}

/// Stops `member` until the returned guard is dropped.
pub fn stop_member(member: &'static str) -> Stopped {
    services(&["member", "stop", member]);
    Stopped(member)
}

/// Creates `key` once: a retry after an unacknowledged success sees the key and stops, so
/// the key is written exactly once. Retries while etcd is unavailable (bounded); returns the
/// retries.
pub async fn create_once(s: &EtcdStateStore, key: &str, value: Vec<u8>) -> u32 {
    let mut unavailable = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = Txn::new()
            .when(Compare::Missing {
                key: key.to_string(),
            })
            .put(key, value.clone());
        match s.txn(t).await {
            Ok(_) => return unavailable,
            Err(StoreError::Unavailable(m)) => {
                unavailable += 1;
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "etcd still unavailable after 60 s: {m}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create {key}: {e}"),
        }
    }
}

/// A task writing `{prefix}/k/{i:04}` = `i` for `i` in `0..n`, each key once
/// ([`create_once`]), 5 ms apart; it returns how often etcd was unavailable (an outage
/// under the writer shows as more than 0).
pub fn spawn_writer(s: &Arc<EtcdStateStore>, prefix: &str, n: usize) -> JoinHandle<u32> {
    let s = s.clone();
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut unavailable = 0;
        for i in 0..n {
            unavailable += create_once(
                &s,
                &format!("{prefix}/k/{i:04}"),
                i.to_string().into_bytes(),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        unavailable
    })
}

/// How many keys `s` lists under `prefix` once it lists `want` (a restarted member catching
/// up), else what it listed at the last of 50 tries 200 ms apart (a failed listing counts 0).
pub async fn listed_eventually(s: &EtcdStateStore, prefix: &str, want: usize) -> usize {
    let mut got = 0;
    for _ in 0..50 {
        got = s.list(prefix).await.map(|l| l.kvs.len()).unwrap_or(0);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    got
}
