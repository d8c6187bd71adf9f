//! Two runtimes sharing one store: one schedules; failover within TTL + one interval after a
//! crash; a resign hands over at once; a deposed leader's write is refused by the fence; a lost
//! watch event is caught by the re-list.

mod runtime_common;

use ccm_core::runtime::RuntimeError;
use ccm_core::session::SessionState;
use ccm_core::store::StateStore;
use chrono::Duration;
use runtime_common::*;

async fn bound(w: &World, id: &str) -> bool {
    w.session(id).await.state == SessionState::Scheduled
}

#[tokio::test]
async fn only_one_of_two_runtimes_schedules() {
    let w = World::new().await;
    w.add_worker("w1").await;
    w.add_worker("w2").await;
    let a = w.runtime(World::settings_keep_fleet("a")).spawn();
    let b = w.runtime(World::settings_keep_fleet("b")).spawn();
    eventually("a scheduler leader", || async {
        a.runtime().leadership().scheduler || b.runtime().leadership().scheduler
    })
    .await;
    for i in 0..20 {
        w.add_session(&format!("s{i:02}"), None).await;
    }
    for _ in 0..5 {
        w.clock.advance(Duration::seconds(10));
        settle().await;
    }
    eventually("all 20 bound", || async {
        let mut n = 0;
        for s in w.sessions().await {
            n += usize::from(s.state == SessionState::Scheduled);
        }
        n == 20
    })
    .await;
    let (la, lb) = (a.runtime().leadership(), b.runtime().leadership());
    assert!(
        la.scheduler != lb.scheduler,
        "exactly one leads: {la:?} {lb:?}"
    );
    let (ma, mb) = (a.runtime().metrics(), b.runtime().metrics());
    assert_eq!(ma.bindings_total + mb.bindings_total, 20);
    let (leader, standby) = if la.scheduler { (ma, mb) } else { (mb, ma) };
    assert_eq!(leader.bindings_total, 20);
    assert_eq!(standby.bindings_total, 0);
    assert_eq!(standby.scheduler_runs, 0, "a standby never runs a pass");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn crashed_leader_is_replaced_within_ttl_plus_one_interval() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let settings = World::settings_keep_fleet("a");
    let ttl = Duration::from_std(settings.leader_ttl).unwrap();
    let interval = Duration::from_std(settings.scheduler_interval).unwrap();
    let a = w.runtime(settings).spawn();
    eventually("a leads", || async { a.runtime().leadership().scheduler }).await;
    let b = w.runtime(World::settings_keep_fleet("b")).spawn();
    // Let a few keep-alive rounds pass: a must keep leading.
    for _ in 0..30 {
        w.clock.advance(Duration::seconds(1));
        settle().await;
    }
    assert!(a.runtime().leadership().scheduler && !b.runtime().leadership().scheduler);
    let b_rt = b.runtime().clone();
    a.abort(); // crash: no resign, the lease runs out on its own
    let dropped = w.clock_now();
    w.add_session("after-crash", None).await;
    let mut took_over = None;
    for _ in 0..120 {
        w.clock.advance(Duration::seconds(1));
        settle().await;
        if took_over.is_none() && b_rt.leadership().scheduler {
            took_over = Some(w.clock_now() - dropped);
        }
        if bound(&w, "after-crash").await {
            break;
        }
    }
    eventually("b binds the session", || async {
        bound(&w, "after-crash").await
    })
    .await;
    let elapsed = w.clock_now() - dropped;
    assert!(
        elapsed <= ttl + interval,
        "failover took {elapsed} > TTL + interval"
    );
    let took = took_over.expect("b became leader");
    // b could only take over once a's lease expired: its last keep-alive was ≤ TTL/3 before the crash.
    assert!(
        took >= ttl - ttl / 3,
        "b took over after {took}, before a's lease could expire"
    );
    assert_eq!(
        w.session("after-crash").await.worker_id.as_deref(),
        Some("w1")
    );
    assert_eq!(b_rt.metrics().bindings_total, 1);
    b.shutdown().await;
}

