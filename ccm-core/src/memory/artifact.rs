//! In-memory artifact backend.
