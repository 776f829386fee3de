//! The one error type at the HTTP edge. Every error answers JSON
//! `{"error": code, "detail": what the client reads}`; internal causes are logged,
//! never echoed.

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::approval::{ApprovalId, Rejection, Status};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "missing or unknown API token: send `Authorization: Bearer <token>` (create one with `signoff token create NAME`)"
    )]
    Unauthorized,
    #[error("no approval with id {0}")]
    NotFound(String),
    /// No route has this path (`METHOD /path`).
    #[error("no such endpoint: {0}")]
    NoEndpoint(String),
    /// The path exists, not with this method (`METHOD /path`).
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    /// The state machine refused: `status` is where the approval stands.
    #[error("{detail}")]
    Conflict { status: Status, detail: String },
    /// An idempotency key sent again with another call.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("request body is larger than the 1 MiB limit")]
    PayloadTooLarge,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{0}")]
    Unprocessable(String),
    /// The requester has `max_pending` requests waiting for people already.
    #[error("{detail}")]
    TooManyPending {
        detail: String,
        waiting: i64,
        limit: u32,
    },
    #[error("temporarily unavailable, retry shortly")]
    Unavailable,
    /// A Slack request whose signature did not verify.
    #[error("{0}")]
    BadSignature(String),
    /// The endpoint needs configuration this server does not have.
    #[error("{0}")]
    NotConfigured(String),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::NoEndpoint(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } | ApiError::IdempotencyKeyReused(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) | ApiError::NoEndpoint(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooManyPending { .. } => "too_many_pending",
            ApiError::Unavailable => "unavailable",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::NotConfigured(_) => "not_configured",
        }
    }

    pub fn not_found(id: impl std::fmt::Display) -> Self {
        ApiError::NotFound(id.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            // Another token's approval is not found, as for reads: its existence is
            // not the caller's to learn.
            StoreError::Rejected {
                rejection: Rejection::NotOwner,
                current,
            } => ApiError::not_found(current.id),
            StoreError::Rejected { rejection, current } => ApiError::Conflict {
                status: current.status,
                detail: rejection.to_string(),
            },
            StoreError::IdempotencyKeyReused(_) => {
                ApiError::IdempotencyKeyReused(error.to_string())
            }
            StoreError::NotFound(id) => ApiError::not_found(id),
            StoreError::TooManyPending { waiting, limit, .. } => ApiError::TooManyPending {
                detail: error.to_string(),
                waiting,
                limit,
            },
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::Unavailable
            }
        }
    }
}

impl ApiError {
    /// The JSON body callers read (also the `/mcp` tools' structured error).
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.code(), "detail": self.to_string() });
        match self {
            ApiError::Conflict { status, .. } => body["status"] = json!(status),
            ApiError::TooManyPending { waiting, limit, .. } => {
                body["waiting"] = json!(waiting);
                body["max_pending"] = json!(limit);
            }
            _ => {}
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status_code(), Json(self.body())).into_response()
    }
}

/// Parses an approval id from the path; a malformed id is simply not found.
pub fn parse_id(raw: &str) -> Result<ApprovalId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(raw))
}

/// The path's `{id}` as an approval id: one that does not decode (percent-escaped bytes
/// that are not UTF-8) is the API's 400, not axum's plain text.
pub fn path_id(path: Result<Path<String>, PathRejection>) -> Result<ApprovalId, ApiError> {
    let Path(raw) = path.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    parse_id(&raw)
}
