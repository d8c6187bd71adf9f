//! Behaviour suite for the state store trait.
