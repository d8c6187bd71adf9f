//! The artifact behaviour suite on the in-memory backend.
//! Needs the `testkit` feature (on in CI: `cargo test --workspace --all-features`).
#![cfg(feature = "testkit")]

use bytes::Bytes;
use ccm_core::memory::artifact::MemoryArtifactStore;
use ccm_core::testkit::artifact::{self as suite, SuiteOptions};

#[tokio::test]
async fn memory_roundtrip() {
    suite::check_roundtrip(&MemoryArtifactStore::new(), "t").await;
}

#[tokio::test]
async fn memory_if_absent() {
    suite::check_if_absent(&MemoryArtifactStore::new(), "t").await;
}

#[tokio::test]
async fn memory_if_match() {
    suite::check_if_match(&MemoryArtifactStore::new(), "t").await;
}

#[tokio::test]
async fn memory_concurrent_create() {
    suite::check_concurrent_create(&MemoryArtifactStore::new(), "t", 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_create_across_threads() {
    let store = std::sync::Arc::new(MemoryArtifactStore::new());
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                ccm_core::store::ArtifactStore::put(
                    &*store,
                    "k",
                    Bytes::from(format!("{i}")),
                    ccm_core::store::WriteCondition::IfAbsent,
                )
                .await
                .is_ok()
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn memory_versions() {
    suite::check_versions(&MemoryArtifactStore::new(), "t", true).await;
}

#[tokio::test]
async fn memory_large_object() {
    suite::check_large_object(&MemoryArtifactStore::new(), "t", 6 * 1024 * 1024 + 3).await;
}

#[tokio::test]
async fn memory_tamper_detected() {
    let store = MemoryArtifactStore::new();
    suite::check_tamper_detected(&store, "t", |key, data| {
        assert!(store.tamper(&key, data), "tamper hook found no object");
        async {}
    })
    .await;
}

#[tokio::test]
async fn memory_run_all() {
    let store = MemoryArtifactStore::new();
    suite::run_all(&store, "all", &SuiteOptions::default()).await;
    assert!(!store.is_empty());
}

#[test]
fn tamper_on_missing_key_reports_false() {
    assert!(!MemoryArtifactStore::new().tamper("nope", Bytes::new()));
}
