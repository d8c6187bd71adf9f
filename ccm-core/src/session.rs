//! Lablet sessions: one booked run of a definition, and the session state machine.

use crate::timeslot::{Timeslot, Timestamp};
use crate::transition::{screaming_display, InvalidTransition, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Session lifecycle states (domain.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionState {
    /// Booked, not yet bound to a worker.
    Pending,
    /// Bound to a worker; holds capacity and ports.
    Scheduled,
    /// The lab is being created on the worker.
    Instantiating,
    /// Lab ready for the owner.
    Ready,
    /// The owner is working.
    Running,
    /// Results are being collected.
    Collecting,
    /// Results are being graded.
    Grading,
    /// The lab is being stopped.
    Stopping,
    /// Lab stopped.
    Stopped,
    /// Results archived.
    Archived,
    /// Time ran out.
    Expired,
    /// Ended for good.
    Terminated,
}

use SessionState as S;

screaming_display!(SessionState {
    Pending => "PENDING", Scheduled => "SCHEDULED", Instantiating => "INSTANTIATING",
    Ready => "READY", Running => "RUNNING", Collecting => "COLLECTING", Grading => "GRADING",
    Stopping => "STOPPING", Stopped => "STOPPED", Archived => "ARCHIVED", Expired => "EXPIRED",
    Terminated => "TERMINATED",
});

/// The session transition table of domain.md §3, one row per state.
pub const SESSION_TRANSITIONS: &[(SessionState, &[SessionState])] = &[
    (S::Pending, &[S::Scheduled, S::Expired, S::Terminated]),
    (
        S::Scheduled,
        &[S::Instantiating, S::Pending, S::Expired, S::Terminated],
    ),
    (S::Instantiating, &[S::Ready, S::Expired, S::Terminated]),
    (S::Ready, &[S::Running, S::Expired, S::Terminated]),
    (
        S::Running,
        &[S::Collecting, S::Stopping, S::Expired, S::Terminated],
    ),
    (
        S::Collecting,
        &[S::Grading, S::Stopping, S::Expired, S::Terminated],
    ),
    (S::Grading, &[S::Stopping, S::Expired, S::Terminated]),
    (S::Stopping, &[S::Stopped, S::Archived, S::Terminated]),
    (S::Stopped, &[S::Archived, S::Terminated]),
    (S::Archived, &[S::Terminated]),
    (S::Expired, &[S::Stopping, S::Terminated]),
    (S::Terminated, &[]),
];

impl StateMachine for SessionState {
    const ENTITY: &'static str = "session";
    const ALL: &'static [Self] = &[
        S::Pending,
        S::Scheduled,
        S::Instantiating,
        S::Ready,
        S::Running,
        S::Collecting,
        S::Grading,
        S::Stopping,
        S::Stopped,
        S::Archived,
        S::Expired,
        S::Terminated,
    ];
    fn next_states(self) -> &'static [Self] {
        SESSION_TRANSITIONS
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, next)| *next)
            .unwrap_or(&[])
    }
}

impl SessionState {
    /// Whether a session in this state holds capacity and ports on its worker
    /// (SCHEDULED up to, not including, STOPPING).
    ///
    /// `EXPIRED` holds capacity only when it was reached from a bound state; use
    /// [`LabletSession::holds_capacity`] for that distinction.
    pub fn holds_capacity(self) -> bool {
        matches!(
            self,
            S::Scheduled | S::Instantiating | S::Ready | S::Running | S::Collecting | S::Grading
        )
    }

    /// True for states with no way back to work (STOPPED, ARCHIVED, TERMINATED).
    pub fn is_final(self) -> bool {
        matches!(self, S::Stopped | S::Archived | S::Terminated)
    }
}

/// Most entries kept in a session's `state_history` (the oldest are dropped; the whole record
/// goes to the spec store's history when the session is archived).
pub const MAX_STATE_HISTORY: usize = 64;

