//! CML adapter: a [`LabRuntime`] over the Cisco Modeling Labs controller REST API
//! (`/api/v0`, the calls `virl2-client` makes), with `reqwest` and rustls.
//!
//! * **Auth**: `POST authenticate {username, password}` gives a JWT, kept per worker and sent as
//!   a Bearer token; on a 401 the adapter authenticates again once and repeats the call.
//!   Credentials come per worker from [`CmlConfig`] (a default plus overrides by worker id);
//!   they are never logged and never in a `Debug`.
//! * **Calls**: `GET system_information` (no auth), `POST import?title=`,
//!   `PATCH labs/{lab}/nodes/{node} {"tags": [..]}`, `PUT labs/{lab}/start|stop|wipe`,
//!   `GET labs/{lab}` + `GET labs/{lab}/nodes?data=true` (state and nodes),
//!   `DELETE labs/{lab}`, `GET labs?show_all=true` (+ one `GET labs/{lab}` per lab).
//! * **Errors**: 404 → NotFound, 401/403 → Auth, other 4xx → Refused (with CML's
//!   `description`), 5xx / timeouts / connection failures → Unavailable, a certificate that
//!   does not verify or an answer of the wrong shape or over `max_response_bytes` → Invalid.
//! * **Retries**: on 5xx and connection failures only, with exponential back-off and jitter.
//!   An import is not idempotent (twice = two labs), so it is retried only when it surely did
//!   not reach CML (connection refused, 502/503/504). A delete whose retry finds the lab gone
//!   has succeeded.
//! * **TLS**: built-in roots, a CA file, or an explicit opt-out ([`CmlTls`]); plain http only
//!   with `allow_http`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ccm_adapters::cml::{CmlConfig, CmlCredentials, CmlLabRuntime, CmlTls};
//! use ccm_core::store::{LabEndpoint, LabRuntime};
//! let mut cfg = CmlConfig::new(CmlCredentials::new("admin", "secret"));
//! cfg.tls = CmlTls::VerifyWithCa("/etc/ccm/cml-ca.pem".into());
//! let cml = CmlLabRuntime::new(cfg)?;
//! let w = LabEndpoint::new("w-1", "https://10.0.0.7");
//! println!("CML {}", cml.system_info(&w).await?.version);
//! let lab = cml.import_lab(&w, "ccm s-1", "lab: {title: t}\nnodes: []\nlinks: []\n").await?;
//! cml.start(&w, &lab).await?;
//! # Ok(()) }
//! ```

mod config;
mod wire;

pub use config::{
    CmlBackoff, CmlConfig, CmlConfigError, CmlCredentials, CmlTls, Password, DEFAULT_BACKOFF,
};

use async_trait::async_trait;
use ccm_core::store::lab::{
    LabCall, LabDetails, LabEndpoint, LabError, LabId, LabRuntime, LabSummary, NodeId, SystemInfo,
    MAX_LAB_YAML_BYTES,
};
use reqwest::{Method, StatusCode, Url};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The CML [`LabRuntime`].
pub struct CmlLabRuntime {
    config: Arc<CmlConfig>,
    http: reqwest::Client,
    /// JWT by (worker id, base URL).
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for CmlLabRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmlLabRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one request is.
struct Request<'a> {
    call: LabCall,
    method: Method,
    /// Path segments under `/api/v0/`.
    path: Vec<&'a str>,
    query: Vec<(&'a str, &'a str)>,
    body: Option<Body>,
    auth: bool,
    retry: Retry,
}

enum Body {
    Json(serde_json::Value),
    Text(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Safe to repeat: 5xx, timeouts, connection failures.
    Idempotent,
    /// Repeat only when the request surely did not reach the controller.
    NotIdempotent,
}

/// The final answer to a request.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    /// The body was over `max_response_bytes` (and not read further).
    oversized: bool,
    /// An earlier attempt failed and this is a retry's answer.
    retried: bool,
}

