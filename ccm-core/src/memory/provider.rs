//! In-memory provider backend.
