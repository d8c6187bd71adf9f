//! In-memory events backend.
