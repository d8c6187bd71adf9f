//! In-memory spec backend.
