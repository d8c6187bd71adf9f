//! 1,000 PENDING sessions against 100 workers: all bound, none over-committed, checked from the
//! store afterwards; conflicts are retried; transactions respect etcd's 128-op limit.

mod runtime_common;

use async_trait::async_trait;
use ccm_core::resources::Load;
use ccm_core::session::SessionState;
use ccm_core::store::intercept::{Intercepted, Interceptor};
use ccm_core::store::{StateStore, StoreError, Txn};
use runtime_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

async fn fill(w: &World, workers: usize, sessions: usize) {
    for i in 0..workers {
        w.add_worker(&format!("w{i:03}")).await;
    }
    for i in 0..sessions {
        w.add_session(&format!("s{i:04}"), None).await;
    }
}

/// Reads every worker and session back and checks capacity and ports.
async fn assert_consistent(w: &World) {
    let def = definition();
    let need = Load::new(def.resource_requirements, def.node_count);
    let sessions = w.sessions().await;
    let workers = w.workers().await;
    let mut per_worker: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for s in sessions.iter().filter(|s| s.holds_capacity()) {
        per_worker
            .entry(s.worker_id.clone().expect("bound session has a worker"))
            .or_default()
            .push(s);
    }
    for wk in &workers {
        let on = per_worker.get(&wk.id).map(Vec::as_slice).unwrap_or(&[]);
        let mut load = Load::default();
        for _ in on {
            load = load.saturating_add(&need);
        }
        assert!(
            load.fits_in(&wk.capacity),
            "{} over-committed: {load:?} > {:?}",
            wk.id,
            wk.capacity
        );
        assert_eq!(
            wk.allocated, load,
            "{}: stored allocation differs from its sessions",
            wk.id
        );
        let mut seen = BTreeSet::new();
        for s in on {
            assert_eq!(s.allocated_ports.len(), 2, "{} ports", s.id);
            for p in s.allocated_ports.values() {
                assert!(wk.ports.range().contains(*p), "port {p} outside range");
                assert!(seen.insert(*p), "port {p} on {} handed out twice", wk.id);
            }
            assert_eq!(
                wk.ports.of(&s.id),
                Some(&s.allocated_ports),
                "{} port table",
                s.id
            );
        }
        assert_eq!(
            wk.ports.owners().len(),
            on.len(),
            "{}: stale port owners",
            wk.id
        );
    }
}

#[tokio::test]
async fn thousand_sessions_on_hundred_workers_all_bound_none_overcommitted() {
    let w = World::new().await;
    fill(&w, 100, 1000).await;
    let rt = w.runtime(World::settings("a"));
    assert!(rt.campaign_once().await.scheduler);
    let r = rt.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(
        r.bound.len(),
        1000,
        "unschedulable: {:?}",
        r.unschedulable.first()
    );
    assert!(r.unschedulable.is_empty());
    assert_eq!(r.conflicts, 0);
    // Each txn holds sessions + workers + the fence ≤ 128 ops, so at least 1000/126 txns.
    assert!(r.transactions >= 8, "{} transactions", r.transactions);
    let sessions = w.sessions().await;
    assert!(sessions.iter().all(|s| s.state == SessionState::Scheduled));
    assert!(sessions.iter().all(|s| s
        .state_history
        .last()
        .is_some_and(|h| h.from == SessionState::Pending)));
    assert_consistent(&w).await;
    // Every worker is exactly full on nodes (10 × 2 of 20).
    for wk in w.workers().await {
        assert_eq!(wk.allocated.nodes, 20, "{}", wk.id);
    }
    assert_eq!(rt.metrics().bindings_total, 1000);
    assert_eq!(
        w.events
            .types()
            .iter()
            .filter(|t| *t == "ccm.lablet.session.scheduled")
            .count(),
        1000
    );
    // A second pass finds nothing to do.
    let again = rt.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert!(again.bound.is_empty() && again.transactions == 0);
}

#[tokio::test]
async fn one_too_many_is_unschedulable_with_the_reason() {
    let w = World::new().await;
    fill(&w, 10, 101).await;
    let rt = w.runtime(World::settings("a"));
    rt.campaign_once().await;
    let r = rt.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(r.bound.len(), 100);
    assert_eq!(r.unschedulable.len(), 1);
    assert!(
        r.unschedulable[0].1.starts_with("nodes:"),
        "{}",
        r.unschedulable[0].1
    );
    assert_eq!(
        w.session(&r.unschedulable[0].0).await.state,
        SessionState::Pending
    );
    assert_eq!(rt.metrics().unschedulable_by_reason.get("nodes"), Some(&1));
    assert_consistent(&w).await;
}

#[tokio::test]
async fn small_transaction_limit_still_binds_everything() {
    let w = World::new().await;
    fill(&w, 5, 50).await;
    let mut s = World::settings("a");
    s.max_txn_ops = 5; // 3 sessions + 1 worker + fence at most
    let rt = w.runtime(s);
    rt.campaign_once().await;
    let r = rt.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(r.bound.len(), 50);
    assert!(r.transactions >= 17, "{}", r.transactions);
    assert_consistent(&w).await;
}

/// A rival that writes a worker key just before the scheduler's first transaction.
struct Meddling {
    key: String,
    txns: AtomicUsize,
}

#[async_trait]
impl Interceptor for Meddling {
    async fn before_txn(&self, inner: &dyn StateStore, txn: &Txn) -> Result<(), StoreError> {
        let is_binding = txn.success.len() > 1;
        if is_binding && self.txns.fetch_add(1, Ordering::SeqCst) == 0 {
            // Rewrite the worker unchanged: only its mod_revision moves.
            let kv = inner.get(&self.key).await?.expect("worker exists");
            inner.put(&self.key, kv.value, None).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_conflict_is_reread_and_retried() {
    let w = World::new().await;
    fill(&w, 2, 5).await;
    let meddling = Arc::new(Intercepted::new(
        w.store.clone(),
        Meddling {
            key: w.keys.worker("w000"),
            txns: AtomicUsize::new(0),
        },
    ));
    let elector = Arc::new(ccm_core::store::elector::StoreElector::new(
        w.store.clone(),
        "/ccm",
    ));
    let rt = ccm_core::runtime::Runtime::builder()
        .state(meddling.clone())
        .elector(elector)
        .spec(w.spec.clone())
        .events(w.events.clone())
        .clock(Arc::new(w.clock.clone()))
        .provider(w.provider.clone())
        .settings(World::settings("a"))
        .build()
        .unwrap();
    rt.campaign_once().await;
    let r = rt.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(
        r.conflicts, 1,
        "the first commit must have lost its compare"
    );
    assert_eq!(r.bound.len(), 5);
    assert_eq!(rt.metrics().conflicts_total, 1);
    assert!(meddling.txns.load(Ordering::SeqCst) >= 2);
    assert_consistent(&w).await;
}
