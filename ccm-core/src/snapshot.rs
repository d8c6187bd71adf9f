//! Derived state: recompute what each worker holds from the sessions bound to it.

use crate::definition::LabletDefinition;
use crate::resources::Load;
use crate::session::LabletSession;
use crate::worker::Worker;
use std::collections::BTreeMap;

/// A session whose worker or definition is not in the snapshot, or whose ports clash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Bound to an unknown worker.
    #[error("session {session} is bound to unknown worker {worker}")]
    UnknownWorker {
        /// Session.
        session: String,
        /// Worker.
        worker: String,
    },
    /// Its definition is unknown.
    #[error("session {session} uses unknown definition {definition}")]
    UnknownDefinition {
        /// Session.
        session: String,
        /// Definition id.
        definition: String,
    },
    /// Port bookkeeping is inconsistent.
    #[error("session {session}: {message}")]
    Ports {
        /// Session.
        session: String,
        /// What clashed.
        message: String,
    },
}

/// Sets every worker's `allocated` load and port table from the capacity-holding sessions
/// bound to it (sessions are the source of truth; worker fields are derived).
pub fn derive_allocations(
    workers: &mut [Worker],
    sessions: &[LabletSession],
    definitions: &BTreeMap<String, LabletDefinition>,
) -> Result<(), SnapshotError> {
    let index: BTreeMap<String, usize> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.clone(), i))
        .collect();
    for w in workers.iter_mut() {
        w.allocated = Load::default();
        w.ports = crate::ports::PortAllocator::new(w.ports.range());
    }
    for s in sessions.iter().filter(|s| s.holds_capacity()) {
        let Some(wid) = &s.worker_id else { continue };
        let Some(&i) = index.get(wid) else {
            return Err(SnapshotError::UnknownWorker {
                session: s.id.clone(),
                worker: wid.clone(),
            });
        };
        let Some(def) = definitions.get(&s.definition_id) else {
            return Err(SnapshotError::UnknownDefinition {
                session: s.id.clone(),
                definition: s.definition_id.clone(),
            });
        };
        let w = &mut workers[i];
        w.allocated = w
            .allocated
            .saturating_add(&Load::new(def.resource_requirements, def.node_count));
        w.ports
            .restore(&s.id, &s.allocated_ports)
            .map_err(|e| SnapshotError::Ports {
                session: s.id.clone(),
                message: e.to_string(),
            })?;
    }
    Ok(())
}
