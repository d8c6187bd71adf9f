//! etcd with auth enabled, against the real servers: ccm authenticates with user/password,
//! sends the token on every call, and when etcd forgets its tokens (a restart) it
//! authenticates again and goes on reading, writing, watching and keeping leases alive — on
//! the single etcd (`CCM_TEST_ETCD`, restarted) and on the 3-member cluster
//! (`CCM_TEST_ETCD_CLUSTER`, one member stopped and started). Auth is switched on and off
//! with `$CCM_TEST_SERVICES auth enable|disable ...`, members with `... member stop|start`.
//! Auth is switched off again when a test ends, also when it fails.
#![cfg(feature = "etcd")]

mod support;

use ccm_adapters::etcd::{EtcdConfig, EtcdStateStore};
use ccm_core::store::{StateStore, StoreError, WatchEvent};
use ccm_core::testkit::state::unique_prefix;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::etcd::{create_once, fast_config, listed_eventually, spawn_writer, watch_from_now};
use support::{env, services};
use tokio::sync::Mutex;

/// The tests switch auth on and restart servers: never at the same time.
static SERIAL: Mutex<()> = Mutex::const_new(());

const ROOT_PASSWORD: &str = "ccm-test-root-pw";

/// Auth is on for `etcd` (etcd-single or etcd-cluster) while this lives; off again after
/// (the stopped members are started first, so the switch reaches them all).
struct AuthOn {
    etcd: &'static str,
    stopped: std::sync::Mutex<Vec<&'static str>>,
}

