//! Workers: bare-metal CML hosts made from templates, and the worker state machine.

use crate::license::LicenseType;
use crate::ports::PortAllocator;
use crate::resources::Load;
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use crate::transition::{screaming_display, StateMachine};
use crate::version::CmlVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Worker lifecycle states (domain.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerState {
    /// Requested, not yet provisioning.
    Pending,
    /// The cloud is creating the instance.
    Provisioning,
    /// Booting CML.
    Starting,
    /// Accepts sessions.
    Running,
    /// Keeps its sessions, accepts no new ones.
    Draining,
    /// Shutting down.
    Stopping,
    /// Stopped (can be started again).
    Stopped,
    /// Being deleted.
    Terminating,
    /// Deleted.
    Terminated,
    /// Broke; may be retried.
    Failed,
    /// State not known (lost contact).
    Unknown,
}

use WorkerState as W;

screaming_display!(WorkerState {
    Pending => "PENDING", Provisioning => "PROVISIONING", Starting => "STARTING",
    Running => "RUNNING", Draining => "DRAINING", Stopping => "STOPPING", Stopped => "STOPPED",
    Terminating => "TERMINATING", Terminated => "TERMINATED", Failed => "FAILED", Unknown => "UNKNOWN",
});

/// The worker transition table of domain.md §3, one row per state.
///
/// FAILED is reachable from every live state; DRAINING → RUNNING cancels a drain; UNKNOWN may go
/// anywhere.
pub const WORKER_TRANSITIONS: &[(WorkerState, &[WorkerState])] = &[
    (W::Pending, &[W::Provisioning, W::Failed, W::Unknown]),
    (W::Provisioning, &[W::Starting, W::Failed, W::Unknown]),
    (W::Starting, &[W::Running, W::Failed, W::Unknown]),
    (W::Running, &[W::Draining, W::Failed, W::Unknown]),
    (
        W::Draining,
        &[W::Running, W::Stopping, W::Failed, W::Unknown],
    ),
    (W::Stopping, &[W::Stopped, W::Failed, W::Unknown]),
    (W::Stopped, &[W::Starting, W::Terminating, W::Unknown]),
    (W::Terminating, &[W::Terminated, W::Failed, W::Unknown]),
    (W::Terminated, &[]),
    (W::Failed, &[W::Pending, W::Terminating, W::Unknown]),
    (
        W::Unknown,
        &[
            W::Pending,
            W::Provisioning,
            W::Starting,
            W::Running,
            W::Draining,
            W::Stopping,
            W::Stopped,
            W::Terminating,
            W::Terminated,
            W::Failed,
        ],
    ),
];

impl StateMachine for WorkerState {
    const ENTITY: &'static str = "worker";
    const ALL: &'static [Self] = &[
        W::Pending,
        W::Provisioning,
        W::Starting,
        W::Running,
        W::Draining,
        W::Stopping,
        W::Stopped,
        W::Terminating,
        W::Terminated,
        W::Failed,
        W::Unknown,
    ];
    fn next_states(self) -> &'static [Self] {
        WORKER_TRANSITIONS
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, next)| *next)
            .unwrap_or(&[])
    }
}

impl WorkerState {
    /// States that will (or do) provide capacity without a new launch: booting or running.
    pub fn is_coming_up(self) -> bool {
        matches!(self, W::Pending | W::Provisioning | W::Starting)
    }

    /// States in which the worker is billed (launched and not yet stopped or terminated).
    pub fn is_billed(self) -> bool {
        matches!(
            self,
            W::Pending
                | W::Provisioning
                | W::Starting
                | W::Running
                | W::Draining
                | W::Stopping
                | W::Terminating
        )
    }
}

