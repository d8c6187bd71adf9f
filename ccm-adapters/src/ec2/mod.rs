//! EC2 adapter: [`Ec2Provider`], a [`WorkerProvider`] launching CML workers as EC2 instances
//! (AWS, or moto_server in tests).
//!
//! * **Images**: a template's `ami_pattern` (an EC2 name glob such as `CML-2.9.*`) is looked up
//!   per region with `DescribeImages`; the newest available image by creation date wins, its CML
//!   version is read from its name ([`cml_version_of`]). Answers are cached for
//!   [`Ec2Config::ami_cache_ttl`]; no match is [`ProviderError::NoImage`], and an image that
//!   vanished between lookup and launch is looked up once more.
//! * **Tags**: the template's tags plus ccm's own, [`TAG_MANAGED_BY`]`=` the fleet name (`ccm` by default), [`TAG_WORKER_ID`] and
//!   [`TAG_TEMPLATE`] (and `Name` unless the template sets one). Every instance ccm knows about
//!   is found by these tags, so nothing lives only in this process's memory.
//! * **Launching once**: before `RunInstances` the worker id is looked up by tag (a live
//!   instance is returned as is), and the request carries a `ClientToken` derived from the
//!   worker id ([`client_token`]) so that AWS itself drops a concurrent duplicate.
//! * **States** (`DescribeInstances` by the ManagedBy tag, page by page): pending →
//!   PROVISIONING, running → RUNNING, stopping → STOPPING, stopped → STOPPED, shutting-down →
//!   TERMINATING, terminated → TERMINATED ([`worker_state`]).
//! * **Errors**: `InsufficientInstanceCapacity`, `InstanceLimitExceeded` and `Unsupported` are
//!   [`ProviderError::Capacity`] naming region and template; throttling
//!   (`RequestLimitExceeded`, ...) is retried with a bounded doubling back-off and becomes
//!   [`ProviderError::Throttled`] when it persists. The SDK's own retries are off, so this is
//!   the one retry policy.
//! * **Credentials** from [`Ec2Config::credentials`] or the standard AWS chain; never logged.

pub mod config;

pub use config::{Ec2Config, RegionSettings, Secret, StaticCredentials};

use async_trait::async_trait;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, Instance, InstanceStateName, InstanceType,
    ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use ccm_core::store::{
    LaunchRequest, ManagedInstance, ProviderError, ProviderEvent, WorkerProvider,
};
use ccm_core::worker::WorkerState;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Tag marking an instance as ccm's (value [`MANAGED_BY_VALUE`]).
pub const TAG_MANAGED_BY: &str = "ManagedBy";
/// Default value of [`TAG_MANAGED_BY`] ([`Ec2Config::fleet`]).
pub const MANAGED_BY_VALUE: &str = "ccm";
/// Tag holding ccm's worker id.
pub const TAG_WORKER_ID: &str = "ccm:worker-id";
/// Tag holding the template name.
pub const TAG_TEMPLATE: &str = "ccm:template";

/// Error codes saying the region cannot run the instance type now.
pub const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InstanceLimitExceeded",
    "Unsupported",
    "InsufficientCapacity",
    "VcpuLimitExceeded",
];

/// Error codes of throttling and transient server trouble (retried with back-off).
pub const RETRY_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "InternalError",
    "ServiceUnavailable",
    "Unavailable",
];

/// Live instance states (everything but terminated).
const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

/// A resolved machine image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiInfo {
    /// Image id.
    pub image_id: String,
    /// Image name.
    pub name: String,
    /// Creation date as EC2 reports it (ISO 8601).
    pub creation_date: String,
    /// CML version read from the name, when it holds one.
    pub cml_version: Option<semver::Version>,
}

/// The CML version in an image name: the first `N.N[.N]` after `CML-` (or anywhere), e.g.
/// `CML-2.9.1-ubuntu` → 2.9.1, `cml-2.10` → 2.10.0.
///
/// ```
/// use ccm_adapters::ec2::cml_version_of;
/// assert_eq!(cml_version_of("CML-2.9.1-ubuntu-24.04").unwrap().to_string(), "2.9.1");
/// assert_eq!(cml_version_of("cml-2.10").unwrap().to_string(), "2.10.0");
/// assert_eq!(cml_version_of("ubuntu"), None);
/// ```
pub fn cml_version_of(name: &str) -> Option<semver::Version> {
    let lower = name.to_ascii_lowercase();
    let rest = match lower.find("cml-") {
        Some(i) => &name[i + 4..],
        None => name,
    };
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let digits: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = digits
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().and_then(Result::ok).unwrap_or(0);
    Some(semver::Version::new(major, minor, patch))
}

