//! The REST API of `ccm serve --embedded` over real HTTP: status codes, JSON errors naming the
//! field, auth, body limit, the OpenAPI document against what the server answers, and the CLI
//! as a client of it.

mod support;

use serde_json::{json, Value};
use std::process::Stdio;
use support::*;

const TOKEN: &str = "test-token-0123456789";

/// The shared test lab (three nodes, ports r1_ssh, r1_vnc, r2_ssh).
const LAB: &str = include_str!("../../ccm-core/tests/data/labs/ccna-three-routers.yaml");

/// A `ccm serve --embedded` on a free port, killed when dropped.
struct Server {
    _child: Killed,
    base: String,
}

fn serve(env: &[(&str, &str)]) -> Server {
    // Only the address is kept: stdout is closed after its first line.
    let Serving { child, addr, .. } = start(
        ccm()
            .env("CCM_HTTP_ADDR", "127.0.0.1:0")
            .env("SCHEDULER_RECONCILE_INTERVAL_SECONDS", "1")
            .env("CONTROLLER_RECONCILE_INTERVAL_SECONDS", "1")
            .envs(env.iter().copied())
            .args(["serve", "--embedded"])
            .stderr(Stdio::null()),
    );
    Server {
        _child: child,
        base: format!("http://{addr}"),
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(s: &Server, token: Option<&str>) -> Api {
        Api {
            // No pooled connections: after a 413 the server closes the connection without
            // reading the rest of the body, and a pooled client could race that close.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: s.base.clone(),
            token: token.map(str::to_string),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("get", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("post", path, Some(body)).await
    }
}

fn definition_body() -> Value {
    json!({
        "name": "ccna",
        "resource_requirements": { "cpu_cores": 8, "memory_gb": 32, "storage_gb": 40 },
        "max_duration_minutes": 180,
        "lab_yaml": LAB,
    })
}

fn slot(from_now_min: i64, minutes: i64) -> (String, String) {
    let a = chrono::Utc::now() + chrono::Duration::minutes(from_now_min);
    let b = a + chrono::Duration::minutes(minutes);
    (a.to_rfc3339(), b.to_rfc3339())
}

/// A booking of `ccna` by owner `x` in the slot from `start` to `end`.
fn booking_by_x(start: &str, end: &str) -> Value {
    json!({ "definition_id": "ccna", "owner_id": "x", "timeslot_start": start, "timeslot_end": end })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_api_books_explains_and_cancels_with_stable_errors() {
    let server = serve(&[("CCM_API_TOKEN", TOKEN)]);
    let api = Api::new(&server, Some(TOKEN));
    let anon = Api::new(&server, None);
    let wrong = Api::new(&server, Some("not-the-token"));

    // Auth: reads and writes need the token; the OpenAPI document does not.
    let (s, v) = anon.get("/api/v1/definitions").await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    let (s, _) = wrong.post("/api/v1/definitions", definition_body()).await;
    assert_eq!(s, 401);
    let (s, doc) = anon.get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");

    // Definitions.
    let (s, v) = api.post("/api/v1/definitions", definition_body()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["outcome"], "created");
    assert_eq!(v["definition"]["id"], "ccna@1.0.0");
    assert_eq!(v["definition"]["node_count"], 3);
    let names: Vec<&str> = v["definition"]["port_template"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["r1_ssh", "r1_vnc", "r2_ssh"]);
    let (s, v) = api.post("/api/v1/definitions", definition_body()).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("unchanged")), "{v}");
    let mut changed = definition_body();
    changed["version"] = json!("1.0.0");
    changed["lab_yaml"] = json!(LAB.replace("ccna", "ccna-2"));
    let (s, v) = api.post("/api/v1/definitions", changed).await;
    assert_eq!((s, code(&v)), (409, "version_conflict"), "{v}");
    let mut bad = definition_body();
    bad["lab_yaml"] = json!("nodes: [\n");
    let (s, v) = api.post("/api/v1/definitions", bad).await;
    assert_eq!((s, code(&v)), (422, "invalid"), "{v}");
    assert_eq!(v["error"]["field"], "lab_yaml", "{v}");
    let mut missing = definition_body();
    missing
        .as_object_mut()
        .unwrap()
        .remove("resource_requirements");
    let (s, v) = api.post("/api/v1/definitions", missing).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resource_requirements"),
        "{v}"
    );
    let mut typo = definition_body();
    typo["resource_requirements"]["cpu_cores"] = json!("eight");
    let (s, v) = api.post("/api/v1/definitions", typo).await;
    assert_eq!(s, 422);
    assert_eq!(
        v["error"]["field"], "resource_requirements.cpu_cores",
        "{v}"
    );
    let (s, v) = api.get("/api/v1/definitions").await;
    assert_eq!(s, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (s, _) = api.get("/api/v1/definitions/ccna@1.0.0").await;
    assert_eq!(s, 200);
    let (s, v) = api.get("/api/v1/definitions/ccna/versions").await;
    assert_eq!((s, v["items"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = api.get("/api/v1/definitions/nope").await;
    assert_eq!((s, code(&v)), (404, "not_found"));

    // Bookings.
    let (a, b) = slot(180, 120);
    let booking = json!({
        "definition_id": "ccna", "owner_id": "student-1",
        "timeslot_start": a, "timeslot_end": b,
        "reservation_id": "r-1", "idempotency_key": "lms-1"
    });
    let (s, v) = api.post("/api/v1/sessions", booking.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["admission"]["decision"], "accepted", "{v}");
    assert_eq!(v["admission"]["placement"]["kind"], "launch", "{v}");
    let id = v["session"]["id"].as_str().unwrap().to_string();
    let (s, v) = api.post("/api/v1/sessions", booking.clone()).await;
    assert_eq!(
        (s, v["session"]["id"].as_str()),
        (200, Some(id.as_str())),
        "{v}"
    );
    let mut other = booking.clone();
    other["owner_id"] = json!("student-2");
    let (s, v) = api.post("/api/v1/sessions", other).await;
    assert_eq!((s, code(&v)), (409, "idempotency_mismatch"), "{v}");
    let mut dry = booking.clone();
    dry["idempotency_key"] = Value::Null;
    dry["dry_run"] = json!(true);
    let (s, v) = api.post("/api/v1/sessions", dry).await;
    assert_eq!(
        (s, v["session"].is_null(), v["dry_run"].as_bool()),
        (200, true, Some(true))
    );
    let (past, end) = slot(-10, 60);
    let (s, v) = api
        .post("/api/v1/sessions", booking_by_x(&past, &end))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("timeslot_start")),
        "{v}"
    );
    let (a2, _) = slot(60, 0);
    let (s, v) = api.post("/api/v1/sessions", booking_by_x(&a2, &a2)).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("timeslot_end")),
        "{v}"
    );
    let (a3, b3) = slot(60, 240);
    let (s, v) = api.post("/api/v1/sessions", booking_by_x(&a3, &b3)).await;
    assert_eq!(s, 422, "longer than max_duration_minutes: {v}");
    let (s, v) = api
        .post(
            "/api/v1/sessions",
            json!({ "definition_id": "nope", "owner_id": "x" }),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, v) = api
        .post(
            "/api/v1/sessions",
            json!({ "definition_id": "ccna", "owner": "x" }),
        )
        .await;
    assert_eq!(s, 422, "unknown field: {v}");
    // Too soon for a new worker to boot, and no worker is up: not admitted, with the
    // constraint and the earliest slot that would work.
    let (a4, b4) = slot(5, 60);
    let (s, v) = api.post("/api/v1/sessions", booking_by_x(&a4, &b4)).await;
    assert_eq!((s, code(&v)), (409, "not_admitted"), "{v}");
    assert_eq!(
        v["error"]["refusal"]["constraint"], "not_ready_in_time",
        "{v}"
    );
    assert!(v["error"]["refusal"]["earliest_start"].is_string(), "{v}");

    // Reads.
    let (s, v) = api
        .get("/api/v1/sessions?state=PENDING&owner_id=student-1")
        .await;
    assert_eq!((s, v["total"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = api.get("/api/v1/sessions?state=NAPPING").await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("state")),
        "{v}"
    );
    let (s, v) = api.get("/api/v1/sessions?limit=0").await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("limit")),
        "{v}"
    );
    let (s, v) = api.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("PENDING")));
    let (s, v) = api.get("/api/v1/sessions/nope").await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = api.get(&format!("/api/v1/sessions/{id}/explain")).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["summary"].as_str().unwrap().contains("not due yet"),
        "{v}"
    );
    let (s, v) = api.get(&format!("/api/v1/sessions/{id}/lab.yaml")).await;
    assert_eq!((s, code(&v)), (409, "not_bound"), "{v}");
    let (s, v) = api.get("/api/v1/workers").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["items"].is_array());
    let (s, v) = api.get("/api/v1/workers/nope").await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = api.get("/api/v1/templates").await;
    assert_eq!((s, v["items"].as_array().map(Vec::len)), (200, Some(2)));
    let (s, _) = api.get("/api/v1/templates/personal-standard").await;
    assert_eq!(s, 200);
    let (s, v) = api.get("/api/v1/plan/preview").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["plan"]["assignments"].as_array().unwrap().len(), 1, "{v}");
    let (s, v) = api.get("/api/v1/plan/preview?at=yesterday").await;
    assert_eq!((s, code(&v)), (422, "invalid"), "{v}");
    let (s, v) = api.get("/api/v1/landscape").await;
    assert_eq!((s, v["buckets"].as_array().map(Vec::len)), (200, Some(96)));

    // Connect: only a READY session (this one is PENDING); unknown ones are 404.
    let (s, v) = api
        .call("post", &format!("/api/v1/sessions/{id}/connect"), None)
        .await;
    assert_eq!((s, code(&v)), (409, "not_ready"), "{v}");
    let (s, v) = api.post("/api/v1/sessions/nope/connect", json!({})).await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");

    // Cancel.
    let (s, v) = api
        .post(
            &format!("/api/v1/sessions/{id}/cancel"),
            json!({ "reason": "changed plans" }),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("TERMINATED")), "{v}");
    let (s, v) = api
        .call("post", &format!("/api/v1/sessions/{id}/cancel"), None)
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("TERMINATED")), "{v}");
    let (s, v) = api.post("/api/v1/sessions/nope/cancel", json!({})).await;
    assert_eq!((s, code(&v)), (404, "not_found"));

    // Limits and unknown routes.
    let mut huge = definition_body();
    huge["lab_yaml"] = json!("x".repeat(3 * 1024 * 1024));
    let (s, v) = api.post("/api/v1/definitions", huge).await;
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    let (s, v) = api.get("/api/v1/nope").await;
    assert_eq!((s, code(&v)), (404, "no_route"));
}