/// One entry of a session's state history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// Previous state.
    pub from: SessionState,
    /// New state.
    pub to: SessionState,
    /// When.
    pub at: Timestamp,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A booked run of a lablet definition for one owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabletSession {
    /// Unique id.
    pub id: String,
    /// The definition's id.
    pub definition_id: String,
    /// The definition version pinned at booking time.
    pub definition_version: String,
    /// Current state.
    pub state: SessionState,
    /// Every transition so far.
    #[serde(default)]
    pub state_history: Vec<StateChange>,
    /// The worker it is bound to.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Allocated host ports by port-template name.
    #[serde(default)]
    pub allocated_ports: BTreeMap<String, u16>,
    /// Booked slot; `None` = as soon as possible.
    #[serde(default)]
    pub timeslot: Option<Timeslot>,
    /// Region the owner asked for, if any.
    #[serde(default)]
    pub region: Option<String>,
    /// Who booked it.
    pub owner_id: String,
    /// External reservation id.
    #[serde(default)]
    pub reservation_id: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Times it went back to PENDING.
    #[serde(default)]
    pub retry_count: u32,
    /// The lab loop's progress on this session's lab (kept in the record so every step is
    /// idempotent and resumes after a crash or a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab: Option<LabProgress>,
}

/// Where the lab loop stands with a session's lab on its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabStep {
    /// Finding a lab: adopt one imported under the session's title, reuse a wiped lab of the
    /// same definition, or import.
    Acquire,
    /// A lab is known: sync its port tags and start it.
    Prepare,
    /// Started: waiting until every node has booted.
    Boot,
    /// In use by the owner.
    InUse,
    /// Ending: stop, wipe (kept for reuse) or delete.
    Teardown,
    /// Stopped and wiped (or deleted): the lab is no longer this session's.
    Released,
    /// Given up after the retries: the lab (if any) is left as it is.
    Abandoned,
}

/// The lab loop's progress on one session's lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabProgress {
    /// The worker the lab is on.
    pub worker_id: String,
    /// The title the lab is (or is being) imported under: `ccm <session id> <definition id>`
    /// (how a lab imported just before a crash is found again).
    pub title: String,
    /// CML's lab id, once imported or claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab_id: Option<String>,
    /// The lab was a wiped lab of the same definition, reused instead of imported.
    #[serde(default)]
    pub reused: bool,
    /// The current step.
    pub step: LabStep,
    /// Failed attempts of the current step.
    #[serde(default)]
    pub attempts: u32,
    /// No new attempt before this (back-off after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The last failure, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// The lab was deleted at the end (beyond the per-worker keep limit).
    #[serde(default)]
    pub deleted: bool,
    /// When the last import under [`LabProgress::title`] was sent and its outcome is not
    /// recorded yet. A leader that finds this (its predecessor died mid-import) waits up to the
    /// import timeout for the lab to appear before it imports again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_started_at: Option<Timestamp>,
    /// When the lab's stop was ordered (CML took it) and the lab was not seen stopped yet: the
    /// loop waits for it (up to [`crate::runtime::RuntimeSettings::lab_order_timeout`]) instead
    /// of ordering it again on every pass — also a new leader after a failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_ordered_at: Option<Timestamp>,
    /// When the lab's wipe was ordered and the lab was not seen wiped yet (as
    /// [`LabProgress::stop_ordered_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_ordered_at: Option<Timestamp>,
}

impl LabProgress {
    /// Fresh progress on `worker_id` under `title`: nothing acquired yet.
    pub fn new(worker_id: impl Into<String>, title: impl Into<String>) -> Self {
        LabProgress {
            worker_id: worker_id.into(),
            title: title.into(),
            lab_id: None,
            reused: false,
            step: LabStep::Acquire,
            attempts: 0,
            retry_at: None,
            last_error: String::new(),
            deleted: false,
            import_started_at: None,
            stop_ordered_at: None,
            wipe_ordered_at: None,
        }
    }

    /// The title of a session's lab.
    pub fn title_for(session_id: &str, definition_id: &str) -> String {
        format!("ccm {session_id} {definition_id}")
    }

    /// The definition id in a title made by [`LabProgress::title_for`].
    pub fn definition_of_title(title: &str) -> Option<&str> {
        let mut parts = title.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ccm"), Some(_), Some(def)) if !def.is_empty() => Some(def),
            _ => None,
        }
    }

    /// Whether this progress still holds its lab (a lab id, not yet released or abandoned).
    pub fn holds_lab(&self) -> bool {
        self.lab_id.is_some() && !matches!(self.step, LabStep::Released | LabStep::Abandoned)
    }
}