/// The `ClientToken` of a worker's launch (at most 64 ASCII characters; the same for every
/// retry of the same worker).
///
/// ```
/// use ccm_adapters::ec2::client_token;
/// assert_eq!(client_token("w-1"), client_token("w-1"));
/// assert_ne!(client_token("w-1"), client_token("w-2"));
/// assert!(client_token("w-1").len() <= 64);
/// ```
pub fn client_token(worker_id: &str) -> String {
    let digest = Sha256::digest(worker_id.as_bytes());
    format!("ccm-{}", &hex::encode(digest)[..40])
}

/// An EC2 instance state on the worker state machine.
pub fn worker_state(state: Option<&InstanceStateName>) -> WorkerState {
    match state {
        Some(InstanceStateName::Pending) => WorkerState::Provisioning,
        Some(InstanceStateName::Running) => WorkerState::Running,
        Some(InstanceStateName::Stopping) => WorkerState::Stopping,
        Some(InstanceStateName::Stopped) => WorkerState::Stopped,
        Some(InstanceStateName::ShuttingDown) => WorkerState::Terminating,
        Some(InstanceStateName::Terminated) => WorkerState::Terminated,
        _ => WorkerState::Unknown,
    }
}

fn tag<'a>(i: &'a Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// What a failed EC2 call said.
#[derive(Debug, Clone)]
struct Failure {
    code: Option<String>,
    message: String,
    attempts: u32,
}

impl Failure {
    fn of<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut code = err.code().map(str::to_string);
        if code.is_none() {
            if let Some(status) = err.raw_response().map(|r| r.status().as_u16()) {
                if status == 503 {
                    code = Some("ServiceUnavailable".to_string());
                }
            }
        }
        let message = match err.message() {
            Some(m) => format!("{}: {m}", code.as_deref().unwrap_or("error")),
            None => format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&err)),
        };
        Failure {
            code,
            message,
            attempts: 1,
        }
    }

    fn is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    fn retryable(&self) -> bool {
        self.is(RETRY_CODES)
    }

    fn capacity(&self) -> bool {
        self.is(CAPACITY_CODES)
    }

    fn image_missing(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.starts_with("InvalidAMIID"))
    }

    fn into_error(self, action: &str, worker: &str) -> ProviderError {
        if self.retryable() {
            ProviderError::Throttled {
                action: action.to_string(),
                attempts: self.attempts,
                reason: self.message,
            }
        } else {
            ProviderError::Refused {
                action: action.to_string(),
                worker: worker.to_string(),
                reason: self.message,
            }
        }
    }
}

/// Where a worker's instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    region: String,
    instance_id: String,
}

/// A worker's instance as found by its tag.
#[derive(Debug, Clone)]
struct Found {
    location: Location,
    state: WorkerState,
    template: Option<String>,
}

#[derive(Default)]
struct Inner {
    /// Clients by region.
    clients: BTreeMap<String, Client>,
    /// Last known location of each worker's instance.
    located: HashMap<String, Location>,
    /// Last state reported per instance id (what `poll_events` compares against).
    seen: HashMap<String, WorkerState>,
    /// Resolved images by (region, pattern).
    amis: HashMap<(String, String), (Instant, AmiInfo)>,
}

/// The EC2 [`WorkerProvider`]. Cheap to share behind an `Arc`; every method may be called
/// concurrently.
pub struct Ec2Provider {
    cfg: Ec2Config,
    /// The standard-chain SDK config new region clients derive from (absent with explicit
    /// credentials or injected clients).
    base: Option<aws_config::SdkConfig>,
    inner: Mutex<Inner>,
    pages: AtomicU64,
    runs: AtomicU64,
}

impl std::fmt::Debug for Ec2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Provider")
            .field("regions", &self.cfg.regions.keys().collect::<Vec<_>>())
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

