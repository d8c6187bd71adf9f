//! Settings: every variable of prerequisites.md §3.1 with the same names and defaults, plus
//! MongoDB and ccm's own, read from the environment and a `.env` file (the environment wins).
//!
//! A bad value is an error naming the variable and what was expected; secrets (passwords,
//! secret keys, credentials inside URIs) never appear in `Debug` output, errors or logs.

use ccm_core::runtime::ScalingMode;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret string (the adapters' one type): `Debug` and `Display` print `***`.
pub use ccm_adapters::secret::Secret;

/// A URI that may carry credentials (`scheme://user:password@host/...`): `Debug` and
/// [`SecretUri::redacted`] hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUri(String);

impl SecretUri {
    /// Wraps a URI.
    pub fn new(s: impl Into<String>) -> Self {
        SecretUri(s.into())
    }
    /// The full URI, for handing to a client library (never to a log).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URI with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_uri(&self.0)
    }
}

impl fmt::Debug for SecretUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Replaces the password of `scheme://user:password@host...` with `***` (a user without a
/// password is kept; a URI without credentials is returned as is).
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return uri.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    format!("{}://{}@{}", &uri[..scheme_end], user, &rest[at + 1..])
}

/// Which live-state backend `ccm serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Everything in-process: memory stores and the simulated provider.
    Embedded,
    /// etcd for live state and leader election.
    Etcd,
}

/// Which cloud `ccm serve` launches workers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// The in-process simulated cloud (workers boot in their template's startup minutes).
    Simulated,
    /// Amazon EC2 (or an EC2-compatible endpoint such as moto).
    Ec2,
}

/// Which lab side (the workers' CML) `ccm serve` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabRuntimeKind {
    /// In-process simulated CML controllers (imports, boots and stops take realistic time).
    Simulated,
    /// The workers' CML controllers over their REST API.
    Cml,
    /// No lab side: the lab loop does not run (sessions stay SCHEDULED once bound).
    None,
}

/// How ccm talks to the workers' CML controllers (`CCM_LAB_RUNTIME`, `CML_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmlSettings {
    /// `CCM_LAB_RUNTIME`: `simulated`, `cml` or `none` (default `cml` with `CCM_PROVIDER=ec2`,
    /// else `simulated`).
    pub runtime: LabRuntimeKind,
    /// `CML_USERNAME`: the CML user of every worker without its own entry.
    pub username: Option<String>,
    /// `CML_PASSWORD` (goes with the user name).
    pub password: Option<Secret>,
    /// `CML_WORKER_CREDENTIALS_FILE`: a YAML map `worker-id: {username, password}` of
    /// per-worker credentials (read when `ccm serve` starts).
    pub worker_credentials_file: Option<PathBuf>,
    /// `CML_CA_FILE`: PEM CA certificates that signed the controllers' certificates.
    pub ca_file: Option<PathBuf>,
    /// `CML_INSECURE_SKIP_VERIFY` (default false): do not check certificates at all.
    pub insecure_skip_verify: bool,
    /// `CML_ALLOW_HTTP` (default false): allow `http://` controller URLs.
    pub allow_http: bool,
    /// `CML_REQUEST_TIMEOUT_SECONDS` (default 30).
    pub request_timeout: Duration,
    /// `CML_IMPORT_TIMEOUT_SECONDS` (default 180).
    pub import_timeout: Duration,
    /// `CML_RETRIES` (default 3): retries after a 5xx answer or a connection failure.
    pub retries: u32,
}

/// What to do with an instance tagged as ccm's that has no worker record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanPolicy {
    /// Take it into the fleet.
    Adopt,
    /// Terminate it.
    Terminate,
    /// Leave it alone (logged only).
    Ignore,
}

/// EC2 provider settings (`CCM_EC2_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Settings {
    /// `CCM_EC2_REGIONS`: comma-separated regions to watch (default: the enabled templates'
    /// regions).
    pub regions: Vec<String>,
    /// `CCM_EC2_ENDPOINT`: endpoint override (moto, a VPC endpoint); AWS's when unset.
    pub endpoint: Option<String>,
    /// `CCM_EC2_ACCESS_KEY_ID`: explicit credentials (the standard AWS chain when unset).
    pub access_key_id: Option<String>,
    /// `CCM_EC2_SECRET_ACCESS_KEY` (goes with the access key id).
    pub secret_access_key: Option<Secret>,
    /// `CCM_EC2_SESSION_TOKEN` (temporary credentials).
    pub session_token: Option<Secret>,
    /// `CCM_EC2_SUBNETS`: `region=subnet-id` pairs, comma-separated.
    pub subnets: BTreeMap<String, String>,
    /// `CCM_EC2_SECURITY_GROUPS`: `region=sg-1|sg-2` pairs, comma-separated.
    pub security_groups: BTreeMap<String, Vec<String>>,
    /// `CCM_EC2_KEY_NAMES`: `region=key-pair` pairs, comma-separated.
    pub key_names: BTreeMap<String, String>,
    /// `CCM_EC2_INSTANCE_PROFILES`: `region=name-or-arn` pairs, comma-separated.
    pub instance_profiles: BTreeMap<String, String>,
    /// `CCM_EC2_AMI_OWNERS`: comma-separated owners the AMI lookup is limited to (any when
    /// unset).
    pub ami_owners: Vec<String>,
    /// `CCM_EC2_AMI_CACHE_SECONDS` (default 600).
    pub ami_cache_ttl: Duration,
    /// `CCM_EC2_ORPHAN_POLICY`: `adopt` (default), `terminate` or `ignore`.
    pub orphan_policy: OrphanPolicy,
    /// `CCM_EC2_FLEET` (default `ccm`): the `ManagedBy` tag value of this fleet's instances;
    /// only those are listed and adopted.
    pub fleet: String,
}

/// A bad setting: which variable, what was expected, and what was given (hidden for secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A value could not be parsed.
    #[error("{var}: expected {expected}, got {got}")]
    Invalid {
        /// Variable name.
        var: String,
        /// What would have been accepted.
        expected: String,
        /// The value given, quoted (or `(hidden)` for a secret).
        got: String,
    },
    /// The `.env` file could not be read.
    #[error("{file}: {message}")]
    DotEnv {
        /// Path of the file.
        file: String,
        /// What went wrong.
        message: String,
    },
}

/// etcd connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `ETCD_HOST` (default `localhost`).
    pub host: String,
    /// `ETCD_PORT` (default 2379).
    pub port: u16,
    /// `CCM_ETCD_ENDPOINTS`: comma-separated endpoint URLs; overrides host and port when set.
    pub endpoints_override: Vec<String>,
    /// `ETCD_USERNAME`.
    pub username: Option<String>,
    /// `ETCD_PASSWORD`.
    pub password: Option<Secret>,
    /// `ETCD_CA_CERT`: CA certificate (PEM) for TLS.
    pub ca_cert: Option<PathBuf>,
    /// `ETCD_CERT_CERT`: the client certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// `ETCD_CERT_KEY`: the client key (PEM).
    pub client_key: Option<PathBuf>,
    /// `CCM_ETCD_PREFIX` (default `/ccm`).
    pub prefix: String,
}

