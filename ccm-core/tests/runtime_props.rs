//! The real loops (scheduler + planner-driven controller) on random days: bookings and ASAP
//! requests at random times, labs that end at their slot end, workers that fail at random
//! moments. After every one-minute step the stored state must hold:
//!
//! * no worker carries more than its capacity (summed from the sessions bound to it);
//! * no host port of a worker belongs to two sessions;
//! * every session event is one edge of the session state machine, every worker event a
//!   reachable move of the worker state machine;
//!
//! and when no worker failed, every session is bound by its slot start (ASAP ones within the
//! boot time): the controller launched what the bookings needed, in time.

mod runtime_common;

use ccm_core::events::{CcmEvent, EventData};
use ccm_core::resources::Load;
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::worker::WorkerState;
use ccm_core::StateMachine;
use chrono::Duration;
use proptest::prelude::*;
use runtime_common::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One booking: `None` = ASAP (created at `arrive`), else the slot start in minutes from t0.
#[derive(Debug, Clone)]
struct Booking {
    arrive: i64,
    start: Option<i64>,
}

fn booking() -> impl Strategy<Value = Booking> {
    (0i64..120, prop::option::weighted(0.7, 0i64..48)).prop_map(|(arrive, start)| Booking {
        arrive,
        // Booked slots start at least one lead time after the booking arrives.
        start: start.map(|k| arrive + 35 + k * 5),
    })
}

fn reachable(from: WorkerState, to: WorkerState) -> bool {
    let mut seen = BTreeSet::from([from]);
    let mut q = VecDeque::from([from]);
    while let Some(s) = q.pop_front() {
        for n in s.next_states() {
            if *n == to {
                return true;
            }
            if seen.insert(*n) {
                q.push_back(*n);
            }
        }
    }
    false
}

async fn check_state(w: &World) {
    let sessions = w.sessions().await;
    let def = definition();
    let per = Load::new(def.resource_requirements, def.node_count);
    for wk in w.workers().await {
        let on: Vec<&LabletSession> = sessions
            .iter()
            .filter(|s| s.holds_capacity() && s.worker_id.as_deref() == Some(wk.id.as_str()))
            .collect();
        let mut load = Load::default();
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        for s in &on {
            load = load.saturating_add(&per);
            for p in s.allocated_ports.values() {
                if let Some(other) = ports.insert(*p, &s.id) {
                    panic!("port {p} of {} held by {other} and {}", wk.id, s.id);
                }
            }
        }
        assert!(
            load.fits_in(&wk.capacity),
            "{} over-committed: {load:?} > {:?}",
            wk.id,
            wk.capacity
        );
    }
}

fn check_events(w: &World) {
    let mut last: BTreeMap<String, SessionState> = BTreeMap::new();
    for e in w.events.events() {
        let typed = CcmEvent::from_event(&e).expect("catalogue event");
        match typed.data() {
            EventData::Session(d) => {
                if let Some(prev) = last.get(&d.session_id) {
                    assert!(
                        prev.can_become(d.state),
                        "{}: {prev} -> {}",
                        d.session_id,
                        d.state
                    );
                }
                last.insert(d.session_id.clone(), d.state);
            }
            EventData::Worker(d) => {
                if let Some(from) = d.from_state {
                    assert!(
                        reachable(from, d.state),
                        "{}: {from} -> {}",
                        d.worker_id,
                        d.state
                    );
                }
            }
            _ => {}
        }
    }
}

async fn day(bookings: Vec<Booking>, failures: Vec<(i64, usize)>) {
    let w = World::new().await;
    let rt = w.runtime(World::settings("p"));
    let t0 = w.clock_now();
    let mut arrivals: BTreeMap<i64, Vec<(String, Option<i64>)>> = BTreeMap::new();
    for (i, b) in bookings.iter().enumerate() {
        arrivals
            .entry(b.arrive)
            .or_default()
            .push((format!("s{i:02}"), b.start));
    }
    let failures: BTreeMap<i64, usize> = failures.into_iter().collect();
    let mut failed_any = false;
    let mut bound_at: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    let mut arrived_at: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for minute in 0..420i64 {
        for (id, start) in arrivals.remove(&minute).unwrap_or_default() {
            w.add_session(&id, start.map(|m| t0 + Duration::minutes(m)))
                .await;
            arrived_at.insert(id, w.clock_now());
        }
        if let Some(k) = failures.get(&minute) {
            let up: Vec<String> = w
                .workers()
                .await
                .into_iter()
                .filter(|x| x.state == WorkerState::Running)
                .map(|x| x.id)
                .collect();
            if !up.is_empty() {
                w.provider.fail_worker(&up[k % up.len()]).unwrap();
                failed_any = true;
            }
        }
        rt.step().await.unwrap();
        // The lab side: a bound session ends at its slot end (2 h; ASAP ones 2 h after binding).
        let now = w.clock_now();
        for mut s in w.sessions().await {
            if s.state == SessionState::Scheduled {
                let since = *bound_at.entry(s.id.clone()).or_insert(now);
                let end = s.timeslot.map_or(since + Duration::hours(2), |t| t.end);
                if now >= end {
                    s.transition(SessionState::Terminated, now, "lab ended")
                        .unwrap();
                    w.overwrite_session(&s).await;
                }
            }
        }
        check_state(&w).await;
        w.clock.advance(Duration::minutes(1));
    }
    check_events(&w);
    if !failed_any {
        for (id, arrived) in &arrived_at {
            let s = w.session(id).await;
            let bound = bound_at
                .get(id)
                .unwrap_or_else(|| panic!("{id} never bound: {:?}", s.state));
            let deadline = s
                .timeslot
                .map_or(*arrived + Duration::minutes(25), |t| t.start);
            assert!(
                *bound <= deadline,
                "{id} bound at {bound}, needed by {deadline}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn loops_never_overcommit_share_ports_or_skip_transitions(
        bookings in prop::collection::vec(booking(), 1..30),
        failures in prop::collection::vec((0i64..300, 0usize..8), 0..3),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(day(bookings, failures));
    }
}