#[tokio::test]
async fn resign_on_shutdown_hands_over_at_once() {
    let w = World::new().await;
    let settings = World::settings_keep_fleet("a");
    let keep_alive = Duration::from_std(settings.keep_alive_every()).unwrap();
    let a = w.runtime(settings).spawn();
    eventually("a leads", || async { a.runtime().leadership().scheduler }).await;
    let b = w.runtime(World::settings_keep_fleet("b")).spawn();
    settle().await;
    let a_rt = a.runtime().clone();
    a.shutdown().await;
    assert!(!a_rt.leadership().scheduler && !a_rt.leadership().controller);
    let t = w.clock_now();
    let b_rt = b.runtime().clone();
    for _ in 0..10 {
        if b_rt.leadership().scheduler && b_rt.leadership().controller {
            break;
        }
        w.clock.advance(Duration::seconds(1));
        settle().await;
    }
    eventually("b leads both", || async {
        b_rt.leadership().scheduler && b_rt.leadership().controller
    })
    .await;
    assert!(
        w.clock_now() - t <= keep_alive,
        "took {} after a resign",
        w.clock_now() - t
    );
    b.shutdown().await;
}

#[tokio::test]
async fn deposed_leader_write_is_refused_by_the_fence() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let a = w.runtime(World::settings_keep_fleet("a"));
    let b = w.runtime(World::settings_keep_fleet("b"));
    assert!(a.campaign_once().await.scheduler);
    assert!(!b.campaign_once().await.scheduler);
    // a's leases end on the server well within a's local deadline (revoked by an operator, or
    // expired on a server whose clock runs fast); b takes over; a still believes it leads. (A
    // keep-alive that merely stalls is caught earlier, by the local deadline: see
    // tests/runtime_fencing.rs.)
    for l in [
        a.scheduler().leader().current(),
        a.controller().leader().current(),
    ] {
        w.store.revoke_lease(l.unwrap().lease).await.unwrap();
    }
    w.clock.advance(Duration::seconds(1));
    assert!(b.campaign_once().await.scheduler);
    assert!(a.leadership().scheduler, "a has not noticed yet");
    w.add_session("s1", None).await;
    let err = a
        .scheduler()
        .reconcile_once(w.clock_now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::NotLeader { ref election } if election == "scheduler"),
        "{err}"
    );
    assert_eq!(
        w.session("s1").await.state,
        SessionState::Pending,
        "nothing written by a"
    );
    assert_eq!(w.worker("w1").await.unwrap().allocated, Default::default());
    assert!(!a.leadership().scheduler, "a forgets leadership at once");
    assert_eq!(a.metrics().fence_rejections_total, 1);
    // The controller of a is fenced the same way: 11 due sessions need a second worker, and
    // a's launch record is refused before the provider is ever called.
    assert!(b.leadership().controller && a.leadership().controller);
    for i in 2..=11 {
        w.add_session(&format!("s{i}"), None).await;
    }
    assert!(matches!(
        a.controller().reconcile_once(w.clock_now()).await,
        Err(RuntimeError::NotLeader { .. })
    ));
    assert!(!a.leadership().controller);
    assert_eq!(w.workers().await.len(), 1, "no worker record written by a");
    assert_eq!(w.provider.launches(), 0, "nothing launched by a");
    let r = b.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(r.bound.len(), 10, "w1 takes 10 of the 11");
    let c = b.controller().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(
        c.actions.len(),
        1,
        "b launches the second worker: {:?}",
        c.actions
    );
    assert_eq!(w.provider.launches(), 1);
}

#[tokio::test]
async fn watch_binds_at_once_and_the_relist_catches_a_lost_event() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let settings = World::settings_keep_fleet("a");
    let interval = Duration::from_std(settings.scheduler_interval).unwrap();
    let a = w.runtime(settings).spawn();
    eventually("a leads and ran a pass", || async {
        a.runtime().metrics().scheduler_runs >= 1
    })
    .await;
    // With the clock frozen only the watch can trigger a pass.
    w.add_session("seen", None).await;
    eventually("bound via the watch", || async { bound(&w, "seen").await }).await;
    w.store.set_drop_watch_events(true);
    w.add_session("lost", None).await;
    for _ in 0..40 {
        settle().await;
    }
    assert_eq!(
        w.session("lost").await.state,
        SessionState::Pending,
        "the event was lost"
    );
    assert!(w.store.dropped_watch_events() >= 1);
    w.clock.advance(interval);
    eventually("bound by the re-list", || async { bound(&w, "lost").await }).await;
    a.shutdown().await;
}
