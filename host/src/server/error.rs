//! One error type for every route, in ComfyUI's `{"error": {...}}` shape, and
//! a JSON body extractor whose parse failures share it.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use crate::protocol::without_backtrace;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Json,
}

impl ApiError {
    /// `{"error": {type, message, details, extra_info}, "node_errors": {}}`.
    pub fn new(status: StatusCode, kind: &str, message: &str, details: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({
                "error": {"type": kind, "message": message, "details": without_backtrace(&details.into()), "extra_info": {}},
                "node_errors": {},
            }),
        }
    }

    pub fn bad_request(message: &str, details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message, details)
    }

    pub fn forbidden(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Path not allowed",
            details,
        )
    }

    pub fn not_found(details: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", details)
    }

    /// The queue or history backend failed (Redis down or hung): 503, with the cause.
    pub fn unavailable(error: anyhow::Error) -> Self {
        tracing::error!("queue backend: {error:#}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            "The prompt queue is unavailable",
            format!("{error:#}"),
        )
    }

    /// Logs the whole error; the client gets it without a backtrace.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            error.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// A JSON request body; malformed JSON and oversized bodies become [`ApiError`]s.
pub struct JsonBody(pub Json);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            ApiError::new(
                status,
                "invalid_body",
                "Could not read the request body",
                e.body_text(),
            )
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(json!({})));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "Malformed JSON",
                e.to_string(),
            )
        })
    }
}
