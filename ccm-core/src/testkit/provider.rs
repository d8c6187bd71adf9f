//! Behaviour suite for the worker provider trait.
//!
//! Every [`WorkerProvider`] runs the same checks: the simulated cloud in this crate's tests
//! (`memory::provider`), the EC2 adapter against moto_server in
//! `ccm-adapters/tests/ec2_provider.rs`. A [`Driver`] lets the cloud finish what is in flight
//! (a virtual clock advances; a real cloud is waited on). Worker ids are the caller's, so runs
//! on a shared server do not collide; every check looks only at its own workers and panics with
//! a message naming the broken rule.

use crate::store::{LaunchRequest, ManagedInstance, ProviderError, ProviderEvent, WorkerProvider};
use crate::template::WorkerTemplate;
use crate::worker::WorkerState;
use async_trait::async_trait;

/// Moves a provider's world forward.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Returns once every transition started so far has completed (boots, stops, terminations).
    async fn settle(&self);
}

fn req(worker_id: &str, template: &WorkerTemplate, region: &str) -> LaunchRequest {
    LaunchRequest {
        worker_id: worker_id.to_string(),
        template: template.clone(),
        region: region.to_string(),
    }
}

fn events_of<'a>(events: &'a [ProviderEvent], worker_id: &str) -> Vec<&'a ProviderEvent> {
    events.iter().filter(|e| e.worker_id == worker_id).collect()
}

async fn managed_of(p: &dyn WorkerProvider, worker_id: &str) -> Vec<ManagedInstance> {
    p.list_managed()
        .await
        .unwrap_or_else(|e| panic!("list_managed failed: {e}"))
        .into_iter()
        .filter(|m| m.worker_id == worker_id)
        .collect()
}

/// The last state reported for `worker_id` by one `poll_events` call, checking that every
/// event of it names `pid`.
async fn last_event(p: &dyn WorkerProvider, worker_id: &str, pid: &str) -> Option<WorkerState> {
    let events = p.poll_events().await;
    let mine = events_of(&events, worker_id);
    for e in &mine {
        assert_eq!(
            e.provider_id, pid,
            "an event of {worker_id} names another instance"
        );
    }
    mine.last().map(|e| e.state)
}

/// launch → running → stop → start → terminate, through `describe`, `poll_events` and
/// `list_managed`; unknown workers are `None` / [`ProviderError::NotFound`].
pub async fn check_lifecycle(
    p: &dyn WorkerProvider,
    d: &dyn Driver,
    template: &WorkerTemplate,
    region: &str,
    worker_id: &str,
) {
    assert_eq!(
        p.describe(worker_id).await.expect("describe before launch"),
        None,
        "a worker never launched has no state"
    );
    assert!(
        matches!(p.stop(worker_id).await, Err(ProviderError::NotFound(_))),
        "stopping a worker never launched is NotFound"
    );
    let pid = p
        .launch(req(worker_id, template, region))
        .await
        .unwrap_or_else(|e| panic!("launch {worker_id}: {e}"));
    assert!(!pid.is_empty(), "launch returns the provider id");
    d.settle().await;
    assert_eq!(
        p.describe(worker_id).await.expect("describe"),
        Some(WorkerState::Running),
        "a launched worker comes up"
    );
    assert_eq!(
        last_event(p, worker_id, &pid).await,
        Some(WorkerState::Running),
        "poll_events reports the boot ending in RUNNING"
    );
    let managed = managed_of(p, worker_id).await;
    assert_eq!(managed.len(), 1, "list_managed lists the worker once");
    assert_eq!(managed[0].provider_id, pid);
    assert_eq!(managed[0].region, region);
    assert_eq!(managed[0].template.as_deref(), Some(template.name.as_str()));
    assert_eq!(managed[0].state, WorkerState::Running);

    p.stop(worker_id).await.expect("stop");
    d.settle().await;
    assert_eq!(
        p.describe(worker_id).await.expect("describe"),
        Some(WorkerState::Stopped),
        "a stopped worker is STOPPED"
    );
    assert_eq!(
        last_event(p, worker_id, &pid).await,
        Some(WorkerState::Stopped),
        "poll_events reports the stop"
    );
    assert_eq!(
        managed_of(p, worker_id).await.first().map(|m| m.state),
        Some(WorkerState::Stopped),
        "a stopped worker is still listed"
    );

    p.start(worker_id).await.expect("start");
    d.settle().await;
    assert_eq!(
        p.describe(worker_id).await.expect("describe"),
        Some(WorkerState::Running),
        "a started worker runs again"
    );
    assert_eq!(
        last_event(p, worker_id, &pid).await,
        Some(WorkerState::Running),
        "poll_events reports the start"
    );

    p.terminate(worker_id).await.expect("terminate");
    d.settle().await;
    let state = p.describe(worker_id).await.expect("describe");
    assert!(
        matches!(state, None | Some(WorkerState::Terminated)),
        "a terminated worker is gone, got {state:?}"
    );
    assert_eq!(
        last_event(p, worker_id, &pid).await,
        Some(WorkerState::Terminated),
        "poll_events reports the termination"
    );
    assert!(
        managed_of(p, worker_id).await.is_empty(),
        "a terminated worker is not listed"
    );
    p.terminate(worker_id)
        .await
        .expect("terminating twice is not an error");
}

