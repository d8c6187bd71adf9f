//! # ccm-core
//!
//! The pure core of ccm, the engine of a Lablet Resource Manager: it decides where and when
//! Cisco Modeling Labs sessions ("lablets") run on a fleet of bare-metal cloud workers and how
//! many workers to boot, drain and stop.
//!
//! ## Map of the crate
//!
//! | module | what lives there |
//! |---|---|
//! | [`template`], [`definition`], [`session`], [`worker`] | the domain records and their state machines |
//! | [`timeslot`], [`resources`], [`license`], [`version`], [`glob`], [`ports`] | the values they are made of |
//! | [`transition`] | the shared shape of a state machine: one table, checked transitions, paths |
//! | [`placement`] | pure: which RUNNING worker takes a due session (filters, scores, [`placement::Fleet`]) |
//! | [`planner`] | pure: the time-aware capacity plan, its cost and its lower bound |
//! | [`store`] | the traits everything is written against (state, spec, artifacts, events, provider, CML, election, clock) |
//! | [`memory`] | an in-memory implementation of every [`store`] trait (the embedded default) |
//! | [`runtime`] | the leader-gated reconcile loops (scheduler, controller, lab loop) and their wiring |
//! | [`api`] | the typed lablet façade [`api::Lablets`]: definitions, bookings, explanations |
//! | [`labyaml`] | lab YAML port templates and format-preserving rewriting |
//! | [`events`] | the CloudEvents catalogue |
//! | [`redact`] | secrets out of logs and `Debug` |
//! | `testkit` (feature `testkit`) | behaviour suites of the traits and the shared test world |
//!
//! Decisions are plain functions of a snapshot and `now` (no I/O); the loops apply them.
//! [`prelude`] gathers what a service embedding ccm needs; `ARCHITECTURE.md` at the repository
//! root is the longer map.
#![deny(missing_docs)]

pub mod api;
pub mod definition;
pub mod events;
pub mod glob;
pub mod labyaml;
pub mod license;
pub mod memory;
pub mod placement;
pub mod planner;
pub mod ports;
pub mod redact;
pub mod resources;
pub mod runtime;
pub mod session;
pub mod store;
pub mod template;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod timeslot;
pub mod transition;
pub mod version;
pub mod worker;

pub use transition::{InvalidTransition, StateMachine};

/// What a service embedding ccm needs, in one import: `use ccm_core::prelude::*;`.
///
/// The runtime and its builder, the lablet façade and its requests, the store traits with the
/// types a `StateStore` implementation names, the in-memory backends, the seed templates and the
/// domain records.
pub mod prelude {
    pub use crate::api::{BookingRequest, DefinitionDraft, Lablets};
    pub use crate::definition::LabletDefinition;
    pub use crate::memory::events::RecordingSink;
    pub use crate::memory::provider::SimulatedProvider;
    pub use crate::memory::spec::MemorySpecStore;
    pub use crate::memory::state::MemoryStateStore;
    pub use crate::resources::Resources;
    pub use crate::runtime::{Runtime, RuntimeBuilder, RuntimeError, RuntimeSettings};
    pub use crate::session::{LabletSession, SessionState};
    pub use crate::store::elector::StoreElector;
    pub use crate::store::intercept::{Intercepted, Interceptor};
    pub use crate::store::{
        Clock, KeyValue, LeaseId, ListResponse, Revision, SpecStore, StateStore, StoreError,
        SystemClock, Txn, TxnResponse, VirtualClock, WatchStream,
    };
    pub use crate::template::{seed_templates, WorkerTemplate};
    pub use crate::timeslot::{Timeslot, Timestamp};
    pub use crate::worker::{Worker, WorkerState};
}