impl EtcdSettings {
    /// Whether TLS is configured (a CA certificate is given).
    pub fn tls(&self) -> bool {
        self.ca_cert.is_some()
    }

    /// The endpoint URLs to dial: `CCM_ETCD_ENDPOINTS` or `http(s)://ETCD_HOST:ETCD_PORT`.
    pub fn endpoints(&self) -> Vec<String> {
        if !self.endpoints_override.is_empty() {
            return self.endpoints_override.clone();
        }
        let scheme = if self.tls() { "https" } else { "http" };
        vec![format!("{scheme}://{}:{}", self.host, self.port)]
    }
}

/// S3 / MinIO settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSettings {
    /// `ARTIFACT_STORAGE_ENDPOINT` (default `http://localhost:9000`).
    pub endpoint: String,
    /// `ARTIFACT_STORAGE_ACCESS_KEY` (default `minioadmin`).
    pub access_key: String,
    /// `ARTIFACT_STORAGE_SECRET_KEY` (default `minioadmin`).
    pub secret_key: Secret,
    /// `ARTIFACT_STORAGE_BUCKET` (default `lablet-artifacts`).
    pub bucket: String,
    /// `ARTIFACT_STORAGE_REGION` (default `us-east-1`).
    pub region: String,
    /// `ARTIFACT_STORAGE_USE_SSL` (default false).
    pub use_ssl: bool,
}

/// Scheduler loop settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// `SCHEDULER_ENABLED` (default true).
    pub enabled: bool,
    /// `SCHEDULER_RECONCILE_INTERVAL_SECONDS` (default 30).
    pub reconcile_interval: Duration,
    /// `SCHEDULER_LEADER_LEASE_TTL_SECONDS` (default 15).
    pub leader_lease_ttl: Duration,
    /// `SCHEDULER_LEAD_TIME_MINUTES` (default 35).
    pub lead_time_minutes: u32,
}

/// Resource controller loop settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSettings {
    /// `CONTROLLER_ENABLED` (default true).
    pub enabled: bool,
    /// `CONTROLLER_RECONCILE_INTERVAL_SECONDS` (default 30).
    pub reconcile_interval: Duration,
    /// `CONTROLLER_SCALE_DOWN_GRACE_PERIOD_MINUTES` (default 30).
    pub scale_down_grace_minutes: u32,
    /// `CONTROLLER_SCALING_POLICY`: `planner` (default) or `reactive` (ccm's addition).
    pub scaling: ScalingMode,
    /// `CONTROLLER_MIN_WARM_WORKERS` (default 0; ccm's addition).
    pub min_warm_workers: u32,
    /// `CONTROLLER_COOLDOWN_MINUTES` (default 10; ccm's addition).
    pub cooldown_minutes: u32,
    /// `CONTROLLER_PLAN_HORIZON_HOURS` (default 24; ccm's addition).
    pub plan_horizon_hours: u32,
    /// `CONTROLLER_SESSION_RETENTION_HOURS` (default 24; 0 = keep for ever; ccm's addition):
    /// a session ended longer ago is archived to the spec store's history and deleted from etcd.
    pub session_retention_hours: u32,
    /// `CONTROLLER_FLEET_RESYNC_MINUTES` (default 5; ccm's addition): every instance is read
    /// against the worker records this often (and at each new term), so a lost provider event or
    /// an order the cloud did not carry out is caught.
    pub fleet_resync_minutes: u32,
}

/// Lab loop settings (ccm's addition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabletSettings {
    /// `LABLET_LAB_LOOP_ENABLED` (default true; the loop runs when the daemon has a CML client).
    pub enabled: bool,
    /// `LABLET_RECONCILE_INTERVAL_SECONDS` (default 10).
    pub reconcile_interval: Duration,
    /// `LABLET_INSTANTIATION_LEAD_MINUTES` (default 15; part of the lead time): a lab is
    /// instantiated this long before its slot starts.
    pub instantiation_minutes: u32,
    /// `LABLET_RETRY_BACKOFF_SECONDS` (default 10): first back-off after a failed lab step.
    pub retry_backoff_seconds: u32,
    /// `LABLET_RETRY_BACKOFF_MAX_SECONDS` (default 300): longest back-off.
    pub retry_backoff_max_seconds: u32,
    /// `LABLET_MAX_ATTEMPTS` (default 5): failed attempts of a lab step before giving up.
    pub max_attempts: u32,
    /// `LABLET_BOOT_TIMEOUT_MINUTES` (default 30): longest instantiation.
    pub boot_timeout_minutes: u32,
    /// `LABLET_KEEP_WIPED_LABS_PER_WORKER` (default 4): wiped labs kept per worker for reuse.
    pub keep_wiped_labs_per_worker: u32,
    /// `LABLET_CML_URL_TEMPLATE` (default `https://{worker}`): a worker's CML base URL.
    pub cml_url_template: String,
    /// `LABLET_ORDER_TIMEOUT_MINUTES` (default 3): a stop or wipe ordered on CML and not seen
    /// done after this long is ordered again.
    pub order_timeout_minutes: u32,
}

/// Every setting of ccm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// etcd.
    pub etcd: EtcdSettings,
    /// S3 / MinIO.
    pub artifacts: ArtifactSettings,
    /// Scheduler loop.
    pub scheduler: SchedulerSettings,
    /// Controller loop.
    pub controller: ControllerSettings,
    /// Lab loop.
    pub lablet: LabletSettings,
    /// `WORKER_TEMPLATES_CONFIG_PATH` (default `config/worker-templates.yaml`).
    pub worker_templates_path: PathBuf,
    /// `CLOUDEVENTS_SINK_URL` (none: events are not sent anywhere).
    pub cloudevents_sink_url: Option<SecretUri>,
    /// `CLOUDEVENTS_SOURCE` (default `ccm`).
    pub cloudevents_source: String,
    /// `MONGODB_URI` (none: the in-memory spec store).
    pub mongodb_uri: Option<SecretUri>,
    /// `MONGODB_DATABASE` (default `ccm`).
    pub mongodb_database: String,
    /// `CCM_HTTP_ADDR` (default `127.0.0.1:8080`).
    pub http_addr: SocketAddr,
    /// `CCM_BACKEND`: `embedded` (default) or `etcd`.
    pub backend: Backend,
    /// `CCM_CANDIDATE_ID`: this process's name in leader elections (default `ccm-<pid>`).
    pub candidate_id: String,
    /// `CCM_MAX_PASS_MINUTES` (default 15): a pass of a loop (scheduler, controller, lab loop)
    /// still running after this is stalled; the daemon then resigns every leadership and exits.
    pub max_pass_minutes: u32,
    /// `CCM_API_TOKEN`: bearer token of the `/api/v1` endpoints (none: open, loopback only).
    pub api_token: Option<Secret>,
    /// `CCM_API_READS_OPEN`: API reads need no token even when one is set (default false).
    pub api_reads_open: bool,
    /// `CCM_PROVIDER`: `simulated` (default) or `ec2`.
    pub provider: ProviderKind,
    /// EC2 provider settings (used when `provider` is `ec2`).
    pub ec2: Ec2Settings,
    /// The lab side (`CCM_LAB_RUNTIME`, `CML_*`).
    pub cml: CmlSettings,
}

