//! Typed CloudEvents catalogue of domain.md §8 (event types, subjects and data fields).
//!
//! Every event ccm emits has one [`EventType`] (25 in all) and one typed payload
//! ([`EventData`]). A [`CcmEvent`] pairs the two and can only be built consistently: a session
//! event's type follows the session's state, a worker event exists only for the worker states the
//! catalogue names, scaling and definition events carry their own kind.
//!
//! | family | types | subject | data |
//! |---|---|---|---|
//! | session | `ccm.lablet.session.{pending, scheduled, instantiating, ready, running, collecting, grading, stopping, stopped, archived, expired, terminated}` | session id | [`SessionEventData`] |
//! | worker | `ccm.worker.{pending, provisioning, running, draining, stopping, stopped, terminated}` | worker id | [`WorkerEventData`] |
//! | scaling | `ccm.scaling.{up, down}.{requested, completed}` | scaling decision id | [`ScalingEventData`] |
//! | definition | `ccm.lablet.definition.{created, version.created}` | definition id | [`DefinitionEventData`] |
//!
//! Worker states without an event type (STARTING, TERMINATING, FAILED, UNKNOWN) are only logged
//! and audited: [`EventType::for_worker_state`] answers `None` for them.
//!
//! ```
//! use ccm_core::events::{CcmEvent, EventType};
//! use ccm_core::session::{LabletSession, SessionState};
//! use chrono::{TimeZone, Utc};
//!
//! let t0 = Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap();
//! let mut s = LabletSession::new("s-1", "def-1", "1.0.0", "alice", None, t0);
//! s.transition(SessionState::Scheduled, t0, "placed").unwrap();
//! let typed = CcmEvent::session(&s);
//! assert_eq!(typed.event_type(), EventType::SessionScheduled);
//! assert_eq!(typed.subject(), "s-1");
//! let event = typed.to_event(t0);
//! assert_eq!(event.event_type, "ccm.lablet.session.scheduled");
//! assert_eq!(CcmEvent::from_event(&event).unwrap(), typed);
//! ```

use crate::definition::LabletDefinition;
use crate::session::{LabletSession, SessionState};
use crate::store::events::Event;
use crate::timeslot::{Timeslot, Timestamp};
use crate::transition::StateMachine;
use crate::worker::{Worker, WorkerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The CloudEvents spec version ccm emits.
pub const SPEC_VERSION: &str = "1.0";
/// The default `source` attribute (`CLOUDEVENTS_SOURCE`).
pub const DEFAULT_SOURCE: &str = "ccm";
/// The content type of every event's data.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// The family an event type belongs to; it decides the subject and the data shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventFamily {
    /// Lablet session transitions; subject = session id.
    Session,
    /// Worker transitions; subject = worker id.
    Worker,
    /// Scale-up / scale-down decisions; subject = decision id.
    Scaling,
    /// Lablet definition registrations; subject = definition id.
    Definition,
}

macro_rules! event_types {
    ($($v:ident => $name:literal, $family:ident, $doc:literal;)*) => {
        /// Every event type of the catalogue (domain.md §8).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $(#[doc = $doc] $v,)*
        }

        impl EventType {
            /// Every type, in catalogue order.
            pub const ALL: &'static [EventType] = &[$(EventType::$v,)*];

            /// The CloudEvents `type` attribute, e.g. `ccm.lablet.session.scheduled`.
            pub fn type_name(self) -> &'static str {
                match self { $(EventType::$v => $name,)* }
            }

            /// The family (subject rule and data shape).
            pub fn family(self) -> EventFamily {
                match self { $(EventType::$v => EventFamily::$family,)* }
            }
        }
    };
}

