//! Fault injection on the in-memory backends: a loop that panics gives its leadership up and a
//! standby takes over; corrupted, future-version and key/id-mismatched records of every kind
//! are reported and left alone (never "gone"); a conflict on one session does not fail the
//! batch; a store that refuses large transactions gets smaller ones; times and durations at
//! the edge of chrono's range are refused on decode or saturate, never panic; a loop whose pass
//! stalls past `max_pass_duration` gives its leadership up like a panicking one.

mod runtime_common;

use async_trait::async_trait;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::runtime::{Runtime, RuntimeError, RuntimeSettings};
use ccm_core::session::SessionState;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::intercept::{Intercepted, Interceptor};
use ccm_core::store::{SpecStore, StateStore, StoreError, Txn, VirtualClock};
use ccm_core::worker::WorkerState;
use chrono::Duration;
use runtime_common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Faults around a [`MemoryStateStore`]: panic on the next listing (a bug reachable from
/// stored data), a listing that never answers, or one key moved just before the next
/// transaction (a concurrent writer).
#[derive(Default)]
struct Faults {
    panic_on_list: AtomicBool,
    hang_on_list: AtomicBool,
    bump_before_txn: Mutex<Option<String>>,
}

type Faulty = Intercepted<Faults>;

fn faulty(inner: Arc<MemoryStateStore>) -> Arc<Faulty> {
    Arc::new(Intercepted::new(inner, Faults::default()))
}

#[async_trait]
impl Interceptor for Faults {
    async fn before_list(&self, _inner: &dyn StateStore, prefix: &str) {
        if self.panic_on_list.load(Ordering::SeqCst) {
            panic!("injected: listing {prefix} panics");
        }
        if self.hang_on_list.load(Ordering::SeqCst) {
            // A call that never answers (a peer that accepted the connection and went quiet).
            futures::future::pending::<()>().await;
        }
    }
    async fn before_txn(&self, inner: &dyn StateStore, _txn: &Txn) -> Result<(), StoreError> {
        let bump = self.bump_before_txn.lock().unwrap().take();
        if let Some(key) = bump {
            let kv = inner.get(&key).await?.expect("bumped key exists");
            inner.put(&key, kv.value, None).await?;
        }
        Ok(())
    }
}

/// A runtime of `w` whose loops read and write through `state` (leases on the real store).
fn runtime_on(w: &World, state: Arc<dyn StateStore>, settings: RuntimeSettings) -> Arc<Runtime> {
    let elector = Arc::new(StoreElector::new(w.store.clone(), settings.prefix.clone()));
    Arc::new(
        Runtime::builder()
            .state(state)
            .elector(elector)
            .spec(w.spec.clone())
            .events(w.events.clone())
            .clock(Arc::new(w.clock.clone()))
            .provider(w.provider.clone())
            .settings(settings)
            .build()
            .unwrap(),
    )
}

async fn raw(w: &World, key: &str) -> Vec<u8> {
    w.store.get(key).await.unwrap().unwrap().value
}

async fn put_raw(w: &World, key: &str, value: &[u8]) {
    w.store.put(key, value.to_vec(), None).await.unwrap();
}

/// The stored JSON of `key` with `edit` applied.
async fn edit_json(w: &World, key: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&raw(w, key).await).unwrap();
    edit(&mut v);
    put_raw(w, key, &serde_json::to_vec(&v).unwrap()).await;
}

/// The failure `rt` reports once a loop died, advancing the virtual clock a second at a time
/// for up to `secs` seconds.
async fn failure_within(w: &World, rt: &Runtime, secs: u32) -> Option<String> {
    for _ in 0..secs {
        if rt.failure().is_some() {
            break;
        }
        w.clock.advance(Duration::seconds(1));
        settle().await;
    }
    rt.failure()
}

