//! In-memory state backend.
