//! Placement: binding a due session to the best RUNNING worker (domain.md §4).

pub mod filter;

pub use filter::{check, FilterKind, Rejection, Requirements};
