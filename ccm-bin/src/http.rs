//! The daemon's HTTP endpoints: `/healthz` (the process answers), `/readyz` (backends
//! connected and loops started, with `is_leader` per loop) and `/metrics` (Prometheus text).

use crate::metrics::LoopStatus;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the endpoints read from the running daemon.
pub trait Probe: Send + Sync + 'static {
    /// Backends connected and loops started.
    fn ready(&self) -> bool;
    /// Status of each loop, by name.
    fn loops(&self) -> BTreeMap<String, LoopStatus>;
    /// The whole `/metrics` body (Prometheus text).
    fn metrics_text(&self) -> String;
    /// The controller's last plan as JSON (`None` before this process has planned).
    fn last_plan(&self) -> Option<serde_json::Value> {
        None
    }
}

/// The `/readyz` body.
#[derive(Debug, serde::Serialize)]
struct Readiness {
    ready: bool,
    candidate: String,
    backend: String,
    loops: BTreeMap<String, LoopStatus>,
}

#[derive(Clone)]
struct AppState {
    probe: Arc<dyn Probe>,
    candidate: String,
    backend: String,
}

/// The router of the daemon's endpoints.
pub fn router(probe: Arc<dyn Probe>, candidate: String, backend: String) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/plan", get(last_plan))
        .with_state(AppState {
            probe,
            candidate,
            backend,
        })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(s): State<AppState>) -> Response {
    let body = Readiness {
        ready: s.probe.ready(),
        candidate: s.candidate.clone(),
        backend: s.backend.clone(),
        loops: s.probe.loops(),
    };
    let code = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.probe.metrics_text(),
    )
        .into_response()
}

async fn last_plan(State(s): State<AppState>) -> Response {
    match s.probe.last_plan() {
        Some(p) => (StatusCode::OK, Json(p)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": "no plan yet: this process does not lead the controller, or its first pass has not run"
            })),
        )
            .into_response(),
    }
}

/// Binds `addr` (an error names the address) and serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on CCM_HTTP_ADDR {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((local, handle))
}

/// The integration tests' plain HTTP client, shared with the tests below.
#[cfg(test)]
#[path = "../tests/support/wire.rs"]
mod wire;

#[cfg(test)]
mod tests {
    use super::*;

    /// One `GET path` on a blocking thread (the server runs on this test's runtime).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let path = path.to_string();
        tokio::task::spawn_blocking(move || super::wire::http_get(addr, &path))
            .await
            .unwrap()
    }

    /// A probe whose answers the test sets.
    #[derive(Default)]
    struct Fake {
        status: crate::metrics::DaemonStatus,
        leader: std::sync::atomic::AtomicBool,
    }

    impl Probe for Fake {
        fn ready(&self) -> bool {
            self.status.ready()
        }
        fn loops(&self) -> BTreeMap<String, LoopStatus> {
            let mut m = BTreeMap::new();
            m.insert(
                "scheduler".to_string(),
                LoopStatus {
                    enabled: true,
                    ..LoopStatus::default()
                },
            );
            m.insert(
                "controller".to_string(),
                LoopStatus {
                    enabled: true,
                    is_leader: self.leader.load(std::sync::atomic::Ordering::SeqCst),
                    ..LoopStatus::default()
                },
            );
            m
        }
        fn metrics_text(&self) -> String {
            self.status.render()
        }
        fn last_plan(&self) -> Option<serde_json::Value> {
            self.leader
                .load(std::sync::atomic::Ordering::SeqCst)
                .then(|| serde_json::json!({ "cost_usd": 12.5 }))
        }
    }

    #[tokio::test]
    async fn endpoints_answer_over_tcp() {
        let m = Arc::new(Fake::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, handle) = serve(
            "127.0.0.1:0".parse().unwrap(),
            router(m.clone(), "me".into(), "embedded".into()),
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
        let (code, body) = get(addr, "/healthz").await;
        assert_eq!(code, 200);
        assert!(body.contains("\"ok\""), "{body}");
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503, "{body}");
        let (code, body) = get(addr, "/plan").await;
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("no plan yet"), "{body}");
        m.status.set_ready(true);
        m.leader.store(true, std::sync::atomic::Ordering::SeqCst);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["loops"]["controller"]["is_leader"], true);
        assert_eq!(v["loops"]["scheduler"]["is_leader"], false);
        assert_eq!(v["candidate"], "me");
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("ccm_ready 1"), "{body}");
        let (code, body) = get(addr, "/plan").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("12.5"), "{body}");
        let (code, _) = get(addr, "/nope").await;
        assert_eq!(code, 404);
        tx.send(()).unwrap();
        handle.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_names_the_variable() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let e = serve(
            addr,
            router(Arc::new(Fake::default()), "x".into(), "y".into()),
            async {},
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("CCM_HTTP_ADDR"), "{e}");
    }
}
