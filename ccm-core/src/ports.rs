//! Host port allocation on one worker: lowest-first, idempotent per session, never one port
//! to two sessions.

use crate::template::PortRange;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Why ports could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Not enough free ports.
    #[error("ports: need {need}, free {free} in {start}-{end}")]
    Exhausted {
        /// Ports asked for.
        need: u32,
        /// Ports free.
        free: u32,
        /// Range start.
        start: u16,
        /// Range end.
        end: u16,
    },
    /// The session already holds ports under other names.
    #[error("session {session} already holds ports for {held:?}, asked for {asked:?}")]
    Mismatch {
        /// Session id.
        session: String,
        /// Names it holds.
        held: Vec<String>,
        /// Names asked for now.
        asked: Vec<String>,
    },
    /// A port to restore is outside the range or held by someone else.
    #[error("port {port} cannot go to {session}: {why}")]
    Conflict {
        /// The port.
        port: u16,
        /// Who asked.
        session: String,
        /// Held by whom, or out of range.
        why: String,
    },
    /// The same port name twice in one request.
    #[error("port name {0:?} appears twice")]
    DuplicateName(String),
}

/// The ports of one worker and who holds them.
///
/// ```
/// use ccm_core::ports::PortAllocator;
/// use ccm_core::template::PortRange;
/// let mut p = PortAllocator::new(PortRange { start: 2000, end: 2002 });
/// let a = p.allocate("s1", &["ssh".into(), "vnc".into()]).unwrap();
/// assert_eq!(a["ssh"], 2000);
/// assert_eq!(a["vnc"], 2001);
/// assert_eq!(p.allocate("s1", &["ssh".into(), "vnc".into()]).unwrap(), a); // idempotent
/// assert!(p.allocate("s2", &["a".into(), "b".into()]).is_err());
/// p.release("s1");
/// assert_eq!(p.free(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAllocator {
    range: PortRange,
    used: Vec<u64>,
    free: u32,
    owners: BTreeMap<String, BTreeMap<String, u16>>,
}

impl PortAllocator {
    /// An empty allocator over `range`.
    pub fn new(range: PortRange) -> Self {
        let n = range.len() as usize;
        PortAllocator {
            range,
            used: vec![0; n.div_ceil(64)],
            free: range.len(),
            owners: BTreeMap::new(),
        }
    }

    /// The range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Ports not held.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// Ports held by `session`, by name.
    pub fn of(&self, session: &str) -> Option<&BTreeMap<String, u16>> {
        self.owners.get(session)
    }

    /// Every session holding ports.
    pub fn owners(&self) -> &BTreeMap<String, BTreeMap<String, u16>> {
        &self.owners
    }

    /// Who holds `port`.
    pub fn owner_of(&self, port: u16) -> Option<&str> {
        if !self.is_used(port) {
            return None;
        }
        self.owners
            .iter()
            .find(|(_, m)| m.values().any(|p| *p == port))
            .map(|(s, _)| s.as_str())
    }

    fn bit(&self, port: u16) -> Option<(usize, u64)> {
        if !self.range.contains(port) {
            return None;
        }
        let i = usize::from(port - self.range.start);
        Some((i / 64, 1u64 << (i % 64)))
    }

    fn is_used(&self, port: u16) -> bool {
        self.bit(port).is_some_and(|(w, m)| self.used[w] & m != 0)
    }

    fn mark(&mut self, port: u16, on: bool) {
        if let Some((w, m)) = self.bit(port) {
            let was = self.used[w] & m != 0;
            if on && !was {
                self.used[w] |= m;
                self.free -= 1;
            } else if !on && was {
                self.used[w] &= !m;
                self.free += 1;
            }
        }
    }

    /// The lowest `n` free ports, without taking them.
    pub fn peek_lowest(&self, n: usize) -> Vec<u16> {
        let mut out = Vec::with_capacity(n);
        let len = self.range.len() as usize;
        for (wi, word) in self.used.iter().enumerate() {
            let mut free_bits = !*word;
            while free_bits != 0 && out.len() < n {
                let b = free_bits.trailing_zeros() as usize;
                let idx = wi * 64 + b;
                if idx >= len {
                    return out;
                }
                out.push(self.range.start + idx as u16);
                free_bits &= free_bits - 1;
            }
            if out.len() == n {
                break;
            }
        }
        out
    }

