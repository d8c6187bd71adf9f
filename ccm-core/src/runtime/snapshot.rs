//! Loading the live state in one consistent listing and deriving what each worker holds.

use super::codec;
use super::context::Ctx;
use super::RuntimeError;
use crate::definition::LabletDefinition;
use crate::ports::PortAllocator;
use crate::resources::Load;
use crate::session::LabletSession;
use crate::store::Revision;
use crate::worker::Worker;
use std::collections::{BTreeMap, BTreeSet};

/// A value read from the store with the revision it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its key's `mod_revision` (the guard of a later write).
    pub mod_revision: Revision,
}

/// Sessions, workers and the definitions they use, read at one store revision.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    /// Store revision of the listing (watch from `revision + 1`).
    pub revision: Revision,
    /// Sessions by id.
    pub sessions: BTreeMap<String, Versioned<LabletSession>>,
    /// Workers by id, with `allocated` and `ports` derived from the sessions bound to them.
    pub workers: BTreeMap<String, Versioned<Worker>>,
    /// Definitions of the sessions, by id.
    pub definitions: BTreeMap<String, LabletDefinition>,
    /// Records that could not be used, each naming the key or session and why.
    pub problems: Vec<String>,
    /// Worker records that could not be decoded (bad JSON, a state or field this version does
    /// not know, an id that differs from the key's), by the id in their key. Such a worker is
    /// UNKNOWN, never gone: its sessions are neither requeued nor terminated.
    pub unknown_workers: BTreeSet<String>,
    /// Session records that could not be decoded (or whose id differs from the key's), by the
    /// id in their key, with the worker they name when that much is readable. They are left
    /// alone; a worker they name takes no new binding and is never drained for idleness.
    pub unknown_sessions: BTreeMap<String, Option<String>>,
    /// Undecodable records by kind (`session`, `worker`, `definition`).
    pub undecodable: BTreeMap<String, u64>,
}

impl StateSnapshot {
    /// A snapshot of values held outside a [`crate::store::StateStore`] (every value at
    /// revision `revision`), with each worker's allocation and port table derived from the
    /// capacity-holding sessions bound to it — e.g. to ask [`super::plan_input`] and
    /// [`super::due_actions`] what the controller would do with an embedder's own records.
    pub fn from_values(
        revision: Revision,
        sessions: impl IntoIterator<Item = LabletSession>,
        workers: impl IntoIterator<Item = Worker>,
        definitions: impl IntoIterator<Item = LabletDefinition>,
    ) -> Self {
        let at = |value| Versioned {
            value,
            mod_revision: revision,
        };
        let mut snap = StateSnapshot {
            revision,
            sessions: sessions
                .into_iter()
                .map(|s| (s.id.clone(), at(s)))
                .collect(),
            workers: BTreeMap::new(),
            definitions: definitions.into_iter().map(|d| (d.id.clone(), d)).collect(),
            ..Default::default()
        };
        snap.workers = workers
            .into_iter()
            .map(|w| {
                (
                    w.id.clone(),
                    Versioned {
                        value: w,
                        mod_revision: revision,
                    },
                )
            })
            .collect();
        derive(&mut snap);
        snap
    }

    /// Whether `worker` holds anything: a capacity-holding session, or an unknown session
    /// record that names it (its load is not known, so it is treated as held).
    pub fn busy(&self, worker: &str) -> bool {
        self.sessions_on(worker).next().is_some() || self.has_unknown_sessions(worker)
    }

    /// Whether an undecodable session record names `worker`.
    pub fn has_unknown_sessions(&self, worker: &str) -> bool {
        self.unknown_sessions
            .values()
            .any(|w| w.as_deref() == Some(worker))
    }

    fn undecodable_record(&mut self, kind: &str, problem: String) {
        *self.undecodable.entry(kind.to_string()).or_default() += 1;
        self.problems.push(problem);
    }

    /// Capacity-holding sessions bound to `worker`.
    pub fn sessions_on<'a>(
        &'a self,
        worker: &'a str,
    ) -> impl Iterator<Item = &'a Versioned<LabletSession>> + 'a {
        self.sessions.values().filter(move |s| {
            s.value.holds_capacity() && s.value.worker_id.as_deref() == Some(worker)
        })
    }
}

