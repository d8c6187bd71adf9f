//! The CML adapter against the CML test server (`scripts/cml_server.py`), after the official
//! Python client `virl2-client` ran its flow against the same server: the shared lab runtime
//! behaviour suite over real HTTPS, then what only a real server shows (exact call counts,
//! retries on 5xx only, no blind import retry, re-authentication on 401, per-worker
//! credentials, TLS checks, answer size cap, CML down).
//!
//! Needs `CCM_TEST_CML_URL` (https), `CCM_TEST_CML_CA` (the CA that signed its certificate),
//! `CCM_TEST_CML_USER` / `CCM_TEST_CML_PASSWORD` and `CCM_TEST_PYTHON` (the venv python with
//! `virl2-client` and PyYAML, also used to start private servers for the fault tests); all
//! written by `scripts/services.sh start` into `.ci-work/run/env`.
#![cfg(feature = "cml")]

mod support;

use ccm_adapters::cml::{CmlBackoff, CmlConfig, CmlCredentials, CmlLabRuntime, CmlTls};
use ccm_core::store::lab::{LabCall, LabEndpoint, LabError, LabRuntime, LabState};
use ccm_core::testkit::lab::{self as suite, Pace};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{env, free_port, python, repo_root};

fn url() -> String {
    env("CCM_TEST_CML_URL")
}

fn creds() -> CmlCredentials {
    CmlCredentials::new(env("CCM_TEST_CML_USER"), env("CCM_TEST_CML_PASSWORD"))
}

fn config() -> CmlConfig {
    let mut c = CmlConfig::new(creds());
    c.tls = CmlTls::VerifyWithCa(env("CCM_TEST_CML_CA").into());
    c.request_timeout = Duration::from_secs(10);
    c.import_timeout = Duration::from_secs(20);
    c.backoff = CmlBackoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    c
}

fn runtime(c: CmlConfig) -> CmlLabRuntime {
    CmlLabRuntime::new(c).unwrap_or_else(|e| panic!("build the CML adapter: {e}"))
}

fn at(worker: &str) -> LabEndpoint {
    LabEndpoint::new(worker, url())
}

/// A client for the server's test routes (trusts the test CA).
fn http() -> reqwest::Client {
    let pem = std::fs::read(env("CCM_TEST_CML_CA")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn test_route(base: &str, path: &str, body: Option<Value>) -> Value {
    let c = http();
    let u = format!("{}/_test/{path}", base.trim_end_matches('/'));
    let r = match body {
        Some(b) => c.post(u).body(b.to_string()).send().await,
        None => c.get(u).send().await,
    }
    .unwrap_or_else(|e| panic!("test route {path}: {e}"));
    assert!(r.status().is_success(), "test route {path}: {}", r.status());
    let bytes = r.bytes().await.unwrap();
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    }
}

async fn lab_calls(base: &str, lab: &str) -> Value {
    test_route(base, "calls", None).await["labs"][lab].clone()
}

fn count(calls: &Value, route: &str) -> u64 {
    calls[route].as_u64().unwrap_or(0)
}

// --- the official client first ----------------------------------------------------------------

#[test]
fn official_virl2_client_runs_its_flow_against_the_server() {
    let script = repo_root().join("scripts/test_cml_server.py");
    let out = Command::new(python())
        .arg(&script)
        .env("CCM_TEST_CML_URL", url())
        .env("CCM_TEST_CML_USER", env("CCM_TEST_CML_USER"))
        .env("CCM_TEST_CML_PASSWORD", env("CCM_TEST_CML_PASSWORD"))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "virl2-client flow failed:\n{log}");
    assert!(log.contains("Ran 4 tests") && log.contains("OK"), "{log}");
}

// --- the shared behaviour suite over HTTPS -----------------------------------------------------

#[tokio::test]
async fn cml_system_info_answers() {
    suite::system_info_answers(&runtime(config()), &at("w-suite")).await;
}

