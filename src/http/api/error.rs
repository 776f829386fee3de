//! The one error type at the HTTP edge. Every error answers JSON
//! `{"error": code, "detail": what the client reads}`; internal causes are logged,
//! never echoed. [`ErrorBody`] is that JSON's type (and its OpenAPI schema).

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
    /// The token has `Limits::streams_per_token` event streams open here already.
    #[error("{0}")]
    TooManyStreams(String),
    /// The token has `Limits::waits_per_token` long-polls waiting here already.
    #[error("{0}")]
    TooManyWaits(String),
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
            ApiError::TooManyPending { .. }
            | ApiError::TooManyStreams(_)
            | ApiError::TooManyWaits(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::NotFound(_) | ApiError::NoEndpoint(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Conflict { .. } => ErrorCode::Conflict,
            ApiError::IdempotencyKeyReused(_) => ErrorCode::IdempotencyKeyReused,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
            ApiError::Unprocessable(_) => ErrorCode::Unprocessable,
            ApiError::TooManyPending { .. } => ErrorCode::TooManyPending,
            ApiError::TooManyStreams(_) => ErrorCode::TooManyStreams,
            ApiError::TooManyWaits(_) => ErrorCode::TooManyWaits,
            ApiError::Unavailable => ErrorCode::Unavailable,
            ApiError::BadSignature(_) => ErrorCode::BadSignature,
            ApiError::NotConfigured(_) => ErrorCode::NotConfigured,
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
                // Past its expiry before the scheduler's pass recorded it: expired, as
                // a read says (`Approval::as_seen_at`).
                status: if rejection == Rejection::Expired {
                    Status::Expired
                } else {
                    current.status
                },
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

/// Every refusal's JSON: what went wrong, for programs (`error`) and for people
/// (`detail`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "conflict", "detail": "this request is pending, not approved", "status": "pending"}))]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// What happened and what to fix, in words.
    pub detail: String,
    /// With `conflict`: where the approval stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// With `too_many_pending`: how many of the token's requests wait for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<i64>,
    /// With `too_many_pending`: the limit (the policy's `max_pending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
}

/// The kind of refusal; each goes with one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Conflict,
    IdempotencyKeyReused,
    PayloadTooLarge,
    RequestTimeout,
    Unprocessable,
    TooManyPending,
    TooManyStreams,
    TooManyWaits,
    Unavailable,
    BadSignature,
    NotConfigured,
}

impl ApiError {
    /// The JSON body callers read.
    pub fn error_body(&self) -> ErrorBody {
        let mut body = ErrorBody {
            error: self.code(),
            detail: self.to_string(),
            status: None,
            waiting: None,
            max_pending: None,
        };
        match self {
            ApiError::Conflict { status, .. } => body.status = Some(*status),
            ApiError::TooManyPending { waiting, limit, .. } => {
                body.waiting = Some(*waiting);
                body.max_pending = Some(*limit);
            }
            _ => {}
        }
        body
    }

    /// The same as a JSON value (the `/mcp` tools' structured error).
    pub fn body(&self) -> serde_json::Value {
        // Plain fields and unit enums: serializing cannot fail.
        serde_json::to_value(self.error_body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status_code(), Json(self.error_body())).into_response()
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
