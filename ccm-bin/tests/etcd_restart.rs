//! A `ccm serve` daemon on real etcd keeps binding through trouble: the single etcd is
//! restarted mid-run (the daemon reconnects and resumes), and one member of the 3-member
//! cluster is stopped (binding goes on). Nothing is lost or bound twice.
#![cfg(feature = "all-adapters")]

mod etcd_common;
mod support;

use etcd_common::*;
use std::process::Command;
use std::time::Duration;
use support::*;

fn member(action: &str, name: &str) {
    let script = need("CCM_TEST_SERVICES");
    let st = Command::new("bash")
        .args([script.as_str(), "member", action, name])
        .status()
        .unwrap();
    assert!(st.success(), "services.sh member {action} {name} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_resumes_after_single_etcd_restart() {
    let endpoint = need("CCM_TEST_ETCD");
    let (store, keys, prefix) = fresh_store(std::slice::from_ref(&endpoint), "restart").await;
    let def = seed_fleet(&store, &keys, 10).await;
    let _d = serve("r1", &endpoint, &prefix);
    add_sessions(&store, &keys, 0, 30).await;
    wait_all_scheduled(&store, &keys, 30, Duration::from_secs(60)).await;

    member("stop", "etcd-single");
    tokio::time::sleep(Duration::from_secs(2)).await;
    member("start", "etcd-single");

    // The test's own client reconnects too; new sessions written after the restart get bound.
    add_sessions(&store, &keys, 30, 30).await;
    wait_all_scheduled(&store, &keys, 60, Duration::from_secs(90)).await;
    check_consistent(&store, &keys, &def, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_goes_on_with_one_cluster_member_down() {
    let endpoints: Vec<String> = need("CCM_TEST_ETCD_CLUSTER")
        .split(',')
        .map(str::to_string)
        .collect();
    let (store, keys, prefix) = fresh_store(&endpoints, "member-down").await;
    let def = seed_fleet(&store, &keys, 10).await;
    let _d = serve("c1", &endpoints.join(","), &prefix);
    add_sessions(&store, &keys, 0, 30).await;
    wait_all_scheduled(&store, &keys, 30, Duration::from_secs(60)).await;

    member("stop", "etcd-m2");
    add_sessions(&store, &keys, 30, 30).await;
    let bound = std::panic::AssertUnwindSafe(wait_all_scheduled(
        &store,
        &keys,
        60,
        Duration::from_secs(60),
    ));
    let res = futures_lite_catch(bound).await;
    member("start", "etcd-m2");
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
    check_consistent(&store, &keys, &def, 60).await;
}

/// Runs a future, catching a panic so the stopped member is restarted before the test fails.
async fn futures_lite_catch<F: std::future::Future>(
    f: std::panic::AssertUnwindSafe<F>,
) -> Result<F::Output, Box<dyn std::any::Any + Send>> {
    use futures::FutureExt;
    f.catch_unwind().await
}