    /// Gives `session` one port per name, lowest free first, in name order given.
    /// Asking again with the same names returns the same ports.
    pub fn allocate(
        &mut self,
        session: &str,
        names: &[String],
    ) -> Result<BTreeMap<String, u16>, PortError> {
        if let Some(held) = self.owners.get(session) {
            let same = held.len() == names.len() && names.iter().all(|n| held.contains_key(n));
            if same {
                return Ok(held.clone());
            }
            return Err(PortError::Mismatch {
                session: session.to_string(),
                held: held.keys().cloned().collect(),
                asked: names.to_vec(),
            });
        }
        let mut uniq = std::collections::BTreeSet::new();
        for n in names {
            if !uniq.insert(n) {
                return Err(PortError::DuplicateName(n.clone()));
            }
        }
        if names.len() as u64 > u64::from(self.free) {
            return Err(PortError::Exhausted {
                need: names.len() as u32,
                free: self.free,
                start: self.range.start,
                end: self.range.end,
            });
        }
        let ports = self.peek_lowest(names.len());
        let map: BTreeMap<String, u16> = names.iter().cloned().zip(ports.iter().copied()).collect();
        for p in &ports {
            self.mark(*p, true);
        }
        self.owners.insert(session.to_string(), map.clone());
        Ok(map)
    }

    /// Records ports a session already holds (loading from the store). Fails on any conflict
    /// and then changes nothing.
    pub fn restore(
        &mut self,
        session: &str,
        ports: &BTreeMap<String, u16>,
    ) -> Result<(), PortError> {
        if let Some(held) = self.owners.get(session) {
            if held == ports {
                return Ok(());
            }
        }
        for p in ports.values() {
            if !self.range.contains(*p) {
                return Err(PortError::Conflict {
                    port: *p,
                    session: session.to_string(),
                    why: format!("outside {}-{}", self.range.start, self.range.end),
                });
            }
            if let Some(o) = self.owner_of(*p) {
                if o != session {
                    return Err(PortError::Conflict {
                        port: *p,
                        session: session.to_string(),
                        why: format!("held by {o}"),
                    });
                }
            }
        }
        let mut uniq = std::collections::BTreeSet::new();
        for p in ports.values() {
            if !uniq.insert(*p) {
                return Err(PortError::Conflict {
                    port: *p,
                    session: session.to_string(),
                    why: "listed twice".into(),
                });
            }
        }
        self.release(session);
        for p in ports.values() {
            self.mark(*p, true);
        }
        self.owners.insert(session.to_string(), ports.clone());
        Ok(())
    }

    /// Frees every port of `session`; returns them.
    pub fn release(&mut self, session: &str) -> Vec<u16> {
        let Some(map) = self.owners.remove(session) else {
            return Vec::new();
        };
        let ports: Vec<u16> = map.values().copied().collect();
        for p in &ports {
            self.mark(*p, false);
        }
        ports
    }
}

#[derive(Serialize, Deserialize)]
struct PortAllocatorRepr {
    range: PortRange,
    #[serde(default)]
    owners: BTreeMap<String, BTreeMap<String, u16>>,
}

impl Serialize for PortAllocator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PortAllocatorRepr {
            range: self.range,
            owners: self.owners.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PortAllocator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = PortAllocatorRepr::deserialize(d)?;
        let mut p = PortAllocator::new(r.range);
        for (s, m) in &r.owners {
            p.restore(s, m).map_err(serde::de::Error::custom)?;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    #[test]
    fn lowest_first_and_reuse_after_release() {
        let mut p = PortAllocator::new(PortRange {
            start: 2000,
            end: 9999,
        });
        assert_eq!(p.free(), 8000);
        let a = p.allocate("a", &names(2)).unwrap();
        let b = p.allocate("b", &names(1)).unwrap();
        assert_eq!(a["p0"], 2000);
        assert_eq!(a["p1"], 2001);
        assert_eq!(b["p0"], 2002);
        assert_eq!(p.release("a"), vec![2000, 2001]);
        let c = p.allocate("c", &names(3)).unwrap();
        assert_eq!(
            c.values().copied().collect::<Vec<_>>(),
            vec![2000, 2001, 2003]
        );
        assert_eq!(p.owner_of(2002), Some("b"));
    }

    #[test]
    fn exhaustion_says_how_many() {
        let mut p = PortAllocator::new(PortRange { start: 10, end: 12 });
        let e = p.allocate("a", &names(4)).unwrap_err();
        assert_eq!(e.to_string(), "ports: need 4, free 3 in 10-12");
        assert_eq!(p.free(), 3);
    }

    #[test]
    fn restore_rejects_conflicts_and_round_trips() {
        let mut p = PortAllocator::new(PortRange {
            start: 100,
            end: 200,
        });
        p.allocate("a", &names(2)).unwrap();
        let mut m = BTreeMap::new();
        m.insert("x".to_string(), 101u16);
        assert!(matches!(
            p.restore("b", &m),
            Err(PortError::Conflict { .. })
        ));
        let json = serde_json::to_string(&p).unwrap();
        let back: PortAllocator = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.free(), 99);
    }

    #[test]
    fn port_range_end_inclusive_with_word_boundaries() {
        let mut p = PortAllocator::new(PortRange { start: 0, end: 64 });
        let all = p.allocate("a", &names(65)).unwrap();
        assert_eq!(all.values().max(), Some(&64));
        assert_eq!(p.free(), 0);
    }
}