event_types! {
    SessionPending => "ccm.lablet.session.pending", Session, "A session is booked and waits for a worker.";
    SessionScheduled => "ccm.lablet.session.scheduled", Session, "A session is bound to a worker with capacity and ports.";
    SessionInstantiating => "ccm.lablet.session.instantiating", Session, "The session's lab is being created.";
    SessionReady => "ccm.lablet.session.ready", Session, "The session's lab is ready for its owner.";
    SessionRunning => "ccm.lablet.session.running", Session, "The owner is working in the lab.";
    SessionCollecting => "ccm.lablet.session.collecting", Session, "Results are being collected.";
    SessionGrading => "ccm.lablet.session.grading", Session, "Results are being graded.";
    SessionStopping => "ccm.lablet.session.stopping", Session, "The lab is being stopped.";
    SessionStopped => "ccm.lablet.session.stopped", Session, "The lab is stopped.";
    SessionArchived => "ccm.lablet.session.archived", Session, "The session's results are archived.";
    SessionExpired => "ccm.lablet.session.expired", Session, "The session's time ran out.";
    SessionTerminated => "ccm.lablet.session.terminated", Session, "The session ended for good.";
    WorkerPending => "ccm.worker.pending", Worker, "A worker launch was requested.";
    WorkerProvisioning => "ccm.worker.provisioning", Worker, "The cloud is creating the worker's instance.";
    WorkerRunning => "ccm.worker.running", Worker, "The worker accepts sessions.";
    WorkerDraining => "ccm.worker.draining", Worker, "The worker keeps its sessions and accepts no new ones.";
    WorkerStopping => "ccm.worker.stopping", Worker, "The worker is shutting down.";
    WorkerStopped => "ccm.worker.stopped", Worker, "The worker is stopped (it can be started again).";
    WorkerTerminated => "ccm.worker.terminated", Worker, "The worker is deleted.";
    ScalingUpRequested => "ccm.scaling.up.requested", Scaling, "The planner asked for more workers.";
    ScalingUpCompleted => "ccm.scaling.up.completed", Scaling, "Requested workers are up.";
    ScalingDownRequested => "ccm.scaling.down.requested", Scaling, "The planner asked to drain and stop workers.";
    ScalingDownCompleted => "ccm.scaling.down.completed", Scaling, "Workers asked to scale down are stopped.";
    DefinitionCreated => "ccm.lablet.definition.created", Definition, "A new lablet definition (first version of a name) was registered.";
    DefinitionVersionCreated => "ccm.lablet.definition.version.created", Definition, "A new version of an existing lablet definition was registered.";
}

impl EventType {
    /// The event type announcing that a session entered `state` (every session state has one).
    pub fn for_session_state(state: SessionState) -> EventType {
        match state {
            SessionState::Pending => EventType::SessionPending,
            SessionState::Scheduled => EventType::SessionScheduled,
            SessionState::Instantiating => EventType::SessionInstantiating,
            SessionState::Ready => EventType::SessionReady,
            SessionState::Running => EventType::SessionRunning,
            SessionState::Collecting => EventType::SessionCollecting,
            SessionState::Grading => EventType::SessionGrading,
            SessionState::Stopping => EventType::SessionStopping,
            SessionState::Stopped => EventType::SessionStopped,
            SessionState::Archived => EventType::SessionArchived,
            SessionState::Expired => EventType::SessionExpired,
            SessionState::Terminated => EventType::SessionTerminated,
        }
    }

    /// The event type announcing that a worker entered `state`, if the catalogue has one
    /// (STARTING, TERMINATING, FAILED and UNKNOWN have none; they are logged and audited only).
    pub fn for_worker_state(state: WorkerState) -> Option<EventType> {
        match state {
            WorkerState::Pending => Some(EventType::WorkerPending),
            WorkerState::Provisioning => Some(EventType::WorkerProvisioning),
            WorkerState::Running => Some(EventType::WorkerRunning),
            WorkerState::Draining => Some(EventType::WorkerDraining),
            WorkerState::Stopping => Some(EventType::WorkerStopping),
            WorkerState::Stopped => Some(EventType::WorkerStopped),
            WorkerState::Terminated => Some(EventType::WorkerTerminated),
            WorkerState::Starting
            | WorkerState::Terminating
            | WorkerState::Failed
            | WorkerState::Unknown => None,
        }
    }

    /// The event for a session transition `from → to`; an error when the table forbids it.
    pub fn for_session_transition(
        from: SessionState,
        to: SessionState,
    ) -> Result<EventType, CatalogueError> {
        from.transition(to)
            .map_err(|e| CatalogueError::Transition(e.to_string()))?;
        Ok(EventType::for_session_state(to))
    }

    /// The event for a worker transition `from → to`: `Ok(None)` when the new state has no
    /// event type, an error when the table forbids the transition.
    pub fn for_worker_transition(
        from: WorkerState,
        to: WorkerState,
    ) -> Result<Option<EventType>, CatalogueError> {
        from.transition(to)
            .map_err(|e| CatalogueError::Transition(e.to_string()))?;
        Ok(EventType::for_worker_state(to))
    }

