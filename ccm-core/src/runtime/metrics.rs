//! Counters of the loops, for `/metrics` and the demo report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Live counters shared by the loops (cheap to update from any task).
#[derive(Debug, Default)]
pub struct Metrics {
    bindings: AtomicU64,
    expired: AtomicU64,
    requeued: AtomicU64,
    conflicts: AtomicU64,
    fence_rejections: AtomicU64,
    launches: AtomicU64,
    launch_failures: AtomicU64,
    capacity_refusals: AtomicU64,
    adopted: AtomicU64,
    drains: AtomicU64,
    stops: AtomicU64,
    workers_lost: AtomicU64,
    reorders: AtomicU64,
    events_dropped: AtomicU64,
    scheduler_runs: AtomicU64,
    controller_runs: AtomicU64,
    scheduler_nanos: AtomicU64,
    controller_nanos: AtomicU64,
    scheduler_leader: AtomicBool,
    controller_leader: AtomicBool,
    unschedulable: Mutex<BTreeMap<String, u64>>,
    plans: AtomicU64,
    unservable: AtomicU64,
    plan: Mutex<Option<super::PlanSummary>>,
    records: Mutex<(BTreeMap<String, u64>, Vec<String>)>,
    lab_imports: AtomicU64,
    lab_reuses: AtomicU64,
    lab_adoptions: AtomicU64,
    lab_deletes: AtomicU64,
    lab_retries: AtomicU64,
    lab_runs: AtomicU64,
    lab_nanos: AtomicU64,
    lab_leader: AtomicBool,
    lab_failures: Mutex<BTreeMap<String, u64>>,
    lab_phases: Mutex<BTreeMap<String, PhaseDuration>>,
}

/// Durations of one session phase measured by the lab loop (virtual or real clock seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseDuration {
    /// Phases measured.
    pub count: u64,
    /// Their total length in seconds.
    pub sum_seconds: f64,
    /// The longest, in seconds.
    pub max_seconds: f64,
}

/// Most problems kept for `/readyz` (the rest are counted in the metric).
pub const MAX_PROBLEMS_KEPT: usize = 20;

/// A copy of every counter at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Sessions bound (PENDING → SCHEDULED).
    pub bindings_total: u64,
    /// PENDING sessions expired past the grace.
    pub expired_total: u64,
    /// Sessions sent back to PENDING because their worker was lost.
    pub requeued_total: u64,
    /// Transactions that lost a compare on a session or worker and were retried.
    pub conflicts_total: u64,
    /// Writes refused because this process was no longer the leader.
    pub fence_rejections_total: u64,
    /// Workers launched.
    pub launches_total: u64,
    /// Launches the provider refused.
    pub launch_failures_total: u64,
    /// Launches refused for lack of capacity in the region (the template's next region is
    /// tried).
    pub launch_capacity_refusals_total: u64,
    /// Instances tagged as ccm's found without a worker record and adopted.
    pub workers_adopted_total: u64,
    /// Drains started.
    pub drains_total: u64,
    /// Stops requested.
    pub stops_total: u64,
    /// Workers lost (FAILED or TERMINATED unexpectedly).
    pub workers_lost_total: u64,
    /// Orders (start, stop, terminate) given to the cloud again by the fleet resync.
    pub provider_reorders_total: u64,
    /// Events the sink dropped.
    pub events_dropped_total: u64,
    /// Scheduler passes run as leader.
    pub scheduler_runs: u64,
    /// Controller passes run as leader.
    pub controller_runs: u64,
    /// Wall time of the last scheduler pass.
    pub scheduler_last_duration: Duration,
    /// Wall time of the last controller pass.
    pub controller_last_duration: Duration,
    /// Whether this process leads the scheduler.
    pub scheduler_leader: bool,
    /// Whether this process leads the controller.
    pub controller_leader: bool,
    /// Due sessions left unbound in a pass, by the filter that rejected most workers
    /// (`no_workers` when there was none to try).
    pub unschedulable_by_reason: BTreeMap<String, u64>,
    /// Plans made by the controller.
    pub plans_total: u64,
    /// Sessions a plan could not serve (each counted, and warned about, once).
    pub unservable_sessions_total: u64,
    /// The controller's last plan (cost, lower bound, workers, unserved sessions).
    pub last_plan: Option<super::PlanSummary>,
    /// Undecodable records in the last listing, by kind (`session`, `worker`, `definition`).
    pub undecodable_records: BTreeMap<String, u64>,
    /// The problems of the last listing (at most [`MAX_PROBLEMS_KEPT`]), each naming the key.
    pub problems: Vec<String>,
    /// Labs imported fresh by the lab loop.
    pub lab_imports_total: u64,
    /// Wiped labs of the same definition reused instead of an import.
    pub lab_reuses_total: u64,
    /// Labs found again by their title after a lost answer or a failover (no second import).
    pub lab_adoptions_total: u64,
    /// Wiped labs deleted beyond the per-worker keep limit.
    pub lab_deletes_total: u64,
    /// Failed lab steps that were retried after a back-off.
    pub lab_retries_total: u64,
    /// Sessions given up by the lab loop (requeued or ended), by the step that failed.
    pub lab_failures_by_step: BTreeMap<String, u64>,
    /// Phase durations (`instantiation`: INSTANTIATING → READY, `ready`: READY → RUNNING,
    /// `running`: RUNNING → STOPPING, `teardown`: STOPPING → STOPPED), by phase.
    pub lab_phase_seconds: BTreeMap<String, PhaseDuration>,
    /// Lab loop passes run as leader.
    pub lab_runs: u64,
    /// Wall time of the last lab loop pass.
    pub lab_last_duration: Duration,
    /// Whether this process leads the lab loop.
    pub lab_leader: bool,
}