#[tokio::test]
async fn a_panicking_loop_resigns_its_leadership_and_a_standby_takes_over() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let faulty = faulty(w.store.clone());
    let a_rt = runtime_on(&w, faulty.clone(), World::settings_keep_fleet("a"));
    let a = a_rt.clone().spawn();
    eventually("a leads both loops", || async {
        let l = a_rt.leadership();
        l.scheduler && l.controller
    })
    .await;
    let b = w.runtime(World::settings_keep_fleet("b")).spawn();
    let b_rt = b.runtime().clone();
    settle().await;
    assert!(!b_rt.leadership().scheduler, "a still leads");

    faulty.panic_on_list.store(true, Ordering::SeqCst);
    w.add_session("s1", None).await; // the watch event starts a pass, which panics
    let why = failure_within(&w, &a_rt, 40)
        .await
        .expect("the runtime notices the dead loop");
    assert!(why.contains("loop") && why.contains("injected"), "{why}");
    let l = a_rt.leadership();
    assert!(!l.scheduler && !l.controller, "a gave up both: {l:?}");
    let m = a_rt.metrics();
    assert!(!m.scheduler_leader && !m.controller_leader);
    let text = m.to_prometheus();
    assert!(
        text.contains("ccm_is_leader{loop=\"scheduler\"} 0"),
        "{text}"
    );

    // b takes over at its next campaign tick (the lease was revoked, not left to expire) and
    // binds the session.
    let keep_alive = Duration::from_std(World::settings("b").keep_alive_every()).unwrap();
    let resigned_at = w.clock_now();
    for _ in 0..60 {
        if b_rt.leadership().scheduler && w.session("s1").await.state == SessionState::Scheduled {
            break;
        }
        w.clock.advance(Duration::seconds(1));
        settle().await;
    }
    assert!(b_rt.leadership().scheduler && b_rt.leadership().controller);
    assert!(
        w.clock_now() - resigned_at <= keep_alive + Duration::seconds(30),
        "took over after {}",
        w.clock_now() - resigned_at
    );
    assert_eq!(w.session("s1").await.state, SessionState::Scheduled);
    // The dead runtime stays down (no re-campaign) and reports why it stopped.
    for _ in 0..20 {
        w.clock.advance(Duration::seconds(5));
        settle().await;
    }
    assert!(!a_rt.leadership().scheduler && !a_rt.leadership().controller);
    match a.stop().await {
        Err(RuntimeError::LoopDied(m)) => assert!(m.contains("panicked"), "{m}"),
        other => panic!("expected LoopDied, got {other:?}"),
    }
    b.shutdown().await;
}

#[tokio::test]
async fn a_stalled_loop_gives_its_leadership_up_after_the_pass_limit() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let faulty = faulty(w.store.clone());
    let settings = World::settings_keep_fleet("a");
    let limit = settings.max_pass_duration;
    let a_rt = runtime_on(&w, faulty.clone(), settings);
    let a = a_rt.clone().spawn();
    eventually("a leads", || async { a_rt.leadership().scheduler }).await;
    let b = w.runtime(World::settings_keep_fleet("b")).spawn();
    let b_rt = b.runtime().clone();
    faulty.hang_on_list.store(true, Ordering::SeqCst);
    w.add_session("s1", None).await; // the watch event starts a pass, which never returns
    let stalled_at = w.clock_now();
    // The campaign keeps the lease alive meanwhile: without the limit a would lead for ever.
    while w.clock_now() < stalled_at + limit - Duration::seconds(30) {
        w.clock.advance(Duration::seconds(5));
        settle().await;
    }
    assert!(a_rt.failure().is_none(), "not yet past the limit");
    assert!(
        a_rt.leadership().scheduler,
        "a still leads (and does nothing)"
    );
    assert_eq!(w.session("s1").await.state, SessionState::Pending);
    let why = failure_within(&w, &a_rt, 120)
        .await
        .expect("the stalled loop ends the runtime");
    assert!(why.contains("loop") && why.contains("returned"), "{why}");
    assert!(!a_rt.leadership().scheduler && !a_rt.leadership().controller);
    for _ in 0..60 {
        if w.session("s1").await.state == SessionState::Scheduled {
            break;
        }
        w.clock.advance(Duration::seconds(1));
        settle().await;
    }
    assert!(b_rt.leadership().scheduler, "the standby took over");
    assert_eq!(w.session("s1").await.state, SessionState::Scheduled);
    faulty.hang_on_list.store(false, Ordering::SeqCst);
    a.abort();
    b.shutdown().await;
}

