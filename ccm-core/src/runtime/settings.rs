//! The knobs of the reconcile loops, with the defaults of prerequisites.md §3.1.

use std::time::Duration;

/// Settings of a [`super::Runtime`].
///
/// ```
/// use ccm_core::runtime::RuntimeSettings;
/// let s = RuntimeSettings::default();
/// assert_eq!(s.lead_time, chrono::Duration::minutes(35));
/// assert_eq!(s.keep_alive_every(), std::time::Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    /// Key prefix in the state store (default `/ccm`).
    pub prefix: String,
    /// This process's candidate id in the elections.
    pub candidate: String,
    /// `SCHEDULER_ENABLED`.
    pub scheduler_enabled: bool,
    /// `CONTROLLER_ENABLED`.
    pub controller_enabled: bool,
    /// `SCHEDULER_RECONCILE_INTERVAL_SECONDS` (30 s).
    pub scheduler_interval: Duration,
    /// `CONTROLLER_RECONCILE_INTERVAL_SECONDS` (30 s).
    pub controller_interval: Duration,
    /// `SCHEDULER_LEADER_LEASE_TTL_SECONDS` (15 s); keep-alive every TTL/3.
    pub leader_ttl: Duration,
    /// `SCHEDULER_LEAD_TIME_MINUTES` (35 min): a session is due at `slot start − lead`.
    pub lead_time: chrono::Duration,
    /// A PENDING session whose slot start passed more than this ago expires (5 min).
    pub pending_grace: chrono::Duration,
    /// `CONTROLLER_SCALE_DOWN_GRACE_PERIOD_MINUTES` (30 min): an idle RUNNING worker is drained
    /// after this.
    pub scale_down_grace: chrono::Duration,
    /// Region used for a launch when neither the session nor a rule names one (the template's
    /// first region when `None`).
    pub default_region: Option<String>,
    /// Most bindings retried after a conflict within one reconcile.
    pub max_conflict_retries: u32,
    /// Largest transaction the loops build (etcd's default limit is 128 operations).
    pub max_txn_ops: usize,
    /// How the scheduler ranks workers (bin-packing by default).
    pub scoring: crate::placement::Scoring,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            prefix: "/ccm".into(),
            candidate: "ccm".into(),
            scheduler_enabled: true,
            controller_enabled: true,
            scheduler_interval: Duration::from_secs(30),
            controller_interval: Duration::from_secs(30),
            leader_ttl: Duration::from_secs(15),
            lead_time: chrono::Duration::minutes(35),
            pending_grace: chrono::Duration::minutes(5),
            scale_down_grace: chrono::Duration::minutes(30),
            default_region: None,
            max_conflict_retries: 5,
            max_txn_ops: 128,
            scoring: crate::placement::Scoring::default(),
        }
    }
}

impl RuntimeSettings {
    /// How often a leader refreshes its lease: TTL/3 (at least one millisecond).
    pub fn keep_alive_every(&self) -> Duration {
        (self.leader_ttl / 3).max(Duration::from_millis(1))
    }
}