#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else_is() {
    let server = serve(&[]);
    let api = Api::new(&server, None);
    let (_, doc) = api.get("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    let mut n = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            n += 1;
            let concrete = path.replace("{id}", "x").replace("{name}", "x");
            let (s, v) = api.call(method, &concrete, None).await;
            assert_ne!(
                code(&v),
                "no_route",
                "{method} {path} is documented but not served"
            );
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.iter().any(|c| c.as_str() == s.to_string()),
                "{method} {path} answered {s}, not in the document {documented:?}: {v}"
            );
        }
    }
    assert_eq!(n, 18);
    // Methods the document does not list for a path are not served.
    let (s, _) = api.call("delete", "/api/v1/sessions/x", None).await;
    assert_eq!(s, 405);
    let (s, v) = api.get("/api/v1/session").await;
    assert_eq!((s, code(&v)), (404, "no_route"));
}

#[tokio::test]
async fn reads_may_be_opened_while_writes_keep_needing_the_token() {
    let server = serve(&[("CCM_API_TOKEN", TOKEN), ("CCM_API_READS_OPEN", "true")]);
    let anon = Api::new(&server, None);
    let (s, _) = anon.get("/api/v1/templates").await;
    assert_eq!(s, 200);
    let (s, v) = anon.post("/api/v1/definitions", definition_body()).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));
    let (s, _) = Api::new(&server, Some(TOKEN))
        .post("/api/v1/definitions", definition_body())
        .await;
    assert_eq!(s, 201);
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let o = ccm()
        .env("CCM_HTTP_ADDR", "0.0.0.0:0")
        .args(["serve", "--embedded"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CCM_API_TOKEN is not set"), "{err}");
}

fn cli(server: &Server, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut c = ccm();
    c.env("CCM_URL", &server.base);
    if let Some(t) = token {
        c.env("CCM_API_TOKEN", t);
    }
    let o = c.args(args).output().unwrap();
    let (out, err) = text(&o);
    (o.status.code().unwrap_or(-1), out, err)
}

#[test]
fn the_cli_is_a_client_of_the_api() {
    let server = serve(&[("CCM_API_TOKEN", TOKEN)]);
    let dir = std::env::temp_dir().join(format!("ccm-api-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lab = dir.join("lab.yaml");
    std::fs::write(&lab, LAB).unwrap();
    let lab = lab.to_str().unwrap();
    let t = Some(TOKEN);

    // Without the token: the server's 401, shown with its code.
    let (code, _, err) = cli(&server, None, &["definitions", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("401 unauthorized"), "{err}");

    let reg = [
        "definitions",
        "register",
        lab,
        "--name",
        "ccna",
        "--cpu",
        "8",
        "--memory-gb",
        "32",
        "--storage-gb",
        "40",
        "--max-minutes",
        "180",
    ];
    let (code, out, err) = cli(&server, t, &reg);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created ccna@1.0.0 (3 ports: r1_ssh, r1_vnc, r2_ssh)"),
        "{out}"
    );
    let (code, out, _) = cli(&server, t, &reg);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged ccna@1.0.0"), "{out}");
    let (code, out, err) = cli(&server, t, &["definitions", "list"]);
    assert_eq!(code, 0, "{err}");
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert!(out.starts_with("ID"), "{out}");
    assert_eq!(
        row,
        ["ccna@1.0.0", "1.0.0", "8c/32G/40G", "3", "3", "180"],
        "{out}"
    );
    let (code, out, _) = cli(&server, t, &["definitions", "show", "ccna", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], "ccna@1.0.0");

    let start = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    let (code, out, err) = cli(
        &server,
        t,
        &[
            "sessions",
            "book",
            "ccna",
            "--owner",
            "alice",
            "--start",
            &start,
            "--minutes",
            "90",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["session"]["id"].as_str().unwrap().to_string();
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let (code, out, _) = cli(
        &server,
        t,
        &[
            "sessions",
            "book",
            "ccna",
            "--owner",
            "bob",
            "--start",
            &soon,
            "--minutes",
            "30",
        ],
    );
    assert_eq!(code, 2, "not admitted: {out}");
    assert!(
        out.contains("rejected (not_ready_in_time)") && out.contains("earliest slot"),
        "{out}"
    );
    let (code, out, _) = cli(&server, t, &["sessions", "list", "--state", "PENDING"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("alice") && out.contains("1 of 1 session(s)"),
        "{out}"
    );
    let (code, out, _) = cli(&server, t, &["sessions", "explain", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("not due yet") && out.contains("plan: accepted"),
        "{out}"
    );
    let (code, out, _) = cli(&server, t, &["sessions", "show", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("PENDING"), "{out}");
    let (code, out, _) = cli(&server, t, &["workers", "list", "--json"]);
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["items"].is_array());
    let (code, out, err) = cli(&server, t, &["plan", "--live"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 session(s) placed, 0 unserved"), "{out}");
    let (code, _, err) = cli(&server, t, &["sessions", "connect", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("409 not_ready"), "{err}");
    let (code, out, _) = cli(&server, t, &["sessions", "cancel", &id, "--reason", "sick"]);
    assert_eq!(code, 0);
    assert!(out.contains("TERMINATED"), "{out}");
    let (code, _, err) = cli(&server, t, &["sessions", "show", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("404 not_found"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
