//! The knobs of the planner and of the baseline policy it is compared with.

use serde::{Deserialize, Serialize};

/// Planner and autoscaler settings (all durations in whole minutes or seconds as named).
///
/// ```
/// let p = ccm_core::planner::Policy::default();
/// assert_eq!(p.lead_minutes, 35);
/// assert_eq!(p.keep_idle_secs(20 * 60), 45 * 60);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// How far ahead the plan looks (sessions starting later are left for a later plan).
    pub horizon_hours: u32,
    /// `SCHEDULER_LEAD_TIME_MINUTES`: boot + lab instantiation; a worker is launched this long
    /// before its first session (at least the template's `startup_minutes`).
    pub lead_minutes: u32,
    /// `CONTROLLER_SCALE_DOWN_GRACE_PERIOD_MINUTES`: a worker with a session planned within
    /// this window is never drained.
    pub grace_minutes: u32,
    /// A stopped worker is not relaunched sooner than this after it stopped (anti-flapping).
    pub cooldown_minutes: u32,
    /// Workers kept running through the whole horizon, however idle.
    pub min_warm_workers: u32,
    /// Baseline: reconcile cycle of the original scheduler, in seconds.
    pub cycle_seconds: u32,
    /// Baseline: idle minutes after which the original stops a worker.
    pub baseline_idle_stop_minutes: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            horizon_hours: 24,
            lead_minutes: 35,
            grace_minutes: 30,
            cooldown_minutes: 10,
            min_warm_workers: 0,
            cycle_seconds: 30,
            baseline_idle_stop_minutes: 30,
        }
    }
}

impl Policy {
    /// Lead time in seconds for a template that boots in `startup_secs`.
    pub fn lead_secs(&self, startup_secs: i64) -> i64 {
        (i64::from(self.lead_minutes) * 60).max(startup_secs)
    }

    /// Longest idle gap (seconds) a worker is kept running through: the grace period, or the
    /// time a stop + relaunch needs (lead + cooldown), whichever is longer. Longer gaps are
    /// cheaper to stop and relaunch.
    pub fn keep_idle_secs(&self, startup_secs: i64) -> i64 {
        (i64::from(self.grace_minutes) * 60)
            .max(self.lead_secs(startup_secs) + i64::from(self.cooldown_minutes) * 60)
    }

    /// The horizon in seconds.
    pub fn horizon_secs(&self) -> i64 {
        i64::from(self.horizon_hours) * 3600
    }
}