impl AuthOn {
    fn enable(etcd: &'static str) -> Self {
        services(&["auth", "enable", etcd, ROOT_PASSWORD]);
        AuthOn {
            etcd,
            stopped: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn stop(&self, member: &'static str) {
        self.stopped.lock().expect("lock").push(member);
        services(&["member", "stop", member]);
    }

    fn start(&self, member: &'static str) {
        services(&["member", "start", member]);
        self.stopped.lock().expect("lock").retain(|m| *m != member);
    }
}

impl Drop for AuthOn {
    fn drop(&mut self) {
        let stopped: Vec<_> = self.stopped.lock().map(|s| s.clone()).unwrap_or_default();
        for m in stopped {
            services(&["member", "start", m]);
        }
        services(&["auth", "disable", self.etcd, ROOT_PASSWORD]);
    }
}

fn config(endpoints: &str, user: Option<(&str, &str)>) -> EtcdConfig {
    let mut cfg = fast_config(endpoints);
    cfg.read_retry = Duration::from_secs(2);
    if let Some((u, p)) = user {
        cfg.username = Some(u.to_string());
        cfg.password = Some(p.to_string());
    }
    cfg
}

async fn connect(endpoints: &str, user: Option<(&str, &str)>) -> Arc<EtcdStateStore> {
    Arc::new(
        EtcdStateStore::connect(config(endpoints, user))
            .await
            .expect("connect"),
    )
}

/// Auth really is on: no credentials and wrong credentials are refused, the latter as a
/// permanent error naming the settings; the right ones work.
async fn auth_is_enforced(endpoints: &str, prefix: &str) {
    let anonymous = connect(endpoints, None).await;
    let e = anonymous
        .put(&format!("{prefix}/anon"), b"x".to_vec(), None)
        .await
        .expect_err("a write without credentials must be refused");
    assert!(
        e.to_string().contains("user name is empty") || e.to_string().contains("auth"),
        "{e}"
    );
    let wrong = connect(endpoints, Some(("root", "not-the-password"))).await;
    let e = wrong
        .get(&format!("{prefix}/anon"))
        .await
        .expect_err("wrong password must be refused");
    assert!(
        matches!(&e, StoreError::Backend(m) if m.contains("ETCD_PASSWORD")),
        "wrong credentials are permanent and name the setting: {e:?}"
    );
    let e = ccm_adapters::etcd::check(&config(endpoints, Some(("root", "not-the-password"))))
        .await
        .expect_err("check with a wrong password fails");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    let answer = ccm_adapters::etcd::check(&config(endpoints, Some(("root", ROOT_PASSWORD))))
        .await
        .expect("check with the right password");
    assert!(answer.starts_with("etcd 3."), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_survives_an_etcd_restart() {
    let _serial = SERIAL.lock().await;
    let endpoint = env("CCM_TEST_ETCD");
    let auth = AuthOn::enable("etcd-single");
    let prefix = unique_prefix("/ccm-test", "auth-restart");
    auth_is_enforced(&endpoint, &prefix).await;

    let s = connect(&endpoint, Some(("root", ROOT_PASSWORD))).await;
    s.put(&format!("{prefix}/before"), b"1".to_vec(), None)
        .await
        .expect("write with a token");
    let lease = s.grant_lease(Duration::from_secs(60)).await.expect("lease");
    s.put(&format!("{prefix}/leased"), b"l".to_vec(), Some(lease))
        .await
        .expect("leased write");
    let mut w = watch_from_now(&s, &format!("{prefix}/k/")).await;

    const N: usize = 200;
    let writer = spawn_writer(&s, &prefix, N);
    // etcd forgets every token it issued when it restarts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    auth.stop("etcd-single");
    tokio::time::sleep(Duration::from_millis(500)).await;
    auth.start("etcd-single");
    let unavailable = writer.await.expect("writer");
    assert!(
        unavailable > 0,
        "the writer must have hit the outage (else the restart was not mid-run)"
    );

    // Reads, writes, leases and the watch all go on with a renewed token.
    let got = s
        .get(&format!("{prefix}/before"))
        .await
        .expect("read after restart");
    assert_eq!(got.map(|kv| kv.value), Some(b"1".to_vec()));
    s.put(&format!("{prefix}/after"), b"2".to_vec(), None)
        .await
        .expect("write after restart");
    let ttl = s.keep_alive(lease).await.expect("keep-alive after restart");
    assert!(ttl > Duration::ZERO);
    let listed = s.list(&format!("{prefix}/k/")).await.expect("list");
    assert_eq!(listed.kvs.len(), N, "every write landed once");
    let mut by_key: BTreeMap<String, u32> = BTreeMap::new();
    while by_key.len() < N {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => *by_key.entry(kv.key).or_insert(0) += 1,
            other => panic!("watch after {} keys: {other:?}", by_key.len()),
        }
    }
    assert!(by_key.values().all(|n| *n == 1), "no event duplicated");
    // A second client that never had a token gets one now too.
    let fresh = connect(&endpoint, Some(("root", ROOT_PASSWORD))).await;
    assert_eq!(
        fresh
            .list(&format!("{prefix}/k/"))
            .await
            .expect("fresh list")
            .kvs
            .len(),
        N
    );
    s.revoke_lease(lease).await.expect("revoke");
    s.delete_prefix(&prefix).await.expect("clean up");
    drop(auth);
    // Auth is off again for the other suites.
    let anonymous = connect(&endpoint, None).await;
    anonymous.ping().await.expect("auth disabled again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_the_cluster_survives_a_member_restart() {
    let _serial = SERIAL.lock().await;
    let endpoints = env("CCM_TEST_ETCD_CLUSTER");
    let auth = AuthOn::enable("etcd-cluster");
    let prefix = unique_prefix("/ccm-test", "auth-cluster");
    auth_is_enforced(&endpoints, &prefix).await;
    let s = connect(&endpoints, Some(("root", ROOT_PASSWORD))).await;
    let mut w = watch_from_now(&s, &format!("{prefix}/")).await;
    let mut unavailable = 0;
    for i in 0..20 {
        unavailable += create_once(&s, &format!("{prefix}/before/{i:03}"), vec![]).await;
    }
    // Each member restarted in turn forgets the tokens; the others keep serving.
    for member in ["etcd-m1", "etcd-m2"] {
        auth.stop(member);
        for i in 0..30 {
            unavailable += create_once(&s, &format!("{prefix}/{member}-down/{i:03}"), vec![]).await;
        }
        auth.start(member);
        for i in 0..30 {
            unavailable += create_once(&s, &format!("{prefix}/{member}-up/{i:03}"), vec![]).await;
        }
    }
    let listed = s.list(&format!("{prefix}/")).await.expect("list");
    assert_eq!(listed.kvs.len(), 20 + 4 * 30, "every write landed");
    let mut seen = BTreeMap::new();
    while seen.len() < 140 {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(ev))) => *seen.entry(ev.key().to_string()).or_insert(0) += 1,
            other => panic!("watch after {} events: {other:?}", seen.len()),
        }
    }
    assert!(seen.values().all(|n| *n == 1), "no event delivered twice");
    // The restarted members serve authenticated reads themselves.
    for url in ["http://127.0.0.1:23791", "http://127.0.0.1:23792"] {
        let one = connect(url, Some(("root", ROOT_PASSWORD))).await;
        let got = listed_eventually(&one, &format!("{prefix}/"), 140).await;
        assert_eq!(got, 140, "{url} serves the writes with a token");
    }
    s.delete_prefix(&prefix).await.expect("clean up");
    drop(auth);
    connect(&endpoints, None)
        .await
        .ping()
        .await
        .expect("auth disabled again");
    eprintln!("auth cluster test: {unavailable} unavailable retries");
}
