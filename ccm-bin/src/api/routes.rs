//! The route table and the handlers.

use super::error::ApiFailure;
use super::ApiState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, MethodRouter};
use ccm_core::api::{BookingRequest, DefinitionDraft, Registration, SessionQuery};
use ccm_core::definition::AmiRequirements;
use ccm_core::license::LicenseType;
use ccm_core::resources::Resources;
use ccm_core::session::SessionState;
use ccm_core::timeslot::Timestamp;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// One route: method, path (axum syntax, as in the OpenAPI document) and handler.
pub struct Route {
    /// HTTP method in lower case, as the OpenAPI document spells it (checked by a test).
    #[cfg_attr(not(test), allow(dead_code))]
    pub method: &'static str,
    /// Path.
    pub path: &'static str,
    /// Handler.
    pub handler: MethodRouter<ApiState>,
}

fn r(method: &'static str, path: &'static str, handler: MethodRouter<ApiState>) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every route of the API.
pub fn table() -> Vec<Route> {
    vec![
        r("post", "/api/v1/definitions", post(create_definition)),
        r("get", "/api/v1/definitions", get(list_definitions)),
        r("get", "/api/v1/definitions/{id}", get(get_definition)),
        r(
            "get",
            "/api/v1/definitions/{id}/versions",
            get(definition_versions),
        ),
        r("post", "/api/v1/sessions", post(book)),
        r("get", "/api/v1/sessions", get(list_sessions)),
        r("get", "/api/v1/sessions/{id}", get(get_session)),
        r("post", "/api/v1/sessions/{id}/cancel", post(cancel)),
        r("post", "/api/v1/sessions/{id}/connect", post(connect)),
        r("get", "/api/v1/sessions/{id}/explain", get(explain)),
        r("get", "/api/v1/sessions/{id}/lab.yaml", get(lab_yaml)),
        r("get", "/api/v1/workers", get(list_workers)),
        r("get", "/api/v1/workers/{id}", get(get_worker)),
        r("get", "/api/v1/templates", get(list_templates)),
        r("get", "/api/v1/templates/{name}", get(get_template)),
        r("get", "/api/v1/plan/preview", get(preview)),
        r("get", "/api/v1/landscape", get(landscape)),
        r("get", super::openapi::PATH, get(super::openapi::serve)),
    ]
}

type Answer = Result<Response, ApiFailure>;

/// A JSON body, with errors that name the field (`serde_path_to_error`) and a 413 past the limit.
fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, ApiFailure> {
    let bytes = b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request body is larger than {} bytes",
                    super::BODY_LIMIT
                ),
            )
        } else {
            ApiFailure::invalid("body", e.body_text())
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        ApiFailure::invalid(field, e.inner().to_string())
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiFailure> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiFailure::invalid("query", e.body_text()))
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (status, Json(v)).into_response()
}

/// `POST /api/v1/definitions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDefinition {
    name: String,
    #[serde(default)]
    version: Option<semver::Version>,
    resource_requirements: Resources,
    #[serde(default)]
    node_count: Option<u32>,
    #[serde(default)]
    license_affinity: Vec<LicenseType>,
    #[serde(default)]
    ami_requirements: AmiRequirements,
    #[serde(default)]
    max_duration_minutes: Option<u32>,
    #[serde(default)]
    created_by: Option<String>,
    lab_yaml: String,
}

async fn create_definition(State(s): State<ApiState>, b: Result<Bytes, BytesRejection>) -> Answer {
    let c: CreateDefinition = body(b)?;
    let draft = DefinitionDraft {
        name: c.name,
        version: c.version,
        resource_requirements: c.resource_requirements,
        node_count: c.node_count,
        license_affinity: c.license_affinity,
        ami_requirements: c.ami_requirements,
        max_duration_minutes: c.max_duration_minutes,
        created_by: c.created_by,
    };
    let reg = s.lablets.register_definition(draft, &c.lab_yaml).await?;
    let status = match reg.outcome {
        Registration::Unchanged => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    Ok(json(status, &reg))
}

async fn list_definitions(State(s): State<ApiState>) -> Answer {
    let d = s.lablets.definitions().await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": d })))
}

async fn get_definition(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    Ok(json(StatusCode::OK, &s.lablets.definition(&id).await?))
}

async fn definition_versions(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    let v = s.lablets.definition_versions(&id).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": v })))
}

async fn book(State(s): State<ApiState>, b: Result<Bytes, BytesRejection>) -> Answer {
    let req: BookingRequest = body(b)?;
    let out = s.lablets.book(req).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &out))
}

