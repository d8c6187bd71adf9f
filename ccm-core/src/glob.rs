//! Shell-style globs for AMI names (`*` any run, `?` one character, everything else literal).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A compiled AMI name pattern such as `CML-2.9.*`.
///
/// ```
/// use ccm_core::glob::Glob;
/// let g = Glob::new("CML-2.9.*");
/// assert!(g.matches("CML-2.9.1-build7"));
/// assert!(!g.matches("CML-2.10.0"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    /// Wraps a pattern; every string is a valid pattern.
    pub fn new(pattern: impl Into<String>) -> Self {
        Glob {
            pattern: pattern.into(),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.pattern.as_bytes(), text.as_bytes())
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// Iterative wildcard matcher with single-star backtracking: linear in practice, no recursion.
fn glob_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_shapes() {
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("CML-*").matches("CML-2.9.0"));
        assert!(Glob::new("CML-2.?.*").matches("CML-2.9.0"));
        assert!(!Glob::new("CML-2.?.*").matches("CML-2.10.0"));
        assert!(Glob::new("a*b*c").matches("axxbyyc"));
        assert!(!Glob::new("a*b*c").matches("axxbyy"));
        assert!(!Glob::new("abc").matches("abcd"));
        assert!(Glob::new("*2.9*").matches("ami-CML-2.9.1"));
    }
}
