//! Behaviour suite for the artifact store trait.
//!
//! Every [`ArtifactStore`] implementation runs the same checks: the in-memory backend in
//! `ccm-core/tests/artifact_suite_memory.rs`, the S3 adapter against a real S3 server in
//! `ccm-adapters/tests/s3_*.rs`. Each check takes a key prefix so runs on a shared server do
//! not collide, and panics with a message naming the broken rule.

use crate::store::artifact::{
    sha256_hex, ArtifactError, ArtifactMeta, ArtifactStore, WriteCondition,
};
use bytes::Bytes;
use std::future::Future;

/// Knobs of the suite for one backend.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Size of the "large object" check, in bytes (pick one above the backend's multipart
    /// threshold so the streaming path runs).
    pub large_size: usize,
    /// Whether the backend keeps every version (versioned bucket) or only the latest.
    pub keeps_versions: bool,
    /// Writers racing in the concurrent create check.
    pub racers: usize,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            large_size: 3 * 1024 * 1024 + 17,
            keeps_versions: true,
            racers: 8,
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so large objects are not trivially compressible.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn assert_meta_consistent(meta: &ArtifactMeta, key: &str, data: &[u8], what: &str) {
    assert_eq!(meta.key, key, "{what}: meta names the wrong key");
    assert_eq!(
        meta.sha256,
        sha256_hex(data),
        "{what}: sha256 is not the content's hash"
    );
    assert_eq!(
        meta.size,
        data.len() as u64,
        "{what}: size is not the content's length"
    );
    assert!(
        meta.etag.is_some(),
        "{what}: no etag, conditional writes impossible"
    );
}

/// Put then get returns the bytes and consistent metadata; head agrees with put; a missing key
/// is `NotFound` on get and `None` on head; an empty object round-trips.
pub async fn check_roundtrip<S: ArtifactStore + ?Sized>(store: &S, prefix: &str) {
    let key = format!("{prefix}/roundtrip/cml.yaml");
    let data = Bytes::from_static(b"lab:\n  title: roundtrip # comment\nnodes: []\n");
    let put = store
        .put(&key, data.clone(), WriteCondition::Always)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    assert_meta_consistent(&put, &key, &data, "put");

    let (got, meta) = store
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    assert_eq!(got, data, "get returned other bytes than were put");
    assert_meta_consistent(&meta, &key, &data, "get");
    assert_eq!(meta.etag, put.etag, "get etag differs from put etag");

    let head = store
        .head(&key)
        .await
        .unwrap_or_else(|e| panic!("head {key}: {e}"))
        .unwrap_or_else(|| panic!("head {key}: None right after put"));
    assert_meta_consistent(&head, &key, &data, "head");
    assert_eq!(head.etag, put.etag, "head etag differs from put etag");
    assert_eq!(
        head.version_id, put.version_id,
        "head version differs from put version"
    );

    let missing = format!("{prefix}/roundtrip/missing.yaml");
    match store.get(&missing).await {
        Err(ArtifactError::NotFound(k)) => assert_eq!(k, missing, "NotFound names another key"),
        other => panic!("get of a missing key must be NotFound, got {other:?}"),
    }
    assert_eq!(
        store
            .head(&missing)
            .await
            .unwrap_or_else(|e| panic!("head missing: {e}")),
        None,
        "head of a missing key must be None"
    );

    let empty_key = format!("{prefix}/roundtrip/empty.yaml");
    store
        .put(&empty_key, Bytes::new(), WriteCondition::IfAbsent)
        .await
        .unwrap_or_else(|e| panic!("put empty: {e}"));
    let (got, meta) = store
        .get(&empty_key)
        .await
        .unwrap_or_else(|e| panic!("get empty: {e}"));
    assert!(
        got.is_empty(),
        "empty object came back with {} bytes",
        got.len()
    );
    assert_meta_consistent(&meta, &empty_key, b"", "get empty");
}

/// `IfAbsent` creates once; a second `IfAbsent` fails with `PreconditionFailed` and leaves the
/// first content in place.
pub async fn check_if_absent<S: ArtifactStore + ?Sized>(store: &S, prefix: &str) {
    let key = format!("{prefix}/if-absent/cml.yaml");
    let first = Bytes::from_static(b"first: 1\n");
    store
        .put(&key, first.clone(), WriteCondition::IfAbsent)
        .await
        .unwrap_or_else(|e| panic!("first IfAbsent put: {e}"));
    match store
        .put(
            &key,
            Bytes::from_static(b"second: 2\n"),
            WriteCondition::IfAbsent,
        )
        .await
    {
        Err(ArtifactError::PreconditionFailed { key: k, .. }) => assert_eq!(k, key),
        other => panic!("second IfAbsent put must be PreconditionFailed, got {other:?}"),
    }
    let (got, _) = store.get(&key).await.unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(got, first, "a failed IfAbsent write changed the object");
}

