//! Typed configuration of the CML adapter (built by the caller; the adapter reads no
//! environment). Secrets never appear in `Debug` output or logs.

use crate::backoff::Backoff;
use crate::secret::{Secret, REDACTED};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A CML password: the adapters' shared [`Secret`] (the name is kept for callers).
pub type Password = Secret;

/// A CML user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct CmlCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

impl CmlCredentials {
    /// Credentials of `username`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        CmlCredentials {
            username: username.into(),
            password: Secret::new(password),
        }
    }
}

impl std::fmt::Debug for CmlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmlCredentials")
            .field("username", &self.username)
            .field("password", &format_args!("{REDACTED}"))
            .finish()
    }
}

/// How the controllers' certificates are checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CmlTls {
    /// Verify against the built-in web roots only.
    #[default]
    Verify,
    /// Verify against the built-in roots and the CA certificates (PEM) in this file (CML
    /// installs come with self-signed certificates: give the CA that signed them).
    VerifyWithCa(PathBuf),
    /// Do not verify certificates at all. An explicit opt-out for labs on a private network;
    /// never the default.
    InsecureSkipVerify,
}

/// The back-off between retries of a CML call: the adapters' shared [`Backoff`] (the name is
/// kept for callers).
pub type CmlBackoff = Backoff;

/// The default back-off between retries of a CML call: from 250 ms, at most 5 s.
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(5),
};

/// Everything the CML adapter needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CmlConfig {
    /// Credentials for workers without their own entry in `worker_credentials`.
    pub credentials: Option<CmlCredentials>,
    /// Credentials by worker id (take precedence over `credentials`).
    pub worker_credentials: BTreeMap<String, CmlCredentials>,
    /// Certificate checking.
    pub tls: CmlTls,
    /// Allow `http://` controller URLs (credentials and tokens then travel in clear text).
    pub allow_http: bool,
    /// Timeout to open a connection.
    pub connect_timeout: Duration,
    /// Timeout of one request (all but imports).
    pub request_timeout: Duration,
    /// Timeout of one import (CML answers an import only once the lab exists: ~90 s).
    pub import_timeout: Duration,
    /// Retries after a server error (5xx) or a connection failure; 0 = try once. An import is
    /// retried only when it surely did not reach CML (connection refused, HTTP 502/503/504).
    pub retries: u32,
    /// Back-off between retries.
    pub backoff: Backoff,
    /// Largest answer body read; a larger one is an error.
    pub max_response_bytes: usize,
}

impl CmlConfig {
    /// Defaults (certificates verified, https only, 5 s connect, 30 s request, 180 s import
    /// timeouts, 3 retries, 4 MiB answers) with one set of credentials for every worker.
    pub fn new(credentials: CmlCredentials) -> Self {
        CmlConfig {
            credentials: Some(credentials),
            worker_credentials: BTreeMap::new(),
            tls: CmlTls::Verify,
            allow_http: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            import_timeout: Duration::from_secs(180),
            retries: 3,
            backoff: DEFAULT_BACKOFF,
            max_response_bytes: 4 * 1024 * 1024,
        }
    }

    /// The credentials for `worker_id`.
    pub fn credentials_for(&self, worker_id: &str) -> Option<&CmlCredentials> {
        self.worker_credentials
            .get(worker_id)
            .or(self.credentials.as_ref())
    }

    /// Checks the values: positive timeouts, a sane answer cap, a usable back-off, non-empty
    /// user names.
    pub fn validate(&self) -> Result<(), CmlConfigError> {
        let bad = |field: &'static str, expected: &'static str| {
            Err(CmlConfigError::Invalid { field, expected })
        };
        if self.connect_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.import_timeout.is_zero()
        {
            return bad("timeouts", "every timeout above zero");
        }
        if self.max_response_bytes < 1024 {
            return bad("max_response_bytes", "at least 1024");
        }
        if !self.backoff.is_usable() {
            return bad("backoff", "initial > 0 and max >= initial");
        }
        if self.retries > 10 {
            return bad("retries", "at most 10");
        }
        let users = self
            .credentials
            .iter()
            .chain(self.worker_credentials.values());
        for c in users {
            if c.username.trim().is_empty() {
                return bad("credentials", "a non-empty user name");
            }
        }
        Ok(())
    }
}

/// A configuration the adapter cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmlConfigError {
    /// A value is out of range.
    #[error("CML adapter setting {field} is invalid: expected {expected}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What would be valid.
        expected: &'static str,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("CML CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the CML HTTP client: {0}")]
    Client(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_passwords() {
        let mut c = CmlConfig::new(CmlCredentials::new("admin", "hunter2-default"));
        c.worker_credentials
            .insert("w-7".into(), CmlCredentials::new("ops", "hunter2-worker"));
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(
            d.contains("admin") && d.contains("ops") && d.contains("<redacted>"),
            "{d}"
        );
    }

    #[test]
    fn worker_credentials_win_over_the_default() {
        let mut c = CmlConfig::new(CmlCredentials::new("admin", "a"));
        c.worker_credentials
            .insert("w-7".into(), CmlCredentials::new("ops", "b"));
        assert_eq!(c.credentials_for("w-7").unwrap().username, "ops");
        assert_eq!(c.credentials_for("w-1").unwrap().username, "admin");
        c.credentials = None;
        assert!(c.credentials_for("w-1").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = CmlConfig::new(CmlCredentials::new("admin", "a"));
        assert_eq!(c.validate(), Ok(()));
        c.request_timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("timeouts"));
        let mut c = CmlConfig::new(CmlCredentials::new(" ", "a"));
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("credentials"));
        c.credentials = None;
        c.max_response_bytes = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_response_bytes"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = CmlBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(9), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.delay_with(2, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay_with(2, 1.0), Duration::from_millis(200));
    }
}
