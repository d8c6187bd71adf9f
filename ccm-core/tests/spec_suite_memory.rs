//! The spec store behaviour suite on the in-memory backend (needs the `testkit` feature, which
//! CI's `--all-features` enables; the same suite also runs as a unit test of `memory::spec`).
#![cfg(feature = "testkit")]

use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::testkit::spec as suite;

#[tokio::test]
async fn memory_unknown_is_empty() {
    suite::unknown_is_empty(&MemorySpecStore::new()).await;
}

#[tokio::test]
async fn memory_insert_get_and_conflict() {
    suite::insert_get_and_conflict(&MemorySpecStore::new()).await;
}

#[tokio::test]
async fn memory_versions_ordered_as_semver() {
    suite::versions_ordered_as_semver(&MemorySpecStore::new()).await;
}

#[tokio::test]
async fn memory_registration_rules() {
    suite::registration_rules(&MemorySpecStore::new()).await;
}

#[tokio::test]
async fn memory_concurrent_writers() {
    suite::concurrent_writers(&MemorySpecStore::new()).await;
}

#[tokio::test]
async fn memory_template_seeding() {
    suite::template_seeding(&MemorySpecStore::new()).await;
}

#[tokio::test]
async fn memory_audit_queries() {
    suite::audit_queries(&MemorySpecStore::new()).await;
}

#[tokio::test]
async fn memory_whole_suite_on_one_store() {
    suite::run_all(&MemorySpecStore::new()).await;
}