/// `IfMatch` with the current etag writes; with a stale etag, or on a missing key, it fails
/// with `PreconditionFailed` and changes nothing.
pub async fn check_if_match<S: ArtifactStore + ?Sized>(store: &S, prefix: &str) {
    let key = format!("{prefix}/if-match/cml.yaml");
    let v1 = store
        .put(
            &key,
            Bytes::from_static(b"version: 1\n"),
            WriteCondition::Always,
        )
        .await
        .unwrap_or_else(|e| panic!("put v1: {e}"));
    let etag1 = v1
        .etag
        .clone()
        .unwrap_or_else(|| panic!("put v1 returned no etag"));
    let v2 = store
        .put(
            &key,
            Bytes::from_static(b"version: 2\n"),
            WriteCondition::IfMatch(etag1.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("IfMatch with the current etag must write: {e}"));
    assert_ne!(
        v2.etag, v1.etag,
        "different content must give a different etag"
    );
    match store
        .put(
            &key,
            Bytes::from_static(b"version: 3\n"),
            WriteCondition::IfMatch(etag1),
        )
        .await
    {
        Err(ArtifactError::PreconditionFailed { key: k, .. }) => assert_eq!(k, key),
        other => panic!("IfMatch with a stale etag must be PreconditionFailed, got {other:?}"),
    }
    let (got, meta) = store.get(&key).await.unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(
        got,
        Bytes::from_static(b"version: 2\n"),
        "a failed IfMatch changed the object"
    );
    assert_eq!(meta.etag, v2.etag);

    let missing = format!("{prefix}/if-match/missing.yaml");
    match store
        .put(
            &missing,
            Bytes::from_static(b"x: 1\n"),
            WriteCondition::IfMatch(v2.etag.unwrap_or_default()),
        )
        .await
    {
        Err(ArtifactError::PreconditionFailed { key: k, .. }) => assert_eq!(k, missing),
        other => panic!("IfMatch on a missing key must be PreconditionFailed, got {other:?}"),
    }
    assert_eq!(
        store
            .head(&missing)
            .await
            .unwrap_or_else(|e| panic!("head: {e}")),
        None
    );
}

/// Writers racing to create the same key with `IfAbsent`: exactly one wins, the others get
/// `PreconditionFailed`, and the stored content is the winner's.
pub async fn check_concurrent_create<S: ArtifactStore + ?Sized>(
    store: &S,
    prefix: &str,
    racers: usize,
) {
    let key = format!("{prefix}/race/cml.yaml");
    let writes = (0..racers).map(|i| {
        let key = key.clone();
        async move {
            let data = Bytes::from(format!("writer: {i}\n"));
            (i, store.put(&key, data, WriteCondition::IfAbsent).await)
        }
    });
    let results = futures::future::join_all(writes).await;
    let mut winners = Vec::new();
    for (i, r) in results {
        match r {
            Ok(_) => winners.push(i),
            Err(ArtifactError::PreconditionFailed { .. }) => {}
            Err(e) => panic!("racer {i}: unexpected error {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one IfAbsent writer must win, winners: {winners:?}"
    );
    let (got, _) = store.get(&key).await.unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(
        got,
        Bytes::from(format!("writer: {}\n", winners[0])),
        "stored content is not the winner's"
    );
}

/// Versions come newest first and the newest is what `head` reports; a missing key has none.
pub async fn check_versions<S: ArtifactStore + ?Sized>(
    store: &S,
    prefix: &str,
    keeps_versions: bool,
) {
    let key = format!("{prefix}/versions/cml.yaml");
    let a = store
        .put(&key, Bytes::from_static(b"a: 1\n"), WriteCondition::Always)
        .await
        .unwrap_or_else(|e| panic!("put a: {e}"));
    let b = store
        .put(&key, Bytes::from_static(b"b: 2\n"), WriteCondition::Always)
        .await
        .unwrap_or_else(|e| panic!("put b: {e}"));
    let versions = store
        .versions(&key)
        .await
        .unwrap_or_else(|e| panic!("versions: {e}"));
    if keeps_versions {
        assert_eq!(
            versions.len(),
            2,
            "two writes must give two versions: {versions:?}"
        );
        assert_eq!(
            versions[1].sha256, a.sha256,
            "oldest version is not the first write"
        );
        assert!(
            a.version_id.is_some() && a.version_id != b.version_id,
            "versions need distinct ids"
        );
    } else {
        assert_eq!(
            versions.len(),
            1,
            "an unversioned store reports one version: {versions:?}"
        );
    }
    assert_eq!(
        versions[0].sha256, b.sha256,
        "newest version is not the last write"
    );
    assert_eq!(
        versions[0].version_id, b.version_id,
        "newest version id differs from the last put"
    );
    let head = store
        .head(&key)
        .await
        .unwrap_or_else(|e| panic!("head: {e}"));
    assert_eq!(
        head.map(|h| h.sha256),
        Some(b.sha256.clone()),
        "head is not the newest version"
    );
    assert!(
        store
            .versions(&format!("{prefix}/versions/missing.yaml"))
            .await
            .unwrap_or_else(|e| panic!("versions of missing: {e}"))
            .is_empty(),
        "a missing key has no versions"
    );
}

/// A large object round-trips byte for byte with the right hash (the streaming path).
pub async fn check_large_object<S: ArtifactStore + ?Sized>(store: &S, prefix: &str, size: usize) {
    let key = format!("{prefix}/large/cml.yaml");
    let data = pseudo_random_bytes(size, 0x5eed);
    let put = store
        .put(&key, data.clone(), WriteCondition::IfAbsent)
        .await
        .unwrap_or_else(|e| panic!("put large ({size} bytes): {e}"));
    assert_meta_consistent(&put, &key, &data, "put large");
    let (got, meta) = store
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("get large: {e}"));
    assert_eq!(got.len(), data.len(), "large object length changed");
    assert!(got == data, "large object bytes changed");
    assert_meta_consistent(&meta, &key, &data, "get large");
    match store
        .put(&key, pseudo_random_bytes(size, 7), WriteCondition::IfAbsent)
        .await
    {
        Err(ArtifactError::PreconditionFailed { .. }) => {}
        other => panic!("IfAbsent on an existing large object must fail, got {other:?}"),
    }
    let etag = put.etag.unwrap_or_default();
    let second = pseudo_random_bytes(size, 11);
    store
        .put(&key, second.clone(), WriteCondition::IfMatch(etag.clone()))
        .await
        .unwrap_or_else(|e| panic!("IfMatch on a large object: {e}"));
    match store
        .put(
            &key,
            pseudo_random_bytes(size, 13),
            WriteCondition::IfMatch(etag),
        )
        .await
    {
        Err(ArtifactError::PreconditionFailed { .. }) => {}
        other => panic!("stale IfMatch on a large object must fail, got {other:?}"),
    }
    let (got, _) = store
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("get large 2: {e}"));
    assert!(got == second, "large object is not the IfMatch write");
}

/// After `tamper(key, bytes)` replaces the stored bytes (keeping the recorded hash), `get`
/// must report `Corrupted` naming the key and both hashes.
pub async fn check_tamper_detected<S, F, Fut>(store: &S, prefix: &str, tamper: F)
where
    S: ArtifactStore + ?Sized,
    F: FnOnce(String, Bytes) -> Fut,
    Fut: Future<Output = ()>,
{
    let key = format!("{prefix}/tamper/cml.yaml");
    let good = Bytes::from_static(b"nodes:\n  - label: r1\n    tags: [\"ssh:22\"]\n");
    let put = store
        .put(&key, good.clone(), WriteCondition::Always)
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    store
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("untampered get must succeed: {e}"));
    let evil = Bytes::from_static(b"nodes:\n  - label: r1\n    tags: [\"ssh:23\"]\n");
    tamper(key.clone(), evil.clone()).await;
    match store.get(&key).await {
        Err(ArtifactError::Corrupted {
            key: k,
            expected,
            actual,
        }) => {
            assert_eq!(k, key, "Corrupted names another key");
            assert_eq!(
                expected, put.sha256,
                "Corrupted must report the stored hash"
            );
            assert_eq!(
                actual,
                sha256_hex(&evil),
                "Corrupted must report the hash of what was read"
            );
        }
        other => panic!("a tampered object must be Corrupted, got {other:?}"),
    }
}

/// Runs every check except [`check_tamper_detected`] (which needs a backend-specific hook).
pub async fn run_all<S: ArtifactStore + ?Sized>(store: &S, prefix: &str, options: &SuiteOptions) {
    check_roundtrip(store, prefix).await;
    check_if_absent(store, prefix).await;
    check_if_match(store, prefix).await;
    check_concurrent_create(store, prefix, options.racers).await;
    check_versions(store, prefix, options.keeps_versions).await;
    check_large_object(store, prefix, options.large_size).await;
}