    /// The session state a session event announces.
    pub fn session_state(self) -> Option<SessionState> {
        SessionState::ALL
            .iter()
            .copied()
            .find(|s| EventType::for_session_state(*s) == self)
    }

    /// The worker state a worker event announces.
    pub fn worker_state(self) -> Option<WorkerState> {
        WorkerState::ALL
            .iter()
            .copied()
            .find(|s| EventType::for_worker_state(*s) == Some(self))
    }

    /// Direction and phase of a scaling event.
    pub fn scaling(self) -> Option<(ScalingDirection, ScalingPhase)> {
        use ScalingDirection::{Down, Up};
        use ScalingPhase::{Completed, Requested};
        match self {
            EventType::ScalingUpRequested => Some((Up, Requested)),
            EventType::ScalingUpCompleted => Some((Up, Completed)),
            EventType::ScalingDownRequested => Some((Down, Requested)),
            EventType::ScalingDownCompleted => Some((Down, Completed)),
            _ => None,
        }
    }

    /// The scaling event type for a direction and phase.
    pub fn for_scaling(direction: ScalingDirection, phase: ScalingPhase) -> EventType {
        match (direction, phase) {
            (ScalingDirection::Up, ScalingPhase::Requested) => EventType::ScalingUpRequested,
            (ScalingDirection::Up, ScalingPhase::Completed) => EventType::ScalingUpCompleted,
            (ScalingDirection::Down, ScalingPhase::Requested) => EventType::ScalingDownRequested,
            (ScalingDirection::Down, ScalingPhase::Completed) => EventType::ScalingDownCompleted,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

impl FromStr for EventType {
    type Err = CatalogueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .iter()
            .copied()
            .find(|t| t.type_name() == s)
            .ok_or_else(|| CatalogueError::UnknownType(s.to_string()))
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.type_name())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Scale up (launch or restart workers) or down (drain and stop them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingDirection {
    /// More workers.
    Up,
    /// Fewer workers.
    Down,
}

/// Whether a scaling decision was just made or has taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingPhase {
    /// Decided by the planner.
    Requested,
    /// The workers reached their target state.
    Completed,
}

/// Why an event does not fit the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// The type name is not in the catalogue.
    #[error("unknown event type {0:?} (not in the ccm catalogue)")]
    UnknownType(String),
    /// The data does not have the shape the type requires.
    #[error("event {event_type}: data does not match {expected}: {reason}")]
    Data {
        /// The event type.
        event_type: String,
        /// The expected data struct.
        expected: &'static str,
        /// What serde said.
        reason: String,
    },
    /// The subject is not the id the subject rule requires.
    #[error("event {event_type}: subject {subject:?} must be the {family:?} id {expected:?}")]
    Subject {
        /// The event type.
        event_type: String,
        /// Its family.
        family: EventFamily,
        /// Subject given.
        subject: String,
        /// Id in the data.
        expected: String,
    },
    /// The data's state (or kind) disagrees with the type.
    #[error("event {event_type}: {reason}")]
    Mismatch {
        /// The event type.
        event_type: String,
        /// What disagrees.
        reason: String,
    },
    /// The state machine forbids the transition.
    #[error("{0}")]
    Transition(String),
}

/// Data of `ccm.lablet.session.*` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEventData {
    /// The session id (also the subject).
    pub session_id: String,
    /// The definition id.
    pub definition: String,
    /// The pinned definition version.
    pub definition_version: String,
    /// Who booked it.
    pub owner_id: String,
    /// The state it entered (matches the type).
    pub state: SessionState,
    /// The state it left; `None` when the session was just created.
    #[serde(default)]
    pub from_state: Option<SessionState>,
    /// The worker it is bound to.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Allocated host ports by port-template name.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Booked slot; `None` = as soon as possible.
    #[serde(default)]
    pub slot: Option<Timeslot>,
    /// Requested region, if any.
    #[serde(default)]
    pub region: Option<String>,
    /// External reservation id.
    #[serde(default)]
    pub reservation_id: Option<String>,
    /// Why the transition happened (empty when none was given).
    #[serde(default)]
    pub reason: String,
    /// Times the session went back to PENDING.
    #[serde(default)]
    pub retry_count: u32,
}

/// Data of `ccm.worker.*` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerEventData {
    /// The worker id (also the subject).
    pub worker_id: String,
    /// Template name.
    pub template: String,
    /// Cloud region.
    pub region: String,
    /// The state it entered (matches the type).
    pub state: WorkerState,
    /// The state it left; `None` when the worker was just created.
    #[serde(default)]
    pub from_state: Option<WorkerState>,
    /// Cloud instance id, once known.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// Why (empty when none was given).
    #[serde(default)]
    pub reason: String,
}

