//! The S3 adapter against a real S3 server (moto_server from `scripts/services.sh`):
//! the shared artifact behaviour suite, an independent boto3 client reading what ccm wrote,
//! and tamper detection. Needs CCM_TEST_S3_ENDPOINT (and CCM_TEST_PYTHON for the boto3 checks).
#![cfg(feature = "s3")]

mod support;

use bytes::Bytes;
use ccm_adapters::s3::{S3ArtifactStore, S3Config, Sse, MIN_PART_SIZE};
use ccm_core::store::artifact::{definition_key, sha256_hex, ArtifactStore, WriteCondition};
use ccm_core::testkit::artifact::{self as suite, pseudo_random_bytes};
use support::{check_script, env};

fn endpoint() -> String {
    env("CCM_TEST_S3_ENDPOINT")
}

fn config() -> S3Config {
    let mut cfg = S3Config::new(&endpoint(), "ccm-test", "ccm-test-secret");
    cfg.bucket = format!("ccm-test-{}", uuid::Uuid::new_v4().simple());
    cfg.multipart_threshold = MIN_PART_SIZE;
    cfg.part_size = MIN_PART_SIZE;
    cfg
}

async fn store() -> S3ArtifactStore {
    let s = S3ArtifactStore::connect(config())
        .await
        .unwrap_or_else(|e| panic!("connect to S3 at {}: {e}", endpoint()));
    assert!(
        s.versioning(),
        "moto supports versioning; the adapter must have turned it on"
    );
    s
}

fn check_s3(args: &[&str]) -> serde_json::Value {
    check_script("check_s3.py", args)
}

#[tokio::test]
async fn s3_roundtrip() {
    suite::check_roundtrip(&store().await, "t").await;
}

#[tokio::test]
async fn s3_if_absent() {
    suite::check_if_absent(&store().await, "t").await;
}

#[tokio::test]
async fn s3_if_match() {
    suite::check_if_match(&store().await, "t").await;
}

#[tokio::test]
async fn s3_concurrent_create() {
    suite::check_concurrent_create(&store().await, "t", 8).await;
}

#[tokio::test]
async fn s3_versions() {
    suite::check_versions(&store().await, "t", true).await;
}

#[tokio::test]
async fn s3_large_object_multipart() {
    // 2.2 parts of 5 MiB: the multipart path with its conditions.
    suite::check_large_object(&store().await, "t", 2 * MIN_PART_SIZE + MIN_PART_SIZE / 5).await;
}

#[tokio::test]
async fn s3_tamper_by_independent_client_is_corrupted() {
    let s = store().await;
    let bucket = s.bucket().to_string();
    let ep = endpoint();
    suite::check_tamper_detected(&s, "t", |key, data| {
        let file = std::env::temp_dir().join(format!("ccm-tamper-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, &data).unwrap();
        let out = check_s3(&["tamper", &ep, &bucket, &key, file.to_str().unwrap()]);
        assert_eq!(out["tampered"], key.as_str());
        let _ = std::fs::remove_file(&file);
        async {}
    })
    .await;
}

#[tokio::test]
async fn s3_independent_client_reads_what_ccm_wrote() {
    let s = store().await;
    let key = definition_key("ccna-basic", &semver::Version::new(1, 2, 3));
    assert_eq!(key, "definitions/ccna-basic/1.2.3/cml.yaml");
    let lab =
        Bytes::from_static(b"# lab\nnodes:\n  - label: r1\n    tags: ['ssh:${PORT_R1_SSH}']\n");
    let meta = s
        .put(&key, lab.clone(), WriteCondition::IfAbsent)
        .await
        .unwrap();
    let seen = check_s3(&["read", &endpoint(), s.bucket(), &key]);
    assert_eq!(seen["size"], lab.len());
    assert_eq!(seen["sha256_actual"], sha256_hex(&lab).as_str());
    assert_eq!(
        seen["sha256_metadata"],
        meta.sha256.as_str(),
        "sha256 must be stored as object metadata"
    );
    assert_eq!(seen["content_type"], "application/yaml");

    let big = pseudo_random_bytes(MIN_PART_SIZE + 1234, 99);
    let big_key = definition_key("big", &semver::Version::new(0, 1, 0));
    s.put(&big_key, big.clone(), WriteCondition::Always)
        .await
        .unwrap();
    let seen = check_s3(&["read", &endpoint(), s.bucket(), &big_key]);
    assert_eq!(seen["size"], big.len());
    assert_eq!(seen["sha256_actual"], sha256_hex(&big).as_str());
    assert_eq!(
        seen["sha256_metadata"],
        sha256_hex(&big).as_str(),
        "multipart upload keeps the metadata"
    );
}

#[tokio::test]
async fn s3_server_side_encryption_is_requested() {
    let mut cfg = config();
    cfg.sse = Some(Sse::S3);
    let s = S3ArtifactStore::connect(cfg).await.unwrap();
    s.put(
        "enc/cml.yaml",
        Bytes::from_static(b"a: 1\n"),
        WriteCondition::Always,
    )
    .await
    .unwrap();
    let head = s
        .client()
        .head_object()
        .bucket(s.bucket())
        .key("enc/cml.yaml")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("AES256")
    );
    let seen = check_s3(&["read", &endpoint(), s.bucket(), "enc/cml.yaml"]);
    assert_eq!(seen["sse"], "AES256");
}

#[tokio::test]
async fn s3_connect_creates_bucket_once_and_reconnects() {
    let cfg = config();
    let a = S3ArtifactStore::connect(cfg.clone()).await.unwrap();
    a.put("k", Bytes::from_static(b"x"), WriteCondition::IfAbsent)
        .await
        .unwrap();
    let b = S3ArtifactStore::connect(cfg).await.unwrap();
    assert_eq!(
        b.get("k").await.unwrap().0,
        Bytes::from_static(b"x"),
        "reconnect must keep the bucket"
    );
}

#[tokio::test]
async fn s3_unreachable_server_is_unavailable() {
    let mut cfg = config();
    cfg.endpoint = "http://127.0.0.1:9".to_string();
    match S3ArtifactStore::connect(cfg).await {
        Err(ccm_core::store::ArtifactError::Unavailable(m)) => {
            assert!(m.contains("head bucket"), "{m}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