/// The same worker launched twice (a retry, a failover) is one instance with one id.
/// Returns that id; the worker is left running.
pub async fn check_idempotent_launch(
    p: &dyn WorkerProvider,
    d: &dyn Driver,
    template: &WorkerTemplate,
    region: &str,
    worker_id: &str,
) -> String {
    let first = p
        .launch(req(worker_id, template, region))
        .await
        .unwrap_or_else(|e| panic!("launch {worker_id}: {e}"));
    let second = p
        .launch(req(worker_id, template, region))
        .await
        .unwrap_or_else(|e| panic!("second launch of {worker_id}: {e}"));
    assert_eq!(first, second, "a repeated launch returns the same instance");
    d.settle().await;
    let third = p
        .launch(req(worker_id, template, region))
        .await
        .unwrap_or_else(|e| panic!("launch of running {worker_id}: {e}"));
    assert_eq!(first, third, "a launch of a running worker returns it");
    let managed = managed_of(p, worker_id).await;
    assert_eq!(
        managed.len(),
        1,
        "one instance for one worker id: {managed:?}"
    );
    assert_eq!(managed[0].provider_id, first);
    first
}

/// `n` workers named `{prefix}-{i}`: all launched, all listed (through every page), all
/// reported RUNNING by `poll_events`, then all terminated.
pub async fn check_many(
    p: &dyn WorkerProvider,
    d: &dyn Driver,
    template: &WorkerTemplate,
    region: &str,
    prefix: &str,
    n: usize,
) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let mut pids = std::collections::BTreeSet::new();
    for id in &ids {
        let pid = p
            .launch(req(id, template, region))
            .await
            .unwrap_or_else(|e| panic!("launch {id}: {e}"));
        pids.insert(pid);
    }
    assert_eq!(pids.len(), n, "every worker has its own instance");
    d.settle().await;
    let listed: std::collections::BTreeMap<String, ManagedInstance> = p
        .list_managed()
        .await
        .unwrap_or_else(|e| panic!("list_managed: {e}"))
        .into_iter()
        .filter(|m| m.worker_id.starts_with(&format!("{prefix}-")))
        .map(|m| (m.worker_id.clone(), m))
        .collect();
    assert_eq!(listed.len(), n, "list_managed sees every worker");
    for m in listed.values() {
        assert!(pids.contains(&m.provider_id), "{m:?} is one we launched");
        assert_eq!(m.state, WorkerState::Running, "{m:?}");
    }
    let events = p.poll_events().await;
    for id in &ids {
        assert_eq!(
            events_of(&events, id).last().map(|e| e.state),
            Some(WorkerState::Running),
            "poll_events reports {id} RUNNING"
        );
    }
    for id in &ids {
        p.terminate(id)
            .await
            .unwrap_or_else(|e| panic!("terminate {id}: {e}"));
    }
    d.settle().await;
    let left = p
        .list_managed()
        .await
        .unwrap_or_else(|e| panic!("list_managed: {e}"))
        .into_iter()
        .filter(|m| m.worker_id.starts_with(&format!("{prefix}-")))
        .count();
    assert_eq!(left, 0, "terminated workers are not listed");
}

/// One worker in each of two regions: each is found in its own region, and operations on one
/// do not touch the other.
pub async fn check_two_regions(
    p: &dyn WorkerProvider,
    d: &dyn Driver,
    template: &WorkerTemplate,
    regions: [&str; 2],
    prefix: &str,
) {
    let ids = [format!("{prefix}-a"), format!("{prefix}-b")];
    for (id, region) in ids.iter().zip(regions) {
        p.launch(req(id, template, region))
            .await
            .unwrap_or_else(|e| panic!("launch {id} in {region}: {e}"));
    }
    d.settle().await;
    for (id, region) in ids.iter().zip(regions) {
        let m = managed_of(p, id).await;
        assert_eq!(m.len(), 1, "{id} listed once");
        assert_eq!(m[0].region, region, "{id} runs in {region}");
    }
    p.stop(&ids[0]).await.expect("stop the first");
    d.settle().await;
    assert_eq!(
        p.describe(&ids[0]).await.expect("describe"),
        Some(WorkerState::Stopped)
    );
    assert_eq!(
        p.describe(&ids[1]).await.expect("describe"),
        Some(WorkerState::Running),
        "stopping a worker in {} leaves the one in {} running",
        regions[0],
        regions[1]
    );
    for id in &ids {
        p.terminate(id).await.expect("terminate");
    }
    d.settle().await;
    for id in &ids {
        assert!(managed_of(p, id).await.is_empty(), "{id} terminated");
    }
}