/// Data of `ccm.scaling.*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingEventData {
    /// The decision id (also the subject); `requested` and `completed` of one decision share
    /// it, so they arrive in that order. A decision about a single worker may use the worker id.
    pub decision_id: String,
    /// Template of the workers.
    pub template: String,
    /// Region of the workers.
    pub region: String,
    /// How many workers.
    pub count: u32,
    /// The workers concerned (planned or existing ids).
    #[serde(default)]
    pub worker_ids: Vec<String>,
    /// Why, for people (e.g. "3 sessions from 08:00 need 1 worker").
    #[serde(default)]
    pub reason: String,
    /// Cost of the plan that made the decision (worker-hours × `cost_per_hour_usd`).
    #[serde(default)]
    pub plan_cost_usd: Option<f64>,
}

/// Data of `ccm.lablet.definition.*` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionEventData {
    /// The definition id (also the subject).
    pub definition_id: String,
    /// Definition name.
    pub name: String,
    /// The registered version.
    pub version: String,
    /// The latest version before this one (`version.created` only).
    #[serde(default)]
    pub previous_version: Option<String>,
    /// Where the lab YAML lives.
    #[serde(default)]
    pub lab_artifact_uri: String,
    /// SHA-256 (hex) of the lab YAML.
    #[serde(default)]
    pub lab_yaml_hash: String,
    /// Creator.
    #[serde(default)]
    pub created_by: Option<String>,
}

/// The typed payload of a catalogue event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// `ccm.lablet.session.*`.
    Session(SessionEventData),
    /// `ccm.worker.*`.
    Worker(WorkerEventData),
    /// `ccm.scaling.*`.
    Scaling(ScalingEventData),
    /// `ccm.lablet.definition.*`.
    Definition(DefinitionEventData),
}

impl EventData {
    /// The family of this payload.
    pub fn family(&self) -> EventFamily {
        match self {
            EventData::Session(_) => EventFamily::Session,
            EventData::Worker(_) => EventFamily::Worker,
            EventData::Scaling(_) => EventFamily::Scaling,
            EventData::Definition(_) => EventFamily::Definition,
        }
    }

