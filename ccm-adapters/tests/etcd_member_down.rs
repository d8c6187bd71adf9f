//! One member of the 3-member cluster (`CCM_TEST_ETCD_CLUSTER`) stopped: every call of a client
//! configured with all three endpoints still succeeds first time — reads, guarded writes and
//! lease keep-alives (the leader's lifeline) — because a call that could not connect to the
//! member the balanced channel picked never left the process and is sent again. Found by the
//! soak (scripts/soak.sh): each stopped member cost ccm its leaders for the whole outage.
#![cfg(feature = "etcd")]

use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_core::store::{Compare, StateStore, Txn};
use ccm_core::testkit::state::unique_prefix;
use std::time::Duration;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test servers with `bash scripts/services.sh start`")
    })
}

fn services(action: &str, member: &str) {
    let script = env("CCM_TEST_SERVICES");
    let out = std::process::Command::new("bash")
        .args([script.as_str(), "member", action, member])
        .output()
        .unwrap_or_else(|e| panic!("run {script} member {action} {member}: {e}"));
    assert!(
        out.status.success(),
        "{script} member {action} {member} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the member again when the test ends, also when it panics.
struct Restart(&'static str);
impl Drop for Restart {
    fn drop(&mut self) {
        services("start", self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_member_down_every_call_succeeds_first_time() {
    let endpoints: Vec<String> = env("CCM_TEST_ETCD_CLUSTER")
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    let mut cfg = EtcdConfig::new(endpoints);
    cfg.connect_timeout = Duration::from_secs(1);
    let s = EtcdStateStore::connect(cfg).await.expect("connect");
    s.ping().await.expect("the cluster answers");
    let prefix = unique_prefix("/ccm-test", "member-down");
    let lease = s.grant_lease(Duration::from_secs(30)).await.expect("lease");

    services("stop", "etcd-m1");
    let _restart = Restart("etcd-m1");
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
