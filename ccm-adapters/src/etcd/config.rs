//! Connection settings of the etcd adapter.

use crate::secret::REDACTED;
use std::path::PathBuf;
use std::time::Duration;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/ccm";

/// How to reach etcd. Secrets are never printed by `Debug`.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Endpoint URLs (`http://host:port`, or `https://` with TLS); at least one.
    pub endpoints: Vec<String>,
    /// Prefix every ccm key lives under (default `/ccm`).
    pub prefix: String,
    /// User name for etcd auth (`ETCD_USERNAME`).
    pub username: Option<String>,
    /// Password for etcd auth (`ETCD_PASSWORD`).
    pub password: Option<String>,
    /// CA certificate (PEM) that signed the server certificates (`ETCD_CA_CERT`).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (`ETCD_CERT_CERT`).
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS (`ETCD_CERT_KEY`).
    pub client_key: Option<PathBuf>,
    /// Timeout to open a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Timeout of one request (not of a watch stream).
    pub request_timeout: Duration,
    /// Largest transaction accepted (etcd's `--max-txn-ops`, 128 by default).
    pub max_txn_ops: usize,
    /// How long a read keeps retrying while etcd is unavailable before it reports
    /// `Unavailable` (writes are never retried by the store).
    pub read_retry: Duration,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_txn_ops", &self.max_txn_ops)
            .field("read_retry", &self.read_retry)
            .finish()
    }
}

/// A bad etcd setting, naming the variable or field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdConfigError {
    /// A value is malformed.
    #[error("{name}: {message}")]
    Invalid {
        /// Variable or field name.
        name: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A certificate or key file cannot be read.
    #[error("{name}: cannot read {path}: {message}")]
    File {
        /// Variable or field name.
        name: String,
        /// The path given.
        path: String,
        /// The OS error.
        message: String,
    },
}

impl EtcdConfig {
    /// Plain-text connection to `endpoints` with the defaults (prefix `/ccm`, 128-op
    /// transactions, 3 s connect timeout, 10 s request timeout).
    ///
    /// ```
    /// use ccm_adapters::etcd::EtcdConfig;
    /// let c = EtcdConfig::new(["http://127.0.0.1:2379"]);
    /// assert_eq!(c.prefix, "/ccm");
    /// assert_eq!(c.max_txn_ops, 128);
    /// ```
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_string(),
            username: None,
            password: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_txn_ops: 128,
            read_retry: Duration::from_secs(5),
        }
    }

    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks the settings for consistency (names the field at fault).
    pub fn validate(&self) -> Result<(), EtcdConfigError> {
        let invalid = |name: &str, message: String| {
            Err(EtcdConfigError::Invalid {
                name: name.into(),
                message,
            })
        };
        if self.endpoints.is_empty() {
            return invalid(
                "endpoints",
                "at least one etcd endpoint URL is needed".into(),
            );
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return invalid(
                    "endpoints",
                    format!("{e:?} is not an http:// or https:// URL"),
                );
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return invalid(
                "ETCD_USERNAME/ETCD_PASSWORD",
                "set both user name and password, or neither".into(),
            );
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return invalid(
                "ETCD_CERT_CERT/ETCD_CERT_KEY",
                "mutual TLS needs both the client certificate (ETCD_CERT_CERT) and its key (ETCD_CERT_KEY)".into(),
            );
        }
        if self.max_txn_ops == 0 {
            return invalid("max_txn_ops", "must be at least 1".into());
        }
        if !self.prefix.starts_with('/') {
            return invalid("prefix", format!("{:?} must start with '/'", self.prefix));
        }
        Ok(())
    }

    /// Whether the connection uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

/// Reads a PEM file named by setting `name`.
pub(crate) fn read_pem(name: &str, path: &std::path::Path) -> Result<Vec<u8>, EtcdConfigError> {
    std::fs::read(path).map_err(|e| EtcdConfigError::File {
        name: name.into(),
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_endpoints_mean_tls() {
        let c = EtcdConfig::new(["http://a:1", "http://b:2"]);
        c.validate().unwrap();
        assert!(!c.uses_tls());
        assert!(EtcdConfig::new(["https://e:2379"]).uses_tls());
        let mut c = EtcdConfig::new(["http://e:2379"]);
        c.ca_cert = Some("/ca.pem".into());
        assert!(c.uses_tls());
    }

    #[test]
    fn half_configured_auth_and_mtls_are_named() {
        let mut c = EtcdConfig::new(["http://e:2379"]);
        c.username = Some("u".into());
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("ETCD_PASSWORD"), "{e}");
        let mut c = EtcdConfig::new(["http://e:2379"]);
        c.client_cert = Some("/c.pem".into());
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("ETCD_CERT_KEY"), "{e}");
    }

    #[test]
    fn debug_redacts_password() {
        let mut c = EtcdConfig::new(["http://e:2379"]);
        c.username = Some("u".into());
        c.password = Some("s3cret".into());
        c.validate().unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("<redacted>"));
    }

    #[test]
    fn bad_endpoint_and_prefix_are_named() {
        let e = EtcdConfig::new(["127.0.0.1:2379"]).validate().unwrap_err();
        assert!(e.to_string().starts_with("endpoints"), "{e}");
        let e = EtcdConfig::new(["http://x:1"])
            .with_prefix("ccm")
            .validate()
            .unwrap_err();
        assert!(e.to_string().starts_with("prefix"), "{e}");
        let e = read_pem("ETCD_CA_CERT", std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            e.to_string().contains("ETCD_CA_CERT") && e.to_string().contains("/nonexistent/ca.pem")
        );
    }
}
