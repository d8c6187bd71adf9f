//! Archiving ended sessions (in memory, virtual clock): once a session has been in an end state
//! for the retention, the leading controller writes it to the spec store's history and deletes
//! it from the state store; live sessions, recent ends and sessions still holding anything stay;
//! without a retention nothing is archived; a standby never archives.

mod runtime_common;

use ccm_core::runtime::archive::ARCHIVED_EVENT;
use ccm_core::runtime::RuntimeSettings;
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::store::{AuditQuery, SpecStore};
use chrono::Duration;
use runtime_common::*;

fn with_retention(candidate: &str, hours: i64) -> RuntimeSettings {
    RuntimeSettings {
        session_retention: Some(Duration::hours(hours)),
        ..World::settings_keep_fleet(candidate)
    }
}

async fn stored_ids(w: &World) -> Vec<String> {
    let mut ids: Vec<String> = w.sessions().await.into_iter().map(|s| s.id).collect();
    ids.sort();
    ids
}

async fn archived(w: &World) -> Vec<ccm_core::store::AuditEvent> {
    w.spec
        .query_audit(&AuditQuery {
            event_type: Some(ARCHIVED_EVENT.into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

/// Four sessions bound on one worker; two cancelled, one left PENDING with a slot that then
/// expires, one left running.
async fn scenario(w: &World, rt: &ccm_core::runtime::Runtime) {
    w.add_worker("w1").await;
    for id in ["s-live", "s-cancel-1", "s-cancel-2"] {
        w.add_session(id, None).await;
    }
    rt.step().await.unwrap();
    for id in ["s-live", "s-cancel-1", "s-cancel-2"] {
        assert_eq!(w.session(id).await.state, SessionState::Scheduled, "{id}");
    }
    rt.lablets().cancel("s-cancel-1", "done").await.unwrap();
    w.clock.advance(Duration::hours(1));
    rt.lablets().cancel("s-cancel-2", "done").await.unwrap();
    // A slot that started long ago and was never placed (the worker has room, but it is
    // already past start + grace): the scheduler expires it.
    let start = w.clock_now() - Duration::hours(1);
    let mut late = LabletSession::new(
        "s-expired",
        "def-ccna",
        "1.0.0",
        "owner",
        Some(ccm_core::timeslot::Timeslot::new(start, start + Duration::hours(2)).unwrap()),
        w.clock_now(),
    );
    late.updated_at = w.clock_now();
    w.put_session(&late).await;
    rt.step().await.unwrap();
    assert_eq!(w.session("s-expired").await.state, SessionState::Expired);
}

#[tokio::test]
async fn ended_sessions_go_to_the_history_after_the_retention_and_leave_the_store() {
    let w = World::new().await;
    let rt = w.runtime(with_retention("a", 24));
    scenario(&w, &rt).await;
    let cancelled_1 = w.session("s-cancel-1").await;

    // 23 h after the first cancel: nothing has been in an end state for 24 h yet.
    w.clock.advance(Duration::hours(22));
    rt.step().await.unwrap();
    assert_eq!(stored_ids(&w).await.len(), 4);
    assert!(archived(&w).await.is_empty());

    // 24 h after the first cancel: that one goes; the second (an hour later) and the expired
    // one (ended with the second) stay.
    w.clock.advance(Duration::hours(1));
    rt.step().await.unwrap();
    assert_eq!(stored_ids(&w).await, ["s-cancel-2", "s-expired", "s-live"]);
    let events = archived(&w).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subject, "s-cancel-1");
    let record: LabletSession = serde_json::from_value(events[0].data.clone()).unwrap();
    assert_eq!(record, cancelled_1, "the history holds the whole record");

    // An hour later the other two go; the live session stays, bound as before.
    w.clock.advance(Duration::hours(1));
    rt.step().await.unwrap();
    assert_eq!(stored_ids(&w).await, ["s-live"]);
    let mut subjects: Vec<String> = archived(&w).await.into_iter().map(|e| e.subject).collect();
    subjects.sort();
    assert_eq!(subjects, ["s-cancel-1", "s-cancel-2", "s-expired"]);
    let live = w.session("s-live").await;
    assert_eq!(live.state, SessionState::Scheduled);
    let wk = w.worker("w1").await.unwrap();
    assert_eq!(
        wk.ports.owners().len(),
        1,
        "only the live session holds ports"
    );
    assert_eq!(wk.ports.of("s-live"), Some(&live.allocated_ports));

    // Re-running changes nothing (the history records each archive once).
    w.clock.advance(Duration::hours(48));
    rt.step().await.unwrap();
    assert_eq!(archived(&w).await.len(), 3);
    assert_eq!(stored_ids(&w).await, ["s-live"]);
    // The archived session is gone from the API's live view.
    assert!(rt.lablets().cancel("s-cancel-1", "again").await.is_err());
}

#[tokio::test]
async fn without_a_retention_ended_sessions_stay() {
    let w = World::new().await;
    let rt = w.runtime(World::settings_keep_fleet("a"));
    scenario(&w, &rt).await;
    w.clock.advance(Duration::days(400));
    rt.step().await.unwrap();
    assert_eq!(stored_ids(&w).await.len(), 4);
    assert!(archived(&w).await.is_empty());
}

#[tokio::test]
async fn only_the_leading_controller_archives() {
    let w = World::new().await;
    // The leader keeps ended sessions; the standby would archive them after an hour.
    let leader = w.runtime(World::settings_keep_fleet("a"));
    scenario(&w, &leader).await;
    let standby = w.runtime(with_retention("b", 1));
    for _ in 0..10 {
        w.clock.advance(Duration::seconds(5));
        leader.step().await.unwrap();
        let step = standby.step().await.unwrap();
        assert!(step.controller.is_none(), "b does not lead: {step:?}");
    }
    w.clock.advance(Duration::hours(5));
    for _ in 0..10 {
        w.clock.advance(Duration::seconds(5));
        leader.step().await.unwrap();
        standby.step().await.unwrap();
    }
    assert_eq!(stored_ids(&w).await.len(), 4);
    assert!(archived(&w).await.is_empty());
}
