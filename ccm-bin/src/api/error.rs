//! JSON errors with a stable code.
//!
//! | status | code |
//! |---|---|
//! | 401 | `unauthorized` |
//! | 404 | `not_found`, `no_route` |
//! | 409 | `version_conflict`, `idempotency_mismatch`, `already_ended`, `not_bound`, `not_ready`, `contention`, `not_admitted` (with `refusal`) |
//! | 413 | `too_large` |
//! | 422 | `invalid` (with `field`) |
//! | 500 | `corrupt_record`, `backend` |
//! | 503 | `unavailable` |

use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use ccm_core::api::ApiError;
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    refusal: Option<Box<serde_json::Value>>,
}

impl ApiFailure {
    /// A failure.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            code,
            message: message.into(),
            field: None,
            refusal: None,
        }
    }

    /// 422 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut f = ApiFailure::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
        f.field = Some(field.into());
        f
    }

    /// 401.
    pub fn unauthorized() -> Self {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request needs Authorization: Bearer <CCM_API_TOKEN>",
        )
    }
}

impl From<ApiError> for ApiFailure {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } | ApiError::Rejected(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Corrupt(_) | ApiError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "API request failed");
        }
        let mut f = ApiFailure::new(status, e.code(), e.to_string());
        match e {
            ApiError::Invalid { field, message } => {
                f.message = format!("{field}: {message}");
                f.field = Some(field);
            }
            ApiError::Rejected(r) => f.refusal = serde_json::to_value(&*r).ok().map(Box::new),
            _ => {}
        }
        f
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        if let Some(r) = self.refusal {
            body["refusal"] = *r;
        }
        (self.status, Json(json!({ "error": body }))).into_response()
    }
}

/// The fallback: a JSON 404 for paths the API does not have.
pub async fn no_route(uri: axum::http::Uri) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no such endpoint: {}", uri.path()),
    )
}
