//! The shared shape of ccm's state machines: one transition table per entity.

use std::fmt;

/// A state of an entity with a fixed transition table.
pub trait StateMachine: Copy + Eq + fmt::Debug + fmt::Display + 'static {
    /// The entity's name in errors (`session`, `worker`).
    const ENTITY: &'static str;
    /// Every state.
    const ALL: &'static [Self];
    /// The states reachable in one step from `self`.
    fn next_states(self) -> &'static [Self];

    /// Whether `self → to` is allowed.
    fn can_become(self, to: Self) -> bool {
        self.next_states().contains(&to)
    }

    /// `Ok(to)` when allowed, otherwise an error naming both states.
    fn transition(self, to: Self) -> Result<Self, InvalidTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(InvalidTransition {
                entity: Self::ENTITY,
                from: self.to_string(),
                to: to.to_string(),
                allowed: self.next_states().iter().map(|s| s.to_string()).collect(),
            })
        }
    }
}

/// A transition the table does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {entity} transition {from} -> {to} (allowed from {from}: {})", if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") })]
pub struct InvalidTransition {
    /// `session` or `worker`.
    pub entity: &'static str,
    /// Current state.
    pub from: String,
    /// Requested state.
    pub to: String,
    /// What would have been allowed.
    pub allowed: Vec<String>,
}

/// Implements `Display` as the SCREAMING_SNAKE_CASE name used on the wire.
macro_rules! screaming_display {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The upper-case wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use screaming_display;
