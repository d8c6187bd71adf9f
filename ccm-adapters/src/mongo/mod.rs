//! mongo adapter.