/// w1 RUNNING with s1 RUNNING and s2 SCHEDULED on it.
async fn busy_worker(w: &World) -> Arc<Runtime> {
    w.add_worker("w1").await;
    let rt = w.runtime(World::settings_keep_fleet("a"));
    w.add_session("s1", None).await;
    w.add_session("s2", None).await;
    let mut bound = 0;
    for _ in 0..5 {
        let r = rt.step().await.unwrap();
        bound += r.scheduler.map_or(0, |s| s.bound.len());
        w.clock.advance(Duration::seconds(30));
    }
    assert_eq!(bound, 2);
    assert_eq!(w.session("s2").await.worker_id.as_deref(), Some("w1"));
    edit_json(w, &w.keys.session("s1"), |v| v["state"] = "RUNNING".into()).await;
    rt
}

#[tokio::test]
async fn an_undecodable_worker_is_unknown_never_gone() {
    type Corrupt = fn(&mut serde_json::Value) -> Option<Vec<u8>>;
    let cases: [(&str, Corrupt); 4] = [
        ("a state this version does not know", |v| {
            v["state"] = "HIBERNATING".into();
            None
        }),
        ("bad JSON", |_| {
            Some(b"{\"id\": \"w1\", \"state\": ".to_vec())
        }),
        ("a future record with a changed shape", |v| {
            v["capacity"] = serde_json::json!("lots");
            v["schema_version"] = 2.into();
            None
        }),
        ("an id that is not its key's", |v| {
            v["id"] = "w9".into();
            None
        }),
    ];
    for (what, corrupt) in cases {
        let w = World::new().await;
        let rt = busy_worker(&w).await;
        let key = w.keys.worker("w1");
        let mut v: serde_json::Value = serde_json::from_slice(&raw(&w, &key).await).unwrap();
        let bytes = corrupt(&mut v).unwrap_or_else(|| serde_json::to_vec(&v).unwrap());
        put_raw(&w, &key, &bytes).await;
        for _ in 0..10 {
            w.clock.advance(Duration::seconds(30));
            rt.step().await.unwrap();
        }
        let (s1, s2) = (w.session("s1").await, w.session("s2").await);
        assert_eq!(
            (s1.state, s1.worker_id.as_deref()),
            (SessionState::Running, Some("w1")),
            "{what}: the RUNNING session stays"
        );
        assert_eq!(
            (s2.state, s2.worker_id.as_deref()),
            (SessionState::Scheduled, Some("w1")),
            "{what}: the SCHEDULED session is not requeued"
        );
        assert_eq!(
            raw(&w, &key).await,
            bytes,
            "{what}: the record is left alone"
        );
        let m = rt.metrics();
        assert_eq!(m.requeued_total, 0, "{what}");
        assert_eq!(m.undecodable_records.get("worker"), Some(&1), "{what}");
        assert!(
            m.problems.iter().any(|p| p.contains("/ccm/workers/w1")),
            "{what}: {:?}",
            m.problems
        );
        assert!(
            m.to_prometheus()
                .contains("ccm_undecodable_records{kind=\"worker\"} 1"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn an_undecodable_session_is_left_alone_and_its_worker_takes_no_new_binding() {
    for (what, future_state) in [("unknown state", true), ("bad JSON", false)] {
        let w = World::new().await;
        let first = busy_worker(&w).await;
        first.resign().await;
        // The planner with no warm minimum: it drains a RUNNING worker that holds nothing.
        let rt = w.runtime(World::settings("b"));
        // s1 ended; only the (soon unknown) s2 is left on w1.
        edit_json(&w, &w.keys.session("s1"), |v| {
            v["state"] = "TERMINATED".into();
            v["worker_id"] = serde_json::Value::Null;
            v["allocated_ports"] = serde_json::json!({});
        })
        .await;
        let key = w.keys.session("s2");
        let bytes = if future_state {
            let mut v: serde_json::Value = serde_json::from_slice(&raw(&w, &key).await).unwrap();
            v["state"] = "PAUSED_BY_A_NEWER_CCM".into();
            serde_json::to_vec(&v).unwrap()
        } else {
            b"{\"id\": \"s2\", \"worker_id\": \"w1\"".to_vec()
        };
        put_raw(&w, &key, &bytes).await;
        w.add_session("s3", None).await;
        for _ in 0..120 {
            w.clock.advance(Duration::seconds(30));
            rt.step().await.unwrap();
        }
        assert_eq!(raw(&w, &key).await, bytes, "{what}: left alone");
        let s3 = w.session("s3").await;
        if future_state {
            // Its load on w1 is unknown: nothing new goes there.
            assert_ne!(s3.worker_id.as_deref(), Some("w1"), "{what}");
        }
        assert_eq!(
            w.worker("w1").await.unwrap().state,
            WorkerState::Running,
            "{what}: a worker named by an unknown session is never drained"
        );
        let m = rt.metrics();
        assert_eq!(m.undecodable_records.get("session"), Some(&1), "{what}");
        assert!(
            m.problems.iter().any(|p| p.contains("/ccm/sessions/s2")),
            "{what}: {:?}",
            m.problems
        );
    }
}

#[tokio::test]
async fn a_session_whose_key_and_id_disagree_is_refused_and_the_rest_bind() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let rt = w.runtime(World::settings_keep_fleet("a"));
    for i in 0..5 {
        w.add_session(&format!("s{i}"), None).await;
    }
    w.add_session("a", None).await;
    edit_json(&w, &w.keys.session("a"), |v| v["id"] = "zzz".into()).await;
    let before = raw(&w, &w.keys.session("a")).await;
    let r = rt.step().await.unwrap().scheduler.unwrap();
    assert_eq!(r.bound.len(), 5, "{r:?}");
    assert_eq!(r.conflicts, 0, "{r:?}");
    assert_eq!(raw(&w, &w.keys.session("a")).await, before);
    assert!(w.store.get(&w.keys.session("zzz")).await.unwrap().is_none());
    let m = rt.metrics();
    assert!(
        m.problems
            .iter()
            .any(|p| p.contains("/ccm/sessions/a") && p.contains("zzz")),
        "{:?}",
        m.problems
    );
}

#[tokio::test]
async fn a_conflict_on_one_session_leaves_it_out_and_commits_the_rest() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let faulty = faulty(w.store.clone());
    let rt = runtime_on(&w, faulty.clone(), World::settings_keep_fleet("a"));
    for i in 0..4 {
        w.add_session(&format!("s{i}"), None).await;
    }
    // The controller pass goes first; let it settle, then arm the concurrent write.
    rt.step().await.unwrap();
    for i in 4..8 {
        w.add_session(&format!("s{i}"), None).await;
    }
    // Arm right before the scheduler's own pass: s5 moves under its first transaction.
    rt.campaign_once().await;
    *faulty.bump_before_txn.lock().unwrap() = Some(w.keys.session("s5"));
    let r = rt.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(r.conflicts, 1, "{r:?}");
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert_eq!(r.skipped[0].0, "s5");
    let bound: Vec<&str> = r.bound.iter().map(|b| b.session.as_str()).collect();
    assert_eq!(bound, ["s4", "s6", "s7"], "the rest of the batch committed");
    assert_eq!(w.session("s5").await.state, SessionState::Pending);
    // The next pass binds it.
    let r = rt.scheduler().reconcile_once(w.clock_now()).await.unwrap();
    assert_eq!(r.bound.len(), 1);
    assert_eq!(r.bound[0].session, "s5");
}

async fn bind_twenty_on(store: MemoryStateStore) -> (Arc<Runtime>, World) {
    let mut w = World::new().await;
    w.store = Arc::new(store);
    w.add_worker("w1").await;
    w.add_worker("w2").await;
    for i in 0..20 {
        w.add_session(&format!("s{i:02}"), None).await;
    }
    let rt = w.runtime(World::settings_keep_fleet("a"));
    (rt, w)
}

#[tokio::test]
async fn a_store_with_a_small_txn_limit_gets_halved_batches() {
    for reported in [true, false] {
        let clock = VirtualClock::new(t0());
        let base = MemoryStateStore::new(Arc::new(clock.clone()));
        let store = if reported {
            base.with_max_txn_ops(8)
        } else {
            base.with_unreported_max_txn_ops(8)
        };
        let (rt, w) = bind_twenty_on(store).await;
        assert_eq!(rt.settings().max_txn_ops, 128);
        let r = rt.step().await.unwrap().scheduler.unwrap();
        assert_eq!(r.bound.len(), 20, "reported={reported}: {r:?}");
        // 20 sessions on 2 workers, at most 8 operations (fence included) per transaction.
        assert!(r.transactions >= 4, "reported={reported}: {r:?}");
        for s in w.sessions().await {
            assert_eq!(s.state, SessionState::Scheduled);
        }
    }
}

#[tokio::test]
async fn a_store_that_refuses_even_one_binding_is_an_error_naming_its_limit() {
    // Leadership needs no more than 2 operations here; one binding needs 3.
    let clock = VirtualClock::new(t0());
    let store = MemoryStateStore::new(Arc::new(clock.clone())).with_unreported_max_txn_ops(2);
    let (rt, _w) = bind_twenty_on(store).await;
    rt.campaign_once().await;
    assert!(rt.leadership().scheduler, "a campaign is one operation");
    let e = rt
        .scheduler()
        .reconcile_once(t0())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("too many operations"), "{e}");
    assert!(e.contains("server limit"), "{e}");
}

#[tokio::test]
async fn times_beyond_the_valid_range_are_refused_on_decode_and_others_saturate() {
    let w = World::new().await;
    w.add_worker("w1").await;
    let rt = w.runtime(World::settings_keep_fleet("a"));
    // Chrono's own maximum is year 262143: a slot there would overflow `start + grace`.
    w.add_session("far", None).await;
    edit_json(&w, &w.keys.session("far"), |v| {
        v["timeslot"] = serde_json::json!({
            "start": "+262142-12-31T22:00:00Z",
            "end": "+262142-12-31T23:00:00Z"
        });
    })
    .await;
    // The last valid year: due long after now, never overflowing.
    w.add_session("late", None).await;
    edit_json(&w, &w.keys.session("late"), |v| {
        v["timeslot"] = serde_json::json!({
            "start": "9999-12-31T22:00:00Z",
            "end": "9999-12-31T23:00:00Z"
        });
    })
    .await;
    w.add_session("now", None).await;
    let r = rt.step().await.unwrap();
    let s = r.scheduler.unwrap();
    assert_eq!(s.bound.len(), 1, "{s:?}");
    assert_eq!(s.bound[0].session, "now");
    assert_eq!(s.not_due, 1, "the 9999 session waits");
    let m = rt.metrics();
    assert!(
        m.problems
            .iter()
            .any(|p| p.contains("/ccm/sessions/far") && p.contains("outside the years")),
        "{:?}",
        m.problems
    );
}

#[tokio::test]
async fn a_huge_drain_timeout_from_the_spec_store_does_not_panic() {
    let mut w = World::new().await;
    let mut ts = templates();
    ts[0].drain_timeout_hours = 1e13; // past chrono's Duration range in seconds
    let spec = Arc::new(ccm_core::memory::spec::MemorySpecStore::new());
    spec.insert_definition(&definition()).await.unwrap();
    spec.seed_templates(&ts).await.unwrap();
    w.spec = spec;
    w.add_worker("w1").await;
    w.add_session("s1", None).await;
    // The worker is a record only (no cloud instance): the planner must not stop it because
    // it is idle before s1 binds (a stop would be ordered, fenced, and then fail in the cloud).
    w.runtime(World::settings_keep_fleet("binder"))
        .step()
        .await
        .unwrap();
    assert_eq!(w.session("s1").await.worker_id.as_deref(), Some("w1"));
    let rt = w.runtime(World::settings("a"));
    edit_json(&w, &w.keys.worker("w1"), |v| {
        v["state"] = "DRAINING".into();
        v["drain_started_at"] = serde_json::json!(w.clock_now());
    })
    .await;
    for _ in 0..20 {
        w.clock.advance(Duration::hours(1));
        rt.step().await.unwrap();
    }
    // Still draining with its session: the capped timeout (87,600 h) has not passed.
    assert_eq!(w.worker("w1").await.unwrap().state, WorkerState::Draining);
    assert_eq!(w.session("s1").await.state, SessionState::Scheduled);
}
