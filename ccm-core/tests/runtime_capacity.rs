//! A region out of capacity (EC2 `InsufficientInstanceCapacity`, injected on the simulated
//! provider): the controller avoids that template/region for a while, falls back to the
//! template's next region within the pass and to another template on the next pass, counts
//! every refusal and says why in the scale-up event.

mod runtime_common;

use ccm_core::session::SessionState;
use ccm_core::worker::WorkerState;
use chrono::Duration;
use runtime_common::*;

#[tokio::test]
async fn a_region_without_capacity_falls_back_to_another_region_and_template() {
    let w = World::new().await;
    let rt = w.runtime(World::settings("a"));
    w.provider.no_capacity_in("us-east-1", true);
    w.add_session("s1", None).await;

    // Pass 1: the plan's cheapest choice, enterprise-large, exists only in us-east-1.
    let c = rt.step().await.unwrap().controller.unwrap();
    assert_eq!(c.failed.len(), 1, "{c:?}");
    assert_eq!(c.failed[0].0, "enterprise-large-0001");
    assert!(
        c.failed[0].1.contains("no capacity") && c.failed[0].1.contains("us-east-1"),
        "{}",
        c.failed[0].1
    );
    assert!(
        w.workers().await.is_empty(),
        "no record for a refused launch"
    );
    assert_eq!(rt.metrics().launch_capacity_refusals_total, 1);

    // Pass 2: enterprise-large is unavailable for a while, so the plan takes personal-standard;
    // us-east-1 refuses it too and the same pass launches it in us-west-2.
    w.clock.advance(Duration::seconds(30));
    let c = rt.step().await.unwrap().controller.unwrap();
    assert!(c.failed.is_empty(), "the fallback launch succeeded: {c:?}");
    let workers = w.workers().await;
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].template, "personal-standard");
    assert_eq!(workers[0].region, "us-west-2");
    assert!(
        workers[0].launch_reason.contains("fallback")
            && workers[0].launch_reason.contains("us-east-1"),
        "the worker record says why: {}",
        workers[0].launch_reason
    );
    assert_eq!(w.provider.launches(), 1);
    let m = rt.metrics();
    // The plan says which template regions it left out, and until when.
    let plan = m.last_plan.clone().expect("a plan was made");
    let out: Vec<(&str, &str)> = plan
        .unavailable
        .iter()
        .map(|(t, r, _)| (t.as_str(), r.as_str()))
        .collect();
    assert_eq!(out, [("enterprise-large", "us-east-1")], "{plan:?}");
    assert!(plan.unavailable[0].2 > w.clock_now());
    let text = m.to_prometheus();
    assert!(
        text.contains("ccm_plan_unavailable_regions 1\n")
            && text.contains(
                "ccm_plan_unavailable_region{template=\"enterprise-large\",region=\"us-east-1\"} 1\n"
            ),
        "{text}"
    );
    assert_eq!(m.launch_capacity_refusals_total, 2);
    assert_eq!(m.launches_total, 1);
    assert!(
        m.to_prometheus()
            .contains("ccm_launch_capacity_refusals_total 2\n"),
        "{}",
        m.to_prometheus()
    );
    let west: Vec<_> = w
        .events
        .events()
        .into_iter()
        .filter(|e| e.event_type == "ccm.scaling.up.requested" && e.data["region"] == "us-west-2")
        .collect();
    assert_eq!(west.len(), 1, "one scale-up event for the fallback region");
    let reason = west[0].data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("fallback") && reason.contains("us-east-1") && reason.contains("capacity"),
        "the event says why: {reason}"
    );

    // The worker boots in us-west-2 and takes the session; us-east-1 is not asked again.
    for _ in 0..50 {
        w.clock.advance(Duration::seconds(30));
        rt.step().await.unwrap();
    }
    assert_eq!(
        w.worker(&workers[0].id).await.unwrap().state,
        WorkerState::Running
    );
    assert_eq!(w.session("s1").await.state, SessionState::Scheduled);
    assert_eq!(rt.metrics().launch_capacity_refusals_total, 2);
    assert_eq!(w.provider.launches(), 1, "nothing launched twice");
}
