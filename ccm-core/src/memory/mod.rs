//! In-memory implementations of every [`crate::store`] trait, with the real systems' semantics
//! (revisions, transaction compares, watch delivery in revision order, lease expiry on the
//! [`crate::store::Clock`], fenced writes). This is the embedded default: no server needed.

pub mod artifact;
pub mod events;
pub mod lab;
pub mod provider;
pub mod spec;
pub mod state;
