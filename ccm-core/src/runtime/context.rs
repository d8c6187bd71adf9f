//! What both loops share: the stores, the clock, the key layout, the definitions cache, the
//! event emitter and the fenced commit.

use super::codec;
use super::keys::KeyLayout;
use super::metrics::Metrics;
use super::settings::RuntimeSettings;
use super::RuntimeError;
use crate::definition::LabletDefinition;
use crate::store::{
    Clock, Compare, EventError, EventSink, Fence, Revision, SpecStore, StateStore, StoreError, Txn,
    TxnOp, TxnOpResponse,
};
use crate::timeslot::Timestamp;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The smallest transaction the loops need (one binding: session, worker, fence).
pub(crate) const MIN_TXN_OPS: usize = 3;

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
    /// Largest transaction to build now: `max_txn_ops`, halved each time the store refuses one
    /// as too large.
    txn_limit: AtomicUsize,
}

/// One guarded write: the key must still be at `expect` (`0` = must not exist).
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub expect: Revision,
}

impl Write {
    /// `value` as JSON under `key`, guarded by `expect`.
    pub fn put<T: serde::Serialize>(
        key: String,
        value: &T,
        expect: Revision,
    ) -> Result<Write, StoreError> {
        Ok(Write {
            value: Some(super::codec::encode(&key, value)?),
            key,
            expect,
        })
    }
}

/// Result of a fenced commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Written at this revision.
    Done(Revision),
    /// A key changed since it was read; re-read and retry. `changed` names the keys whose
    /// revision moved (empty when the store did not say).
    Conflict {
        /// Keys no longer at the revision expected.
        changed: Vec<String>,
    },
    /// The store refused the transaction as too large; [`Ctx::txn_limit`] is now smaller:
    /// rebuild the batch and retry.
    TooLarge,
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
        let settings_limit = settings.max_txn_ops.max(MIN_TXN_OPS);
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
            txn_limit: AtomicUsize::new(settings_limit),
        }
    }

    /// Largest transaction (operations, fence included) to build now.
    pub fn txn_limit(&self) -> usize {
        self.txn_limit.load(Ordering::Relaxed).max(MIN_TXN_OPS)
    }

    /// The store refused `ops` operations: halve the limit (not below [`MIN_TXN_OPS`]).
    /// Returns false when the refused transaction was already the smallest possible.
    fn shrink_txn_limit(&self, ops: usize, server_limit: Option<usize>) -> bool {
        if ops <= MIN_TXN_OPS {
            return false;
        }
        let next = server_limit
            .filter(|l| *l >= MIN_TXN_OPS && *l < ops)
            .unwrap_or(ops / 2)
            .max(MIN_TXN_OPS);
        self.txn_limit.fetch_min(next, Ordering::Relaxed);
        tracing::warn!(
            ops,
            server_limit =
                server_limit.map_or_else(|| "not reported".to_string(), |l| l.to_string()),
            now = self.txn_limit(),
            "the state store refused a transaction as too large; building smaller ones"
        );
        true
    }

    /// Writes `writes` in one transaction guarded by each key's revision and the fence.
    /// A refused fence is reported as [`RuntimeError::NotLeader`]; a conflict names the keys
    /// that moved (the failure branch reads the fence and every key); a transaction the store
    /// finds too large halves [`Ctx::txn_limit`] and is [`Commit::TooLarge`] (an error naming
    /// the store's limit once even three operations are refused).
    pub async fn commit(&self, fence: &Fence, writes: Vec<Write>) -> Result<Commit, RuntimeError> {
        let mut txn = fence.guard(Txn::new());
        for w in &writes {
            txn = txn.when(Compare::unchanged_since(w.key.clone(), w.expect));
        }
        let expected: Vec<(String, Revision)> =
            writes.iter().map(|w| (w.key.clone(), w.expect)).collect();
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
        let mut txn = txn.or_get(fence.key.clone());
        for (key, _) in &expected {
            txn = txn.or_get(key.clone());
        }
        let ops = txn.op_count();
        let resp = match self.state.txn(txn).await {
            Ok(r) => r,
            Err(e @ StoreError::TooManyOps { limit, .. }) => {
                return self.too_large(ops, Some(limit), e);
            }
            Err(e @ StoreError::TooManyOperations { limit }) => {
                return self.too_large(ops, limit, e);
            }
            Err(e) => return Err(e.into()),
        };
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
            let changed = expected
                .iter()
                .zip(resp.responses.iter().skip(1))
                .filter_map(|((key, expect), r)| match r {
                    TxnOpResponse::Get(kv) => {
                        let now = kv.as_ref().map_or(0, |k| k.mod_revision);
                        (now != *expect).then(|| key.clone())
                    }
                    _ => None,
                })
                .collect();
            Ok(Commit::Conflict { changed })
        } else {
            self.metrics.fence_rejected();
            Err(RuntimeError::NotLeader {
                election: election_of(&fence.key),
            })
        }
    }

    fn too_large(
        &self,
        ops: usize,
        limit: Option<usize>,
        e: StoreError,
    ) -> Result<Commit, RuntimeError> {
        if self.shrink_txn_limit(ops, limit) {
            Ok(Commit::TooLarge)
        } else {
            Err(RuntimeError::Store(e))
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
