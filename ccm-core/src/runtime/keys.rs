//! Where ccm keeps its live state in the [`crate::store::StateStore`].
//!
//! Every key lives under one configurable prefix (default `/ccm`):
//!
//! | key | value |
//! |---|---|
//! | `{prefix}/sessions/{session_id}` | a [`crate::session::LabletSession`] as JSON (the source of truth for bindings) |
//! | `{prefix}/workers/{worker_id}` | a [`crate::worker::Worker`] as JSON, with its allocated load and port table |
//! | `{prefix}/definitions/{definition_id}` | a cached [`crate::definition::LabletDefinition`] as JSON (immutable per id) |
//! | `{prefix}/leader/{election}` | the leader key of `scheduler` / `controller`, attached to the leader's lease |
//!
//! A binding writes the session and its worker in one transaction, guarded by both keys'
//! `mod_revision` and the leader fence (the leader key's `create_revision`).

/// The key layout under one prefix.
///
/// ```
/// use ccm_core::runtime::KeyLayout;
/// let k = KeyLayout::new("/ccm/");
/// assert_eq!(k.session("s1"), "/ccm/sessions/s1");
/// assert_eq!(k.worker("w1"), "/ccm/workers/w1");
/// assert_eq!(k.leader("scheduler"), "/ccm/leader/scheduler");
/// assert_eq!(k.id_of_session("/ccm/sessions/s1"), Some("s1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// A layout under `prefix` (a trailing `/` is dropped; empty means the root).
    pub fn new(prefix: impl Into<String>) -> Self {
        let p: String = prefix.into();
        KeyLayout {
            prefix: p.trim_end_matches('/').to_string(),
        }
    }

    /// The prefix without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Prefix of every session key (ends with `/`).
    pub fn sessions(&self) -> String {
        format!("{}/sessions/", self.prefix)
    }

    /// Prefix of every worker key (ends with `/`).
    pub fn workers(&self) -> String {
        format!("{}/workers/", self.prefix)
    }

    /// Prefix of every cached definition (ends with `/`).
    pub fn definitions(&self) -> String {
        format!("{}/definitions/", self.prefix)
    }

    /// One session.
    pub fn session(&self, id: &str) -> String {
        format!("{}/sessions/{id}", self.prefix)
    }

    /// One worker.
    pub fn worker(&self, id: &str) -> String {
        format!("{}/workers/{id}", self.prefix)
    }

    /// One cached definition.
    pub fn definition(&self, id: &str) -> String {
        format!("{}/definitions/{id}", self.prefix)
    }

    /// The leader key of an election.
    pub fn leader(&self, election: &str) -> String {
        format!("{}/leader/{election}", self.prefix)
    }

    /// The session id of a session key.
    pub fn id_of_session<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("/sessions/")
    }

    /// The worker id of a worker key.
    pub fn id_of_worker<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("/workers/")
    }
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout::new("/ccm")
    }
}
