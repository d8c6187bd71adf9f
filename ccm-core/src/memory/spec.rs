//! In-memory spec backend: [`MemorySpecStore`].
//!
//! The same semantics as the MongoDB adapter, without a server:
//!
//! * definitions are unique per (name, version) and listed in semver order
//!   (`1.9.0` < `1.10.0`, pre-releases before their release);
//! * templates are seeded create-if-absent and never overwritten by seeding
//!   (only [`SpecStore::put_template`], an operator's edit, replaces one);
//! * audit events are kept in (time, id) order; recording an id that is already stored is a
//!   no-op (producers may retry), and queries filter by subject, type and `[from, to)`.
//!
//! ```
//! # tokio_test_block(async {
//! use ccm_core::memory::spec::MemorySpecStore;
//! use ccm_core::store::SpecStore;
//! let store = MemorySpecStore::new();
//! assert!(store.list_templates().await.unwrap().is_empty());
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use crate::definition::LabletDefinition;
use crate::store::spec::{AuditEvent, AuditQuery, SeedReport, SpecError, SpecStore};
use crate::template::WorkerTemplate;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Inner {
    /// name → version → definition (BTreeMap over `semver::Version` keeps semver order).
    definitions: BTreeMap<String, BTreeMap<semver::Version, LabletDefinition>>,
    /// name → template.
    templates: BTreeMap<String, WorkerTemplate>,
    /// (time, id) → event.
    audit: BTreeMap<(crate::timeslot::Timestamp, String), AuditEvent>,
    /// Ids of recorded events (for idempotent recording).
    audit_ids: std::collections::BTreeSet<String>,
}

/// Definitions, templates and audit history held in memory (the embedded default).
#[derive(Debug, Default)]
pub struct MemorySpecStore {
    inner: Mutex<Inner>,
}

impl MemorySpecStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated: every method
        // finishes its checks before it mutates, so the poisoned data is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SpecStore for MemorySpecStore {
    async fn insert_definition(&self, def: &LabletDefinition) -> Result<(), SpecError> {
        let mut inner = self.lock();
        let versions = inner.definitions.entry(def.name.clone()).or_default();
        if versions.contains_key(&def.version) {
            return Err(SpecError::Conflict {
                name: def.name.clone(),
                version: def.version.to_string(),
            });
        }
        versions.insert(def.version.clone(), def.clone());
        Ok(())
    }

    async fn get_definition(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<Option<LabletDefinition>, SpecError> {
        Ok(self
            .lock()
            .definitions
            .get(name)
            .and_then(|v| v.get(version))
            .cloned())
    }

    async fn get_definition_by_id(&self, id: &str) -> Result<Option<LabletDefinition>, SpecError> {
        // Ids are not required to be unique across versions (a re-planned draft keeps its id):
        // the highest version carrying the id wins, the same rule as the MongoDB adapter.
        Ok(self
            .lock()
            .definitions
            .values()
            .flat_map(|v| v.values())
            .filter(|d| d.id == id)
            .max_by(|a, b| a.version.cmp(&b.version).then_with(|| a.name.cmp(&b.name)))
            .cloned())
    }

    async fn list_definition_versions(
        &self,
        name: &str,
    ) -> Result<Vec<LabletDefinition>, SpecError> {
        Ok(self
            .lock()
            .definitions
            .get(name)
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn latest_definition(&self, name: &str) -> Result<Option<LabletDefinition>, SpecError> {
        Ok(self
            .lock()
            .definitions
            .get(name)
            .and_then(|v| v.values().next_back())
            .cloned())
    }

    async fn seed_templates(&self, templates: &[WorkerTemplate]) -> Result<SeedReport, SpecError> {
        let mut inner = self.lock();
        let mut report = SeedReport::default();
        for t in templates {
            if inner.templates.contains_key(&t.name) {
                report.kept.push(t.name.clone());
            } else {
                inner.templates.insert(t.name.clone(), t.clone());
                report.created.push(t.name.clone());
            }
        }
        Ok(report)
    }

    async fn list_templates(&self) -> Result<Vec<WorkerTemplate>, SpecError> {
        Ok(self.lock().templates.values().cloned().collect())
    }

    async fn get_template(&self, name: &str) -> Result<Option<WorkerTemplate>, SpecError> {
        Ok(self.lock().templates.get(name).cloned())
    }

    async fn put_template(&self, template: &WorkerTemplate) -> Result<(), SpecError> {
        self.lock()
            .templates
            .insert(template.name.clone(), template.clone());
        Ok(())
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), SpecError> {
        let mut inner = self.lock();
        if inner.audit_ids.insert(event.id.clone()) {
            inner
                .audit
                .insert((event.time, event.id.clone()), event.clone());
        }
        Ok(())
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, SpecError> {
        let inner = self.lock();
        Ok(inner
            .audit
            .values()
            .filter(|e| query.matches(e))
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::spec as suite;

    #[tokio::test]
    async fn memory_spec_store_passes_the_behaviour_suite() {
        suite::run_all(&MemorySpecStore::new()).await;
    }
}