impl Ec2Provider {
    /// A provider with one client per configured region (credentials from the config or the
    /// standard AWS chain; loading the chain is the only slow part). Makes no EC2 call.
    pub async fn connect(cfg: Ec2Config) -> Self {
        let base = if cfg.credentials.is_none() {
            Some(aws_config::defaults(BehaviorVersion::latest()).load().await)
        } else {
            None
        };
        let p = Ec2Provider {
            cfg,
            base,
            inner: Mutex::new(Inner::default()),
            pages: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        };
        let regions: Vec<String> = p.cfg.regions.keys().cloned().collect();
        for r in regions {
            let c = p.build_client(&r);
            p.lock().clients.insert(r, c);
        }
        p
    }

    /// A provider on clients built by the caller (tests with canned answers, tools); a region
    /// without a client is an error when used.
    pub fn with_clients(cfg: Ec2Config, clients: BTreeMap<String, Client>) -> Self {
        Ec2Provider {
            cfg,
            base: None,
            inner: Mutex::new(Inner {
                clients,
                ..Inner::default()
            }),
            pages: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Ec2Config {
        &self.cfg
    }

    /// `DescribeInstances` pages fetched so far.
    pub fn pages_fetched(&self) -> u64 {
        self.pages.load(Ordering::Relaxed)
    }

    /// `RunInstances` calls that launched an instance so far.
    pub fn run_instances_calls(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn build_client(&self, region: &str) -> Client {
        let mut b = match &self.base {
            Some(base) => aws_sdk_ec2::config::Builder::from(base),
            None => aws_sdk_ec2::Config::builder().behavior_version(BehaviorVersion::latest()),
        };
        b = b
            .region(Region::new(region.to_string()))
            .retry_config(RetryConfig::disabled());
        if let Some(c) = &self.cfg.credentials {
            b = b.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.expose().to_string(),
                c.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "ccm-ec2-settings",
            ));
        }
        if let Some(e) = &self.cfg.endpoint {
            b = b.endpoint_url(e.clone());
        }
        Client::from_conf(b.build())
    }

    /// The client of `region`, built on first use (a region the config does not list).
    fn client(&self, region: &str) -> Result<Client, ProviderError> {
        if let Some(c) = self.lock().clients.get(region) {
            return Ok(c.clone());
        }
        if self.base.is_none() && self.cfg.credentials.is_none() {
            return Err(ProviderError::Refused {
                action: "connect".to_string(),
                worker: String::new(),
                reason: format!("no EC2 client for region {region}"),
            });
        }
        let c = self.build_client(region);
        self.lock()
            .clients
            .entry(region.to_string())
            .or_insert(c.clone());
        Ok(c)
    }

    fn regions(&self) -> Vec<String> {
        self.lock().clients.keys().cloned().collect()
    }

    /// Runs an EC2 call, retrying throttling and transient errors with back-off.
    async fn call<T, E, F, Fut>(&self, action: &str, mut op: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let mut f = Failure::of(e);
                    f.attempts = attempt;
                    if !f.retryable() || attempt >= self.cfg.max_attempts.max(1) {
                        return Err(f);
                    }
                    let delay = self.cfg.backoff(attempt);
                    tracing::warn!(action, attempt, code = ?f.code, delay_ms = delay.as_millis() as u64, "EC2 call throttled; backing off");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Every instance of `region` matching `filters`, page by page.
    async fn list(
        &self,
        region: &str,
        filters: Vec<Filter>,
    ) -> Result<Vec<Instance>, ProviderError> {
        let client = self.client(region)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call("describe instances", || {
                    client
                        .describe_instances()
                        .set_filters(Some(filters.clone()))
                        .max_results(self.cfg.page_size)
                        .set_next_token(token.clone())
                        .send()
                })
                .await
                .map_err(|f| f.into_error("describe", ""))?;
            self.pages.fetch_add(1, Ordering::Relaxed);
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Instances of this fleet: [`TAG_MANAGED_BY`] = [`Ec2Config::fleet`].
    fn managed_filter(&self) -> Filter {
        filter(&format!("tag:{TAG_MANAGED_BY}"), &[self.cfg.fleet.as_str()])
    }

    /// The worker's instance in `region`: a live one first, else the last terminated one.
    async fn find_in(&self, region: &str, worker_id: &str) -> Result<Option<Found>, ProviderError> {
        let instances = self
            .list(
                region,
                vec![
                    self.managed_filter(),
                    filter(&format!("tag:{TAG_WORKER_ID}"), &[worker_id]),
                ],
            )
            .await?;
        let mut best: Option<Found> = None;
        for i in &instances {
            let Some(id) = i.instance_id() else { continue };
            let state = worker_state(i.state().and_then(|s| s.name()));
            let found = Found {
                location: Location {
                    region: region.to_string(),
                    instance_id: id.to_string(),
                },
                state,
                template: tag(i, TAG_TEMPLATE).map(str::to_string),
            };
            let better = match &best {
                None => true,
                Some(b) => b.state == WorkerState::Terminated && state != WorkerState::Terminated,
            };
            if better {
                best = Some(found);
            }
        }
        Ok(best)
    }

    /// The worker's instance in any watched region (its last known region first).
    async fn find(&self, worker_id: &str) -> Result<Option<Found>, ProviderError> {
        let known = self.lock().located.get(worker_id).cloned();
        let mut regions = self.regions();
        if let Some(l) = &known {
            regions.retain(|r| r != &l.region);
            regions.insert(0, l.region.clone());
        }
        let mut terminated = None;
        for r in regions {
            if let Some(f) = self.find_in(&r, worker_id).await? {
                if f.state != WorkerState::Terminated {
                    self.lock()
                        .located
                        .insert(worker_id.to_string(), f.location.clone());
                    return Ok(Some(f));
                }
                terminated.get_or_insert(f);
            }
        }
        Ok(terminated)
    }

    async fn must_find(&self, worker_id: &str) -> Result<Found, ProviderError> {
        self.find(worker_id)
            .await?
            .ok_or_else(|| ProviderError::NotFound(worker_id.to_string()))
    }

    /// The newest available image matching `pattern` in `region` (cached for the TTL).
    pub async fn resolve_ami(&self, region: &str, pattern: &str) -> Result<AmiInfo, ProviderError> {
        let key = (region.to_string(), pattern.to_string());
        if let Some((at, ami)) = self.lock().amis.get(&key) {
            if at.elapsed() < self.cfg.ami_cache_ttl {
                return Ok(ami.clone());
            }
        }
        let client = self.client(region)?;
        let owners = (!self.cfg.ami_owners.is_empty()).then(|| self.cfg.ami_owners.clone());
        let out = self
            .call("describe images", || {
                client
                    .describe_images()
                    .set_owners(owners.clone())
                    .filters(filter("name", &[pattern]))
                    .filters(filter("state", &["available"]))
                    .send()
            })
            .await
            .map_err(|f| f.into_error("describe images", ""))?;
        let newest = out
            .images()
            .iter()
            .filter(|i| i.image_id().is_some())
            .max_by(|a, b| (a.creation_date(), a.name()).cmp(&(b.creation_date(), b.name())))
            .ok_or_else(|| ProviderError::NoImage {
                region: region.to_string(),
                pattern: pattern.to_string(),
            })?;
        let name = newest.name().unwrap_or_default().to_string();
        let ami = AmiInfo {
            image_id: newest.image_id().unwrap_or_default().to_string(),
            cml_version: cml_version_of(&name),
            name,
            creation_date: newest.creation_date().unwrap_or_default().to_string(),
        };
        tracing::debug!(region, pattern, image = %ami.image_id, name = %ami.name, "AMI resolved");
        self.lock().amis.insert(key, (Instant::now(), ami.clone()));
        Ok(ami)
    }

    fn forget_ami(&self, region: &str, pattern: &str) {
        self.lock()
            .amis
            .remove(&(region.to_string(), pattern.to_string()));
    }

    /// Checks that EC2 answers in `region` with these credentials (one `DescribeInstances`
    /// page of ccm's instances).
    pub async fn check_access(&self, region: &str) -> Result<(), ProviderError> {
        let client = self.client(region)?;
        self.call("describe instances", || {
            client
                .describe_instances()
                .filters(self.managed_filter())
                .max_results(5)
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|f| f.into_error("describe", ""))
    }

    fn tags(&self, req: &LaunchRequest) -> Vec<Tag> {
        let mut tags: BTreeMap<String, String> = req.template.tags.clone();
        tags.insert(TAG_MANAGED_BY.to_string(), self.cfg.fleet.clone());
        tags.insert(TAG_WORKER_ID.to_string(), req.worker_id.clone());
        tags.insert(TAG_TEMPLATE.to_string(), req.template.name.clone());
        tags.entry("Name".to_string())
            .or_insert_with(|| format!("ccm-{}", req.worker_id));
        tags.into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }

    async fn run(&self, req: &LaunchRequest, ami: &AmiInfo) -> Result<String, Failure> {
        let client = self.client(&req.region).map_err(|e| Failure {
            code: None,
            message: e.to_string(),
            attempts: 0,
        })?;
        let net = self
            .cfg
            .regions
            .get(&req.region)
            .cloned()
            .unwrap_or_default();
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(self.tags(req)))
            .build();
        let profile = net.instance_profile.as_ref().map(|p| {
            let b = IamInstanceProfileSpecification::builder();
            if p.starts_with("arn:") {
                b.arn(p).build()
            } else {
                b.name(p).build()
            }
        });
        let groups = (!net.security_group_ids.is_empty()).then(|| net.security_group_ids.clone());
        let token = client_token(&req.worker_id);
        let out = self
            .call("run instances", || {
                client
                    .run_instances()
                    .image_id(&ami.image_id)
                    .instance_type(InstanceType::from(req.template.instance_type.as_str()))
                    .min_count(1)
                    .max_count(1)
                    .client_token(&token)
                    .tag_specifications(tags.clone())
                    .set_subnet_id(net.subnet_id.clone())
                    .set_security_group_ids(groups.clone())
                    .set_key_name(net.key_name.clone())
                    .set_iam_instance_profile(profile.clone())
                    .send()
            })
            .await?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or_else(|| Failure {
                code: None,
                message: "RunInstances answered without an instance".to_string(),
                attempts: 1,
            })
    }

    fn capacity(req: &LaunchRequest, f: &Failure) -> ProviderError {
        ProviderError::Capacity {
            region: req.region.clone(),
            template: req.template.name.clone(),
            reason: f.message.clone(),
        }
    }

    /// Calls `op` on the worker's instance (found by tag).
    async fn act<T, E, F, Fut>(
        &self,
        action: &str,
        worker_id: &str,
        op: F,
    ) -> Result<(), ProviderError>
    where
        F: Fn(Client, String) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let found = self.must_find(worker_id).await?;
        if found.state == WorkerState::Terminated {
            if action == "terminate" {
                return Ok(());
            }
            return Err(ProviderError::Refused {
                action: action.to_string(),
                worker: worker_id.to_string(),
                reason: format!("instance {} is terminated", found.location.instance_id),
            });
        }
        let client = self.client(&found.location.region)?;
        let id = found.location.instance_id.clone();
        match self.call(action, || op(client.clone(), id.clone())).await {
            Ok(_) => {
                tracing::info!(worker = worker_id, instance = %id, region = %found.location.region, action, "EC2 instance");
                Ok(())
            }
            Err(f) if f.capacity() => Err(ProviderError::Capacity {
                region: found.location.region,
                template: found.template.unwrap_or_default(),
                reason: f.message,
            }),
            Err(f) => Err(f.into_error(action, worker_id)),
        }
    }
}

#[async_trait]
impl WorkerProvider for Ec2Provider {
    async fn launch(&self, req: LaunchRequest) -> Result<String, ProviderError> {
        if let Some(f) = self.find(&req.worker_id).await? {
            if f.state != WorkerState::Terminated {
                tracing::info!(worker = %req.worker_id, instance = %f.location.instance_id, "launch repeated: the instance exists");
                return Ok(f.location.instance_id);
            }
        }
        let pattern = req.template.ami_pattern.clone();
        let mut ami = self.resolve_ami(&req.region, &pattern).await?;
        let mut relooked = false;
        let id = loop {
            match self.run(&req, &ami).await {
                Ok(id) => break id,
                Err(f) if f.capacity() => {
                    tracing::warn!(worker = %req.worker_id, region = %req.region, template = %req.template.name, reason = %f.message, "no EC2 capacity");
                    return Err(Self::capacity(&req, &f));
                }
                Err(f) if f.image_missing() && !relooked => {
                    tracing::warn!(image = %ami.image_id, region = %req.region, "the AMI vanished; looking it up again");
                    self.forget_ami(&req.region, &pattern);
                    ami = self.resolve_ami(&req.region, &pattern).await?;
                    relooked = true;
                }
                Err(f) => return Err(f.into_error("launch", &req.worker_id)),
            }
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker = %req.worker_id, instance = %id, region = %req.region, image = %ami.image_id, "EC2 instance launched");
        let mut g = self.lock();
        g.located.insert(
            req.worker_id.clone(),
            Location {
                region: req.region.clone(),
                instance_id: id.clone(),
            },
        );
        g.seen.entry(id.clone()).or_insert(WorkerState::Pending);
        Ok(id)
    }

    async fn start(&self, worker_id: &str) -> Result<(), ProviderError> {
        self.act("start", worker_id, |c, id| {
            c.start_instances().instance_ids(id).send()
        })
        .await
    }

    async fn stop(&self, worker_id: &str) -> Result<(), ProviderError> {
        self.act("stop", worker_id, |c, id| {
            c.stop_instances().instance_ids(id).send()
        })
        .await
    }

    async fn terminate(&self, worker_id: &str) -> Result<(), ProviderError> {
        self.act("terminate", worker_id, |c, id| {
            c.terminate_instances().instance_ids(id).send()
        })
        .await
    }

    async fn describe(&self, worker_id: &str) -> Result<Option<WorkerState>, ProviderError> {
        Ok(self.find(worker_id).await?.map(|f| f.state))
    }

    async fn poll_events(&self) -> Vec<ProviderEvent> {
        let mut events = Vec::new();
        for region in self.regions() {
            let instances = match self.list(&region, vec![self.managed_filter()]).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(region = %region, error = %e, "EC2 poll failed");
                    continue;
                }
            };
            let now = chrono::Utc::now();
            let mut g = self.lock();
            for i in &instances {
                let (Some(id), Some(worker)) = (i.instance_id(), tag(i, TAG_WORKER_ID)) else {
                    continue;
                };
                let state = worker_state(i.state().and_then(|s| s.name()));
                let before = g.seen.insert(id.to_string(), state);
                // A terminated instance first seen now ended before this process knew it.
                let report = match before {
                    Some(b) => b != state,
                    None => state != WorkerState::Terminated,
                };
                if state != WorkerState::Terminated {
                    g.located.insert(
                        worker.to_string(),
                        Location {
                            region: region.clone(),
                            instance_id: id.to_string(),
                        },
                    );
                }
                if report {
                    events.push(ProviderEvent {
                        worker_id: worker.to_string(),
                        provider_id: id.to_string(),
                        state,
                        at: now,
                    });
                }
            }
        }
        events
    }