/// Every variable ccm reads, in the order of `.env.example`.
#[cfg(test)]
const VARIABLES: &[&str] = &[
    "ETCD_HOST",
    "ETCD_PORT",
    "ETCD_USERNAME",
    "ETCD_PASSWORD",
    "ETCD_CA_CERT",
    "ETCD_CERT_KEY",
    "ETCD_CERT_CERT",
    "ARTIFACT_STORAGE_ENDPOINT",
    "ARTIFACT_STORAGE_ACCESS_KEY",
    "ARTIFACT_STORAGE_SECRET_KEY",
    "ARTIFACT_STORAGE_BUCKET",
    "ARTIFACT_STORAGE_REGION",
    "ARTIFACT_STORAGE_USE_SSL",
    "SCHEDULER_ENABLED",
    "SCHEDULER_RECONCILE_INTERVAL_SECONDS",
    "SCHEDULER_LEADER_LEASE_TTL_SECONDS",
    "SCHEDULER_LEAD_TIME_MINUTES",
    "CONTROLLER_ENABLED",
    "CONTROLLER_RECONCILE_INTERVAL_SECONDS",
    "CONTROLLER_SCALE_DOWN_GRACE_PERIOD_MINUTES",
    "CONTROLLER_SCALING_POLICY",
    "CONTROLLER_MIN_WARM_WORKERS",
    "CONTROLLER_COOLDOWN_MINUTES",
    "CONTROLLER_FLEET_RESYNC_MINUTES",
    "CONTROLLER_PLAN_HORIZON_HOURS",
    "CONTROLLER_SESSION_RETENTION_HOURS",
    "LABLET_LAB_LOOP_ENABLED",
    "LABLET_RECONCILE_INTERVAL_SECONDS",
    "LABLET_INSTANTIATION_LEAD_MINUTES",
    "LABLET_RETRY_BACKOFF_SECONDS",
    "LABLET_RETRY_BACKOFF_MAX_SECONDS",
    "LABLET_MAX_ATTEMPTS",
    "LABLET_BOOT_TIMEOUT_MINUTES",
    "LABLET_ORDER_TIMEOUT_MINUTES",
    "LABLET_KEEP_WIPED_LABS_PER_WORKER",
    "LABLET_CML_URL_TEMPLATE",
    "WORKER_TEMPLATES_CONFIG_PATH",
    "CLOUDEVENTS_SINK_URL",
    "CLOUDEVENTS_SOURCE",
    "MONGODB_URI",
    "MONGODB_DATABASE",
    "CCM_HTTP_ADDR",
    "CCM_BACKEND",
    "CCM_ETCD_PREFIX",
    "CCM_ETCD_ENDPOINTS",
    "CCM_CANDIDATE_ID",
    "CCM_MAX_PASS_MINUTES",
    "CCM_API_TOKEN",
    "CCM_API_READS_OPEN",
    "CCM_PROVIDER",
    "CCM_EC2_REGIONS",
    "CCM_EC2_ENDPOINT",
    "CCM_EC2_ACCESS_KEY_ID",
    "CCM_EC2_SECRET_ACCESS_KEY",
    "CCM_EC2_SESSION_TOKEN",
    "CCM_EC2_SUBNETS",
    "CCM_EC2_SECURITY_GROUPS",
    "CCM_EC2_KEY_NAMES",
    "CCM_EC2_INSTANCE_PROFILES",
    "CCM_EC2_AMI_OWNERS",
    "CCM_EC2_AMI_CACHE_SECONDS",
    "CCM_EC2_ORPHAN_POLICY",
    "CCM_EC2_FLEET",
    "CCM_LAB_RUNTIME",
    "CML_USERNAME",
    "CML_PASSWORD",
    "CML_WORKER_CREDENTIALS_FILE",
    "CML_CA_FILE",
    "CML_INSECURE_SKIP_VERIFY",
    "CML_ALLOW_HTTP",
    "CML_REQUEST_TIMEOUT_SECONDS",
    "CML_IMPORT_TIMEOUT_SECONDS",
    "CML_RETRIES",
];

/// Variables whose values are never echoed, not even in an error.
const SECRET_VARIABLES: &[&str] = &[
    "ETCD_PASSWORD",
    "ARTIFACT_STORAGE_SECRET_KEY",
    "MONGODB_URI",
    "CLOUDEVENTS_SINK_URL",
    "CCM_API_TOKEN",
    "CCM_EC2_SECRET_ACCESS_KEY",
    "CCM_EC2_SESSION_TOKEN",
    "CML_PASSWORD",
];

/// Reads typed values from a name → value map, with errors naming the variable.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
}

impl Reader<'_> {
    /// The raw value; empty strings count as unset (as with pydantic's `None` defaults).
    fn raw(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn invalid(&self, var: &str, expected: &str, got: &str) -> SettingsError {
        let got = if got.is_empty() {
            "nothing".to_string()
        } else if SECRET_VARIABLES.contains(&var) {
            "(hidden)".to_string()
        } else {
            format!("{got:?}")
        };
        SettingsError::Invalid {
            var: var.to_string(),
            expected: expected.to_string(),
            got,
        }
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or(default).to_string()
    }

    fn optional(&self, var: &str) -> Option<String> {
        self.raw(var).map(str::to_string)
    }

    fn boolean(&self, var: &str, default: bool) -> Result<bool, SettingsError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(self.invalid(var, "a boolean (true/false, 1/0, yes/no, on/off)", v)),
            },
        }
    }

    fn positive(&self, var: &str, default: u32) -> Result<u32, SettingsError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.invalid(var, "a positive integer", v)),
            },
        }
    }

    fn natural(&self, var: &str, default: u32) -> Result<u32, SettingsError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| self.invalid(var, "a whole number (0 or more)", v)),
        }
    }

    fn port(&self, var: &str, default: u16) -> Result<u16, SettingsError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.invalid(var, "a TCP port (1-65535)", v)),
            },
        }
    }

    fn list(&self, var: &str) -> Vec<String> {
        self.raw(var)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `region=value` pairs, comma-separated.
    fn per_region(&self, var: &str) -> Result<BTreeMap<String, String>, SettingsError> {
        let mut out = BTreeMap::new();
        for entry in self.list(var) {
            match entry.split_once('=') {
                Some((r, v)) if !r.trim().is_empty() && !v.trim().is_empty() => {
                    out.insert(r.trim().to_string(), v.trim().to_string());
                }
                _ => {
                    return Err(self.invalid(
                        var,
                        "comma-separated region=value pairs (e.g. us-east-1=subnet-0abc)",
                        &entry,
                    ))
                }
            }
        }
        Ok(out)
    }

    fn url(&self, var: &str, default: Option<&str>) -> Result<Option<String>, SettingsError> {
        let Some(v) = self.raw(var).or(default) else {
            return Ok(None);
        };
        let ok = ["http://", "https://"]
            .iter()
            .any(|s| v.len() > s.len() && v.to_ascii_lowercase().starts_with(s));
        if ok {
            Ok(Some(v.to_string()))
        } else {
            Err(self.invalid(var, "an http:// or https:// URL", v))
        }
    }
}

