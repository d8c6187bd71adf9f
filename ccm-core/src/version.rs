//! CML versions compared as semver ("2.10" is newer than "2.9"), and inclusive version ranges.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A CML version such as `2.9`, `2.9.1` or `2.10.0-rc1`, compared as semver.
///
/// Missing minor/patch parts count as zero for ordering; the text as written is kept.
///
/// ```
/// use ccm_core::version::CmlVersion;
/// let a: CmlVersion = "2.9".parse().unwrap();
/// let b: CmlVersion = "2.10".parse().unwrap();
/// assert!(a < b);
/// ```
#[derive(Debug, Clone)]
pub struct CmlVersion {
    version: semver::Version,
    parts: u8,
    text: String,
}

/// A version string that is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CML version {text:?}: expected MAJOR[.MINOR[.PATCH]][-PRE], e.g. \"2.9.1\"")]
pub struct VersionError {
    /// The rejected text.
    pub text: String,
}

impl std::str::FromStr for CmlVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError {
            text: s.to_string(),
        };
        let trimmed = s.trim().trim_start_matches(['v', 'V']);
        let (core, rest) = match trimmed.find(['-', '+']) {
            Some(i) => (&trimmed[..i], &trimmed[i..]),
            None => (trimmed, ""),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(err());
        }
        let mut full = parts.clone();
        while full.len() < 3 {
            full.push("0");
        }
        let version =
            semver::Version::parse(&format!("{}{}", full.join("."), rest)).map_err(|_| err())?;
        Ok(CmlVersion {
            version,
            parts: parts.len() as u8,
            text: s.trim().to_string(),
        })
    }
}

impl CmlVersion {
    /// `0.0.0`.
    pub fn zero() -> CmlVersion {
        CmlVersion {
            version: semver::Version::new(0, 0, 0),
            parts: 3,
            text: "0.0.0".to_string(),
        }
    }

    /// The normalised semver value.
    pub fn semver(&self) -> &semver::Version {
        &self.version
    }

    /// Whether `other` lies at or below this version when this version is used as an upper
    /// bound: a bound written with fewer parts covers all versions below the next increment
    /// (`2.9` as a maximum admits `2.9.7`).
    pub fn admits_as_max(&self, other: &CmlVersion) -> bool {
        let v = &other.version;
        let m = &self.version;
        match self.parts {
            1 => v.major <= m.major,
            2 => (v.major, v.minor) <= (m.major, m.minor),
            _ => v <= m,
        }
    }
}

impl PartialEq for CmlVersion {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}
impl Eq for CmlVersion {}
impl std::hash::Hash for CmlVersion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.version.hash(state)
    }
}
impl PartialOrd for CmlVersion {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for CmlVersion {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.version.cmp(&other.version)
    }
}
impl fmt::Display for CmlVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl Serialize for CmlVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
impl<'de> Deserialize<'de> for CmlVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of CML versions; a missing end is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct VersionRange {
    /// Lowest admitted version.
    pub min: Option<CmlVersion>,
    /// Highest admitted version (see [`CmlVersion::admits_as_max`]).
    pub max: Option<CmlVersion>,
}

impl VersionRange {
    /// Whether `v` lies in the range.
    ///
    /// ```
    /// use ccm_core::version::{CmlVersion, VersionRange};
    /// let r = VersionRange { min: Some("2.9".parse().unwrap()), max: Some("2.10".parse().unwrap()) };
    /// assert!(r.contains(&"2.10.3".parse().unwrap()));
    /// assert!(!r.contains(&"2.8.9".parse().unwrap()));
    /// ```
    pub fn contains(&self, v: &CmlVersion) -> bool {
        self.min.as_ref().is_none_or(|m| v >= m)
            && self.max.as_ref().is_none_or(|m| m.admits_as_max(v))
    }

    /// True when both ends are open.
    pub fn is_any(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.min, &self.max) {
            (None, None) => f.write_str("any"),
            (Some(a), None) => write!(f, ">= {a}"),
            (None, Some(b)) => write!(f, "<= {b}"),
            (Some(a), Some(b)) => write!(f, "[{a}, {b}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> CmlVersion {
        s.parse().unwrap()
    }

    #[test]
    fn semver_not_string_order() {
        assert!(v("2.10") > v("2.9"));
        assert!(v("2.9.1") > v("2.9"));
        assert!(v("2.9.0-rc1") < v("2.9.0"));
        assert!("2.x".parse::<CmlVersion>().is_err());
        assert!("".parse::<CmlVersion>().is_err());
        assert!("1.2.3.4".parse::<CmlVersion>().is_err());
    }

    #[test]
    fn partial_max_admits_patches() {
        let r = VersionRange {
            min: None,
            max: Some(v("2.9")),
        };
        assert!(r.contains(&v("2.9.7")));
        assert!(!r.contains(&v("2.10.0")));
        let r = VersionRange {
            min: None,
            max: Some(v("2.9.1")),
        };
        assert!(!r.contains(&v("2.9.2")));
    }
}
