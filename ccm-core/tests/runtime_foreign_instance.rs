//! An instance tagged with a worker's id that is not the worker's recorded instance (another
//! deployment on the same cloud account, a leftover of an earlier fleet) does not speak for the
//! worker: its state is not applied and the record keeps its own instance. Found by the soak
//! (scripts/soak.sh): leftover instances of an earlier run stopped the new run's workers, which
//! carried the same ids, before they ever came up.

mod runtime_common;

use ccm_core::session::SessionState;
use ccm_core::worker::WorkerState;
use chrono::Duration;
use runtime_common::*;

#[tokio::test]
async fn a_stopped_instance_of_another_fleet_with_the_same_worker_id_changes_nothing() {
    let w = World::new().await;
    let mut mine = w.add_worker("w1").await;
    mine.provider_id = Some("i-mine".into());
    w.put_worker(&mine).await;
    // The cloud knows a stopped instance tagged w1 that is not the record's.
    let mut foreign = mine.clone();
    foreign.provider_id = Some("i-foreign".into());
    foreign.state = WorkerState::Stopped;
    w.provider.adopt(&foreign, 1).unwrap();
    w.add_session("s1", None).await;

    let rt = w.runtime(World::settings_keep_fleet("a"));
    for _ in 0..4 {
        rt.step().await.unwrap();
        w.clock.advance(Duration::seconds(30));
    }
    let after = w.worker("w1").await.unwrap();
    assert_eq!(
        (after.state, after.provider_id.as_deref()),
        (WorkerState::Running, Some("i-mine")),
        "the record keeps its own instance and state"
    );
    let s = w.session("s1").await;
    assert_eq!(
        (s.state, s.worker_id.as_deref()),
        (SessionState::Scheduled, Some("w1"))
    );
}
