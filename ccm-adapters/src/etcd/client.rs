//! ccm's etcd v3 gRPC connection: one balanced tonic channel over every configured endpoint,
//! TLS from the settings, and user/password auth whose token is sent as the `token` metadata
//! of every call and renewed when etcd no longer accepts it (e.g. after an etcd restart,
//! which forgets etcd's "simple" tokens).

use super::config::{read_pem, EtcdConfig};
use super::pb::etcdserverpb as pb;
use crate::secret::Secret;
use ccm_core::store::StoreError;
use pb::auth_client::AuthClient;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;
use pb::watch_client::WatchClient;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// Largest gRPC message accepted from etcd (a listing of many sessions can exceed the 4 MiB
/// default).
const MAX_DECODE: usize = 256 * 1024 * 1024;

/// Largest auth token accepted from etcd (simple tokens are ~25 bytes, JWTs a few hundred).
const MAX_TOKEN: usize = 16 * 1024;

/// The transport every typed client runs on: the channel plus the token interceptor.
pub(crate) type Svc = InterceptedService<Channel, TokenInterceptor>;

/// The current auth token and how many times it was (re)issued.
#[derive(Default)]
struct TokenState {
    token: Option<AsciiMetadataValue>,
    generation: u64,
}

/// User name and password, never printed.
struct Credentials {
    user: String,
    password: Secret,
}

struct Shared {
    credentials: Option<Credentials>,
    token: RwLock<TokenState>,
    /// Serialises re-authentication so a burst of rejected calls authenticates once.
    renewing: tokio::sync::Mutex<()>,
}

/// Adds the current token (if any) as the `token` metadata of each request.
#[derive(Clone)]
pub(crate) struct TokenInterceptor(Arc<Shared>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let token = match self.0.token.read() {
            Ok(t) => t.token.clone(),
            Err(poisoned) => poisoned.into_inner().token.clone(),
        };
        if let Some(t) = token {
            req.metadata_mut().insert("token", t);
        }
        Ok(req)
    }
}

/// A connection to etcd; cheap to clone (the channel and the token are shared).
#[derive(Clone)]
pub(crate) struct Conn {
    channel: Channel,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("auth", &self.shared.credentials.is_some())
            .finish_non_exhaustive()
    }
}

fn settings_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd settings: {e}"))
}

/// The endpoint for one URL with the timeouts, keep-alive and TLS of `config`.
fn endpoint(
    url: &str,
    config: &EtcdConfig,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, StoreError> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| settings_error(format!("endpoint {url:?}: {e}")))?
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls.clone())
            .map_err(|e| settings_error(format!("endpoint {url:?}: TLS: {e}")))?;
    }
    Ok(ep)
}

fn tls_config(config: &EtcdConfig) -> Result<Option<ClientTlsConfig>, StoreError> {
    if !config.uses_tls() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &config.ca_cert {
        let pem = read_pem("ETCD_CA_CERT", ca).map_err(settings_error)?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
        let c = read_pem("ETCD_CERT_CERT", cert).map_err(settings_error)?;
        let k = read_pem("ETCD_CERT_KEY", key).map_err(settings_error)?;
        tls = tls.identity(Identity::from_pem(c, k));
    }
    Ok(Some(tls))
}

/// Whether etcd refused a call for its token (missing, expired, forgotten by a restart, or
/// issued before the auth store changed): worth authenticating again.
pub(crate) fn is_auth_rejection(s: &Status) -> bool {
    let m = s.message();
    s.code() == Code::Unauthenticated
        || m.contains("invalid auth token")
        || m.contains("user name is empty")
        || m.contains("revision of auth store is old")
}

