//! The CloudEvents sink against the real receiver (`scripts/ce_receiver.py`, built on the
//! official Python `cloudevents` SDK).
//!
//! Needs `CCM_TEST_CE_RECEIVER` (the shared receiver started by `scripts/services.sh`) and
//! `CCM_TEST_PYTHON` (the venv python with `cloudevents`, to start private receivers for the
//! outage and fault tests).
#![cfg(feature = "cloudevents")]

mod support;

use ccm_adapters::cloudevents::{
    Backoff, CloudEventsConfig, CloudEventsSink, ContentMode, DeliveryStats,
};
use ccm_core::definition::LabletDefinition;
use ccm_core::events::{CcmEvent, EventType, ScalingDirection, ScalingEventData, ScalingPhase};
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::store::events::{Event, EventError, EventSink};
use ccm_core::timeslot::Timeslot;
use ccm_core::worker::{Worker, WorkerState};
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{env, free_port, python, repo_root};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn received(base: &str) -> Vec<Value> {
    let resp = http()
        .get(format!("{}/events", base.trim_end_matches('/')))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}/events: {e}"));
    assert!(resp.status().is_success(), "GET /events: {}", resp.status());
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

async fn receiver_stats(base: &str) -> Value {
    let resp = http().get(format!("{base}/stats")).send().await.unwrap();
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

async fn inject_fault(base: &str, fault: Value) {
    let r = http()
        .post(format!("{base}/fail"))
        .body(fault.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "POST /fail {fault}");
}

/// A private receiver process on its own port (killed on drop).
struct OwnReceiver {
    port: u16,
    child: Option<Child>,
}

impl OwnReceiver {
    async fn start() -> OwnReceiver {
        let mut r = OwnReceiver {
            port: free_port(),
            child: None,
        };
        r.restart().await;
        r
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        assert!(self.child.is_none(), "receiver already running");
        let python = python();
        let script = repo_root().join("scripts/ce_receiver.py");
        let child = Command::new(&python)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(r) = http().get(format!("{}/healthz", self.base())).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("receiver on port {} not healthy after 10 s", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnReceiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A demo-like run: definitions registered, workers scaled up, sessions through their whole
/// lives, workers scaled down. Emits every type of the catalogue at least once.
fn demo_run(prefix: &str) -> Vec<CcmEvent> {
    let now = Utc::now();
    let mut out = Vec::new();

    let templates =
        ccm_core::template::load_templates_file(&repo_root().join("config/worker-templates.yaml"))
            .unwrap();
    let tpl = &templates[0];
    let region = tpl.regions[0].clone();

    let mut def: LabletDefinition = serde_json::from_value(serde_json::json!({
        "id": format!("{prefix}def-1"), "name": format!("{prefix}ccna"), "version": "1.0.0",
        "lab_artifact_uri": "s3://lablet-artifacts/definitions/ccna/1.0.0/cml.yaml",
        "lab_yaml_hash": "ab".repeat(32),
        "resource_requirements": {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 20},
        "node_count": 4, "created_by": "instructor"
    }))
    .unwrap();
    out.push(CcmEvent::definition(&def, None));
    let v1 = def.version.clone();
    def.id = format!("{prefix}def-2");
    def.version = "1.1.0".parse().unwrap();
    out.push(CcmEvent::definition(&def, Some(&v1)));

    let up = ScalingEventData {
        decision_id: format!("{prefix}plan-up-1"),
        template: tpl.name.clone(),
        region: region.clone(),
        count: 1,
        worker_ids: vec![format!("{prefix}w-1")],
        reason: "2 sessions from 08:00 need 1 worker".into(),
        plan_cost_usd: Some(7.93),
    };
    out.push(CcmEvent::scaling(
        ScalingDirection::Up,
        ScalingPhase::Requested,
        up.clone(),
    ));
    let version = "2.9.0".parse().unwrap();
    let mut w = Worker::from_template(
        format!("{prefix}w-1"),
        tpl,
        region.clone(),
        WorkerState::Pending,
        version,
        "CML-2.9.0",
    );
    out.extend(CcmEvent::worker(&w, None, "planned launch"));
    for (to, reason) in [
        (WorkerState::Provisioning, "launch requested"),
        (WorkerState::Starting, "instance up"),
        (WorkerState::Running, "CML ready"),
    ] {
        let from = w.state;
        w.transition(to).unwrap();
        w.provider_id = Some("i-0123456789abcdef0".into());
        // STARTING has no catalogue type: nothing is emitted for it.
        out.extend(CcmEvent::worker(&w, Some(from), reason));
    }
    out.push(CcmEvent::scaling(
        ScalingDirection::Up,
        ScalingPhase::Completed,
        up,
    ));

    let slot = Timeslot::new(now, now + ChronoDuration::hours(2)).unwrap();
    let mut s1 = LabletSession::new(
        format!("{prefix}s-1"),
        format!("{prefix}def-1"),
        "1.0.0",
        "alice",
        Some(slot),
        now,
    );
    out.push(CcmEvent::session(&s1));
    for to in [
        SessionState::Scheduled,
        SessionState::Instantiating,
        SessionState::Ready,
        SessionState::Running,
        SessionState::Collecting,
        SessionState::Grading,
        SessionState::Stopping,
        SessionState::Stopped,
        SessionState::Archived,
        SessionState::Terminated,
    ] {
        if to == SessionState::Scheduled {
            s1.worker_id = Some(w.id.clone());
            s1.allocated_ports = BTreeMap::from([("r1_ssh".into(), 2000), ("r1_vnc".into(), 2001)]);
        }
        s1.transition(to, now, format!("demo step to {to}"))
            .unwrap();
        out.push(CcmEvent::session(&s1));
    }
    let mut s2 = LabletSession::new(
        format!("{prefix}s-2"),
        format!("{prefix}def-2"),
        "1.1.0",
        "bob",
        Some(slot),
        now,
    );
    out.push(CcmEvent::session(&s2));
    s2.transition(
        SessionState::Expired,
        now,
        "slot start passed the grace without placement",
    )
    .unwrap();
    out.push(CcmEvent::session(&s2));
    s2.transition(SessionState::Terminated, now, "expired")
        .unwrap();
    out.push(CcmEvent::session(&s2));

    let down = ScalingEventData {
        decision_id: format!("{prefix}plan-down-1"),
        template: tpl.name.clone(),
        region,
        count: 1,
        worker_ids: vec![w.id.clone()],
        reason: "idle past the 30 min grace".into(),
        plan_cost_usd: None,
    };
    out.push(CcmEvent::scaling(
        ScalingDirection::Down,
        ScalingPhase::Requested,
        down.clone(),
    ));
    for to in [
        WorkerState::Draining,
        WorkerState::Stopping,
        WorkerState::Stopped,
        WorkerState::Terminating,
        WorkerState::Terminated,
    ] {
        let from = w.state;
        w.transition(to).unwrap();
        out.extend(CcmEvent::worker(
            &w,
            Some(from),
            format!("scale down: {to}"),
        ));
    }
    out.push(CcmEvent::scaling(
        ScalingDirection::Down,
        ScalingPhase::Completed,
        down,
    ));
    out
}

/// The receiver's record of one event, read back into a core [`Event`].
fn record_to_event(r: &Value) -> Event {
    let s = |k: &str| {
        r[k].as_str()
            .unwrap_or_else(|| panic!("record has no string {k}: {r}"))
            .to_string()
    };
    Event {
        id: s("id"),
        event_type: s("type"),
        subject: s("subject"),
        time: chrono::DateTime::parse_from_rfc3339(&s("time"))
            .unwrap_or_else(|e| panic!("time {:?}: {e}", r["time"]))
            .with_timezone(&Utc),
        data: r["data"].clone(),
    }
}

fn sink_config(url: &str, source: &str, mode: ContentMode) -> CloudEventsConfig {
    let mut c = CloudEventsConfig::new(url);
    c.source = source.to_string();
    c.mode = mode;
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    c
}

async fn catalogue_through_receiver(mode: ContentMode) {
    let base = env("CCM_TEST_CE_RECEIVER");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let source = format!("ccm-test-{run}");
    let prefix = format!("{run}-");
    let sink = CloudEventsSink::new(sink_config(&base, &source, mode)).unwrap();

    let typed = demo_run(&prefix);
    let now = Utc::now();
    let mut sent: BTreeMap<String, (CcmEvent, Event)> = BTreeMap::new();
    let mut sent_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &typed {
        let ev = t.to_event(now);
        sent_order
            .entry(ev.subject.clone())
            .or_default()
            .push(ev.id.clone());
        sent.insert(ev.id.clone(), (t.clone(), ev.clone()));
        sink.publish(ev).await.unwrap();
    }
    let all_types: BTreeSet<EventType> = typed.iter().map(|t| t.event_type()).collect();
    assert_eq!(
        all_types.len(),
        EventType::ALL.len(),
        "the demo run covers the whole catalogue"
    );

    assert!(
        sink.flush(Duration::from_secs(30)).await,
        "not delivered: {:?}",
        sink.stats()
    );
    let stats = sink.stats();
    assert_eq!(stats.delivered, typed.len() as u64, "{stats:?}");
    assert_eq!(
        (stats.failed, stats.dropped, stats.queued),
        (0, 0, 0),
        "{stats:?}"
    );

    let records: Vec<Value> = received(&base)
        .await
        .into_iter()
        .filter(|r| r["source"] == source.as_str())
        .collect();
    assert_eq!(records.len(), typed.len(), "one record per event");
    let mode_name = match mode {
        ContentMode::Binary => "binary",
        ContentMode::Structured => "structured",
    };
    let mut got_types = BTreeSet::new();
    let mut got_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &records {
        assert_eq!(r["specversion"], "1.0", "{r}");
        assert_eq!(r["datacontenttype"], "application/json", "{r}");
        assert_eq!(r["mode"], mode_name, "{r}");
        let ev = record_to_event(r);
        let (typed, original) = sent
            .get(&ev.id)
            .unwrap_or_else(|| panic!("receiver has an event never sent: {r}"));
        assert_eq!(&ev, original, "event arrived unchanged");
        let parsed = CcmEvent::from_event(&ev)
            .unwrap_or_else(|e| panic!("receiver's event breaks the catalogue: {e}: {r}"));
        assert_eq!(&parsed, typed, "typed data survives the trip");
        assert!(
            ev.subject.starts_with(&prefix),
            "subject {} is the session/worker/decision/definition id",
            ev.subject
        );
        got_types.insert(parsed.event_type());
        got_order
            .entry(ev.subject.clone())
            .or_default()
            .push(ev.id.clone());
    }
    assert_eq!(got_types, all_types);
    assert_eq!(got_order, sent_order, "order kept per subject");
    let s1: Vec<&str> = records
        .iter()
        .filter(|r| r["subject"] == format!("{prefix}s-1").as_str())
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(s1.first(), Some(&"ccm.lablet.session.pending"));
    assert_eq!(s1.last(), Some(&"ccm.lablet.session.terminated"));
    assert_eq!(s1.len(), 11);
    sink.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogue_type_reaches_the_receiver_in_binary_mode() {
    catalogue_through_receiver(ContentMode::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogue_type_reaches_the_receiver_in_structured_mode() {
    catalogue_through_receiver(ContentMode::Structured).await;
}

/// Five sessions walking PENDING → RUNNING, published step by step (interleaved subjects).
fn interleaved_walks(prefix: &str, sessions: usize) -> Vec<Event> {
    let now = Utc::now();
    let mut walks: Vec<LabletSession> = (0..sessions)
        .map(|i| LabletSession::new(format!("{prefix}s-{i}"), "def-1", "1.0.0", "o", None, now))
        .collect();
    let mut out: Vec<Event> = walks
        .iter()
        .map(|s| CcmEvent::session(s).to_event(now))
        .collect();
    for to in [
        SessionState::Scheduled,
        SessionState::Instantiating,
        SessionState::Ready,
        SessionState::Running,
    ] {
        for s in walks.iter_mut() {
            s.transition(to, now, "").unwrap();
            out.push(CcmEvent::session(s).to_event(now));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_for_10s_keeps_order_within_the_bound_and_counts_drops() {
    let mut rx = OwnReceiver::start().await;
    let mut cfg = sink_config(&rx.base(), "ccm-outage-test", ContentMode::Binary);
    cfg.queue_capacity = 20;
    cfg.lanes = 3;
    cfg.request_timeout = Duration::from_secs(2);
    cfg.backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(800),
    };
    cfg.retry_for = Duration::from_secs(120);
    let sink = CloudEventsSink::new(cfg).unwrap();

    // Before the outage: delivered normally.
    let warmup = interleaved_walks("warm-", 1);
    for e in warmup.iter().take(2) {
        sink.publish(e.clone()).await.unwrap();
    }
    assert!(sink.flush(Duration::from_secs(10)).await);
    assert_eq!(received(&rx.base()).await.len(), 2);

    rx.kill();
    // 5 sessions × 5 states = 25 events for a queue of 20: the last 5 (RUNNING) are dropped.
    let events = interleaved_walks("out-", 5);
    assert_eq!(events.len(), 25);
    let mut accepted = Vec::new();
    let mut dropped = Vec::new();
    for e in &events {
        match sink.publish(e.clone()).await {
            Ok(()) => accepted.push(e.clone()),
            Err(EventError::Dropped(id)) => {
                assert_eq!(id, e.id);
                dropped.push(e.clone());
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted.len(), 20);
    assert_eq!(dropped.len(), 5);
    assert!(dropped
        .iter()
        .all(|e| e.event_type == "ccm.lablet.session.running"));

    tokio::time::sleep(Duration::from_secs(10)).await;
    let during: DeliveryStats = sink.stats();
    assert_eq!(
        during.delivered, 2,
        "nothing delivered while down: {during:?}"
    );
    assert_eq!(during.dropped, 5, "{during:?}");
    assert_eq!(during.queued, 20, "{during:?}");
    assert!(during.retried >= 3, "lanes kept retrying: {during:?}");
    assert_eq!(during.failed, 0, "{during:?}");

    rx.restart().await;
    assert!(
        sink.flush(Duration::from_secs(30)).await,
        "queue not drained after the receiver came back: {:?}",
        sink.stats()
    );
    let after = sink.stats();
    assert_eq!(after.delivered, 22, "{after:?}");
    assert_eq!(
        (after.failed, after.dropped, after.queued),
        (0, 5, 0),
        "{after:?}"
    );

    let records = received(&rx.base()).await;
    assert_eq!(records.len(), 20, "exactly the accepted events arrive");
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &records {
        let ev = record_to_event(r);
        got.entry(ev.subject).or_default().push(ev.event_type);
    }
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &accepted {
        want.entry(e.subject.clone())
            .or_default()
            .push(e.event_type.clone());
    }
    assert_eq!(got, want, "order per subject kept across the outage");
    for types in got.values() {
        assert_eq!(
            types,
            &[
                "ccm.lablet.session.pending",
                "ccm.lablet.session.scheduled",
                "ccm.lablet.session.instantiating",
                "ccm.lablet.session.ready"
            ]
        );
    }
    let received_ids: BTreeSet<String> = records.iter().map(|r| record_to_event(r).id).collect();
    assert!(dropped.iter().all(|e| !received_ids.contains(&e.id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_timeouts_are_retried_client_errors_are_not() {
    let rx = OwnReceiver::start().await;
    let base = rx.base();
    let mut cfg = sink_config(&base, "ccm-fault-test", ContentMode::Binary);
    cfg.request_timeout = Duration::from_millis(500);
    let sink = CloudEventsSink::new(cfg).unwrap();
    let events = interleaved_walks("fault-", 1);

    // Two 503s, then accepted.
    inject_fault(&base, serde_json::json!({"status": 503, "count": 2})).await;
    sink.publish(events[0].clone()).await.unwrap();
    assert!(sink.flush(Duration::from_secs(10)).await);
    let s = sink.stats();
    assert_eq!((s.delivered, s.retried, s.failed), (1, 2, 0), "{s:?}");
    let r = receiver_stats(&base).await;
    assert_eq!(
        (r["attempts"].as_u64(), r["injected"].as_u64()),
        (Some(3), Some(2))
    );

    // A 400 is final: one attempt, counted as failed, no retry.
    inject_fault(&base, serde_json::json!({"status": 400, "count": 1})).await;
    sink.publish(events[1].clone()).await.unwrap();
    assert!(sink.flush(Duration::from_secs(10)).await);
    let s = sink.stats();
    assert_eq!((s.delivered, s.retried, s.failed), (1, 2, 1), "{s:?}");
    assert_eq!(receiver_stats(&base).await["attempts"].as_u64(), Some(4));

    // A response slower than the request timeout is retried.
    inject_fault(
        &base,
        serde_json::json!({"status": 503, "count": 1, "delay_ms": 1500}),
    )
    .await;
    sink.publish(events[2].clone()).await.unwrap();
    assert!(sink.flush(Duration::from_secs(10)).await);
    let s = sink.stats();
    assert_eq!((s.delivered, s.retried, s.failed), (2, 3, 1), "{s:?}");

    let ids: Vec<String> = received(&base)
        .await
        .iter()
        .map(|r| record_to_event(r).id)
        .collect();
    assert_eq!(ids, vec![events[0].id.clone(), events[2].id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_are_never_acknowledged_are_given_up_and_counted() {
    let rx = OwnReceiver::start().await;
    let base = rx.base();
    let mut cfg = sink_config(&base, "ccm-giveup-test", ContentMode::Structured);
    cfg.retry_for = Duration::from_secs(1);
    cfg.backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(200),
    };
    let sink = CloudEventsSink::new(cfg).unwrap();
    inject_fault(&base, serde_json::json!({"status": 502, "count": 1000})).await;
    let events = interleaved_walks("giveup-", 2);
    for e in events.iter().take(2) {
        sink.publish(e.clone()).await.unwrap();
    }
    assert!(
        sink.flush(Duration::from_secs(10)).await,
        "{:?}",
        sink.stats()
    );
    let s = sink.stats();
    assert_eq!((s.delivered, s.failed, s.queued), (0, 2, 0), "{s:?}");
    assert!(s.retried >= 4, "{s:?}");
    assert!(received(&base).await.is_empty());
}
