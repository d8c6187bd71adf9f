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

/// Shortest way from `from` to `to` in `S`'s transition table: the steps after `from`, ending
/// with `to` (empty when `from == to`); `None` when `to` cannot be reached.
///
/// A state in `last_resort` (e.g. a worker's UNKNOWN) is passed through only when there is no
/// other way (or when it is `to` itself).
pub fn shortest_path<S: StateMachine + Ord>(from: S, to: S, last_resort: &[S]) -> Option<Vec<S>> {
    use std::collections::{BTreeMap, VecDeque};
    for allow_last_resort in [false, true] {
        let mut prev: BTreeMap<S, S> = BTreeMap::new();
        let mut q = VecDeque::from([from]);
        while let Some(s) = q.pop_front() {
            if s == to {
                let mut steps = vec![to];
                let mut cur = to;
                while let Some(p) = prev.get(&cur) {
                    if *p == from {
                        break;
                    }
                    steps.push(*p);
                    cur = *p;
                }
                steps.reverse();
                return Some(steps);
            }
            for n in s.next_states() {
                if (last_resort.contains(n) && !allow_last_resort && *n != to)
                    || *n == from
                    || prev.contains_key(n)
                {
                    continue;
                }
                prev.insert(*n, s);
                q.push_back(*n);
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::WorkerState as W;

    fn worker_path(from: W, to: W) -> Option<Vec<W>> {
        shortest_path(from, to, &[W::Unknown])
    }

    #[test]
    fn worker_paths_follow_the_table() {
        assert_eq!(
            worker_path(W::Pending, W::Running),
            Some(vec![W::Provisioning, W::Starting, W::Running])
        );
        assert_eq!(
            worker_path(W::Running, W::Stopped),
            Some(vec![W::Draining, W::Stopping, W::Stopped])
        );
        assert_eq!(worker_path(W::Running, W::Failed), Some(vec![W::Failed]));
        assert_eq!(worker_path(W::Terminated, W::Running), None);
        assert_eq!(
            worker_path(W::Stopped, W::Running),
            Some(vec![W::Starting, W::Running])
        );
    }
}