impl Conn {
    /// Builds the balanced channel (lazily connecting: nothing is dialled here). Fails only
    /// for bad settings (malformed URL, unreadable certificate or key).
    pub(crate) fn new(config: &EtcdConfig) -> Result<Self, StoreError> {
        let tls = tls_config(config)?;
        let endpoints = config
            .endpoints
            .iter()
            .map(|u| endpoint(u, config, tls.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let channel = Channel::balance_list(endpoints.into_iter());
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(Credentials {
                user: user.clone(),
                password: Secret::new(password.as_str()),
            }),
            _ => None,
        };
        Ok(Conn {
            channel,
            shared: Arc::new(Shared {
                credentials,
                token: RwLock::new(TokenState::default()),
                renewing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn svc(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), TokenInterceptor(self.shared.clone()))
    }

    /// A KV client.
    pub(crate) fn kv(&self) -> KvClient<Svc> {
        KvClient::new(self.svc())
            .max_decoding_message_size(MAX_DECODE)
            .max_encoding_message_size(MAX_DECODE)
    }

    /// A lease client.
    pub(crate) fn lease(&self) -> LeaseClient<Svc> {
        LeaseClient::new(self.svc())
    }

    /// A watch client.
    pub(crate) fn watch(&self) -> WatchClient<Svc> {
        WatchClient::new(self.svc()).max_decoding_message_size(MAX_DECODE)
    }

    /// A maintenance client.
    pub(crate) fn maintenance(&self) -> MaintenanceClient<Svc> {
        MaintenanceClient::new(self.svc())
    }

    fn generation(&self) -> u64 {
        match self.shared.token.read() {
            Ok(t) => t.generation,
            Err(p) => p.into_inner().generation,
        }
    }

    fn set_token(&self, token: Option<AsciiMetadataValue>) {
        let mut t = match self.shared.token.write() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        t.token = token;
        t.generation = t.generation.wrapping_add(1);
    }

    /// Authenticates again unless another call already did since `seen` (the generation the
    /// failed call ran with). Without credentials there is nothing to renew.
    async fn renew(&self, seen: u64) -> Result<(), Status> {
        let Some(cred) = &self.shared.credentials else {
            return Ok(());
        };
        let _one = self.shared.renewing.lock().await;
        if self.generation() != seen {
            return Ok(());
        }
        // Authenticate without a token: a stale one must not get in the way.
        let mut auth = AuthClient::new(self.channel.clone());
        let req = pb::AuthenticateRequest {
            name: cred.user.clone(),
            password: cred.password.expose().to_string(),
        };
        match auth.authenticate(req).await {
            Ok(r) => {
                let token = r.into_inner().token;
                if token.len() > MAX_TOKEN {
                    return Err(Status::internal(format!(
                        "etcd returned an auth token of {} bytes (limit {MAX_TOKEN})",
                        token.len()
                    )));
                }
                let value = AsciiMetadataValue::try_from(token.as_str()).map_err(|_| {
                    Status::internal("etcd returned an auth token that is not valid metadata")
                })?;
                self.set_token(Some(value));
                tracing::debug!(user = %cred.user, "etcd auth token issued");
                Ok(())
            }
            // Credentials are configured but etcd runs without auth: go on without a token.
            Err(s) if s.message().contains("authentication is not enabled") => {
                tracing::debug!("etcd auth is not enabled; calling without a token");
                self.set_token(None);
                Ok(())
            }
            Err(s) => Err(s),
        }
    }

    /// Runs one call (`f` makes a fresh attempt each time it is called). With credentials,
    /// authenticates first if no token was issued yet, and when etcd rejects the token,
    /// authenticates again once and retries.
    pub(crate) async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        if self.shared.credentials.is_none() {
            return f().await;
        }
        let seen = self.generation();
        if seen == 0 {
            self.renew(0).await?;
        }
        let seen = self.generation();
        match f().await {
            Err(s) if is_auth_rejection(&s) => {
                tracing::info!(reason = %s.message(), "etcd rejected the auth token; authenticating again");
                self.renew(seen).await?;
                f().await
            }
            other => other,
        }
    }
}

/// Checks that etcd answers with these settings (and credentials): one status call.
/// Returns e.g. `"etcd 3.4.23 answers, revision 42"`.
pub async fn check(config: &EtcdConfig) -> Result<String, StoreError> {
    config.validate().map_err(settings_error)?;
    let conn = Conn::new(config)?;
    let status = conn
        .call(|| {
            let mut m = conn.maintenance();
            async move { m.status(pb::StatusRequest {}).await }
        })
        .await
        .map_err(|s| super::errors::map_status(&s, None))?
        .into_inner();
    let revision = status.header.map_or(0, |h| h.revision);
    Ok(format!(
        "etcd {} answers, revision {revision}",
        status.version
    ))
}
