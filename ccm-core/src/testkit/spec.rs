//! Behaviour suite for the spec store trait.