#[tokio::test]
async fn cml_lifecycle() {
    suite::lifecycle(&runtime(config()), &at("w-suite"), &Pace::real_time()).await;
}

#[tokio::test]
async fn cml_node_tags() {
    suite::node_tags(&runtime(config()), &at("w-suite"), &Pace::real_time()).await;
}

#[tokio::test]
async fn cml_running_lab_refuses_wipe_and_delete() {
    suite::running_lab_refuses_wipe_and_delete(
        &runtime(config()),
        &at("w-suite"),
        &Pace::real_time(),
    )
    .await;
}

#[tokio::test]
async fn cml_repeated_orders_are_harmless() {
    suite::repeated_orders_are_harmless(&runtime(config()), &at("w-suite"), &Pace::real_time())
        .await;
}

#[tokio::test]
async fn cml_wiped_lab_is_reused() {
    suite::wiped_lab_is_reused(&runtime(config()), &at("w-suite"), &Pace::real_time()).await;
}

#[tokio::test]
async fn cml_unknown_lab_is_not_found() {
    suite::unknown_lab_is_not_found(&runtime(config()), &at("w-suite")).await;
}

#[tokio::test]
async fn cml_invalid_topology_is_refused() {
    suite::invalid_topology_is_refused(&runtime(config()), &at("w-suite"), &Pace::real_time())
        .await;
}

// --- what only a real server shows -------------------------------------------------------------

/// One session's worth of lab work asks the server exactly once per order.
#[tokio::test]
async fn each_order_reaches_the_server_exactly_once() {
    let rt = runtime(config());
    let w = at("w-count");
    let pace = Pace::real_time();
    let (lab, _) = suite::import(&rt, &w, &pace, "count").await;
    let d = rt.lab(&w, &lab).await.unwrap();
    let r1 = d.node_by_label("r1").unwrap().id.clone();
    rt.set_node_tags(&w, &lab, &r1, &["serial:32001".into()])
        .await
        .unwrap();
    rt.start(&w, &lab).await.unwrap();
    suite::wait_for(&rt, &w, &pace, &lab, "booted", |d| d.is_booted()).await;
    suite::cleanup(&rt, &w, &pace, &lab).await;
    let c = lab_calls(&url(), &lab.0).await;
    for (route, n) in [
        ("PATCH /labs/{lab}/nodes/{node}", 1),
        ("PUT /labs/{lab}/start", 1),
        ("PUT /labs/{lab}/stop", 1),
        ("PUT /labs/{lab}/wipe", 1),
        ("DELETE /labs/{lab}", 1),
    ] {
        assert_eq!(count(&c, route), n, "{route}: {c}");
    }
}

/// A 5xx is retried (with back-off) until it passes; a 4xx is not retried.
#[tokio::test]
async fn server_errors_are_retried_client_errors_are_not() {
    let rt = runtime(config());
    let w = at("w-retry");
    let pace = Pace::real_time();
    let (lab, _) = suite::import(&rt, &w, &pace, "retry").await;
    let route = "PUT /labs/{lab}/start";
    test_route(
        &url(),
        "fail",
        Some(json!({"route": route, "status": 503, "count": 2, "lab": lab.0})),
    )
    .await;
    rt.start(&w, &lab).await.expect("start after two 503s");
    assert_eq!(count(&lab_calls(&url(), &lab.0).await, route), 3);
    assert_eq!(rt.lab(&w, &lab).await.unwrap().state, LabState::Started);

    let route = "PUT /labs/{lab}/stop";
    test_route(
        &url(),
        "fail",
        Some(json!({"route": route, "status": 409, "count": 1, "lab": lab.0})),
    )
    .await;
    match rt.stop(&w, &lab).await {
        Err(e @ LabError::Refused { .. }) => assert!(e.to_string().contains("409"), "{e}"),
        other => panic!("a 409 must be Refused: {other:?}"),
    }
    assert_eq!(
        count(&lab_calls(&url(), &lab.0).await, route),
        1,
        "no retry on 4xx"
    );

    let mut c = config();
    c.retries = 1;
    let rt1 = runtime(c);
    test_route(
        &url(),
        "fail",
        Some(json!({"route": route, "status": 500, "count": 5, "lab": lab.0})),
    )
    .await;
    let e = rt1.stop(&w, &lab).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(
        count(&lab_calls(&url(), &lab.0).await, route),
        3,
        "one try + one retry"
    );
    // Drain the remaining injected 500s with a patient adapter, then clean up.
    let mut patient = config();
    patient.retries = 5;
    runtime(patient).stop(&w, &lab).await.unwrap();
    suite::cleanup(&rt, &w, &pace, &lab).await;
}