/// `GET /api/v1/sessions` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsParams {
    /// Comma-separated states.
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
    #[serde(default)]
    worker_id: Option<String>,
    #[serde(default)]
    definition: Option<String>,
    #[serde(default)]
    from: Option<Timestamp>,
    #[serde(default)]
    to: Option<Timestamp>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn list_sessions(
    State(s): State<ApiState>,
    q: Result<Query<SessionsParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let mut states = Vec::new();
    for st in p.state.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if st.is_empty() {
            continue;
        }
        let parsed: SessionState =
            serde_json::from_value(serde_json::json!(st.to_ascii_uppercase())).map_err(|_| {
                ApiFailure::invalid("state", format!("{st:?} is not a session state"))
            })?;
        states.push(parsed);
    }
    if p.limit == Some(0) || p.limit.is_some_and(|l| l > ccm_core::api::decide::MAX_PAGE) {
        return Err(ApiFailure::invalid(
            "limit",
            format!("must be 1 to {}", ccm_core::api::decide::MAX_PAGE),
        ));
    }
    let page = s
        .lablets
        .list(&SessionQuery {
            states,
            owner_id: p.owner_id,
            worker_id: p.worker_id,
            definition: p.definition,
            from: p.from,
            to: p.to,
            after: p.after,
            limit: p.limit,
        })
        .await?;
    Ok(json(StatusCode::OK, &page))
}

async fn get_session(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    Ok(json(StatusCode::OK, &s.lablets.get(&id).await?))
}

/// `POST /api/v1/sessions/{id}/cancel` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/sessions/{id}/connect`: the user connected (READY → RUNNING). No body.
async fn connect(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    Ok(json(StatusCode::OK, &s.lablets.connect(&id).await?))
}

async fn cancel(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    let c: CancelBody = match &b {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => CancelBody::default(),
        _ => body(b)?,
    };
    if c.reason.chars().count() > ccm_core::api::MAX_TEXT {
        return Err(ApiFailure::invalid(
            "reason",
            format!("longer than {} characters", ccm_core::api::MAX_TEXT),
        ));
    }
    Ok(json(
        StatusCode::OK,
        &s.lablets.cancel(&id, &c.reason).await?,
    ))
}

async fn explain(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    Ok(json(StatusCode::OK, &s.lablets.explain(&id).await?))
}

async fn lab_yaml(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    let text = s.lablets.session_lab_yaml(&id).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        text,
    )
        .into_response())
}

async fn list_workers(State(s): State<ApiState>) -> Answer {
    let w = s.lablets.workers().await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": w })))
}

async fn get_worker(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    Ok(json(StatusCode::OK, &s.lablets.worker(&id).await?))
}

async fn list_templates(State(s): State<ApiState>) -> Answer {
    let t = s.lablets.templates().await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": t })))
}

async fn get_template(State(s): State<ApiState>, Path(name): Path<String>) -> Answer {
    Ok(json(StatusCode::OK, &s.lablets.template(&name).await?))
}

/// `?at=` of the plan endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AtParams {
    #[serde(default)]
    at: Option<Timestamp>,
}

async fn preview(State(s): State<ApiState>, q: Result<Query<AtParams>, QueryRejection>) -> Answer {
    let at = query(q)?.at.unwrap_or_else(|| s.lablets.now());
    Ok(json(StatusCode::OK, &s.lablets.preview(at).await?))
}

async fn landscape(
    State(s): State<ApiState>,
    q: Result<Query<AtParams>, QueryRejection>,
) -> Answer {
    let at = query(q)?.at.unwrap_or_else(|| s.lablets.now());
    Ok(json(StatusCode::OK, &s.lablets.landscape(at).await?))
}
