//! The state store + leader elector behaviour suite against a real etcd (`CCM_TEST_ETCD`,
//! started by `scripts/services.sh start`).
#![cfg(feature = "etcd")]

mod support;

use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{StateStore, StoreError, Txn};
use ccm_core::testkit::state::{self as suite, unique_prefix, RealTime};
use std::sync::Arc;
use std::time::Duration;
use support::etcd::{connect, single_etcd};
use tokio::sync::RwLock;

/// etcd's minimum lease TTL is about 2 s.
const TTL: Duration = Duration::from_secs(2);

/// Compaction affects the whole server: it runs alone (write lock), the rest share (read).
static COMPACTION: RwLock<()> = RwLock::const_new(());

async fn store() -> Arc<EtcdStateStore> {
    connect(single_etcd()).await
}

#[tokio::test]
async fn etcd_revisions_and_versions() {
    let _g = COMPACTION.read().await;
    suite::revisions_and_versions(&*store().await, &unique_prefix("/ccm-test", "rev")).await;
}

#[tokio::test]
async fn etcd_cas_on_mod_revision() {
    let _g = COMPACTION.read().await;
    suite::cas_on_mod_revision(&*store().await, &unique_prefix("/ccm-test", "cas")).await;
}

#[tokio::test]
async fn etcd_compare_variants() {
    let _g = COMPACTION.read().await;
    suite::compare_variants(&*store().await, &unique_prefix("/ccm-test", "cmp")).await;
}

#[tokio::test]
async fn etcd_txn_is_atomic() {
    let _g = COMPACTION.read().await;
    suite::txn_is_atomic(&*store().await, &unique_prefix("/ccm-test", "txn")).await;
}

#[tokio::test]
async fn etcd_txn_op_limit() {
    let _g = COMPACTION.read().await;
    suite::txn_op_limit(&*store().await, &unique_prefix("/ccm-test", "ops")).await;
}

#[tokio::test]
async fn etcd_prefix_isolation() {
    let _g = COMPACTION.read().await;
    suite::prefix_isolation(&*store().await, &unique_prefix("/ccm-test", "pfx")).await;
}

#[tokio::test]
async fn etcd_watch_order_and_resume() {
    let _g = COMPACTION.read().await;
    suite::watch_order_and_resume(&*store().await, &unique_prefix("/ccm-test", "watch")).await;
}

#[tokio::test]
async fn etcd_watch_compacted() {
    let _g = COMPACTION.write().await;
    let s = store().await;
    let c = s.clone();
    suite::watch_compacted(
        &*s,
        &unique_prefix("/ccm-test", "compact"),
        |rev| async move { c.compact(rev).await },
    )
    .await;
}

#[tokio::test]
async fn etcd_lease_expiry_deletes_keys() {
    let _g = COMPACTION.read().await;
    suite::lease_expiry_deletes_keys(
        &*store().await,
        &unique_prefix("/ccm-test", "lease"),
        TTL,
        &RealTime,
    )
    .await;
}

#[tokio::test]
async fn etcd_lease_keep_alive_and_revoke() {
    let _g = COMPACTION.read().await;
    suite::lease_keep_alive_and_revoke(
        &*store().await,
        &unique_prefix("/ccm-test", "ka"),
        TTL,
        &RealTime,
    )
    .await;
}

#[tokio::test]
async fn etcd_elector_exclusivity() {
    let _g = COMPACTION.read().await;
    let s = store().await;
    let e = StoreElector::new(s, unique_prefix("/ccm-test", "elect"));
    suite::elector_exclusivity(&e, "scheduler", TTL).await;
}

#[tokio::test]
async fn etcd_fence_rejects_deposed_leader() {
    let _g = COMPACTION.read().await;
    let s = store().await;
    let prefix = unique_prefix("/ccm-test", "fence");
    let e = StoreElector::new(s.clone(), prefix.clone());
    suite::fence_rejects_deposed_leader(&*s, &e, &prefix, "scheduler", TTL, &RealTime).await;
}

#[tokio::test]
async fn etcd_elector_from_store_uses_configured_prefix() {
    let _g = COMPACTION.read().await;
    let prefix = unique_prefix("/ccm-test", "cfg");
    let s = Arc::new(
        EtcdStateStore::connect(single_etcd().with_prefix(prefix.clone()))
            .await
            .expect("connect"),
    );
    let e = s.elector();
    assert_eq!(
        e.leader_key("controller"),
        format!("{prefix}/leader/controller")
    );
    suite::elector_exclusivity(&e, "controller", TTL).await;
}

#[tokio::test]
async fn etcd_unreachable_endpoint_is_unavailable() {
    // Nothing listens on port 1 of loopback.
    let mut cfg = EtcdConfig::new(["http://127.0.0.1:1"]);
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.read_retry = Duration::from_millis(500);
    let s = EtcdStateStore::connect(cfg).await.expect("connect is lazy");
    match s.get("/ccm/x").await {
        Err(StoreError::Unavailable(m)) => assert!(!m.is_empty()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match s.txn(Txn::new().put("/ccm/x", vec![])).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn etcd_bad_certificate_path_names_the_setting() {
    let mut cfg = EtcdConfig::new(["https://127.0.0.1:23790"]);
    cfg.ca_cert = Some("/nonexistent/ca.pem".into());
    let err = EtcdStateStore::connect(cfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ETCD_CA_CERT") && msg.contains("/nonexistent/ca.pem"),
        "{msg}"
    );
}