impl MetricsSnapshot {
    /// Reused labs over all labs acquired (reused + imported), or `None` before the first.
    pub fn lab_reuse_rate(&self) -> Option<f64> {
        let all = self.lab_reuses_total.saturating_add(self.lab_imports_total);
        (all > 0).then(|| self.lab_reuses_total as f64 / all as f64)
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Metrics {
    pub(crate) fn bound(&self, n: u64) {
        add(&self.bindings, n);
    }
    pub(crate) fn expired(&self, n: u64) {
        add(&self.expired, n);
    }
    pub(crate) fn requeued(&self, n: u64) {
        add(&self.requeued, n);
    }
    pub(crate) fn conflict(&self) {
        add(&self.conflicts, 1);
    }
    pub(crate) fn fence_rejected(&self) {
        add(&self.fence_rejections, 1);
    }
    pub(crate) fn launched(&self) {
        add(&self.launches, 1);
    }
    pub(crate) fn launch_failed(&self) {
        add(&self.launch_failures, 1);
    }
    pub(crate) fn capacity_refused(&self) {
        add(&self.capacity_refusals, 1);
    }
    pub(crate) fn adopted(&self) {
        add(&self.adopted, 1);
    }
    pub(crate) fn drained(&self) {
        add(&self.drains, 1);
    }
    pub(crate) fn stopped(&self) {
        add(&self.stops, 1);
    }
    pub(crate) fn worker_lost(&self) {
        add(&self.workers_lost, 1);
    }
    pub(crate) fn reordered(&self) {
        add(&self.reorders, 1);
    }
    pub(crate) fn event_dropped(&self) {
        add(&self.events_dropped, 1);
    }
    pub(crate) fn unschedulable(&self, reason: &str) {
        let mut g = self.unschedulable.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry(reason.to_string()).or_default() += 1;
    }
    pub(crate) fn scheduler_pass(&self, d: Duration) {
        add(&self.scheduler_runs, 1);
        self.scheduler_nanos.store(nanos(d), Ordering::Relaxed);
    }
    pub(crate) fn controller_pass(&self, d: Duration) {
        add(&self.controller_runs, 1);
        self.controller_nanos.store(nanos(d), Ordering::Relaxed);
    }
    pub(crate) fn planned(&self, summary: &super::PlanSummary) {
        add(&self.plans, 1);
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary.clone());
    }
    pub(crate) fn unservable(&self, n: u64) {
        add(&self.unservable, n);
    }
    pub(crate) fn last_plan_cost(&self) -> Option<f64> {
        self.plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.cost_usd)
    }
    pub(crate) fn observed_records(
        &self,
        undecodable: &BTreeMap<String, u64>,
        problems: &[String],
    ) {
        let mut g = self.records.lock().unwrap_or_else(|p| p.into_inner());
        g.0.clone_from(undecodable);
        g.1 = problems.iter().take(MAX_PROBLEMS_KEPT).cloned().collect();
    }
    pub(crate) fn lab_imported(&self) {
        add(&self.lab_imports, 1);
    }
    pub(crate) fn lab_reused(&self) {
        add(&self.lab_reuses, 1);
    }
    pub(crate) fn lab_adopted(&self) {
        add(&self.lab_adoptions, 1);
    }
    pub(crate) fn lab_deleted(&self) {
        add(&self.lab_deletes, 1);
    }
    pub(crate) fn lab_retried(&self) {
        add(&self.lab_retries, 1);
    }
    pub(crate) fn lab_failed(&self, step: &str) {
        *self
            .lab_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(step.to_string())
            .or_default() += 1;
    }
    pub(crate) fn lab_phase(&self, phase: &str, d: chrono::Duration) {
        let secs = d.num_milliseconds().max(0) as f64 / 1000.0;
        let mut g = self.lab_phases.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.entry(phase.to_string()).or_default();
        e.count = e.count.saturating_add(1);
        e.sum_seconds += secs;
        e.max_seconds = e.max_seconds.max(secs);
    }
    pub(crate) fn lab_pass(&self, d: Duration) {
        add(&self.lab_runs, 1);
        self.lab_nanos.store(nanos(d), Ordering::Relaxed);
    }
    pub(crate) fn set_leader(&self, election: &str, leading: bool) {
        let flag = if election == super::CONTROLLER {
            &self.controller_leader
        } else if election == super::LAB {
            &self.lab_leader
        } else {
            &self.scheduler_leader
        };
        flag.store(leading, Ordering::Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let records = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        MetricsSnapshot {
            bindings_total: g(&self.bindings),
            expired_total: g(&self.expired),
            requeued_total: g(&self.requeued),
            conflicts_total: g(&self.conflicts),
            fence_rejections_total: g(&self.fence_rejections),
            launches_total: g(&self.launches),
            launch_failures_total: g(&self.launch_failures),
            launch_capacity_refusals_total: g(&self.capacity_refusals),
            workers_adopted_total: g(&self.adopted),
            drains_total: g(&self.drains),
            stops_total: g(&self.stops),
            workers_lost_total: g(&self.workers_lost),
            provider_reorders_total: g(&self.reorders),
            events_dropped_total: g(&self.events_dropped),
            scheduler_runs: g(&self.scheduler_runs),
            controller_runs: g(&self.controller_runs),
            scheduler_last_duration: Duration::from_nanos(g(&self.scheduler_nanos)),
            controller_last_duration: Duration::from_nanos(g(&self.controller_nanos)),
            scheduler_leader: self.scheduler_leader.load(Ordering::Relaxed),
            controller_leader: self.controller_leader.load(Ordering::Relaxed),
            unschedulable_by_reason: self
                .unschedulable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            plans_total: g(&self.plans),
            unservable_sessions_total: g(&self.unservable),
            last_plan: self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            undecodable_records: records.0,
            problems: records.1,
            lab_imports_total: g(&self.lab_imports),
            lab_reuses_total: g(&self.lab_reuses),
            lab_adoptions_total: g(&self.lab_adoptions),
            lab_deletes_total: g(&self.lab_deletes),
            lab_retries_total: g(&self.lab_retries),
            lab_failures_by_step: self
                .lab_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            lab_phase_seconds: self
                .lab_phases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            lab_runs: g(&self.lab_runs),
            lab_last_duration: Duration::from_nanos(g(&self.lab_nanos)),
            lab_leader: self.lab_leader.load(Ordering::Relaxed),
        }
    }
}

impl MetricsSnapshot {
    /// The counters in the Prometheus text exposition format (metric names start with `ccm_`).
    ///
    /// ```
    /// let m = ccm_core::runtime::MetricsSnapshot { bindings_total: 3, ..Default::default() };
    /// assert!(m.to_prometheus().contains("ccm_bindings_total 3\n"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP ccm_{name} {help}\n# TYPE ccm_{name} counter\nccm_{name} {v}\n"
            );
        };
        counter(
            "unservable_sessions_total",
            "Sessions a capacity plan could not serve (each counted once).",
            self.unservable_sessions_total,
        );
        counter(
            "bindings_total",
            "Sessions bound to a worker.",
            self.bindings_total,
        );
        counter(
            "expired_total",
            "PENDING sessions expired past the grace.",
            self.expired_total,
        );
        counter(
            "requeued_total",
            "Sessions requeued after their worker was lost.",
            self.requeued_total,
        );
        counter(
            "txn_conflicts_total",
            "Transactions retried after a compare failed.",
            self.conflicts_total,
        );
        counter(
            "fence_rejections_total",
            "Writes refused because leadership was lost.",
            self.fence_rejections_total,
        );
        counter("launches_total", "Workers launched.", self.launches_total);
        counter(
            "launch_failures_total",
            "Launches the provider refused.",
            self.launch_failures_total,
        );
        counter(
            "launch_capacity_refusals_total",
            "Launches refused for lack of capacity in the region.",
            self.launch_capacity_refusals_total,
        );
        counter(
            "workers_adopted_total",
            "Instances tagged as ccm's adopted without a worker record.",
            self.workers_adopted_total,
        );
        counter("drains_total", "Worker drains started.", self.drains_total);
        counter("stops_total", "Worker stops requested.", self.stops_total);
        counter(
            "workers_lost_total",
            "Workers lost unexpectedly.",
            self.workers_lost_total,
        );
        counter(
            "provider_reorders_total",
            "Orders given to the cloud again because it had not carried them out.",
            self.provider_reorders_total,
        );
        counter(
            "events_dropped_total",
            "Events the sink dropped.",
            self.events_dropped_total,
        );
        counter(
            "lab_imports_total",
            "Labs imported fresh by the lab loop.",
            self.lab_imports_total,
        );
        counter(
            "lab_reuses_total",
            "Wiped labs reused instead of an import.",
            self.lab_reuses_total,
        );
        counter(
            "lab_adoptions_total",
            "Labs found again by title after a lost answer or failover.",
            self.lab_adoptions_total,
        );
        counter(
            "lab_deletes_total",
            "Wiped labs deleted beyond the per-worker keep limit.",
            self.lab_deletes_total,
        );
        counter(
            "lab_retries_total",
            "Failed lab steps retried after a back-off.",
            self.lab_retries_total,
        );
        let _ = write!(
            out,
            "# HELP ccm_lab_failures_total Sessions given up by the lab loop, by failed step.\n# TYPE ccm_lab_failures_total counter\n"
        );
        for (step, n) in &self.lab_failures_by_step {
            let _ = writeln!(out, "ccm_lab_failures_total{{step=\"{step}\"}} {n}");
        }
        let _ = write!(
            out,
            "# HELP ccm_session_phase_seconds Time sessions spent in each lab phase.\n# TYPE ccm_session_phase_seconds summary\n"
        );
        for (phase, p) in &self.lab_phase_seconds {
            let _ = writeln!(
                out,
                "ccm_session_phase_seconds_sum{{phase=\"{phase}\"}} {}\nccm_session_phase_seconds_count{{phase=\"{phase}\"}} {}",
                p.sum_seconds, p.count
            );
        }
        let _ = write!(
            out,
            "# HELP ccm_unschedulable_total Due sessions left unbound, by reason.\n# TYPE ccm_unschedulable_total counter\n"
        );
        for (reason, n) in &self.unschedulable_by_reason {
            let _ = writeln!(out, "ccm_unschedulable_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = write!(
            out,
            "# HELP ccm_undecodable_records Records of the last listing that could not be decoded (left alone), by kind.\n# TYPE ccm_undecodable_records gauge\n"
        );
        for kind in ["definition", "session", "worker"] {
            let n = self.undecodable_records.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "ccm_undecodable_records{{kind=\"{kind}\"}} {n}");
        }
        let _ = write!(
            out,
            "# HELP ccm_loop_runs_total Reconcile passes run as leader.\n# TYPE ccm_loop_runs_total counter\nccm_loop_runs_total{{loop=\"scheduler\"}} {}\nccm_loop_runs_total{{loop=\"controller\"}} {}\nccm_loop_runs_total{{loop=\"lab\"}} {}\n",
            self.scheduler_runs, self.controller_runs, self.lab_runs
        );
        let _ = write!(
            out,
            "# HELP ccm_loop_last_duration_seconds Wall time of the last pass.\n# TYPE ccm_loop_last_duration_seconds gauge\nccm_loop_last_duration_seconds{{loop=\"scheduler\"}} {}\nccm_loop_last_duration_seconds{{loop=\"controller\"}} {}\nccm_loop_last_duration_seconds{{loop=\"lab\"}} {}\n",
            self.scheduler_last_duration.as_secs_f64(),
            self.controller_last_duration.as_secs_f64(),
            self.lab_last_duration.as_secs_f64()
        );
        let _ = write!(
            out,
            "# HELP ccm_is_leader Whether this process leads the loop.\n# TYPE ccm_is_leader gauge\nccm_is_leader{{loop=\"scheduler\"}} {}\nccm_is_leader{{loop=\"controller\"}} {}\nccm_is_leader{{loop=\"lab\"}} {}\n",
            u8::from(self.scheduler_leader),
            u8::from(self.controller_leader),
            u8::from(self.lab_leader)
        );
        let _ = write!(
            out,
            "# HELP ccm_plans_total Capacity plans made by the controller.\n# TYPE ccm_plans_total counter\nccm_plans_total {}\n",
            self.plans_total
        );
        if let Some(p) = &self.last_plan {
            let mut gauge = |name: &str, help: &str, v: f64| {
                let _ = write!(
                    out,
                    "# HELP ccm_{name} {help}\n# TYPE ccm_{name} gauge\nccm_{name} {v}\n"
                );
            };
            gauge(
                "plan_cost_usd",
                "Billed cost of the last plan over its horizon.",
                p.cost_usd,
            );
            gauge(
                "plan_lower_bound_usd",
                "Lower bound of the cost of the last plan's sessions.",
                p.lower_bound_usd,
            );
            gauge(
                "plan_worker_hours",
                "Billed worker-hours of the last plan.",
                p.worker_hours,
            );
            gauge(
                "plan_workers",
                "Workers the last plan uses.",
                p.workers as f64,
            );
            gauge(
                "plan_sessions_assigned",
                "Sessions the last plan places.",
                p.assigned as f64,
            );
            gauge(
                "plan_sessions_unserved",
                "Sessions the last plan cannot serve.",
                p.unserved.len() as f64,
            );
            gauge(
                "plan_duration_seconds",
                "Wall time of the last planning.",
                p.duration.as_secs_f64(),
            );
            let _ = write!(
                out,
                "# HELP ccm_plan_unavailable_regions Template regions the last plan left out after a capacity refusal.\n# TYPE ccm_plan_unavailable_regions gauge\nccm_plan_unavailable_regions {}\n",
                p.unavailable.len()
            );
            for (t, r, _) in &p.unavailable {
                let _ = writeln!(
                    out,
                    "ccm_plan_unavailable_region{{template=\"{}\",region=\"{}\"}} 1",
                    label(t),
                    label(r)
                );
            }
        }
        out
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
