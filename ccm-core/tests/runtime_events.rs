//! Every event the loops emit is a catalogue event (domain.md §8): its type, subject and data
//! parse back through `CcmEvent::from_event`, and each session's events follow its state
//! machine in order.

mod runtime_common;

use ccm_core::events::{CcmEvent, EventData};
use ccm_core::session::SessionState;
use ccm_core::StateMachine;
use chrono::Duration;
use runtime_common::*;
use std::collections::BTreeMap;

#[tokio::test]
async fn loops_emit_only_catalogue_events_in_state_machine_order() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    w.add_session("s1", None).await;
    w.add_session("s2", None).await;
    w.add_session("late", Some(w.clock_now() - Duration::minutes(10)))
        .await;
    for _ in 0..42 {
        w.clock.advance(Duration::seconds(30));
        rt.step().await.unwrap();
    }
    let first = w.session("s1").await.worker_id.expect("bound");
    w.provider.fail_worker(&first).unwrap();
    for _ in 0..50 {
        w.clock.advance(Duration::seconds(30));
        rt.step().await.unwrap();
    }
    let events = w.events.events();
    assert!(!events.is_empty());
    let mut last_state: BTreeMap<String, SessionState> = BTreeMap::new();
    let mut types = std::collections::BTreeSet::new();
    for e in &events {
        let typed = CcmEvent::from_event(e)
            .unwrap_or_else(|err| panic!("{} is not a catalogue event: {err}", e.event_type));
        assert_eq!(typed.subject(), e.subject);
        types.insert(e.event_type.clone());
        if let EventData::Session(d) = typed.data() {
            if let Some(prev) = last_state.get(&d.session_id) {
                assert!(
                    prev.can_become(d.state),
                    "{}: {prev} -> {} is not a transition",
                    d.session_id,
                    d.state
                );
                assert_eq!(d.from_state, Some(*prev), "{}", d.session_id);
            }
            last_state.insert(d.session_id.clone(), d.state);
        }
    }
    for t in [
        "ccm.lablet.session.scheduled",
        "ccm.lablet.session.pending",
        "ccm.lablet.session.expired",
        "ccm.worker.pending",
        "ccm.worker.running",
        "ccm.scaling.up.requested",
        "ccm.scaling.up.completed",
    ] {
        assert!(types.contains(t), "missing {t} in {types:?}");
    }
    assert_eq!(
        last_state.get("s1"),
        Some(&SessionState::Scheduled),
        "requeued then bound again"
    );
    assert_eq!(last_state.get("late"), Some(&SessionState::Expired));
}
