//! The fleet lives in the state store, not in the provider's memory: when the controller takes
//! the lead it reconciles the provider's ccm-tagged instances with the worker records. An
//! instance without a record is adopted (or terminated, by setting); a record whose instance is
//! gone is TERMINATED and its sessions requeue.

mod runtime_common;

use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::runtime::{OrphanPolicy, RuntimeSettings};
use ccm_core::session::SessionState;
use ccm_core::store::{LaunchRequest, WorkerProvider};
use ccm_core::worker::WorkerState;
use chrono::Duration;
use runtime_common::*;
use std::sync::Arc;

async fn orphan(w: &World, id: &str) -> String {
    let pid = w
        .provider
        .launch(LaunchRequest {
            worker_id: id.into(),
            template: templates()[0].clone(),
            region: "us-west-2".into(),
        })
        .await
        .unwrap();
    w.clock.advance(Duration::minutes(25));
    pid
}

#[tokio::test]
async fn an_orphan_instance_is_adopted_when_the_controller_takes_the_lead() {
    let w = World::new().await;
    let pid = orphan(&w, "orphan-1").await;
    // Keep the fleet (nothing is booked: the planner would stop an idle worker at once).
    let rt = w.runtime(World::settings_keep_fleet("a"));
    rt.step().await.unwrap();
    let rec = w.worker("orphan-1").await.expect("a record for the orphan");
    assert_eq!(rec.provider_id.as_deref(), Some(pid.as_str()));
    assert_eq!(rec.region, "us-west-2");
    assert_eq!(rec.template, "personal-standard");
    assert_eq!(rec.state, WorkerState::Running);
    assert_eq!(rt.metrics().workers_adopted_total, 1);
    assert_eq!(w.provider.launches(), 1, "adopted, nothing launched");
    assert!(
        w.events
            .for_subject("orphan-1")
            .iter()
            .any(|e| e.event_type == "ccm.worker.running"),
        "{:?}",
        w.events.types()
    );
    // Later passes of the same term do not adopt it again.
    w.clock.advance(Duration::seconds(30));
    rt.step().await.unwrap();
    assert_eq!(rt.metrics().workers_adopted_total, 1);
}

#[tokio::test]
async fn with_the_terminate_policy_an_orphan_is_terminated() {
    let w = World::new().await;
    orphan(&w, "orphan-2").await;
    let rt = w.runtime(RuntimeSettings {
        orphan_policy: OrphanPolicy::Terminate,
        ..World::settings("a")
    });
    rt.step().await.unwrap();
    assert!(w.worker("orphan-2").await.is_none(), "no record");
    w.clock.advance(Duration::minutes(2));
    assert!(
        !w.provider.instances().contains_key("orphan-2"),
        "{:?}",
        w.provider.instances()
    );
    assert_eq!(rt.metrics().workers_adopted_total, 0);
}

#[tokio::test]
async fn a_new_leader_marks_a_worker_whose_instance_is_gone_lost_and_requeues_its_session() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    w.add_session("s1", None).await;
    for _ in 0..60 {
        w.clock.advance(Duration::seconds(30));
        rt.step().await.unwrap();
    }
    let s = w.session("s1").await;
    assert_eq!(s.state, SessionState::Scheduled);
    let old = s.worker_id.clone().expect("bound");
    assert!(w.worker(&old).await.unwrap().provider_id.is_some());

    // Another process takes over whose cloud does not have that instance any more.
    let w2 = World {
        clock: w.clock.clone(),
        store: w.store.clone(),
        spec: w.spec.clone(),
        events: w.events.clone(),
        provider: Arc::new(SimulatedProvider::new(Arc::new(w.clock.clone()))),
        keys: w.keys.clone(),
    };
    let rt2 = w2.runtime(World::settings("b"));
    w.clock.advance(Duration::minutes(2)); // the old leader's lease runs out
    let r = rt2.step().await.unwrap();
    let c = r.controller.expect("b leads the controller");
    assert!(c.lost_workers.contains(&old), "{c:?}");
    assert_eq!(w.worker(&old).await.unwrap().state, WorkerState::Terminated);
    assert!(c.requeued.contains(&"s1".to_string()), "{c:?}");
    assert_ne!(w.session("s1").await.worker_id, Some(old));
    assert_eq!(rt2.metrics().workers_lost_total, 1);
}