impl LabletSession {
    /// A new PENDING session.
    pub fn new(
        id: impl Into<String>,
        definition_id: impl Into<String>,
        definition_version: impl Into<String>,
        owner_id: impl Into<String>,
        timeslot: Option<Timeslot>,
        now: Timestamp,
    ) -> Self {
        LabletSession {
            id: id.into(),
            definition_id: definition_id.into(),
            definition_version: definition_version.into(),
            state: S::Pending,
            state_history: Vec::new(),
            worker_id: None,
            allocated_ports: BTreeMap::new(),
            timeslot,
            region: None,
            owner_id: owner_id.into(),
            reservation_id: None,
            created_at: now,
            updated_at: now,
            retry_count: 0,
            lab: None,
        }
    }

    /// Moves to `to` if the table allows it, recording the change.
    pub fn transition(
        &mut self,
        to: SessionState,
        at: Timestamp,
        reason: impl Into<String>,
    ) -> Result<(), InvalidTransition> {
        let from = self.state;
        self.state = from.transition(to)?;
        self.updated_at = at;
        self.state_history.push(StateChange {
            from,
            to,
            at,
            reason: reason.into(),
        });
        if self.state_history.len() > MAX_STATE_HISTORY {
            let extra = self.state_history.len() - MAX_STATE_HISTORY;
            self.state_history.drain(..extra);
        }
        if to == S::Pending {
            self.retry_count += 1;
        }
        Ok(())
    }

    /// Whether the session currently holds capacity and ports on its worker.
    ///
    /// EXPIRED holds them only when it came from a bound state (it still runs until STOPPING).
    pub fn holds_capacity(&self) -> bool {
        if self.state == S::Expired {
            return self.worker_id.is_some();
        }
        self.state.holds_capacity()
    }

    /// When the session last entered `state`, from its history.
    pub fn entered(&self, state: SessionState) -> Option<Timestamp> {
        self.state_history
            .iter()
            .rev()
            .find(|c| c.to == state)
            .map(|c| c.at)
    }

    /// When the session becomes due for binding (`slot start − lead`; ASAP sessions are always due).
    pub fn due_at(&self, lead: chrono::Duration) -> Option<Timestamp> {
        self.timeslot.map(|s| s.due_at(lead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_state_once() {
        for s in SessionState::ALL {
            assert_eq!(
                SESSION_TRANSITIONS.iter().filter(|(f, _)| f == s).count(),
                1,
                "{s}"
            );
        }
    }

    #[test]
    fn invalid_transition_names_both_states() {
        let e = S::Pending.transition(S::Running).unwrap_err();
        assert_eq!(e.from, "PENDING");
        assert_eq!(e.to, "RUNNING");
        assert!(e.to_string().contains("PENDING -> RUNNING"), "{e}");
        assert!(S::Terminated.transition(S::Pending).is_err());
        assert!(S::Scheduled.transition(S::Pending).is_ok());
    }

    #[test]
    fn capacity_holding_states() {
        assert!(!S::Pending.holds_capacity());
        assert!(S::Scheduled.holds_capacity());
        assert!(S::Grading.holds_capacity());
        assert!(!S::Stopping.holds_capacity());
    }

    #[test]
    fn state_history_keeps_the_latest_entries_only() {
        let t0 = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let mut s = LabletSession::new("s", "d", "1.0.0", "o", None, t0);
        for i in 0..100 {
            let at = t0 + chrono::Duration::seconds(i);
            s.transition(S::Scheduled, at, "bind").unwrap();
            s.transition(S::Pending, at, "requeue").unwrap();
        }
        assert_eq!(s.state_history.len(), MAX_STATE_HISTORY);
        let last = s.state_history.last().unwrap();
        assert_eq!(
            (last.to, last.at),
            (S::Pending, t0 + chrono::Duration::seconds(99))
        );
        assert_eq!(s.retry_count, 100);
        // Still a path: every kept entry starts where the one before ended.
        assert!(s.state_history.windows(2).all(|w| w[0].to == w[1].from));
    }
}
