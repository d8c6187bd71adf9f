//! Typed CloudEvents catalogue of domain.md §8 (event types, subjects and data fields).