/// An import that got a 500 may have happened: not retried (no second lab). One that got a
/// 503 surely did not: retried, exactly one lab.
#[tokio::test]
async fn an_import_is_retried_only_when_it_surely_did_not_happen() {
    let rt = runtime(config());
    let w = at("w-import");
    let title = suite::unique_title("import-500");
    test_route(
        &url(),
        "fail",
        Some(json!({"route": "POST /import", "status": 500, "count": 1, "title": title})),
    )
    .await;
    let e = rt
        .import_lab(&w, &title, suite::LAB_YAML)
        .await
        .unwrap_err();
    assert!(matches!(e, LabError::Unavailable { .. }), "{e}");
    let labs = rt.list_labs(&w).await.unwrap();
    assert!(
        labs.iter().all(|l| l.title != title),
        "a 500 on import must not be retried"
    );

    let title = suite::unique_title("import-503");
    test_route(
        &url(),
        "fail",
        Some(json!({"route": "POST /import", "status": 503, "count": 1, "title": title})),
    )
    .await;
    let lab = rt.import_lab(&w, &title, suite::LAB_YAML).await.unwrap();
    let labs = rt.list_labs(&w).await.unwrap();
    assert_eq!(labs.iter().filter(|l| l.title == title).count(), 1);
    rt.delete(&w, &lab).await.unwrap();
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error_and_workers_have_their_own() {
    let mut c = config();
    c.credentials = Some(CmlCredentials::new(
        env("CCM_TEST_CML_USER"),
        "not-the-password",
    ));
    c.worker_credentials.insert("w-good".into(), creds());
    let rt = runtime(c);
    match rt.list_labs(&at("w-bad")).await {
        Err(e @ LabError::Auth { .. }) => {
            assert!(!e.is_retryable());
            assert!(!e.to_string().contains("not-the-password"), "{e}");
        }
        other => panic!("wrong password: expected Auth, got {other:?}"),
    }
    rt.list_labs(&at("w-good"))
        .await
        .expect("the worker's own credentials");
    let mut c = config();
    c.credentials = None;
    match runtime(c).list_labs(&at("w-none")).await {
        Err(LabError::Auth { reason, .. }) => assert!(reason.contains("no CML credentials")),
        other => panic!("no credentials: expected Auth, got {other:?}"),
    }
    // System information needs no login.
    let mut c = config();
    c.credentials = None;
    assert!(runtime(c).system_info(&at("w-none")).await.unwrap().ready);
}

#[tokio::test]
async fn certificates_are_checked_unless_explicitly_not() {
    let mut c = config();
    c.tls = CmlTls::Verify;
    c.retries = 2;
    match runtime(c).system_info(&at("w-tls")).await {
        Err(e @ LabError::Invalid { .. }) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().to_lowercase().contains("certificate"), "{e}")
        }
        other => panic!("self-signed CA not given: expected Invalid, got {other:?}"),
    }
    let mut c = config();
    c.tls = CmlTls::InsecureSkipVerify;
    assert!(runtime(c).system_info(&at("w-tls")).await.unwrap().ready);

    let http_url = url().replacen("https://", "http://", 1);
    match runtime(config())
        .system_info(&LabEndpoint::new("w-tls", http_url))
        .await
    {
        Err(LabError::Invalid { reason, .. }) => assert!(reason.contains("allow_http"), "{reason}"),
        other => panic!("plain http without allow_http: expected Invalid, got {other:?}"),
    }
    let mut bad = config();
    bad.tls = CmlTls::VerifyWithCa("/nonexistent/ca.pem".into());
    let e = CmlLabRuntime::new(bad).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn an_oversized_answer_is_refused_unread() {
    let mut c = config();
    c.max_response_bytes = 64 * 1024;
    let rt = runtime(c);
    let w = at("w-big");
    let pace = Pace::real_time();
    let (lab, _) = suite::import(&rt, &w, &pace, "big").await;
    test_route(
        &url(),
        "fail",
        Some(
            json!({"route": "GET /labs/{lab}", "status": 200, "count": 1, "lab": lab.0,
                     "body_bytes": 2_000_000}),
        ),
    )
    .await;
    match rt.lab(&w, &lab).await {
        Err(LabError::Invalid { reason, .. }) => assert!(reason.contains("65536"), "{reason}"),
        other => panic!("2 MB answer: expected Invalid, got {other:?}"),
    }
    assert!(rt.lab(&w, &lab).await.is_ok(), "the next answer is normal");
    rt.delete(&w, &lab).await.unwrap();
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let port = free_port();
    let mut c = config();
    c.retries = 1;
    let e = runtime(c)
        .system_info(&LabEndpoint::new(
            "w-gone",
            format!("https://127.0.0.1:{port}"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            LabError::Unavailable {
                call: LabCall::SystemInfo,
                ..
            }
        ),
        "{e}"
    );
}

// --- private servers (plain http) for faults that would disturb the shared one --------------

/// A private CML test server process on its own port (killed on drop).
struct OwnServer {
    base: String,
    child: Child,
}

impl OwnServer {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new(python())
            .arg(repo_root().join("scripts/cml_server.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--user", "admin:own-secret"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a private cml_server.py");
        let server = OwnServer {
            base: format!("http://127.0.0.1:{port}"),
            child,
        };
        let c = reqwest::Client::new();
        for _ in 0..100 {
            let health = format!("{}/_test/healthz", server.base);
            if c.get(health).send().await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("private CML server on {port} did not come up");
    }

    fn config(&self) -> CmlConfig {
        let mut c = config();
        c.credentials = Some(CmlCredentials::new("admin", "own-secret"));
        c.tls = CmlTls::Verify;
        c.allow_http = true;
        c
    }

    async fn post(&self, path: &str, body: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/_test/{path}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    async fn calls(&self) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}/_test/calls", self.base))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_expired_token_is_renewed_once() {
    let s = OwnServer::start().await;
    let rt = runtime(s.config());
    let w = LabEndpoint::new("w-own", s.base.clone());
    rt.list_labs(&w).await.unwrap();
    rt.list_labs(&w).await.unwrap();
    assert_eq!(
        s.calls().await["calls"]["POST /authenticate"],
        1,
        "token reused"
    );
    s.post("expire_tokens", json!({})).await;
    rt.list_labs(&w)
        .await
        .expect("re-authenticated after a 401");
    let c = s.calls().await["calls"].clone();
    assert_eq!(c["POST /authenticate"], 2);
    assert_eq!(c["GET /labs"], 4, "the refused call was repeated once");
}

#[tokio::test]
async fn cml_down_is_unavailable_and_retries_ride_it_out() {
    let s = OwnServer::start().await;
    let w = LabEndpoint::new("w-own", s.base.clone());
    let mut once = s.config();
    once.retries = 0;
    s.post("down", json!({"seconds": 0.6})).await;
    let e = runtime(once).system_info(&w).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let mut patient = s.config();
    patient.retries = 6;
    s.post("down", json!({"seconds": 0.6})).await;
    let t0 = std::time::Instant::now();
    assert!(runtime(patient).system_info(&w).await.unwrap().ready);
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}