/// A transport-level failure of one attempt.
struct Transport {
    /// The request surely never reached the server.
    not_sent: bool,
    /// A certificate did not verify (retrying will not help).
    tls: bool,
    reason: String,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl CmlLabRuntime {
    /// Builds the adapter (reads the CA file, if any).
    pub fn new(config: CmlConfig) -> Result<Self, CmlConfigError> {
        config.validate()?;
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ccm/", env!("CARGO_PKG_VERSION")));
        match &config.tls {
            CmlTls::Verify => {}
            CmlTls::VerifyWithCa(path) => {
                let pem = std::fs::read(path).map_err(|e| CmlConfigError::CaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    CmlConfigError::CaFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                if certs.is_empty() {
                    return Err(CmlConfigError::CaFile {
                        path: path.clone(),
                        reason: "no PEM certificate in the file".into(),
                    });
                }
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            CmlTls::InsecureSkipVerify => {
                tracing::warn!("CML adapter: certificate verification is turned off");
                b = b.danger_accept_invalid_certs(true);
            }
        }
        let http = b.build().map_err(|e| CmlConfigError::Client(chain(&e)))?;
        Ok(CmlLabRuntime {
            config: Arc::new(config),
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &CmlConfig {
        &self.config
    }

    fn url(&self, call: LabCall, at: &LabEndpoint, r: &Request<'_>) -> Result<Url, LabError> {
        let invalid = |reason: String| LabError::Invalid {
            call,
            worker: at.worker_id.clone(),
            reason,
        };
        let mut url = Url::parse(at.url.trim())
            .map_err(|e| invalid(format!("CML URL {:?} does not parse: {e}", at.url)))?;
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_http => {}
            "http" => {
                return Err(invalid(format!(
                    "CML URL {:?} is plain http (credentials would travel in clear text; \
                     allow_http is off)",
                    at.url
                )))
            }
            s => return Err(invalid(format!("CML URL scheme {s:?} is not https"))),
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(invalid(format!("CML URL {:?} has no host", at.url)));
        }
        {
            let mut seg = url
                .path_segments_mut()
                .map_err(|_| invalid(format!("CML URL {:?} cannot take a path", at.url)))?;
            seg.pop_if_empty().push("api").push("v0");
            for p in &r.path {
                seg.push(p);
            }
        }
        url.set_query(None);
        if !r.query.is_empty() {
            url.query_pairs_mut().extend_pairs(r.query.iter());
        }
        Ok(url)
    }

    fn cached_token(&self, at: &LabEndpoint) -> Option<String> {
        let g = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&(at.worker_id.clone(), at.url.clone())).cloned()
    }

    fn forget_token(&self, at: &LabEndpoint) {
        let mut g = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(&(at.worker_id.clone(), at.url.clone()));
    }

    /// The worker's token, authenticating when there is none.
    async fn token(&self, call: LabCall, at: &LabEndpoint) -> Result<String, LabError> {
        if let Some(t) = self.cached_token(at) {
            return Ok(t);
        }
        let creds = self
            .config
            .credentials_for(&at.worker_id)
            .ok_or_else(|| LabError::Auth {
                call,
                worker: at.worker_id.clone(),
                reason: "no CML credentials configured for this worker".into(),
            })?;
        let req = Request {
            call,
            method: Method::POST,
            path: vec!["authenticate"],
            query: vec![],
            body: Some(Body::Json(serde_json::json!({
                "username": creds.username,
                "password": creds.password.expose(),
            }))),
            auth: false,
            retry: Retry::Idempotent,
        };
        // Boxed: exchange calls token for authenticated requests (this one is not).
        let ans = Box::pin(self.exchange(at, &req)).await?;
        let status = ans.status;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(LabError::Auth {
                call,
                worker: at.worker_id.clone(),
                reason: format!(
                    "CML rejected the credentials of user {:?} (HTTP {})",
                    creds.username,
                    status.as_u16()
                ),
            });
        }
        let body = self.check(call, at, ans)?;
        let token: String = wire::parse(call, at, &body)?;
        if token.is_empty() || token.len() > 16 * 1024 {
            return Err(LabError::Invalid {
                call,
                worker: at.worker_id.clone(),
                reason: "authenticate answered an empty or oversized token".into(),
            });
        }
        let mut g = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        g.insert((at.worker_id.clone(), at.url.clone()), token.clone());
        Ok(token)
    }

    /// Sends one request with retries; returns the final status and body (any status).
    async fn exchange(&self, at: &LabEndpoint, r: &Request<'_>) -> Result<Answer, LabError> {
        let url = self.url(r.call, at, r)?;
        let mut reauthenticated = false;
        let mut retry = 0u32;
        loop {
            let token = if r.auth {
                Some(self.token(r.call, at).await?)
            } else {
                None
            };
            let outcome = self.attempt(r, url.clone(), token.as_deref()).await;
            let again = match &outcome {
                Ok(a) if a.status == StatusCode::UNAUTHORIZED && r.auth => {
                    if reauthenticated {
                        false
                    } else {
                        tracing::debug!(worker = %at.worker_id, call = %r.call, "CML token refused; authenticating again");
                        self.forget_token(at);
                        reauthenticated = true;
                        continue;
                    }
                }
                Ok(a) if a.status.is_server_error() => match r.retry {
                    Retry::Idempotent => true,
                    Retry::NotIdempotent => matches!(
                        a.status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ),
                },
                Ok(_) => false,
                Err(t) if t.tls => false,
                Err(t) => r.retry == Retry::Idempotent || t.not_sent,
            };
            if !again || retry >= self.config.retries {
                return match outcome {
                    Ok(mut a) => {
                        a.retried = retry > 0;
                        Ok(a)
                    }
                    Err(t) if t.tls => Err(LabError::Invalid {
                        call: r.call,
                        worker: at.worker_id.clone(),
                        reason: format!("TLS: {}", t.reason),
                    }),
                    Err(t) => Err(LabError::Unavailable {
                        call: r.call,
                        worker: at.worker_id.clone(),
                        reason: t.reason,
                    }),
                };
            }
            retry += 1;
            let delay = self.config.backoff.delay(retry);
            tracing::debug!(worker = %at.worker_id, call = %r.call, retry, ?delay, "CML call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP attempt; reads at most `max_response_bytes` of the answer.
    async fn attempt(
        &self,
        r: &Request<'_>,
        url: Url,
        token: Option<&str>,
    ) -> Result<Answer, Transport> {
        let timeout = if r.call == LabCall::Import {
            self.config.import_timeout
        } else {
            self.config.request_timeout
        };
        let mut rb = self
            .http
            .request(r.method.clone(), url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb = match &r.body {
            Some(Body::Json(v)) => rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(v.to_string()),
            Some(Body::Text(s)) => rb.body(s.clone()),
            None => rb,
        };
        let transport = |e: reqwest::Error| {
            let reason = chain(&e);
            Transport {
                not_sent: e.is_connect() && !e.is_timeout(),
                tls: e.is_connect() && reason.to_ascii_lowercase().contains("certificate"),
                reason,
            }
        };
        let mut resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let cap = self.config.max_response_bytes;
        let mut ans = Answer {
            status,
            body: Vec::new(),
            oversized: resp.content_length().is_some_and(|n| n > cap as u64),
            retried: false,
        };
        while !ans.oversized {
            let Some(chunk) = resp.chunk().await.map_err(transport)? else {
                break;
            };
            if ans.body.len().saturating_add(chunk.len()) > cap {
                ans.oversized = true;
                ans.body.clear();
            } else {
                ans.body.extend_from_slice(&chunk);
            }
        }
        Ok(ans)
    }

    /// Maps a non-success status to the error it means; returns the body of a success.
    fn check(&self, call: LabCall, at: &LabEndpoint, ans: Answer) -> Result<Vec<u8>, LabError> {
        let Answer {
            status,
            body,
            oversized,
            ..
        } = ans;
        if oversized {
            return Err(LabError::Invalid {
                call,
                worker: at.worker_id.clone(),
                reason: format!(
                    "answer larger than {} bytes (HTTP {})",
                    self.config.max_response_bytes,
                    status.as_u16()
                ),
            });
        }
        if status.is_success() {
            return Ok(body);
        }
        let worker = at.worker_id.clone();
        let reason = format!("HTTP {}: {}", status.as_u16(), wire::description(&body));
        Err(match status {
            StatusCode::NOT_FOUND => LabError::NotFound {
                call,
                worker,
                what: reason,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LabError::Auth {
                call,
                worker,
                reason,
            },
            s if s.is_server_error() => LabError::Unavailable {
                call,
                worker,
                reason,
            },
            _ => LabError::Refused {
                call,
                worker,
                reason,
            },
        })
    }

    async fn run(&self, at: &LabEndpoint, r: Request<'_>) -> Result<Vec<u8>, LabError> {
        let ans = self.exchange(at, &r).await?;
        tracing::trace!(worker = %at.worker_id, call = %r.call, status = ans.status.as_u16(), "CML call");
        self.check(r.call, at, ans)
    }

    async fn lab_order(
        &self,
        at: &LabEndpoint,
        lab: &LabId,
        call: LabCall,
        op: &str,
    ) -> Result<(), LabError> {
        self.run(
            at,
            Request {
                call,
                method: Method::PUT,
                path: vec!["labs", &lab.0, op],
                query: vec![],
                body: None,
                auth: true,
                retry: Retry::Idempotent,
            },
        )
        .await
        .map(|_| ())
    }

    async fn lab_summary(
        &self,
        call: LabCall,
        at: &LabEndpoint,
        lab: &str,
    ) -> Result<wire::Lab, LabError> {
        let body = self
            .run(
                at,
                Request {
                    call,
                    method: Method::GET,
                    path: vec!["labs", lab],
                    query: vec![],
                    body: None,
                    auth: true,
                    retry: Retry::Idempotent,
                },
            )
            .await?;
        wire::parse(call, at, &body)
    }
}

fn get<'a>(call: LabCall, path: Vec<&'a str>, query: Vec<(&'a str, &'a str)>) -> Request<'a> {
    Request {
        call,
        method: Method::GET,
        path,
        query,
        body: None,
        auth: true,
        retry: Retry::Idempotent,
    }
}

#[async_trait]
impl LabRuntime for CmlLabRuntime {
    async fn system_info(&self, at: &LabEndpoint) -> Result<SystemInfo, LabError> {
        let call = LabCall::SystemInfo;
        let mut r = get(call, vec!["system_information"], vec![]);
        r.auth = false;
        let body = self.run(at, r).await?;
        let w: wire::SystemInformation = wire::parse(call, at, &body)?;
        Ok(SystemInfo {
            version: w.version,
            ready: w.ready,
        })
    }

    async fn import_lab(
        &self,
        at: &LabEndpoint,
        title: &str,
        yaml: &str,
    ) -> Result<LabId, LabError> {
        let call = LabCall::Import;
        if yaml.len() > MAX_LAB_YAML_BYTES {
            return Err(LabError::Refused {
                call,
                worker: at.worker_id.clone(),
                reason: format!(
                    "lab YAML of {} bytes is over {MAX_LAB_YAML_BYTES}",
                    yaml.len()
                ),
            });
        }
        let body = self
            .run(
                at,
                Request {
                    call,
                    method: Method::POST,
                    path: vec!["import"],
                    query: vec![("title", title)],
                    body: Some(Body::Text(yaml.to_string())),
                    auth: true,
                    retry: Retry::NotIdempotent,
                },
            )
            .await?;
        let w: wire::Imported = wire::parse(call, at, &body)?;
        tracing::debug!(worker = %at.worker_id, lab = %w.id, title, "CML lab imported");
        Ok(LabId(w.id))
    }

    async fn set_node_tags(
        &self,
        at: &LabEndpoint,
        lab: &LabId,
        node: &NodeId,
        tags: &[String],
    ) -> Result<(), LabError> {
        let call = LabCall::SetNodeTags;
        self.run(
            at,
            Request {
                call,
                method: Method::PATCH,
                path: vec!["labs", &lab.0, "nodes", &node.0],
                query: vec![],
                body: Some(Body::Json(serde_json::json!({ "tags": tags }))),
                auth: true,
                retry: Retry::Idempotent,
            },
        )
        .await
        .map(|_| ())
    }

    async fn start(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        self.lab_order(at, lab, LabCall::Start, "start").await
    }

    async fn lab(&self, at: &LabEndpoint, lab: &LabId) -> Result<LabDetails, LabError> {
        let call = LabCall::Lab;
        let l = self.lab_summary(call, at, &lab.0).await?;
        let body = self
            .run(
                at,
                get(
                    call,
                    vec!["labs", &lab.0, "nodes"],
                    vec![("data", "true"), ("exclude_configurations", "true")],
                ),
            )
            .await?;
        let nodes: Vec<wire::Node> = wire::parse(call, at, &body)?;
        Ok(wire::details(l, nodes))
    }

    async fn stop(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        self.lab_order(at, lab, LabCall::Stop, "stop").await
    }

    async fn wipe(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        self.lab_order(at, lab, LabCall::Wipe, "wipe").await
    }

    async fn delete(&self, at: &LabEndpoint, lab: &LabId) -> Result<(), LabError> {
        let call = LabCall::Delete;
        let r = Request {
            call,
            method: Method::DELETE,
            path: vec!["labs", &lab.0],
            query: vec![],
            body: None,
            auth: true,
            retry: Retry::Idempotent,
        };
        let ans = self.exchange(at, &r).await?;
        // An earlier attempt may have deleted it and lost the answer: gone is what was asked.
        if ans.retried && ans.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        self.check(call, at, ans).map(|_| ())
    }

    async fn list_labs(&self, at: &LabEndpoint) -> Result<Vec<LabSummary>, LabError> {
        let call = LabCall::ListLabs;
        let body = self
            .run(at, get(call, vec!["labs"], vec![("show_all", "true")]))
            .await?;
        let ids: Vec<String> = wire::parse(call, at, &body)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.lab_summary(call, at, &id).await {
                Ok(l) => out.push(wire::summary(l)),
                // Deleted between the list and the look: not there any more.
                Err(LabError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