/// One CML host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// Unique id.
    pub id: String,
    /// Template name it was made from.
    pub template: String,
    /// Cloud region.
    pub region: String,
    /// Current state.
    pub state: WorkerState,
    /// Declared capacity (`nodes` = max CML nodes).
    pub capacity: Load,
    /// Used by capacity-holding sessions (derived from the sessions bound to the worker; see [`crate::runtime::snapshot`]).
    #[serde(default)]
    pub allocated: Load,
    /// Licence it runs with.
    pub license_type: LicenseType,
    /// CML version installed.
    pub cml_version: CmlVersion,
    /// Installed node definitions (e.g. `iosv`, `csr1000v`).
    #[serde(default)]
    pub node_definitions: BTreeSet<String>,
    /// AMI name it booted from.
    pub ami_name: String,
    /// Host ports and who holds them.
    pub ports: PortAllocator,
    /// Launch time.
    #[serde(default)]
    pub launched_at: Option<Timestamp>,
    /// When its last boot began (a launch or a restart of a stopped worker): a booting worker
    /// is ready `startup_minutes` after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_started_at: Option<Timestamp>,
    /// Became RUNNING.
    #[serde(default)]
    pub ready_at: Option<Timestamp>,
    /// Drain started.
    #[serde(default)]
    pub drain_started_at: Option<Timestamp>,
    /// Last time a session started or ended on it.
    #[serde(default)]
    pub last_activity_at: Option<Timestamp>,
    /// Last time it reached STOPPED (the planner's cooldown counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    /// Cloud instance id.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// Why the controller launched it, and in this region (a capacity fallback says which
    /// region refused and why).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub launch_reason: String,
    /// When the controller last recorded an order it gives the cloud (STARTING, STOPPING,
    /// TERMINATING: the intent is written, fenced, before the provider is called). The fleet
    /// resync orders again what the cloud has not carried out some minutes later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_at: Option<Timestamp>,
}

impl Worker {
    /// A worker of `template` in `region`, in `state`, with nothing allocated.
    pub fn from_template(
        id: impl Into<String>,
        template: &WorkerTemplate,
        region: impl Into<String>,
        state: WorkerState,
        cml_version: CmlVersion,
        ami_name: impl Into<String>,
    ) -> Self {
        Worker {
            id: id.into(),
            template: template.name.clone(),
            region: region.into(),
            state,
            capacity: template.load_capacity(),
            allocated: Load::default(),
            license_type: template.license_type,
            cml_version,
            node_definitions: BTreeSet::new(),
            ami_name: ami_name.into(),
            ports: PortAllocator::new(template.port_range),
            launched_at: None,
            boot_started_at: None,
            ready_at: None,
            drain_started_at: None,
            last_activity_at: None,
            stopped_at: None,
            provider_id: None,
            launch_reason: String::new(),
            ordered_at: None,
        }
    }

    /// Capacity not yet allocated.
    pub fn free(&self) -> Load {
        self.capacity.saturating_sub(&self.allocated)
    }

    /// Moves to `to` if the table allows it.
    pub fn transition(
        &mut self,
        to: WorkerState,
    ) -> Result<(), crate::transition::InvalidTransition> {
        self.state = self.state.transition(to)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_state_once() {
        for s in WorkerState::ALL {
            assert_eq!(
                WORKER_TRANSITIONS.iter().filter(|(f, _)| f == s).count(),
                1,
                "{s}"
            );
        }
    }

    #[test]
    fn decided_transitions() {
        assert!(W::Draining.can_become(W::Running), "cancel drain");
        assert!(W::Failed.can_become(W::Pending), "retry");
        assert!(!W::Running.can_become(W::Stopped));
        assert!(!W::Terminated.can_become(W::Running));
        for s in [
            W::Pending,
            W::Provisioning,
            W::Starting,
            W::Running,
            W::Draining,
            W::Stopping,
        ] {
            assert!(s.can_become(W::Failed), "{s} -> FAILED");
        }
        for s in WorkerState::ALL {
            if *s != W::Unknown {
                assert!(W::Unknown.can_become(*s));
            }
        }
        let e = W::Stopped.transition(W::Running).unwrap_err();
        assert_eq!((e.from.as_str(), e.to.as_str()), ("STOPPED", "RUNNING"));
    }
}
