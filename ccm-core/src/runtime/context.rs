//! What both loops share: the stores, the clock, the key layout, the definitions cache, the
//! event emitter and the fenced commit.

use super::codec;
use super::keys::KeyLayout;
use super::metrics::Metrics;
use super::settings::RuntimeSettings;
use super::RuntimeError;
use crate::definition::LabletDefinition;
use crate::store::{
    Clock, Compare, EventError, EventSink, Fence, Revision, SpecStore, StateStore, Txn, TxnOp,
    TxnOpResponse,
};
use crate::timeslot::Timestamp;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared by the scheduler and the controller.
pub(crate) struct Ctx {
    pub state: Arc<dyn StateStore>,
    pub spec: Arc<dyn SpecStore>,
    pub events: Arc<dyn EventSink>,
    pub clock: Arc<dyn Clock>,
    pub keys: KeyLayout,
    pub settings: RuntimeSettings,
    pub metrics: Arc<Metrics>,
    /// Sessions and workers decoded by earlier listings.
    pub decoded: super::snapshot::Decoded,
    defs: Mutex<BTreeMap<String, LabletDefinition>>,
}

/// One guarded write: the key must still be at `expect` (`0` = must not exist).
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub expect: Revision,
}

/// Result of a fenced commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Written at this revision.
    Done(Revision),
    /// A key changed since it was read; re-read and retry.
    Conflict,
}

impl Ctx {
    pub fn new(
        state: Arc<dyn StateStore>,
        spec: Arc<dyn SpecStore>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        settings: RuntimeSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Ctx {
            keys: KeyLayout::new(settings.prefix.clone()),
            state,
            spec,
            events,
            clock,
            settings,
            metrics,
            decoded: super::snapshot::Decoded::default(),
            defs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Writes `writes` in one transaction guarded by each key's revision and the fence.
    /// A refused fence is reported as [`RuntimeError::NotLeader`].
    pub async fn commit(&self, fence: &Fence, writes: Vec<Write>) -> Result<Commit, RuntimeError> {
        let mut txn = fence.guard(Txn::new());
        for w in &writes {
            txn = txn.when(Compare::unchanged_since(w.key.clone(), w.expect));
        }
        for w in writes {
            txn.success.push(match w.value {
                Some(value) => TxnOp::Put {
                    key: w.key,
                    value,
                    lease: None,
                },
                None => TxnOp::Delete { key: w.key },
            });
        }
        let txn = txn.or_get(fence.key.clone());
        let resp = self.state.txn(txn).await?;
        if resp.succeeded {
            return Ok(Commit::Done(resp.revision));
        }
        let fence_holds = match resp.responses.first() {
            Some(TxnOpResponse::Get(kv)) => fence.compare().holds(kv.as_ref()),
            _ => fence
                .compare()
                .holds(self.state.get(&fence.key).await?.as_ref()),
        };
        if fence_holds {
            self.metrics.conflict();
            Ok(Commit::Conflict)
        } else {
            self.metrics.fence_rejected();
            Err(RuntimeError::NotLeader {
                election: election_of(&fence.key),
            })
        }
    }

    /// The definition with `id`: from this process's cache, the store's cache
    /// (`{prefix}/definitions/{id}`) or the spec store (then cached in both).
    pub async fn definition(&self, id: &str) -> Result<Option<LabletDefinition>, RuntimeError> {
        if let Some(d) = self.defs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Some(d.clone()));
        }
        let key = self.keys.definition(id);
        let def = match self.state.get(&key).await? {
            Some(kv) => Some(codec::decode::<LabletDefinition>(&key, &kv.value)?),
            None => {
                let d = self.spec.get_definition_by_id(id).await?;
                if let Some(d) = &d {
                    // Create-if-absent: definitions are immutable per id, so any writer's copy is right.
                    let txn = Txn::new()
                        .when(Compare::Missing { key: key.clone() })
                        .put(key.clone(), codec::encode(&key, d)?);
                    self.state.txn(txn).await?;
                }
                d
            }
        };
        if let Some(d) = &def {
            self.remember(d.clone());
        }
        Ok(def)
    }

    /// Adds a definition to this process's cache.
    pub fn remember(&self, d: LabletDefinition) {
        self.defs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.id.clone(), d);
    }

    /// Publishes a catalogue event; a full or closed sink is counted, never an error.
    pub async fn emit(&self, event: crate::events::CcmEvent, time: Timestamp) {
        let ev = event.to_event(time);
        match self.events.publish(ev).await {
            Ok(()) => {}
            Err(EventError::Dropped(_)) | Err(EventError::Closed) => self.metrics.event_dropped(),
        }
    }
}

fn election_of(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_string()
}