impl Settings {
    /// Settings from a map of variables (unset ones take their defaults).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Settings, SettingsError> {
        let r = Reader { vars };
        let endpoints_override = match r.raw("CCM_ETCD_ENDPOINTS") {
            None => Vec::new(),
            Some(list) => {
                let eps: Vec<String> = list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = eps
                    .iter()
                    .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
                {
                    return Err(r.invalid(
                        "CCM_ETCD_ENDPOINTS",
                        "comma-separated http:// or https:// URLs",
                        bad,
                    ));
                }
                eps
            }
        };
        let etcd = EtcdSettings {
            host: r.string("ETCD_HOST", "localhost"),
            port: r.port("ETCD_PORT", 2379)?,
            endpoints_override,
            username: r.optional("ETCD_USERNAME"),
            password: r.optional("ETCD_PASSWORD").map(Secret::new),
            ca_cert: r.optional("ETCD_CA_CERT").map(PathBuf::from),
            client_cert: r.optional("ETCD_CERT_CERT").map(PathBuf::from),
            client_key: r.optional("ETCD_CERT_KEY").map(PathBuf::from),
            prefix: {
                let p = r.string("CCM_ETCD_PREFIX", "/ccm");
                if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') {
                    return Err(r.invalid(
                        "CCM_ETCD_PREFIX",
                        "a key prefix starting with '/' and not ending with '/' (e.g. /ccm)",
                        &p,
                    ));
                }
                p
            },
        };
        if etcd.client_cert.is_some() != etcd.client_key.is_some() {
            let (var, other) = if etcd.client_cert.is_some() {
                ("ETCD_CERT_KEY", "ETCD_CERT_CERT")
            } else {
                ("ETCD_CERT_CERT", "ETCD_CERT_KEY")
            };
            return Err(r.invalid(var, &format!("a path, since {other} is set"), ""));
        }
        if etcd.username.is_some() != etcd.password.is_some() {
            let var = if etcd.username.is_some() {
                "ETCD_PASSWORD"
            } else {
                "ETCD_USERNAME"
            };
            return Err(r.invalid(
                var,
                "a value: ETCD_USERNAME and ETCD_PASSWORD go together",
                "",
            ));
        }
        let artifacts = ArtifactSettings {
            endpoint: r
                .url("ARTIFACT_STORAGE_ENDPOINT", Some("http://localhost:9000"))?
                .unwrap_or_default(),
            access_key: r.string("ARTIFACT_STORAGE_ACCESS_KEY", "minioadmin"),
            secret_key: Secret::new(r.string("ARTIFACT_STORAGE_SECRET_KEY", "minioadmin")),
            bucket: r.string("ARTIFACT_STORAGE_BUCKET", "lablet-artifacts"),
            region: r.string("ARTIFACT_STORAGE_REGION", "us-east-1"),
            use_ssl: r.boolean("ARTIFACT_STORAGE_USE_SSL", false)?,
        };
        let scheduler = SchedulerSettings {
            enabled: r.boolean("SCHEDULER_ENABLED", true)?,
            reconcile_interval: Duration::from_secs(
                r.positive("SCHEDULER_RECONCILE_INTERVAL_SECONDS", 30)?
                    .into(),
            ),
            leader_lease_ttl: Duration::from_secs(
                r.positive("SCHEDULER_LEADER_LEASE_TTL_SECONDS", 15)?.into(),
            ),
            lead_time_minutes: r.positive("SCHEDULER_LEAD_TIME_MINUTES", 35)?,
        };
        let controller = ControllerSettings {
            enabled: r.boolean("CONTROLLER_ENABLED", true)?,
            reconcile_interval: Duration::from_secs(
                r.positive("CONTROLLER_RECONCILE_INTERVAL_SECONDS", 30)?
                    .into(),
            ),
            scale_down_grace_minutes: r
                .positive("CONTROLLER_SCALE_DOWN_GRACE_PERIOD_MINUTES", 30)?,
            scaling: match r.raw("CONTROLLER_SCALING_POLICY") {
                None => ScalingMode::Planner,
                Some(v) => v.parse().map_err(|_| {
                    r.invalid("CONTROLLER_SCALING_POLICY", "one of: planner, reactive", v)
                })?,
            },
            min_warm_workers: r.natural("CONTROLLER_MIN_WARM_WORKERS", 0)?,
            cooldown_minutes: r.natural("CONTROLLER_COOLDOWN_MINUTES", 10)?,
            plan_horizon_hours: r.positive("CONTROLLER_PLAN_HORIZON_HOURS", 24)?,
            session_retention_hours: r.natural("CONTROLLER_SESSION_RETENTION_HOURS", 24)?,
            fleet_resync_minutes: r.positive("CONTROLLER_FLEET_RESYNC_MINUTES", 5)?,
        };
        let lablet = LabletSettings {
            enabled: r.boolean("LABLET_LAB_LOOP_ENABLED", true)?,
            reconcile_interval: Duration::from_secs(
                r.positive("LABLET_RECONCILE_INTERVAL_SECONDS", 10)?.into(),
            ),
            instantiation_minutes: r.natural("LABLET_INSTANTIATION_LEAD_MINUTES", 15)?,
            retry_backoff_seconds: r.positive("LABLET_RETRY_BACKOFF_SECONDS", 10)?,
            retry_backoff_max_seconds: r.positive("LABLET_RETRY_BACKOFF_MAX_SECONDS", 300)?,
            max_attempts: r.positive("LABLET_MAX_ATTEMPTS", 5)?,
            boot_timeout_minutes: r.positive("LABLET_BOOT_TIMEOUT_MINUTES", 30)?,
            keep_wiped_labs_per_worker: r.natural("LABLET_KEEP_WIPED_LABS_PER_WORKER", 4)?,
            cml_url_template: r.string("LABLET_CML_URL_TEMPLATE", "https://{worker}"),
            order_timeout_minutes: r.positive("LABLET_ORDER_TIMEOUT_MINUTES", 3)?,
        };
        let mongodb_uri = match r.raw("MONGODB_URI") {
            None => None,
            Some(v) if v.starts_with("mongodb://") || v.starts_with("mongodb+srv://") => {
                Some(SecretUri::new(v))
            }
            Some(v) => {
                return Err(r.invalid("MONGODB_URI", "a mongodb:// or mongodb+srv:// URI", v))
            }
        };
        let http_addr = {
            let v = r.string("CCM_HTTP_ADDR", "127.0.0.1:8080");
            v.parse::<SocketAddr>().map_err(|_| {
                r.invalid(
                    "CCM_HTTP_ADDR",
                    "a socket address such as 127.0.0.1:8080",
                    &v,
                )
            })?
        };
        let backend = match r.raw("CCM_BACKEND").map(str::to_ascii_lowercase).as_deref() {
            None | Some("embedded") | Some("memory") => Backend::Embedded,
            Some("etcd") => Backend::Etcd,
            Some(_) => {
                let v = r.raw("CCM_BACKEND").unwrap_or_default();
                return Err(r.invalid("CCM_BACKEND", "one of: embedded, etcd", v));
            }
        };
        let provider = match r
            .raw("CCM_PROVIDER")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("simulated") => ProviderKind::Simulated,
            Some("ec2") => ProviderKind::Ec2,
            Some(_) => {
                let v = r.raw("CCM_PROVIDER").unwrap_or_default();
                return Err(r.invalid("CCM_PROVIDER", "one of: simulated, ec2", v));
            }
        };
        let ec2 = Ec2Settings {
            regions: r.list("CCM_EC2_REGIONS"),
            endpoint: r.url("CCM_EC2_ENDPOINT", None)?,
            access_key_id: r.optional("CCM_EC2_ACCESS_KEY_ID"),
            secret_access_key: r.optional("CCM_EC2_SECRET_ACCESS_KEY").map(Secret::new),
            session_token: r.optional("CCM_EC2_SESSION_TOKEN").map(Secret::new),
            subnets: r.per_region("CCM_EC2_SUBNETS")?,
            security_groups: r
                .per_region("CCM_EC2_SECURITY_GROUPS")?
                .into_iter()
                .map(|(region, groups)| {
                    let groups = groups
                        .split('|')
                        .map(|g| g.trim().to_string())
                        .filter(|g| !g.is_empty())
                        .collect();
                    (region, groups)
                })
                .collect(),
            key_names: r.per_region("CCM_EC2_KEY_NAMES")?,
            instance_profiles: r.per_region("CCM_EC2_INSTANCE_PROFILES")?,
            ami_owners: r.list("CCM_EC2_AMI_OWNERS"),
            ami_cache_ttl: Duration::from_secs(
                r.positive("CCM_EC2_AMI_CACHE_SECONDS", 600)?.into(),
            ),
            orphan_policy: match r
                .raw("CCM_EC2_ORPHAN_POLICY")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("adopt") => OrphanPolicy::Adopt,
                Some("terminate") => OrphanPolicy::Terminate,
                Some("ignore") => OrphanPolicy::Ignore,
                Some(_) => {
                    let v = r.raw("CCM_EC2_ORPHAN_POLICY").unwrap_or_default();
                    return Err(r.invalid(
                        "CCM_EC2_ORPHAN_POLICY",
                        "one of: adopt, terminate, ignore",
                        v,
                    ));
                }
            },
            fleet: r.string("CCM_EC2_FLEET", "ccm"),
        };
        if ec2.access_key_id.is_some() != ec2.secret_access_key.is_some() {
            let var = if ec2.access_key_id.is_some() {
                "CCM_EC2_SECRET_ACCESS_KEY"
            } else {
                "CCM_EC2_ACCESS_KEY_ID"
            };
            return Err(r.invalid(
                var,
                "a value: CCM_EC2_ACCESS_KEY_ID and CCM_EC2_SECRET_ACCESS_KEY go together",
                "",
            ));
        }
        let cml = CmlSettings {
            runtime: match r
                .raw("CCM_LAB_RUNTIME")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None if provider == ProviderKind::Ec2 => LabRuntimeKind::Cml,
                None | Some("simulated") => LabRuntimeKind::Simulated,
                Some("cml") => LabRuntimeKind::Cml,
                Some("none") => LabRuntimeKind::None,
                Some(_) => {
                    let v = r.raw("CCM_LAB_RUNTIME").unwrap_or_default();
                    return Err(r.invalid("CCM_LAB_RUNTIME", "one of: simulated, cml, none", v));
                }
            },
            username: r.optional("CML_USERNAME"),
            password: r.optional("CML_PASSWORD").map(Secret::new),
            worker_credentials_file: r.optional("CML_WORKER_CREDENTIALS_FILE").map(PathBuf::from),
            ca_file: r.optional("CML_CA_FILE").map(PathBuf::from),
            insecure_skip_verify: r.boolean("CML_INSECURE_SKIP_VERIFY", false)?,
            allow_http: r.boolean("CML_ALLOW_HTTP", false)?,
            request_timeout: Duration::from_secs(
                r.positive("CML_REQUEST_TIMEOUT_SECONDS", 30)?.into(),
            ),
            import_timeout: Duration::from_secs(
                r.positive("CML_IMPORT_TIMEOUT_SECONDS", 180)?.into(),
            ),
            retries: r.natural("CML_RETRIES", 3)?,
        };
        if cml.username.is_some() != cml.password.is_some() {
            let var = if cml.username.is_some() {
                "CML_PASSWORD"
            } else {
                "CML_USERNAME"
            };
            return Err(r.invalid(
                var,
                "a value: CML_USERNAME and CML_PASSWORD go together",
                "",
            ));
        }
        if cml.insecure_skip_verify && cml.ca_file.is_some() {
            return Err(r.invalid(
                "CML_INSECURE_SKIP_VERIFY",
                "false when CML_CA_FILE is set (verify against the CA, or do not verify)",
                "true",
            ));
        }
        if cml.retries > 10 {
            return Err(r.invalid("CML_RETRIES", "at most 10", &cml.retries.to_string()));
        }
        Ok(Settings {
            cml,
            provider,
            ec2,
            etcd,
            artifacts,
            scheduler,
            controller,
            lablet,
            worker_templates_path: PathBuf::from(r.string(
                "WORKER_TEMPLATES_CONFIG_PATH",
                "config/worker-templates.yaml",
            )),
            cloudevents_sink_url: r.url("CLOUDEVENTS_SINK_URL", None)?.map(SecretUri::new),
            cloudevents_source: r.string("CLOUDEVENTS_SOURCE", "ccm"),
            mongodb_uri,
            mongodb_database: r.string("MONGODB_DATABASE", "ccm"),
            http_addr,
            backend,
            candidate_id: r
                .optional("CCM_CANDIDATE_ID")
                .unwrap_or_else(|| format!("ccm-{}", std::process::id())),
            max_pass_minutes: r.positive("CCM_MAX_PASS_MINUTES", 15)?,
            api_token: r.optional("CCM_API_TOKEN").map(Secret::new),
            api_reads_open: r.boolean("CCM_API_READS_OPEN", false)?,
        })
    }

    /// Settings from the process environment over a `.env` file (when `dotenv` exists;
    /// a missing file is fine, an unreadable or malformed one is an error naming it).
    pub fn load(dotenv: Option<&Path>) -> Result<Settings, SettingsError> {
        Settings::from_vars(&merge_vars(dotenv, std::env::vars())?)
    }
}

