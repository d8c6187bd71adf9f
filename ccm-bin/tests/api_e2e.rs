//! End to end on real servers: `ccm serve` on etcd + SecantusDB (MongoDB wire) + moto (S3),
//! driven over HTTP by a Python client (`scripts/e2e_api.py`, plain `requests`) that registers
//! a CML lab, books, reads the rewritten lab YAML, cancels, and checks what ccm stored with
//! etcdctl, pymongo and boto3. Then schemathesis (PyPI) runs against the live server from the
//! published OpenAPI document: no 5xx, no answer that violates the document.
//!
//! The servers come from `scripts/test.sh`; a missing one fails the test, it is never skipped.
#![cfg(feature = "all-adapters")]

mod etcd_common;
mod support;

use etcd_common::serve_with;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

const TOKEN: &str = "e2e-token-0123456789abcdef";

/// Waits until `ccm serve` at `base` answers `/healthz` with 200.
fn wait_ready(base: &str) {
    let addr = base.trim_start_matches("http://");
    poll(Duration::from_secs(60), Duration::from_millis(200), || {
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            let _ = write!(
                c,
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        Err(format!(
            "ccm serve at {base} did not answer /healthz within 60 s"
        ))
    })
}

fn venv_tool(python: &str, tool: &str) -> PathBuf {
    Path::new(python)
        .parent()
        .map(|d| d.join(tool))
        .unwrap_or_else(|| PathBuf::from(tool))
}

#[test]
fn python_client_books_reads_the_lab_and_cancels_and_the_stores_agree() {
    let etcd = need("CCM_TEST_ETCD");
    let mongo = need("CCM_TEST_MONGODB_URI");
    let s3 = need("CCM_TEST_S3_ENDPOINT");
    let python = need("CCM_TEST_PYTHON");
    let nanos = unique();
    let prefix = format!("/ccm-e2e-{nanos}");
    let database = format!("ccm_e2e_{nanos}");
    let bucket = format!("ccm-e2e-{nanos}");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let templates = fast_templates("e2e");
    let addr = format!("127.0.0.1:{port}");
    let _d = serve_with(
        "e2e",
        &etcd,
        &prefix,
        &[
            ("CCM_HTTP_ADDR", addr.as_str()),
            ("CCM_API_TOKEN", TOKEN),
            ("CONTROLLER_RECONCILE_INTERVAL_SECONDS", "1"),
            ("WORKER_TEMPLATES_CONFIG_PATH", templates.to_str().unwrap()),
            ("MONGODB_URI", mongo.as_str()),
            ("MONGODB_DATABASE", database.as_str()),
            ("ARTIFACT_STORAGE_ENDPOINT", s3.as_str()),
            ("ARTIFACT_STORAGE_ACCESS_KEY", "testing"),
            ("ARTIFACT_STORAGE_SECRET_KEY", "testing"),
            ("ARTIFACT_STORAGE_BUCKET", bucket.as_str()),
            ("ARTIFACT_STORAGE_REGION", "us-east-1"),
        ],
    );
    wait_ready(&base);
    let out = Command::new(&python)
        .arg(root().join("scripts/e2e_api.py"))
        .env("CCM_URL", &base)
        .env("CCM_API_TOKEN", TOKEN)
        .env(
            "E2E_LAB",
            root().join("ccm-core/tests/data/labs/ccna-basic.yaml"),
        )
        .env("E2E_ETCDCTL", etcdctl())
        .env("E2E_ETCD", &etcd)
        .env("E2E_PREFIX", &prefix)
        .env("E2E_MONGODB_URI", &mongo)
        .env("E2E_MONGODB_DATABASE", &database)
        .env("E2E_S3_ENDPOINT", &s3)
        .env("E2E_S3_BUCKET", &bucket)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("run scripts/e2e_api.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("[e2e] ok"),
        "e2e client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let python = need("CCM_TEST_PYTHON");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = ccm()
        .env("RUST_LOG", "error")
        .args(["serve", "--embedded"])
        .env("CCM_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CCM_API_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ccm serve --embedded");
    let child = Killed(child);
    wait_ready(&base);
    let schemathesis = venv_tool(&python, "schemathesis");
    let out = Command::new(&schemathesis)
        .args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--url",
            &base,
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--max-time",
            "60",
            "--workers",
            "1",
            "--seed",
            "20261203",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis (installed by scripts/test.sh)");
    drop(child);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It really exercised the API: the summary counts test cases.
    assert!(
        stdout.contains("generated") && stdout.contains("passed"),
        "no summary in:\n{stdout}"
    );
}
