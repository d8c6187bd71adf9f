//! A leader whose keep-alives stall on a real etcd stops acting before its lease can expire.
//!
//! The single etcd (`CCM_TEST_ETCD`) is frozen with SIGSTOP: every request to it hangs (no
//! error comes back until the 10 s request timeout, far past the 3 s lease). The runtime must
//! stop leading at TTL − margin after its last keep-alive got through — from its own deadline,
//! not from an error — and lead again once etcd answers (SIGCONT).

#![cfg(feature = "etcd")]

mod support;

use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::runtime::{lease_margin, Runtime, RuntimeSettings};
use ccm_core::store::SystemClock;
use ccm_core::testkit::state::unique_prefix;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::etcd::{connect, single_etcd};
use support::repo_root;

/// The single etcd frozen (SIGSTOP) until this is dropped (SIGCONT), also when the test panics.
struct Frozen(String);

impl Frozen {
    fn freeze() -> Frozen {
        let pidfile = repo_root().join(".ci-work/run/etcd-single.pid");
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("{}: {e} (start the test services)", pidfile.display()))
            .trim()
            .to_string();
        signal("-STOP", &pid);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(sig: &str, pid: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stops_acting_at_its_local_deadline_while_etcd_is_frozen() {
    let prefix = unique_prefix("/ccm-test", "stall");
    let mut cfg = single_etcd();
    cfg.prefix = prefix.clone();
    let store = connect(cfg).await;
    let ttl = Duration::from_secs(3);
    let settings = RuntimeSettings {
        candidate: "stall-a".into(),
        prefix,
        leader_ttl: ttl,
        lab_enabled: false,
        ..RuntimeSettings::default()
    };
    let clock = Arc::new(SystemClock);
    let rt = Arc::new(
        Runtime::builder()
            .state(store.clone())
            .elector(Arc::new(store.elector()))
            .spec(Arc::new(MemorySpecStore::new()))
            .events(Arc::new(RecordingSink::new()))
            .clock(clock.clone())
            .provider(Arc::new(SimulatedProvider::new(clock)))
            .settings(settings)
            .build()
            .expect("runtime"),
    );
    let running = rt.clone().spawn();
    wait_until("leading", Duration::from_secs(20), || {
        rt.leadership().controller
    })
    .await;
    // Let one keep-alive round (TTL/3) go through, then freeze etcd right after it.
    tokio::time::sleep(ttl / 3 + Duration::from_millis(100)).await;
    assert!(rt.leadership().controller);
    let frozen = Frozen::freeze();
    let lapsed = wait_until("the local deadline", ttl, || !rt.leadership().controller).await;
    // At most TTL − margin after the last keep-alive that got through (≤ TTL/3 before the
    // freeze), well before the lease can expire and long before the 10 s request timeout.
    assert!(
        lapsed <= ttl - lease_margin(ttl) + Duration::from_millis(300),
        "lapsed {lapsed:?} after the freeze"
    );
    assert!(
        !rt.leadership().scheduler,
        "the scheduler lapsed with the controller"
    );
    drop(frozen);
    wait_until(
        "leading again once etcd answers",
        Duration::from_secs(30),
        || rt.leadership().controller,
    )
    .await;
    running.shutdown().await;
}
