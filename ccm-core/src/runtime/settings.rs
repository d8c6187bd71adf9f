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
    /// Lab instantiation (15 min, part of the lead time): a session's lab is instantiated on
    /// its worker in the last `instantiation_time` before its slot start, so the session holds
    /// capacity from then on and its worker must be up by then.
    pub instantiation_time: chrono::Duration,
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
    /// `CCM_MAX_PASS_MINUTES` (15 min): the longest one pass of a loop may take. A pass still
    /// running after this is stalled (a call that never answers): the loop ends, and the
    /// runtime resigns every leadership and stops, as when a loop panics — never a leader that
    /// renews its lease and does nothing.
    pub max_pass_duration: chrono::Duration,
    /// Largest transaction the loops build (etcd's default limit is 128 operations).
    pub max_txn_ops: usize,
    /// How the scheduler ranks workers (bin-packing by default).
    pub scoring: crate::placement::Scoring,
    /// How the controller scales the fleet (the time-aware planner by default).
    pub scaling: ScalingMode,
    /// `CONTROLLER_COOLDOWN_MINUTES` (10 min): a stopped worker is not started again sooner.
    pub cooldown: chrono::Duration,
    /// `CONTROLLER_MIN_WARM_WORKERS` (0): workers never scaled down, however idle.
    pub min_warm_workers: u32,
    /// `CONTROLLER_PLAN_HORIZON_HOURS` (24 h): how far ahead the controller plans.
    pub plan_horizon: chrono::Duration,
    /// How often the controller reads every instance of the provider against the worker
    /// records (5 min; also at once on a new leadership term and after a provider event it
    /// could not apply): a lost event, an order the cloud never carried out or a launch that
    /// never reached it is found here.
    pub fleet_resync_interval: chrono::Duration,
    /// `CONTROLLER_SESSION_RETENTION_HOURS`: a session ended longer ago than this is archived
    /// to the spec store's history and deleted from the state store (`None` = kept; the
    /// default here, 24 h in `ccm serve`).
    pub session_retention: Option<chrono::Duration>,
    /// `LABLET_LAB_LOOP_ENABLED` (true): run the lab loop (when the runtime has a
    /// [`crate::store::LabRuntime`]).
    pub lab_enabled: bool,
    /// `LABLET_RECONCILE_INTERVAL_SECONDS` (10 s): the lab loop's re-list interval.
    pub lab_interval: Duration,
    /// `LABLET_RETRY_BACKOFF_SECONDS` (10 s): the first back-off after a failed lab step
    /// (doubled after each further failure).
    pub lab_retry_backoff: chrono::Duration,
    /// `LABLET_RETRY_BACKOFF_MAX_SECONDS` (300 s): the longest back-off.
    pub lab_retry_backoff_max: chrono::Duration,
    /// `LABLET_MAX_ATTEMPTS` (5): failed attempts of one lab step before the session is
    /// requeued (still SCHEDULED) or terminated (later), with the reason.
    pub lab_max_attempts: u32,
    /// `LABLET_BOOT_TIMEOUT_MINUTES` (30 min): an instantiation not READY this long after it
    /// began fails.
    pub lab_boot_timeout: chrono::Duration,
    /// `CML_IMPORT_TIMEOUT_SECONDS` (180 s): how long an import may take; a new leader waits
    /// this long after an import it did not see finish before it imports again.
    pub lab_import_timeout: chrono::Duration,
    /// How long the lab loop waits for a stop or wipe CML took to show in the lab's state
    /// (3 min) before it orders it again.
    pub lab_order_timeout: chrono::Duration,
    /// `LABLET_KEEP_WIPED_LABS_PER_WORKER` (4): wiped labs kept on a worker for reuse; a lab
    /// wiped beyond this is deleted.
    pub lab_keep_per_worker: usize,
    /// `LABLET_CML_URL_TEMPLATE` (`https://{worker}`): a worker's CML base URL; `{worker}`
    /// becomes the worker id, `{provider_id}` the cloud instance id.
    pub lab_url_template: String,
    /// `CCM_EC2_ORPHAN_POLICY` (adopt): what the controller does, when it takes the lead, with
    /// an instance tagged as ccm's that has no worker record.
    pub orphan_policy: OrphanPolicy,
}

/// What to do with an instance the provider runs for ccm that has no worker record (a launch
/// whose record was lost, a fleet from before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrphanPolicy {
    /// Write a record for it: it joins the fleet.
    #[default]
    Adopt,
    /// Terminate it.
    Terminate,
    /// Leave it alone (logged).
    Ignore,
}

/// How the controller decides what to launch, drain and stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScalingMode {
    /// Run [`crate::planner::plan`] over the horizon every pass and carry out the actions that
    /// are due (launch `lead` before the first slot, restart stopped workers, drain when nothing
    /// is planned within the grace, warm minimum, cooldown).
    #[default]
    Planner,
    /// The reactive rule of the original: launch only for due sessions that fit nowhere, drain
    /// workers idle for the grace (kept for comparison).
    Reactive,
}