/// Largest `CML_WORKER_CREDENTIALS_FILE` read (bytes).
pub const MAX_CML_CREDENTIALS_BYTES: u64 = 1024 * 1024;

/// One worker's CML credentials from `CML_WORKER_CREDENTIALS_FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCmlCredentials {
    /// CML user name.
    pub username: String,
    /// Its password (never printed).
    pub password: Secret,
}

/// Reads `CML_WORKER_CREDENTIALS_FILE`: a YAML map of worker id to `{username, password}`.
/// Errors name the file, the line and the field; the passwords never appear in them.
pub fn load_cml_worker_credentials(
    path: &Path,
) -> Result<BTreeMap<String, WorkerCmlCredentials>, SettingsError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        username: String,
        password: String,
    }
    let file = path.display().to_string();
    let fail = |message: String| SettingsError::DotEnv {
        file: file.clone(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| fail(format!("CML_WORKER_CREDENTIALS_FILE cannot be read: {e}")))?
        .len();
    if len > MAX_CML_CREDENTIALS_BYTES {
        return Err(fail(format!(
            "CML_WORKER_CREDENTIALS_FILE is {len} bytes, more than {MAX_CML_CREDENTIALS_BYTES}"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("CML_WORKER_CREDENTIALS_FILE cannot be read: {e}")))?;
    let map: BTreeMap<String, Entry> =
        ccm_core::template::from_yaml_str(&text, &file).map_err(|e| SettingsError::DotEnv {
            file: file.clone(),
            message: match (e.line, &e.field) {
                (Some(l), Some(f)) => format!("line {l}, {f}: {}", e.message),
                (Some(l), None) => format!("line {l}: {}", e.message),
                (None, Some(f)) => format!("{f}: {}", e.message),
                (None, None) => e.message.clone(),
            },
        })?;
    let mut out = BTreeMap::new();
    for (worker, e) in map {
        if e.username.trim().is_empty() {
            return Err(fail(format!("{worker}.username: empty")));
        }
        out.insert(
            worker,
            WorkerCmlCredentials {
                username: e.username,
                password: Secret::new(e.password),
            },
        );
    }
    Ok(out)
}

/// The variables of a `.env` file overlaid by `env` (the environment wins).
fn merge_vars(
    dotenv: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, SettingsError> {
    let mut vars = HashMap::new();
    if let Some(path) = dotenv.filter(|p| p.exists()) {
        let file = path.display().to_string();
        let iter = dotenvy::from_path_iter(path).map_err(|e| SettingsError::DotEnv {
            file: file.clone(),
            message: dotenv_message(&e),
        })?;
        for item in iter {
            let (k, v) = item.map_err(|e| SettingsError::DotEnv {
                file: file.clone(),
                message: dotenv_message(&e),
            })?;
            vars.insert(k, v);
        }
    }
    vars.extend(env);
    Ok(vars)
}

/// A `.env` parse error without echoing the offending line (it may hold a secret).
fn dotenv_message(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(_, index) => {
            format!("cannot parse the line at character {index}")
        }
        dotenvy::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_prerequisites() {
        let s = Settings::from_vars(&HashMap::new()).unwrap();
        assert_eq!(s.etcd.host, "localhost");
        assert_eq!(s.etcd.port, 2379);
        assert_eq!(
            s.etcd.endpoints(),
            vec!["http://localhost:2379".to_string()]
        );
        assert_eq!(s.etcd.username, None);
        assert_eq!(s.etcd.prefix, "/ccm");
        assert_eq!(s.artifacts.endpoint, "http://localhost:9000");
        assert_eq!(s.artifacts.access_key, "minioadmin");
        assert_eq!(s.artifacts.secret_key.expose(), "minioadmin");
        assert_eq!(s.artifacts.bucket, "lablet-artifacts");
        assert_eq!(s.artifacts.region, "us-east-1");
        assert!(!s.artifacts.use_ssl);
        assert!(s.scheduler.enabled);
        assert_eq!(s.scheduler.reconcile_interval, Duration::from_secs(30));
        assert_eq!(s.scheduler.leader_lease_ttl, Duration::from_secs(15));
        assert_eq!(s.scheduler.lead_time_minutes, 35);
        assert!(s.controller.enabled);
        assert_eq!(s.controller.reconcile_interval, Duration::from_secs(30));
        assert_eq!(s.controller.scale_down_grace_minutes, 30);
        assert_eq!(s.lablet.instantiation_minutes, 15);
        assert_eq!(s.lablet.max_attempts, 5);
        assert_eq!(s.lablet.keep_wiped_labs_per_worker, 4);
        assert_eq!(s.lablet.cml_url_template, "https://{worker}");
        assert_eq!(s.lablet.order_timeout_minutes, 3);
        assert_eq!(s.controller.fleet_resync_minutes, 5);
        assert_eq!(s.controller.scaling, ScalingMode::Planner);
        assert_eq!(
            (
                s.controller.min_warm_workers,
                s.controller.cooldown_minutes,
                s.controller.plan_horizon_hours
            ),
            (0, 10, 24)
        );
        assert_eq!(s.controller.session_retention_hours, 24);
        assert_eq!(s.max_pass_minutes, 15);
        assert_eq!(
            s.worker_templates_path,
            PathBuf::from("config/worker-templates.yaml")
        );
        assert_eq!(s.cloudevents_sink_url, None);
        assert_eq!(s.cloudevents_source, "ccm");
        assert_eq!(s.mongodb_uri, None);
        assert_eq!(s.mongodb_database, "ccm");
        // One default for the database, whoever connects.
        #[cfg(feature = "all-adapters")]
        assert_eq!(s.mongodb_database, ccm_adapters::mongo::DEFAULT_DATABASE);
        assert_eq!(s.http_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.backend, Backend::Embedded);
        assert_eq!(s.provider, ProviderKind::Simulated);
        assert!(s.ec2.regions.is_empty());
        assert_eq!(s.ec2.endpoint, None);
        assert_eq!(s.ec2.access_key_id, None);
        assert_eq!(s.ec2.ami_cache_ttl, Duration::from_secs(600));
        assert_eq!(s.ec2.orphan_policy, OrphanPolicy::Adopt);
    }

    #[test]
    fn ec2_settings_are_parsed() {
        let s = Settings::from_vars(&vars(&[
            ("CCM_PROVIDER", "EC2"),
            ("CCM_EC2_REGIONS", "us-east-1, us-west-2"),
            ("CCM_EC2_ENDPOINT", "http://127.0.0.1:15010"),
            ("CCM_EC2_ACCESS_KEY_ID", "AKID"),
            ("CCM_EC2_SECRET_ACCESS_KEY", "ec2-secret-789"),
            ("CCM_EC2_SUBNETS", "us-east-1=subnet-1,us-west-2=subnet-2"),
            ("CCM_EC2_SECURITY_GROUPS", "us-east-1=sg-1|sg-2"),
            ("CCM_EC2_KEY_NAMES", "us-west-2=ops"),
            (
                "CCM_EC2_INSTANCE_PROFILES",
                "us-east-1=arn:aws:iam::1:instance-profile/cml",
            ),
            ("CCM_EC2_AMI_OWNERS", "self,123456789012"),
            ("CCM_EC2_AMI_CACHE_SECONDS", "60"),
            ("CCM_EC2_ORPHAN_POLICY", "terminate"),
        ]))
        .unwrap();
        assert_eq!(s.provider, ProviderKind::Ec2);
        assert_eq!(s.ec2.regions, ["us-east-1", "us-west-2"]);
        assert_eq!(s.ec2.endpoint.as_deref(), Some("http://127.0.0.1:15010"));
        assert_eq!(s.ec2.subnets["us-west-2"], "subnet-2");
        assert_eq!(s.ec2.security_groups["us-east-1"], ["sg-1", "sg-2"]);
        assert_eq!(s.ec2.key_names["us-west-2"], "ops");
        assert!(s.ec2.instance_profiles["us-east-1"].starts_with("arn:"));
        assert_eq!(s.ec2.ami_owners, ["self", "123456789012"]);
        assert_eq!(s.ec2.ami_cache_ttl, Duration::from_secs(60));
        assert_eq!(s.ec2.orphan_policy, OrphanPolicy::Terminate);
        assert!(!format!("{s:?}").contains("ec2-secret-789"));
        let e = Settings::from_vars(&vars(&[("CCM_PROVIDER", "gcp")])).unwrap_err();
        assert!(
            e.to_string().starts_with("CCM_PROVIDER: expected one of"),
            "{e}"
        );
        let e = Settings::from_vars(&vars(&[("CCM_EC2_SUBNETS", "subnet-1")])).unwrap_err();
        assert!(e.to_string().contains("region=value"), "{e}");
        let e = Settings::from_vars(&vars(&[("CCM_EC2_ACCESS_KEY_ID", "AKID")])).unwrap_err();
        assert!(
            e.to_string().starts_with("CCM_EC2_SECRET_ACCESS_KEY"),
            "{e}"
        );
    }

    #[test]
    fn values_are_parsed() {
        let s = Settings::from_vars(&vars(&[
            ("ETCD_HOST", "etcd"),
            ("ETCD_PORT", "23790"),
            ("ETCD_USERNAME", "root"),
            ("ETCD_PASSWORD", "pw"),
            ("ETCD_CA_CERT", "/tls/ca.pem"),
            ("ETCD_CERT_CERT", "/tls/client.pem"),
            ("ETCD_CERT_KEY", "/tls/client-key.pem"),
            ("ARTIFACT_STORAGE_USE_SSL", "TRUE"),
            ("SCHEDULER_ENABLED", "no"),
            ("SCHEDULER_RECONCILE_INTERVAL_SECONDS", "5"),
            ("CONTROLLER_SCALE_DOWN_GRACE_PERIOD_MINUTES", "45"),
            ("CONTROLLER_SCALING_POLICY", "Reactive"),
            ("CONTROLLER_MIN_WARM_WORKERS", "0"),
            ("CONTROLLER_COOLDOWN_MINUTES", "0"),
            ("CONTROLLER_PLAN_HORIZON_HOURS", "48"),
            ("CONTROLLER_SESSION_RETENTION_HOURS", "0"),
            ("CCM_MAX_PASS_MINUTES", "3"),
            ("CONTROLLER_FLEET_RESYNC_MINUTES", "7"),
            ("LABLET_ORDER_TIMEOUT_MINUTES", "4"),
            ("MONGODB_URI", "mongodb://u:p@db:27017/"),
            ("CCM_HTTP_ADDR", "0.0.0.0:9090"),
            ("CCM_BACKEND", "etcd"),
            ("CCM_CANDIDATE_ID", "node-a"),
        ]))
        .unwrap();
        assert_eq!(s.etcd.endpoints(), vec!["https://etcd:23790".to_string()]);
        assert_eq!(s.etcd.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(s.etcd.client_cert, Some(PathBuf::from("/tls/client.pem")));
        assert_eq!(
            s.etcd.client_key,
            Some(PathBuf::from("/tls/client-key.pem"))
        );
        assert!(s.artifacts.use_ssl);
        assert!(!s.scheduler.enabled);
        assert_eq!(s.scheduler.reconcile_interval, Duration::from_secs(5));
        assert_eq!(s.controller.scale_down_grace_minutes, 45);
        assert_eq!(s.controller.scaling, ScalingMode::Reactive);
        assert_eq!(
            (
                s.controller.min_warm_workers,
                s.controller.cooldown_minutes,
                s.controller.plan_horizon_hours
            ),
            (0, 0, 48)
        );
        assert_eq!(s.controller.session_retention_hours, 0);
        assert_eq!(s.max_pass_minutes, 3);
        assert_eq!(s.controller.fleet_resync_minutes, 7);
        assert_eq!(s.lablet.order_timeout_minutes, 4);
        assert_eq!(
            s.mongodb_uri.as_ref().map(SecretUri::expose),
            Some("mongodb://u:p@db:27017/")
        );
        assert_eq!(s.http_addr.port(), 9090);
        assert_eq!(s.backend, Backend::Etcd);
        assert_eq!(s.candidate_id, "node-a");
    }

    #[test]
    fn endpoints_override_host_and_port() {
        let s = Settings::from_vars(&vars(&[(
            "CCM_ETCD_ENDPOINTS",
            "http://a:1, http://b:2,,http://c:3",
        )]))
        .unwrap();
        assert_eq!(
            s.etcd.endpoints(),
            vec!["http://a:1", "http://b:2", "http://c:3"]
        );
        let e = Settings::from_vars(&vars(&[("CCM_ETCD_ENDPOINTS", "a:1")])).unwrap_err();
        assert!(
            e.to_string().starts_with("CCM_ETCD_ENDPOINTS: expected"),
            "{e}"
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = Settings::from_vars(&vars(&[("ETCD_PORT", ""), ("ETCD_USERNAME", "  ")])).unwrap();
        assert_eq!(s.etcd.port, 2379);
        assert_eq!(s.etcd.username, None);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_expectation() {
        let cases = [
            (
                "SCHEDULER_RECONCILE_INTERVAL_SECONDS",
                "abc",
                "SCHEDULER_RECONCILE_INTERVAL_SECONDS: expected a positive integer, got \"abc\"",
            ),
            (
                "SCHEDULER_LEADER_LEASE_TTL_SECONDS",
                "0",
                "SCHEDULER_LEADER_LEASE_TTL_SECONDS: expected a positive integer, got \"0\"",
            ),
            (
                "ETCD_PORT",
                "70000",
                "ETCD_PORT: expected a TCP port (1-65535), got \"70000\"",
            ),
            (
                "CONTROLLER_ENABLED",
                "maybe",
                "CONTROLLER_ENABLED: expected a boolean (true/false, 1/0, yes/no, on/off), got \"maybe\"",
            ),
            (
                "CONTROLLER_SCALING_POLICY",
                "greedy",
                "CONTROLLER_SCALING_POLICY: expected one of: planner, reactive, got \"greedy\"",
            ),
            (
                "CONTROLLER_MIN_WARM_WORKERS",
                "-1",
                "CONTROLLER_MIN_WARM_WORKERS: expected a whole number (0 or more), got \"-1\"",
            ),
            (
                "CCM_BACKEND",
                "zookeeper",
                "CCM_BACKEND: expected one of: embedded, etcd, got \"zookeeper\"",
            ),
            (
                "CCM_HTTP_ADDR",
                "localhost",
                "CCM_HTTP_ADDR: expected a socket address such as 127.0.0.1:8080, got \"localhost\"",
            ),
            (
                "ARTIFACT_STORAGE_ENDPOINT",
                "minio:9000",
                "ARTIFACT_STORAGE_ENDPOINT: expected an http:// or https:// URL, got \"minio:9000\"",
            ),
        ];
        for (var, value, message) in cases {
            let e = Settings::from_vars(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn half_configured_pairs_are_rejected() {
        let e = Settings::from_vars(&vars(&[("ETCD_CERT_CERT", "/c.pem")])).unwrap_err();
        assert!(
            e.to_string().starts_with("ETCD_CERT_KEY: expected a path"),
            "{e}"
        );
        let e = Settings::from_vars(&vars(&[("ETCD_USERNAME", "root")])).unwrap_err();
        assert!(e.to_string().starts_with("ETCD_PASSWORD: expected"), "{e}");
        assert!(e.to_string().ends_with("got nothing"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Settings::from_vars(&vars(&[
            ("ETCD_USERNAME", "root"),
            ("ETCD_PASSWORD", "etcd-pass-123"),
            ("ARTIFACT_STORAGE_SECRET_KEY", "s3-secret-456"),
            (
                "MONGODB_URI",
                "mongodb://admin:mongo-pass-789@db:27017/?authSource=admin",
            ),
            (
                "CLOUDEVENTS_SINK_URL",
                "https://bot:sink-pass-000@sink.example/events",
            ),
        ]))
        .unwrap();
        let debug = format!("{s:?}");
        for secret in [
            "etcd-pass-123",
            "s3-secret-456",
            "mongo-pass-789",
            "sink-pass-000",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
        assert!(
            debug.contains("mongodb://admin:***@db:27017/?authSource=admin"),
            "{debug}"
        );
        assert!(debug.contains("root"), "usernames are not secret: {debug}");
    }

    #[test]
    fn secret_values_are_not_echoed_in_errors() {
        let e =
            Settings::from_vars(&vars(&[("MONGODB_URI", "postgres://u:topsecret@h")])).unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("MONGODB_URI: expected a mongodb://"), "{m}");
        assert!(!m.contains("topsecret"), "{m}");
    }

    #[test]
    fn env_example_lists_every_variable() {
        let example = include_str!("../../.env.example");
        for var in VARIABLES {
            assert!(
                example.lines().any(|l| l.starts_with(&format!("{var}="))),
                ".env.example lacks {var}"
            );
        }
        // And every variable it sets is one ccm reads.
        for l in example
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
        {
            let var = l.split('=').next().unwrap_or_default();
            assert!(
                VARIABLES.contains(&var),
                "{var} in .env.example is not read by ccm"
            );
        }
    }

    #[test]
    fn lab_runtime_follows_the_provider_and_cml_needs_credentials() {
        let s = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(s.cml.runtime, LabRuntimeKind::Simulated);
        assert_eq!(s.ec2.fleet, "ccm");
        // Credentials are checked when `ccm serve` builds the CML client (validate-prereqs
        // and the CLI need none).
        let s = Settings::from_vars(&vars(&[("CCM_PROVIDER", "ec2")])).unwrap();
        assert_eq!(s.cml.runtime, LabRuntimeKind::Cml);
        assert_eq!(s.cml.username, None);
        let s = Settings::from_vars(&vars(&[
            ("CCM_PROVIDER", "ec2"),
            ("CML_USERNAME", "admin"),
            ("CML_PASSWORD", "pw-very-secret"),
            ("CML_CA_FILE", "/etc/ccm/cml-ca.pem"),
            ("CML_RETRIES", "2"),
            ("CCM_EC2_FLEET", "ccm-prod"),
        ]))
        .unwrap();
        assert_eq!(s.cml.runtime, LabRuntimeKind::Cml);
        assert_eq!(s.cml.retries, 2);
        assert_eq!(s.ec2.fleet, "ccm-prod");
        assert!(!format!("{s:?}").contains("pw-very-secret"));
        let s = Settings::from_vars(&vars(&[
            ("CCM_PROVIDER", "ec2"),
            ("CCM_LAB_RUNTIME", "none"),
        ]))
        .unwrap();
        assert_eq!(s.cml.runtime, LabRuntimeKind::None);
        for (pairs, var) in [
            (vec![("CCM_LAB_RUNTIME", "vmware")], "CCM_LAB_RUNTIME"),
            (vec![("CML_USERNAME", "admin")], "CML_PASSWORD"),
            (
                vec![
                    ("CML_CA_FILE", "/ca.pem"),
                    ("CML_INSECURE_SKIP_VERIFY", "true"),
                ],
                "CML_INSECURE_SKIP_VERIFY",
            ),
            (vec![("CML_RETRIES", "99")], "CML_RETRIES"),
        ] {
            let e = Settings::from_vars(&vars(&pairs)).unwrap_err();
            assert!(e.to_string().starts_with(var), "{var}: {e}");
        }
        let e = Settings::from_vars(&vars(&[("CML_PASSWORD", "pw-very-secret")])).unwrap_err();
        assert!(!e.to_string().contains("pw-very-secret"), "{e}");
    }

    #[test]
    fn cml_worker_credentials_file_is_read_with_lines_in_errors() {
        let dir = std::env::temp_dir().join(format!("ccm-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.yaml");
        std::fs::write(
            &ok,
            "w-1:\n  username: admin\n  password: s3cret-one\nw-2:\n  username: ops\n  password: s3cret-two\n",
        )
        .unwrap();
        let creds = load_cml_worker_credentials(&ok).unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds["w-2"].username, "ops");
        assert_eq!(creds["w-1"].password.expose(), "s3cret-one");
        assert!(!format!("{creds:?}").contains("s3cret"));
        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            "w-1:\n  username: admin\n  password: s3cret-one\nw-2:\n  user: ops\n",
        )
        .unwrap();
        let e = load_cml_worker_credentials(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("line 5"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let missing = load_cml_worker_credentials(&dir.join("none.yaml")).unwrap_err();
        assert!(missing.to_string().contains("none.yaml"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redact_uri_cases() {
        assert_eq!(redact_uri("mongodb://h:1/db"), "mongodb://h:1/db");
        assert_eq!(redact_uri("mongodb://u:p@h:1/db"), "mongodb://u:***@h:1/db");
        assert_eq!(redact_uri("mongodb://u@h/"), "mongodb://u@h/");
        assert_eq!(redact_uri("http://u:p@w@h/x?y=@"), "http://u:***@h/x?y=@");
        assert_eq!(redact_uri("not a uri"), "not a uri");
    }

    #[test]
    fn dotenv_file_is_read_and_environment_wins() {
        let dir = std::env::temp_dir().join(format!("ccm-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".env");
        std::fs::write(
            &file,
            "# comment\nCLOUDEVENTS_SOURCE=from-dotenv\nMONGODB_DATABASE=dotdb\n",
        )
        .unwrap();
        let env = vec![("MONGODB_DATABASE".to_string(), "envdb".to_string())];
        let s = Settings::from_vars(&merge_vars(Some(&file), env.into_iter()).unwrap()).unwrap();
        assert_eq!(s.cloudevents_source, "from-dotenv");
        assert_eq!(s.mongodb_database, "envdb");
        std::fs::write(&file, "GOOD=1\nthis line is bad\n").unwrap();
        let e = merge_vars(Some(&file), std::iter::empty()).unwrap_err();
        assert!(
            e.to_string().starts_with(&file.display().to_string()),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // A missing file is fine.
        assert!(
            merge_vars(Some(&dir.join("missing.env")), std::iter::empty())
                .unwrap()
                .is_empty()
        );
    }
}
