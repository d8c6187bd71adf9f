//! Configuration of the CloudEvents HTTP sink (filled by the caller; the adapter reads no
//! environment).

pub use crate::backoff::Backoff;
use ccm_core::redact::redact_url;
use std::time::Duration;

/// How an event is put on the wire (CloudEvents HTTP binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentMode {
    /// Attributes in `ce-*` headers, data as the body with `Content-Type: application/json`.
    #[default]
    Binary,
    /// The whole event as a JSON document with `Content-Type: application/cloudevents+json`.
    Structured,
}

impl std::str::FromStr for ContentMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "binary" => Ok(ContentMode::Binary),
            "structured" => Ok(ContentMode::Structured),
            _ => Err(ConfigError::Invalid {
                name: "CLOUDEVENTS_MODE",
                value: s.to_string(),
                expected: "binary or structured",
            }),
        }
    }
}

/// The default back-off between delivery attempts: from 200 ms, at most 10 s.
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(10),
};

/// Everything the sink needs. Its `Debug` redacts the sink URL's credentials.
#[derive(Clone, PartialEq)]
pub struct CloudEventsConfig {
    /// Where events are POSTed (`CLOUDEVENTS_SINK_URL`).
    pub sink_url: String,
    /// The `source` attribute (`CLOUDEVENTS_SOURCE`, default `ccm`).
    pub source: String,
    /// Binary (default) or structured content mode (`CLOUDEVENTS_MODE`).
    pub mode: ContentMode,
    /// Events accepted but not yet delivered or given up, at most (`CLOUDEVENTS_QUEUE_CAPACITY`,
    /// default 1024). Beyond it, `publish` drops and counts.
    pub queue_capacity: usize,
    /// Parallel delivery lanes; events of one subject always share a lane, so their order is
    /// kept (`CLOUDEVENTS_LANES`, default 4).
    pub lanes: usize,
    /// Timeout of one HTTP attempt (`CLOUDEVENTS_TIMEOUT_MS`, default 5000).
    pub request_timeout: Duration,
    /// Back-off between attempts.
    pub backoff: Backoff,
    /// How long one event is retried before it is given up and counted as failed
    /// (`CLOUDEVENTS_RETRY_FOR_SECONDS`, default 300).
    pub retry_for: Duration,
}

impl std::fmt::Debug for CloudEventsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudEventsConfig")
            .field("sink_url", &redact_url(&self.sink_url))
            .field("source", &self.source)
            .field("mode", &self.mode)
            .field("queue_capacity", &self.queue_capacity)
            .field("lanes", &self.lanes)
            .field("request_timeout", &self.request_timeout)
            .field("backoff", &self.backoff)
            .field("retry_for", &self.retry_for)
            .finish()
    }
}

impl CloudEventsConfig {
    /// Defaults for everything but the URL.
    pub fn new(sink_url: impl Into<String>) -> Self {
        CloudEventsConfig {
            sink_url: sink_url.into(),
            source: ccm_core::events::DEFAULT_SOURCE.to_string(),
            mode: ContentMode::Binary,
            queue_capacity: 1024,
            lanes: 4,
            request_timeout: Duration::from_secs(5),
            backoff: DEFAULT_BACKOFF,
            retry_for: Duration::from_secs(300),
        }
    }

    /// Checks the values: an http(s) URL, a non-empty source, positive sizes and timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.sink_url).map_err(|e| ConfigError::Url {
            url: redact_url(&self.sink_url),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::Url {
                url: redact_url(&self.sink_url),
                reason: format!("scheme {:?} is not http or https", url.scheme()),
            });
        }
        let invalid = |name, value: String, expected| {
            Err(ConfigError::Invalid {
                name,
                value,
                expected,
            })
        };
        if self.source.trim().is_empty() {
            return invalid(
                "CLOUDEVENTS_SOURCE",
                self.source.clone(),
                "a non-empty URI reference",
            );
        }
        if self.queue_capacity == 0 {
            return invalid("CLOUDEVENTS_QUEUE_CAPACITY", "0".into(), "at least 1");
        }
        if self.lanes == 0 {
            return invalid("CLOUDEVENTS_LANES", "0".into(), "at least 1");
        }
        if self.request_timeout.is_zero() {
            return invalid("CLOUDEVENTS_TIMEOUT_MS", "0".into(), "at least 1");
        }
        if !self.backoff.is_usable() {
            return invalid(
                "backoff",
                format!("{:?}", self.backoff),
                "initial > 0 and max >= initial",
            );
        }
        Ok(())
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The sink URL does not parse or is not http(s).
    #[error("CLOUDEVENTS_SINK_URL {url:?} is not a usable URL: {reason}")]
    Url {
        /// The URL given, with its credentials and secret query parameters redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// Another value is out of range.
    #[error("{name} = {value:?} is invalid: expected {expected}")]
    Invalid {
        /// Setting name.
        name: &'static str,
        /// Value given.
        value: String,
        /// What would be valid.
        expected: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let c = CloudEventsConfig::new("http://127.0.0.1:18080/");
        c.validate().unwrap();
        assert_eq!(
            (c.source.as_str(), c.mode, c.lanes),
            ("ccm", ContentMode::Binary, 4)
        );
        let e = CloudEventsConfig::new("ftp://x/").validate().unwrap_err();
        assert!(e.to_string().contains("ftp"), "{e}");
        let e = "batch".parse::<ContentMode>().unwrap_err();
        assert!(e.to_string().contains("binary or structured"), "{e}");
        assert_eq!(
            "Structured".parse::<ContentMode>(),
            Ok(ContentMode::Structured)
        );
        let mut c = CloudEventsConfig::new("http://x/");
        c.lanes = 0;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("CLOUDEVENTS_LANES"), "{e}");
        let mut c = CloudEventsConfig::new("http://x/");
        c.queue_capacity = 0;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("CLOUDEVENTS_QUEUE_CAPACITY"), "{e}");
    }

    #[test]
    fn credentials_of_the_sink_url_stay_out_of_debug_and_errors() {
        let c = CloudEventsConfig::new("http://user:hunter2@sink:8080/events?token=tok-s3cret");
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("tok-s3cret"), "{d}");
        assert!(d.contains("sink:8080"), "{d}");
        let bad = CloudEventsConfig::new("ftp://user:hunter2@sink/?token=tok-s3cret");
        let e = bad.validate().unwrap_err().to_string();
        assert!(!e.contains("hunter2") && !e.contains("tok-s3cret"), "{e}");
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(6), Duration::from_secs(2), "capped");
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2), "no overflow");
        assert_eq!(b.delay_with(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay_with(3, 1.0), Duration::from_millis(400));
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        assert!(draws
            .iter()
            .all(|d| *d >= Duration::from_millis(200) && *d <= Duration::from_millis(400)));
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(
            distinct.len() > 50,
            "jitter spreads delays: {}",
            distinct.len()
        );
    }
}