/// Reads everything under the prefix in one listing (one revision) and derives allocations.
pub(crate) async fn load(ctx: &Ctx) -> Result<StateSnapshot, RuntimeError> {
    let root = format!("{}/", ctx.keys.prefix());
    let list = ctx.state.list(&root).await?;
    let mut snap = StateSnapshot {
        revision: list.revision,
        ..Default::default()
    };
    let (sp, wp, dp) = (
        ctx.keys.sessions(),
        ctx.keys.workers(),
        ctx.keys.definitions(),
    );
    let mut sessions_seen = Vec::new();
    let mut workers_seen = Vec::new();
    for kv in list.kvs {
        if kv.key.starts_with(&sp) {
            let key_id = ctx
                .keys
                .id_of_session(&kv.key)
                .unwrap_or_default()
                .to_string();
            let decoded = ctx.decoded.sessions.get_or_decode(&kv);
            let decoded = decoded.and_then(|s| {
                if s.id == key_id {
                    Ok(s)
                } else {
                    Err(mismatch(&kv.key, &s.id))
                }
            });
            match decoded {
                Ok(s) => {
                    snap.sessions.insert(
                        s.id.clone(),
                        Versioned {
                            value: s,
                            mod_revision: kv.mod_revision,
                        },
                    );
                }
                Err(e) => {
                    snap.unknown_sessions
                        .insert(key_id, readable_field(&kv.value, "worker_id"));
                    snap.undecodable_record("session", e.to_string());
                }
            }
            sessions_seen.push(kv.key);
        } else if kv.key.starts_with(&wp) {
            let key_id = ctx
                .keys
                .id_of_worker(&kv.key)
                .unwrap_or_default()
                .to_string();
            let decoded = ctx.decoded.workers.get_or_decode(&kv);
            let decoded = decoded.and_then(|w| {
                if w.id == key_id {
                    Ok(w)
                } else {
                    Err(mismatch(&kv.key, &w.id))
                }
            });
            match decoded {
                Ok(w) => {
                    snap.workers.insert(
                        w.id.clone(),
                        Versioned {
                            value: w,
                            mod_revision: kv.mod_revision,
                        },
                    );
                }
                Err(e) => {
                    snap.unknown_workers.insert(key_id);
                    snap.undecodable_record("worker", e.to_string());
                }
            }
            workers_seen.push(kv.key);
        } else if kv.key.starts_with(&dp) {
            match codec::decode::<LabletDefinition>(&kv.key, &kv.value) {
                Ok(d) => {
                    ctx.remember(d.clone());
                    snap.definitions.insert(d.id.clone(), d);
                }
                Err(e) => snap.undecodable_record("definition", e.to_string()),
            }
        }
    }
    ctx.decoded.sessions.retain_only(&sessions_seen);
    ctx.decoded.workers.retain_only(&workers_seen);
    let wanted: Vec<String> = snap
        .sessions
        .values()
        .filter(|s| !s.value.state.is_final())
        .map(|s| s.value.definition_id.clone())
        .filter(|id| !snap.definitions.contains_key(id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for id in wanted {
        match ctx.definition(&id).await? {
            Some(d) => {
                snap.definitions.insert(id, d);
            }
            None => snap.problems.push(format!("definition {id} not found")),
        }
    }
    derive(&mut snap);
    for p in &snap.problems {
        tracing::warn!(problem = %p, "state record skipped");
    }
    ctx.metrics
        .observed_records(&snap.undecodable, &snap.problems);
    Ok(snap)
}

/// A record whose inner id is not the id in its key: refused (writes guarded by one key's
/// revision would otherwise update another's record).
fn mismatch(key: &str, inner: &str) -> RuntimeError {
    RuntimeError::Store(crate::store::StoreError::Decode {
        key: key.to_string(),
        message: format!("the record's id {inner:?} is not the id in its key"),
    })
}

/// One top-level string field of a JSON object; for bytes that are not JSON (truncated,
/// say), the first `"field": "value"` found in the text.
fn readable_field(bytes: &[u8], field: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return v.get(field)?.as_str().map(str::to_string);
    }
    let text = String::from_utf8_lossy(bytes);
    let needle = format!("\"{field}\"");
    let after = &text[text.find(&needle)? + needle.len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let value = after.strip_prefix('"')?;
    let end = value.find('"')?;
    Some(value[..end].to_string())
}

/// Decoded values by key and `mod_revision`: a listing decodes only what changed since the
/// last one (a key's `mod_revision` changes with every write, so a cached value is never stale).
pub(crate) struct DecodeCache<T> {
    entries: std::sync::Mutex<std::collections::HashMap<String, (Revision, T)>>,
}

impl<T> Default for DecodeCache<T> {
    fn default() -> Self {
        DecodeCache {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl<T: Clone + serde::de::DeserializeOwned> DecodeCache<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Revision, T)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `kv`, decoded once per revision.
    pub(crate) fn get_or_decode(&self, kv: &crate::store::KeyValue) -> Result<T, RuntimeError> {
        if let Some((rev, v)) = self.lock().get(&kv.key) {
            if *rev == kv.mod_revision {
                return Ok(v.clone());
            }
        }
        let v: T = codec::decode(&kv.key, &kv.value)?;
        self.lock()
            .insert(kv.key.clone(), (kv.mod_revision, v.clone()));
        Ok(v)
    }

    /// Forgets every key not in `keys` (deleted since).
    pub(crate) fn retain_only(&self, keys: &[String]) {
        let mut g = self.lock();
        if g.len() > keys.len() {
            let keep: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
            g.retain(|k, _| keep.contains(k.as_str()));
        }
    }
}

/// The decode caches of one runtime.
#[derive(Default)]
pub(crate) struct Decoded {
    pub sessions: DecodeCache<LabletSession>,
    pub workers: DecodeCache<Worker>,
}

/// Recomputes every worker's `allocated` and port table from its capacity-holding sessions
/// (sessions are the source of truth). A session whose ports clash is reported, not counted twice.
pub(crate) fn derive(snap: &mut StateSnapshot) {
    for w in snap.workers.values_mut() {
        w.value.allocated = Load::default();
        w.value.ports = PortAllocator::new(w.value.ports.range());
    }
    for s in snap.sessions.values() {
        let s = &s.value;
        if !s.holds_capacity() {
            continue;
        }
        let Some(wid) = &s.worker_id else { continue };
        let Some(w) = snap.workers.get_mut(wid) else {
            continue; // the controller requeues sessions of unknown workers
        };
        let Some(def) = snap.definitions.get(&s.definition_id) else {
            snap.problems.push(format!(
                "session {}: definition {} unknown, its load on {wid} is not counted",
                s.id, s.definition_id
            ));
            continue;
        };
        let w = &mut w.value;
        w.allocated = w
            .allocated
            .saturating_add(&Load::new(def.resource_requirements, def.node_count));
        if let Err(e) = w.ports.restore(&s.id, &s.allocated_ports) {
            snap.problems
                .push(format!("session {} on {wid}: {e}", s.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyValue;

    fn kv(key: &str, rev: Revision, value: serde_json::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: 1,
            mod_revision: rev,
            version: 1,
            lease: None,
        }
    }

    #[test]
    fn a_field_is_read_even_from_broken_json() {
        assert_eq!(
            readable_field(br#"{"id":"s","worker_id":"w1"}"#, "worker_id").as_deref(),
            Some("w1")
        );
        assert_eq!(
            readable_field(br#"{"id": "s", "worker_id" : "w2", "#, "worker_id").as_deref(),
            Some("w2")
        );
        assert_eq!(readable_field(br#"{"worker_id": null}"#, "worker_id"), None);
        assert_eq!(readable_field(b"garbage", "worker_id"), None);
    }

    #[test]
    fn decode_cache_follows_the_revision_and_forgets_deleted_keys() {
        let c: DecodeCache<serde_json::Value> = DecodeCache::default();
        let a1 = kv("/a", 5, serde_json::json!({"n": 1}));
        assert_eq!(c.get_or_decode(&a1).unwrap()["n"], 1);
        // Same revision: the cached value (even if the bytes were, impossibly, different).
        let same_rev = kv("/a", 5, serde_json::json!({"n": 99}));
        assert_eq!(c.get_or_decode(&same_rev).unwrap()["n"], 1);
        // A write moves the revision: decoded anew.
        let a2 = kv("/a", 7, serde_json::json!({"n": 2}));
        assert_eq!(c.get_or_decode(&a2).unwrap()["n"], 2);
        let b = kv("/b", 8, serde_json::json!({"n": 3}));
        c.get_or_decode(&b).unwrap();
        c.retain_only(&["/b".to_string()]);
        assert_eq!(c.lock().len(), 1);
        // Undecodable bytes are an error naming the key, and are not cached.
        let bad = KeyValue {
            value: b"{".to_vec(),
            ..kv("/c", 9, serde_json::json!(null))
        };
        let e = c.get_or_decode(&bad).unwrap_err().to_string();
        assert!(e.contains("/c"), "{e}");
        assert_eq!(c.lock().len(), 1);
    }
}
