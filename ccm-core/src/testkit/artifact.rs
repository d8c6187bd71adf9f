//! Behaviour suite for the artifact store trait.