    async fn list_managed(&self) -> Result<Vec<ManagedInstance>, ProviderError> {
        let mut out = Vec::new();
        for region in self.regions() {
            let instances = self
                .list(
                    &region,
                    vec![
                        self.managed_filter(),
                        filter("instance-state-name", LIVE_STATES),
                    ],
                )
                .await?;
            for i in &instances {
                let (Some(id), Some(worker)) = (i.instance_id(), tag(i, TAG_WORKER_ID)) else {
                    continue;
                };
                out.push(ManagedInstance {
                    worker_id: worker.to_string(),
                    provider_id: id.to_string(),
                    template: tag(i, TAG_TEMPLATE).map(str::to_string),
                    region: region.clone(),
                    state: worker_state(i.state().and_then(|s| s.name())),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_onto_the_worker_machine() {
        assert_eq!(
            worker_state(Some(&InstanceStateName::Pending)),
            WorkerState::Provisioning
        );
        assert_eq!(
            worker_state(Some(&InstanceStateName::ShuttingDown)),
            WorkerState::Terminating
        );
        assert_eq!(
            worker_state(Some(&InstanceStateName::Stopped)),
            WorkerState::Stopped
        );
        assert_eq!(worker_state(None), WorkerState::Unknown);
    }

    #[test]
    fn versions_from_names() {
        assert_eq!(
            cml_version_of("CML-2.9.0-ubuntu-24.04"),
            Some(semver::Version::new(2, 9, 0))
        );
        assert_eq!(
            cml_version_of("my-CML-2.8.1"),
            Some(semver::Version::new(2, 8, 1))
        );
        assert_eq!(cml_version_of("CML-latest"), None);
    }

    #[test]
    fn token_is_stable_and_short() {
        let t = client_token("a-very-long-worker-id-0123456789-0123456789-0123456789-0123456789");
        assert_eq!(t.len(), 44);
        assert!(t.is_ascii());
        assert_eq!(
            t,
            client_token("a-very-long-worker-id-0123456789-0123456789-0123456789-0123456789")
        );
    }
}