impl std::fmt::Display for ScalingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScalingMode::Planner => "planner",
            ScalingMode::Reactive => "reactive",
        })
    }
}

impl std::str::FromStr for ScalingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "planner" => Ok(ScalingMode::Planner),
            "reactive" => Ok(ScalingMode::Reactive),
            other => Err(format!("expected planner or reactive, got {other:?}")),
        }
    }
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
            instantiation_time: chrono::Duration::minutes(15),
            pending_grace: chrono::Duration::minutes(5),
            scale_down_grace: chrono::Duration::minutes(30),
            default_region: None,
            max_conflict_retries: 5,
            max_pass_duration: chrono::Duration::minutes(15),
            max_txn_ops: 128,
            scoring: crate::placement::Scoring::default(),
            scaling: ScalingMode::Planner,
            cooldown: chrono::Duration::minutes(10),
            min_warm_workers: 0,
            plan_horizon: chrono::Duration::hours(24),
            fleet_resync_interval: chrono::Duration::minutes(5),
            session_retention: None,
            lab_enabled: true,
            lab_interval: Duration::from_secs(10),
            lab_retry_backoff: chrono::Duration::seconds(10),
            lab_retry_backoff_max: chrono::Duration::seconds(300),
            lab_max_attempts: 5,
            lab_boot_timeout: chrono::Duration::minutes(30),
            lab_import_timeout: chrono::Duration::seconds(180),
            lab_order_timeout: chrono::Duration::minutes(3),
            lab_keep_per_worker: 4,
            lab_url_template: "https://{worker}".into(),
            orphan_policy: OrphanPolicy::Adopt,
        }
    }
}

impl RuntimeSettings {
    /// Lab instantiation time, at most the lead time (and never negative).
    pub fn instantiation(&self) -> chrono::Duration {
        self.instantiation_time.clamp(
            chrono::Duration::zero(),
            self.lead_time.max(chrono::Duration::zero()),
        )
    }

    /// The part of the lead time left for booting a worker: `lead_time − instantiation`.
    pub fn boot_lead(&self) -> chrono::Duration {
        self.lead_time - self.instantiation()
    }

    /// The back-off after the `attempts`-th failure of a lab step: `lab_retry_backoff ×
    /// 2^(attempts−1)`, at most `lab_retry_backoff_max`.
    ///
    /// ```
    /// let s = ccm_core::runtime::RuntimeSettings::default();
    /// assert_eq!(s.lab_backoff(1), chrono::Duration::seconds(10));
    /// assert_eq!(s.lab_backoff(3), chrono::Duration::seconds(40));
    /// assert_eq!(s.lab_backoff(60), chrono::Duration::seconds(300));
    /// ```
    pub fn lab_backoff(&self, attempts: u32) -> chrono::Duration {
        let shift = attempts.saturating_sub(1).min(30);
        let base = self.lab_retry_backoff.max(chrono::Duration::zero());
        base.checked_mul(1i32 << shift)
            .unwrap_or(self.lab_retry_backoff_max)
            .min(self.lab_retry_backoff_max)
    }

    /// The CML endpoint of a worker, from [`RuntimeSettings::lab_url_template`].
    pub fn lab_endpoint(&self, worker: &crate::worker::Worker) -> crate::store::LabEndpoint {
        let url = self
            .lab_url_template
            .replace("{worker}", &worker.id)
            .replace("{provider_id}", worker.provider_id.as_deref().unwrap_or(""));
        crate::store::LabEndpoint::new(worker.id.clone(), url)
    }

    /// How often a leader refreshes its lease: TTL/3 (at least one millisecond).
    pub fn keep_alive_every(&self) -> Duration {
        (self.leader_ttl / 3).max(Duration::from_millis(1))
    }

    /// The planner policy these settings describe (grace, cooldown, warm minimum, horizon;
    /// whole minutes and hours, rounded up), for the planner's input as
    /// [`super::plan_input`] builds it: there a session occupies its worker from the start of
    /// its lab's instantiation (`slot start − instantiation_time`), so the policy's lead is the
    /// rest of the lead time (`lead_time − instantiation_time`, the worker's boot) and a worker
    /// is still launched `lead_time` before the slot.
    ///
    /// ```
    /// let p = ccm_core::runtime::RuntimeSettings::default().planner_policy();
    /// assert_eq!((p.lead_minutes, p.grace_minutes, p.cooldown_minutes, p.horizon_hours), (20, 30, 10, 24));
    /// ```
    pub fn planner_policy(&self) -> crate::planner::Policy {
        let minutes = |d: chrono::Duration| {
            u32::try_from((d.num_seconds().max(0) + 59) / 60).unwrap_or(u32::MAX)
        };
        crate::planner::Policy {
            horizon_hours: minutes(self.plan_horizon).div_ceil(60).max(1),
            lead_minutes: minutes(self.boot_lead()),
            grace_minutes: minutes(self.scale_down_grace),
            cooldown_minutes: minutes(self.cooldown),
            min_warm_workers: self.min_warm_workers,
            ..crate::planner::Policy::default()
        }
    }
}