    /// The subject rule: the session, worker, decision or definition id.
    pub fn subject(&self) -> &str {
        match self {
            EventData::Session(d) => &d.session_id,
            EventData::Worker(d) => &d.worker_id,
            EventData::Scaling(d) => &d.decision_id,
            EventData::Definition(d) => &d.definition_id,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let v = match self {
            EventData::Session(d) => serde_json::to_value(d),
            EventData::Worker(d) => serde_json::to_value(d),
            EventData::Scaling(d) => serde_json::to_value(d),
            EventData::Definition(d) => serde_json::to_value(d),
        };
        // Plain structs of strings, numbers and maps with string keys always serialize; a
        // non-finite plan cost would become `null` rather than fail.
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// One catalogue event: a type and its matching typed data.
#[derive(Debug, Clone, PartialEq)]
pub struct CcmEvent {
    event_type: EventType,
    data: EventData,
}

impl CcmEvent {
    /// Pairs a type and data, checking that they belong together (family, and the state or
    /// kind the type names).
    pub fn new(event_type: EventType, data: EventData) -> Result<CcmEvent, CatalogueError> {
        let mismatch = |reason: String| CatalogueError::Mismatch {
            event_type: event_type.type_name().to_string(),
            reason,
        };
        if event_type.family() != data.family() {
            return Err(mismatch(format!(
                "type is a {:?} event but data is {:?} data",
                event_type.family(),
                data.family()
            )));
        }
        match &data {
            EventData::Session(d) => {
                if EventType::for_session_state(d.state) != event_type {
                    return Err(mismatch(format!("data.state is {}", d.state)));
                }
            }
            EventData::Worker(d) => {
                if EventType::for_worker_state(d.state) != Some(event_type) {
                    return Err(mismatch(format!("data.state is {}", d.state)));
                }
            }
            EventData::Scaling(_) | EventData::Definition(_) => {}
        }
        Ok(CcmEvent { event_type, data })
    }

    /// The event announcing the session's current state. `from_state` and `reason` come from
    /// the last history entry when it led to the current state (none: a new PENDING session).
    pub fn session(session: &LabletSession) -> CcmEvent {
        let last = session
            .state_history
            .last()
            .filter(|c| c.to == session.state);
        let data = SessionEventData {
            session_id: session.id.clone(),
            definition: session.definition_id.clone(),
            definition_version: session.definition_version.clone(),
            owner_id: session.owner_id.clone(),
            state: session.state,
            from_state: last.map(|c| c.from),
            worker_id: session.worker_id.clone(),
            ports: session.allocated_ports.clone(),
            slot: session.timeslot,
            region: session.region.clone(),
            reservation_id: session.reservation_id.clone(),
            reason: last.map(|c| c.reason.clone()).unwrap_or_default(),
            retry_count: session.retry_count,
        };
        CcmEvent {
            event_type: EventType::for_session_state(session.state),
            data: EventData::Session(data),
        }
    }

    /// The event announcing the worker's current state, if the catalogue has one for it.
    pub fn worker(
        worker: &Worker,
        from_state: Option<WorkerState>,
        reason: impl Into<String>,
    ) -> Option<CcmEvent> {
        let event_type = EventType::for_worker_state(worker.state)?;
        Some(CcmEvent {
            event_type,
            data: EventData::Worker(WorkerEventData {
                worker_id: worker.id.clone(),
                template: worker.template.clone(),
                region: worker.region.clone(),
                state: worker.state,
                from_state,
                provider_id: worker.provider_id.clone(),
                reason: reason.into(),
            }),
        })
    }

    /// A scaling decision event.
    pub fn scaling(
        direction: ScalingDirection,
        phase: ScalingPhase,
        data: ScalingEventData,
    ) -> CcmEvent {
        CcmEvent {
            event_type: EventType::for_scaling(direction, phase),
            data: EventData::Scaling(data),
        }
    }

    /// A definition registration: `created` when `previous_version` is `None` (first version of
    /// the name), otherwise `version.created`.
    pub fn definition(
        def: &LabletDefinition,
        previous_version: Option<&semver::Version>,
    ) -> CcmEvent {
        let event_type = if previous_version.is_some() {
            EventType::DefinitionVersionCreated
        } else {
            EventType::DefinitionCreated
        };
        CcmEvent {
            event_type,
            data: EventData::Definition(DefinitionEventData {
                definition_id: def.id.clone(),
                name: def.name.clone(),
                version: def.version.to_string(),
                previous_version: previous_version.map(|v| v.to_string()),
                lab_artifact_uri: def.lab_artifact_uri.clone(),
                lab_yaml_hash: def.lab_yaml_hash.clone(),
                created_by: def.created_by.clone(),
            }),
        }
    }

    /// The type.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The typed data.
    pub fn data(&self) -> &EventData {
        &self.data
    }

    /// The subject (session, worker, decision or definition id).
    pub fn subject(&self) -> &str {
        self.data.subject()
    }

    /// A publishable [`Event`] with a fresh UUID v4 id.
    pub fn to_event(&self, time: Timestamp) -> Event {
        self.to_event_with_id(uuid::Uuid::new_v4().to_string(), time)
    }

    /// A publishable [`Event`] with the given id.
    pub fn to_event_with_id(&self, id: impl Into<String>, time: Timestamp) -> Event {
        Event {
            id: id.into(),
            event_type: self.event_type.type_name().to_string(),
            subject: self.subject().to_string(),
            time,
            data: self.data.to_json(),
        }
    }

    /// Reads an [`Event`] back against the catalogue: known type, data of the right shape
    /// (no unknown fields), state matching the type, subject following the subject rule.
    pub fn from_event(event: &Event) -> Result<CcmEvent, CatalogueError> {
        let event_type: EventType = event.event_type.parse()?;
        let data_err = |expected: &'static str, e: serde_json::Error| CatalogueError::Data {
            event_type: event.event_type.clone(),
            expected,
            reason: e.to_string(),
        };
        let v = event.data.clone();
        let data = match event_type.family() {
            EventFamily::Session => EventData::Session(
                serde_json::from_value(v).map_err(|e| data_err("SessionEventData", e))?,
            ),
            EventFamily::Worker => EventData::Worker(
                serde_json::from_value(v).map_err(|e| data_err("WorkerEventData", e))?,
            ),
            EventFamily::Scaling => EventData::Scaling(
                serde_json::from_value(v).map_err(|e| data_err("ScalingEventData", e))?,
            ),
            EventFamily::Definition => EventData::Definition(
                serde_json::from_value(v).map_err(|e| data_err("DefinitionEventData", e))?,
            ),
        };
        if data.subject() != event.subject {
            return Err(CatalogueError::Subject {
                event_type: event.event_type.clone(),
                family: event_type.family(),
                subject: event.subject.clone(),
                expected: data.subject().to_string(),
            });
        }
        CcmEvent::new(event_type, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::LicenseType;
    use crate::resources::Resources;
    use crate::template::WorkerTemplate;
    use crate::version::CmlVersion;
    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn t0() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap()
    }

    fn worker(state: WorkerState) -> Worker {
        let tpl: WorkerTemplate = serde_json::from_value(serde_json::json!({
            "name": "small", "description": "d", "instance_type": "m5zn.metal",
            "capacity": {"cpu_cores": 48, "memory_gb": 192, "storage_gb": 500},
            "license_type": "PERSONAL", "max_nodes": 20, "ami_pattern": "cml-*",
            "regions": ["us-east-1"], "port_range": {"start": 2000, "end": 9999},
            "drain_timeout_hours": 4, "tags": {}
        }))
        .unwrap();
        let mut w = Worker::from_template(
            "w-1",
            &tpl,
            "us-east-1",
            state,
            "2.9.0".parse::<CmlVersion>().unwrap(),
            "cml-2.9",
        );
        w.provider_id = Some("i-0abc".into());
        w
    }

    fn definition() -> LabletDefinition {
        LabletDefinition {
            id: "def-1".into(),
            name: "ccna".into(),
            version: semver::Version::new(1, 2, 0),
            lab_artifact_uri: "s3://lablet-artifacts/definitions/ccna/1.2.0/cml.yaml".into(),
            lab_yaml_hash: "ab".repeat(32),
            resource_requirements: Resources::default(),
            node_count: 4,
            license_affinity: vec![LicenseType::Personal],
            ami_requirements: Default::default(),
            port_template: vec![],
            max_duration_minutes: 120,
            created_at: Some(t0()),
            created_by: Some("bob".into()),
        }
    }

    #[test]
    fn catalogue_has_every_type_of_domain_spec_once() {
        let mut expected: Vec<String> = Vec::new();
        for s in [
            "pending",
            "scheduled",
            "instantiating",
            "ready",
            "running",
            "collecting",
            "grading",
            "stopping",
            "stopped",
            "archived",
            "expired",
            "terminated",
        ] {
            expected.push(format!("ccm.lablet.session.{s}"));
        }
        for s in [
            "pending",
            "provisioning",
            "running",
            "draining",
            "stopping",
            "stopped",
            "terminated",
        ] {
            expected.push(format!("ccm.worker.{s}"));
        }
        for d in ["up", "down"] {
            for p in ["requested", "completed"] {
                expected.push(format!("ccm.scaling.{d}.{p}"));
            }
        }
        expected.push("ccm.lablet.definition.created".into());
        expected.push("ccm.lablet.definition.version.created".into());
        let got: Vec<String> = EventType::ALL
            .iter()
            .map(|t| t.type_name().to_string())
            .collect();
        assert_eq!(got, expected);
        let unique: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.type_name()).collect();
        assert_eq!(unique.len(), EventType::ALL.len());
        for t in EventType::ALL {
            assert_eq!(t.type_name().parse::<EventType>().unwrap(), *t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.type_name());
        }
        let e = "ccm.worker.failed".parse::<EventType>().unwrap_err();
        assert!(e.to_string().contains("ccm.worker.failed"), "{e}");
    }

    #[test]
    fn state_mappings_are_consistent() {
        for s in SessionState::ALL {
            let t = EventType::for_session_state(*s);
            assert_eq!(t.family(), EventFamily::Session);
            assert_eq!(t.session_state(), Some(*s));
            assert!(t.type_name().ends_with(&s.as_str().to_lowercase()));
        }
        let mut with_event = 0;
        for s in WorkerState::ALL {
            if let Some(t) = EventType::for_worker_state(*s) {
                with_event += 1;
                assert_eq!(t.worker_state(), Some(*s));
                assert_eq!(
                    t.type_name(),
                    format!("ccm.worker.{}", s.as_str().to_lowercase())
                );
            }
        }
        assert_eq!(with_event, 7);
        assert_eq!(EventType::for_worker_state(WorkerState::Failed), None);
        for t in EventType::ALL {
            if let Some((d, p)) = t.scaling() {
                assert_eq!(EventType::for_scaling(d, p), *t);
            }
        }
    }

    #[test]
    fn transition_mapping_follows_the_tables() {
        assert_eq!(
            EventType::for_session_transition(SessionState::Scheduled, SessionState::Pending),
            Ok(EventType::SessionPending)
        );
        let e = EventType::for_session_transition(SessionState::Pending, SessionState::Running)
            .unwrap_err();
        assert!(e.to_string().contains("PENDING -> RUNNING"), "{e}");
        assert_eq!(
            EventType::for_worker_transition(WorkerState::Draining, WorkerState::Running),
            Ok(Some(EventType::WorkerRunning))
        );
        assert_eq!(
            EventType::for_worker_transition(WorkerState::Provisioning, WorkerState::Starting),
            Ok(None)
        );
        assert!(
            EventType::for_worker_transition(WorkerState::Stopped, WorkerState::Running).is_err()
        );
    }

    #[test]
    fn session_event_carries_the_session_and_round_trips() {
        let slot = Timeslot::new(t0(), t0() + Duration::hours(2)).unwrap();
        let mut s = LabletSession::new("s-1", "def-1", "1.2.0", "alice", Some(slot), t0());
        let pending = CcmEvent::session(&s);
        assert_eq!(pending.event_type(), EventType::SessionPending);
        let EventData::Session(d) = pending.data() else {
            panic!("session data expected")
        };
        assert_eq!(d.from_state, None);
        assert_eq!(d.reason, "");

        s.transition(SessionState::Scheduled, t0(), "placed on w-1")
            .unwrap();
        s.worker_id = Some("w-1".into());
        s.allocated_ports.insert("r1_ssh".into(), 2000);
        let ev = CcmEvent::session(&s);
        let out = ev.to_event(t0());
        assert_eq!(out.event_type, "ccm.lablet.session.scheduled");
        assert_eq!(out.subject, "s-1");
        assert_eq!(out.time, t0());
        assert!(uuid::Uuid::parse_str(&out.id).is_ok(), "{}", out.id);
        assert_eq!(out.data["worker_id"], "w-1");
        assert_eq!(out.data["ports"]["r1_ssh"], 2000);
        assert_eq!(out.data["from_state"], "PENDING");
        assert_eq!(out.data["state"], "SCHEDULED");
        assert_eq!(out.data["reason"], "placed on w-1");
        assert_eq!(out.data["definition"], "def-1");
        assert_eq!(
            out.data["slot"]["start"],
            serde_json::to_value(t0()).unwrap()
        );
        assert_eq!(CcmEvent::from_event(&out).unwrap(), ev);
        assert_ne!(ev.to_event(t0()).id, out.id, "ids are unique");
    }

    #[test]
    fn worker_scaling_and_definition_events() {
        let mut w = worker(WorkerState::Provisioning);
        assert!(CcmEvent::worker(&w, Some(WorkerState::Pending), "").is_some());
        w.state = WorkerState::Starting;
        assert!(CcmEvent::worker(&w, Some(WorkerState::Provisioning), "").is_none());
        w.state = WorkerState::Draining;
        let ev = CcmEvent::worker(&w, Some(WorkerState::Running), "idle 30 min").unwrap();
        let out = ev.to_event(t0());
        assert_eq!(out.event_type, "ccm.worker.draining");
        assert_eq!(out.subject, "w-1");
        assert_eq!(out.data["template"], "small");
        assert_eq!(out.data["region"], "us-east-1");
        assert_eq!(out.data["provider_id"], "i-0abc");
        assert_eq!(CcmEvent::from_event(&out).unwrap(), ev);

        let sc = CcmEvent::scaling(
            ScalingDirection::Up,
            ScalingPhase::Requested,
            ScalingEventData {
                decision_id: "plan-7".into(),
                template: "small".into(),
                region: "us-east-1".into(),
                count: 2,
                worker_ids: vec!["w-2".into(), "w-3".into()],
                reason: "slot 08:00 needs 2".into(),
                plan_cost_usd: Some(12.5),
            },
        );
        let out = sc.to_event(t0());
        assert_eq!(out.event_type, "ccm.scaling.up.requested");
        assert_eq!(out.subject, "plan-7");
        assert_eq!(out.data["count"], 2);
        assert_eq!(out.data["plan_cost_usd"], 12.5);
        assert_eq!(CcmEvent::from_event(&out).unwrap(), sc);

        let def = definition();
        let created = CcmEvent::definition(&def, None);
        assert_eq!(created.event_type(), EventType::DefinitionCreated);
        let v = CcmEvent::definition(&def, Some(&semver::Version::new(1, 1, 0)));
        let out = v.to_event(t0());
        assert_eq!(out.event_type, "ccm.lablet.definition.version.created");
        assert_eq!(out.subject, "def-1");
        assert_eq!(out.data["version"], "1.2.0");
        assert_eq!(out.data["previous_version"], "1.1.0");
        assert_eq!(CcmEvent::from_event(&out).unwrap(), v);
    }

    #[test]
    fn from_event_rejects_what_breaks_the_catalogue() {
        let s = LabletSession::new("s-1", "def-1", "1.0.0", "alice", None, t0());
        let good = CcmEvent::session(&s).to_event(t0());

        let mut bad = good.clone();
        bad.subject = "w-1".into();
        let e = CcmEvent::from_event(&bad).unwrap_err();
        assert!(matches!(e, CatalogueError::Subject { .. }), "{e}");
        assert!(e.to_string().contains("\"s-1\""), "{e}");

        let mut bad = good.clone();
        bad.event_type = "ccm.lablet.session.running".into();
        let e = CcmEvent::from_event(&bad).unwrap_err();
        assert!(e.to_string().contains("data.state is PENDING"), "{e}");

        let mut bad = good.clone();
        bad.event_type = "ccm.worker.running".into();
        let e = CcmEvent::from_event(&bad).unwrap_err();
        assert!(e.to_string().contains("WorkerEventData"), "{e}");

        let mut bad = good.clone();
        bad.data["surprise"] = serde_json::json!(1);
        let e = CcmEvent::from_event(&bad).unwrap_err();
        assert!(e.to_string().contains("surprise"), "{e}");

        let w = worker(WorkerState::Running);
        let data = CcmEvent::worker(&w, None, "").unwrap().data().clone();
        let e = CcmEvent::new(EventType::WorkerStopped, data.clone()).unwrap_err();
        assert!(e.to_string().contains("RUNNING"), "{e}");
        let e = CcmEvent::new(EventType::SessionPending, data).unwrap_err();
        assert!(e.to_string().contains("Worker"), "{e}");
    }

    fn arb_session_state() -> impl Strategy<Value = SessionState> {
        prop::sample::select(SessionState::ALL.to_vec())
    }

    proptest! {
        /// Along any walk through the session table, every emitted event has the type of the
        /// state entered, the previous state as `from_state`, and reads back unchanged.
        #[test]
        fn session_walks_emit_matching_events(choices in prop::collection::vec(0usize..8, 1..20)) {
            let mut s = LabletSession::new("s-p", "def-1", "1.0.0", "o", None, t0());
            for c in choices {
                let next = s.state.next_states();
                if next.is_empty() { break; }
                let to = next[c % next.len()];
                let from = s.state;
                s.transition(to, t0(), format!("{from}->{to}")).unwrap();
                let ev = CcmEvent::session(&s);
                prop_assert_eq!(ev.event_type(), EventType::for_session_transition(from, to).unwrap());
                let out = ev.to_event(t0());
                prop_assert_eq!(&out.data["from_state"], &serde_json::json!(from.as_str()));
                prop_assert_eq!(CcmEvent::from_event(&out).unwrap(), ev);
            }
        }

        /// Any session state in the data gives exactly one consistent type.
        #[test]
        fn only_the_matching_type_accepts_session_data(state in arb_session_state()) {
            let mut s = LabletSession::new("s-q", "def-1", "1.0.0", "o", None, t0());
            s.state = state;
            let data = CcmEvent::session(&s).data().clone();
            let ok: Vec<EventType> = EventType::ALL
                .iter()
                .copied()
                .filter(|t| CcmEvent::new(*t, data.clone()).is_ok())
                .collect();
            prop_assert_eq!(ok, vec![EventType::for_session_state(state)]);
        }
    }
}
