//! Failover of two `ccm serve` daemons on real etcd (env CCM_TEST_ETCD): SIGKILL the leading
//! scheduler; the standby binds new sessions within TTL + one interval (plus process slack),
//! and no session is bound twice, no worker over-committed, no port handed to two sessions.
#![cfg(feature = "all-adapters")]

mod etcd_common;
mod support;

use etcd_common::*;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_leader_standby_binds_within_ttl_plus_interval_none_twice() {
    let endpoint = need("CCM_TEST_ETCD");
    let (store, keys, prefix) = fresh_store(std::slice::from_ref(&endpoint), "failover").await;
    let def = seed_fleet(&store, &keys, 10).await;

    let mut a = serve("a", &endpoint, &prefix);
    let mut b = serve("b", &endpoint, &prefix);
    add_sessions(&store, &keys, 0, 40).await;
    wait_all_scheduled(&store, &keys, 40, Duration::from_secs(60)).await;
    let first = leader(&store, &keys).await.expect("a scheduler leads");
    let (dead, standby) = if first == "a" {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    assert_eq!(dead.name, first);

    // SIGKILL: no resign, the lease must run out.
    let mut c = dead.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let killed_at = Instant::now();
    add_sessions(&store, &keys, 40, 40).await;
    let bound_in = wait_all_scheduled(&store, &keys, 80, Duration::from_secs(60)).await;
    let took = killed_at.elapsed().max(bound_in);
    eprintln!(
        "standby {} bound the new sessions {took:?} after the leader was killed",
        standby.name
    );
    assert_eq!(
        leader(&store, &keys).await.as_deref(),
        Some(standby.name.as_str())
    );
    // TTL + one interval, plus slack for process scheduling on a loaded 2-core machine.
    let bound = Duration::from_secs(TTL_SECS + INTERVAL_SECS + 4);
    assert!(took <= bound, "failover took {took:?}, more than {bound:?}");

    check_consistent(&store, &keys, &def, 80).await;
}
