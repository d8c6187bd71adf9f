//! [`Secret`]: the one wrapper every adapter config uses for a password, key or token, so a
//! secret never reaches `Debug` output, `Display` or logs by accident.

use std::fmt;

/// What the adapters' hand-written `Debug` impls show in place of a password.
#[cfg(any(feature = "cml", feature = "etcd"))]
pub(crate) const REDACTED: &str = "<redacted>";

/// A secret string: its `Debug` and `Display` never show the value.
///
/// ```
/// use ccm_adapters::secret::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(s.expose(), "hunter2");
/// assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself (only for handing to the SDK or the authentication request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn neither_debug_nor_display_shows_the_value() {
        let s = Secret::new("very-secret");
        let shown = format!("{s:?} {s} {:?}", Some(&s));
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(s.expose(), "very-secret");
        assert_eq!(s, Secret::new(String::from("very-secret")));
    }
}
