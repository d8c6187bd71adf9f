//! Behaviour suites shared by the in-memory backends and the adapters: one suite per trait,
//! run by each implementation's tests (enable the `testkit` feature).

pub mod artifact;
pub mod lab;
pub mod provider;
pub mod spec;
pub mod state;
