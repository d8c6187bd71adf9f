//! The lablet REST API under `/api/v1`: a thin HTTP layer over [`ccm_core::api::Lablets`].
//!
//! * Errors are JSON `{"error": {"code", "message", "field"?}}` with a stable `code`
//!   (see [`error`]); 201 for what was created, 200 otherwise, 401/404/409/413/422/503.
//! * Auth: with `CCM_API_TOKEN` set, mutating requests need `Authorization: Bearer <token>`
//!   (compared in constant time), and reads too unless `CCM_API_READS_OPEN=true`. Without a
//!   token the API is open, and `ccm serve` only listens on a loopback address.
//! * Bodies are limited to [`BODY_LIMIT`] bytes.
//! * The routes are one table ([`routes::table`]); the OpenAPI document
//!   (`/api/v1/openapi.json`, [`openapi`]) is checked against it by a test.

pub mod artifacts;
pub mod error;
pub mod openapi;
pub mod routes;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use ccm_core::api::Lablets;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request body (a lab YAML of up to 1 MiB inside JSON).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024 + 64 * 1024;

/// Who may call the API.
#[derive(Clone)]
pub struct Auth {
    /// SHA-256 of the bearer token; `None`: no token configured (loopback only).
    token_hash: Option<[u8; 32]>,
    /// Reads without a token even when one is configured.
    reads_open: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token_hash.map(|_| "***"))
            .field("reads_open", &self.reads_open)
            .finish()
    }
}

impl Auth {
    /// Auth with `token` (none: open) and the reads rule.
    pub fn new(token: Option<&str>, reads_open: bool) -> Self {
        Auth {
            token_hash: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            reads_open,
        }
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token_hash.is_some()
    }

    /// Checks `addr` may be listened on: a non-loopback address needs a token.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), String> {
        if self.token_hash.is_none() && !addr.ip().is_loopback() {
            return Err(format!(
                "CCM_HTTP_ADDR {addr} is not a loopback address and CCM_API_TOKEN is not set: refusing to serve the API unauthenticated (set CCM_API_TOKEN, or listen on 127.0.0.1)"
            ));
        }
        Ok(())
    }

    /// Whether a request with this method and `Authorization` header may pass.
    fn allows(&self, method: &Method, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.token_hash else {
            return true;
        };
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if read && self.reads_open {
            return true;
        }
        let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        // Constant time: compare fixed-length digests without an early exit.
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The façade.
    pub lablets: Lablets,
    /// The auth rule.
    pub auth: Arc<Auth>,
}

async fn authorize(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.auth.allows(req.method(), authorization) {
        next.run(req).await
    } else {
        let mut r = error::ApiFailure::unauthorized().into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"ccm\""),
        );
        r
    }
}

/// The `/api/v1` router (to be merged into the daemon's router).
pub fn router(lablets: Lablets, auth: Auth) -> Router {
    let state = ApiState {
        lablets,
        auth: Arc::new(auth),
    };
    let mut api: Router<ApiState> = Router::new();
    for r in routes::table() {
        if r.path == openapi::PATH {
            continue;
        }
        api = api.route(r.path, r.handler);
    }
    let api = api
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .route(openapi::PATH, axum::routing::get(openapi::serve));
    Router::new()
        .merge(api)
        .fallback(error::no_route)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
