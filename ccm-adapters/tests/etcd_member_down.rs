//! One member of the 3-member cluster (`CCM_TEST_ETCD_CLUSTER`) stopped: every call of a client
//! configured with all three endpoints still succeeds first time — reads, guarded writes and
//! lease keep-alives (the leader's lifeline) — because a call that could not connect to the
//! member the balanced channel picked never left the process and is sent again. Found by the
//! soak (scripts/soak.sh): each stopped member cost ccm its leaders for the whole outage.
#![cfg(feature = "etcd")]

mod support;

use ccm_adapters::etcd::EtcdConfig;
use ccm_core::store::{Compare, StateStore, Txn};
use ccm_core::testkit::state::unique_prefix;
use std::time::Duration;
use support::env;
use support::etcd::{connect, endpoints, stop_member};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_member_down_every_call_succeeds_first_time() {
    let endpoints = endpoints(&env("CCM_TEST_ETCD_CLUSTER"));
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    let mut cfg = EtcdConfig::new(endpoints);
    cfg.connect_timeout = Duration::from_secs(1);
    let s = connect(cfg).await;
    let prefix = unique_prefix("/ccm-test", "member-down");
    let lease = s.grant_lease(Duration::from_secs(30)).await.expect("lease");

    let _restart = stop_member("etcd-m1");
    let mut failures = Vec::new();
    for i in 0..60 {
        let key = format!("{prefix}/k{i}");
        let t = Txn::new()
            .when(Compare::Missing { key: key.clone() })
            .put(&key, b"v".to_vec());
        match s.txn(t).await {
            Ok(r) => assert!(r.succeeded, "{key} written once"),
            Err(e) => failures.push(format!("txn {key}: {e}")),
        }
        if let Err(e) = s.get(&key).await {
            failures.push(format!("get {key}: {e}"));
        }
        if let Err(e) = s.keep_alive(lease).await {
            failures.push(format!("keep-alive: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 180 calls failed with m1 down: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let listed = s.list(&format!("{prefix}/")).await.expect("list");
    assert_eq!(listed.kvs.len(), 60);
}
