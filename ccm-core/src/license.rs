//! CML licence tiers and which worker licence serves which session.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The licence a CML worker runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseType {
    /// CML Personal: at most 20 nodes.
    Personal,
    /// CML Enterprise: up to 500 nodes, also serves personal sessions.
    Enterprise,
    /// CML evaluation licence: serves evaluation sessions only.
    Evaluation,
}

impl LicenseType {
    /// All tiers.
    pub const ALL: [LicenseType; 3] = [
        LicenseType::Personal,
        LicenseType::Enterprise,
        LicenseType::Evaluation,
    ];

    /// Whether a worker with licence `self` may run a session that needs `need`.
    ///
    /// ```
    /// use ccm_core::license::LicenseType::*;
    /// assert!(Enterprise.serves(Personal));
    /// assert!(!Personal.serves(Enterprise));
    /// assert!(!Enterprise.serves(Evaluation));
    /// ```
    pub fn serves(self, need: LicenseType) -> bool {
        matches!(
            (self, need),
            (LicenseType::Enterprise, LicenseType::Enterprise)
                | (LicenseType::Enterprise, LicenseType::Personal)
                | (LicenseType::Personal, LicenseType::Personal)
                | (LicenseType::Evaluation, LicenseType::Evaluation)
        )
    }

    /// Whether a worker with licence `self` serves a session with this affinity list (empty = any).
    pub fn serves_any(self, affinity: &[LicenseType]) -> bool {
        affinity.is_empty() || affinity.iter().any(|need| self.serves(*need))
    }

    /// The upper-case name used in files and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseType::Personal => "PERSONAL",
            LicenseType::Enterprise => "ENTERPRISE",
            LicenseType::Evaluation => "EVALUATION",
        }
    }
}

impl fmt::Display for LicenseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
