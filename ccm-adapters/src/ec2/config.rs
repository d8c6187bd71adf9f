//! Typed settings of the EC2 provider (filled by the daemon's settings; nothing here reads the
//! environment).

pub use crate::secret::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

/// Explicit AWS credentials (when absent, the standard AWS chain is used: environment, profile,
/// web identity, container and instance metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// Network settings of the instances launched in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionSettings {
    /// Subnet to launch into (the default VPC's when absent).
    pub subnet_id: Option<String>,
    /// Security groups (the default group when empty).
    pub security_group_ids: Vec<String>,
    /// EC2 key pair name.
    pub key_name: Option<String>,
    /// IAM instance profile: an ARN (`arn:...`) or a name.
    pub instance_profile: Option<String>,
}

/// Settings of [`super::Ec2Provider`].
#[derive(Debug, Clone)]
pub struct Ec2Config {
    /// The regions ccm watches, each with its network settings. A launch in a region not
    /// listed uses default network settings and adds that region to the watched ones.
    pub regions: BTreeMap<String, RegionSettings>,
    /// Endpoint override (moto, LocalStack, a VPC endpoint); AWS's own endpoints when absent.
    pub endpoint: Option<String>,
    /// Explicit credentials; the standard AWS chain when absent.
    pub credentials: Option<StaticCredentials>,
    /// Owners the AMI lookup is limited to (`self`, an account id); any owner when empty.
    pub ami_owners: Vec<String>,
    /// How long a resolved AMI is reused before it is looked up again.
    pub ami_cache_ttl: Duration,
    /// `MaxResults` of each `DescribeInstances` page (EC2 accepts 5 to 1000).
    pub page_size: i32,
    /// Attempts of a throttled call (the first one included) before giving up.
    pub max_attempts: u32,
    /// First back-off delay after throttling; it doubles each attempt.
    pub retry_base: Duration,
    /// Longest back-off delay.
    pub retry_max: Duration,
    /// The value of the `ManagedBy` tag on this fleet's instances (default `ccm`): only
    /// instances carrying it are listed, polled and adopted, so two fleets (or a test) can
    /// share one account.
    pub fleet: String,
}

impl Ec2Config {
    /// Settings for `regions` with the defaults: AWS endpoints, the standard credential chain,
    /// AMIs of any owner cached 10 minutes, pages of 100, 5 attempts backing off from 200 ms
    /// to 5 s.
    pub fn new<I, S>(regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ec2Config {
            regions: regions
                .into_iter()
                .map(|r| (r.into(), RegionSettings::default()))
                .collect(),
            endpoint: None,
            credentials: None,
            ami_owners: Vec::new(),
            ami_cache_ttl: Duration::from_secs(600),
            page_size: 100,
            max_attempts: 5,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            fleet: super::MANAGED_BY_VALUE.to_string(),
        }
    }

    /// The back-off before attempt `attempt + 1` (after `attempt` failures): `retry_base`
    /// doubled per failure, at most `retry_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_base
            .checked_mul(factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut cfg = Ec2Config::new(["us-east-1"]);
        cfg.credentials = Some(StaticCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI-very-secret"),
            session_token: Some(Secret::new("token-very-secret")),
        });
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(
            shown.contains("AKIDEXAMPLE"),
            "the key id is not secret: {shown}"
        );
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let cfg = Ec2Config::new(["us-east-1"]);
        assert_eq!(cfg.backoff(1), Duration::from_millis(200));
        assert_eq!(cfg.backoff(2), Duration::from_millis(400));
        assert_eq!(cfg.backoff(3), Duration::from_millis(800));
        assert_eq!(cfg.backoff(40), Duration::from_secs(5));
    }
}
