//! # ccm-core
//!
//! The pure core of ccm, the engine of a Lablet Resource Manager: it decides where and when
//! Cisco Modeling Labs sessions ("lablets") run on a fleet of bare-metal cloud workers and how
//! many workers to boot, drain and stop.
//!
//! * Domain model: [`template`], [`definition`], [`session`], [`worker`], [`timeslot`],
//!   [`resources`], [`license`], [`version`], [`glob`], [`ports`].
//! * Decisions, as plain functions of a snapshot and `now`: [`placement`], [`planner`].
//! * The traits the loops are written against ([`store`]), their in-memory implementations
//!   ([`memory`]) and the reconcile loops ([`runtime`]).
//! * Lab YAML port templates and format-preserving rewriting: [`labyaml`].
//! * The CloudEvents catalogue: [`events`].
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
