//! Request extractors for the API: the bearer token ([`Caller`]) and JSON bodies
//! ([`JsonBody`]) whose every failure is an [`ApiError`] with a useful detail.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::exact_json::{self, ExactError};
use crate::http::AppState;
use crate::tokens;

/// The authenticated API token's name, and what verifies the token again
/// ([`Caller::verify_again`]).
#[derive(Debug, Clone)]
pub struct Caller(pub String, TokenHash);

/// The SHA-256 of the request's token (never its secret), left out of `Debug`.
#[derive(Clone)]
struct TokenHash(String);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(…)")
    }
}

impl Caller {
    /// Verifies the token again: it may have been revoked or rotated since the request
    /// began. A request checks before it writes what a body that took long to arrive
    /// asked for; a long-poll before it answers; an event stream while it runs. As
    /// cheap as the first check (the same cache), and as prompt: once revoke returns,
    /// this is 401 on every replica.
    pub async fn verify_again(&self, state: &AppState) -> Result<(), ApiError> {
        match verify(state, &self.1.0).await? == self.0 {
            true => Ok(()),
            false => Err(ApiError::Unauthorized),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer)
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let hash = tokens::hash(token);
        let name = verify(state, &hash).await?;
        Ok(Caller(name, TokenHash(hash)))
    }
}

/// The name of the active token with this hash. Trusted for at most
/// tokens::CACHE_TTL from before its lookup; revoke and rotate wait that out, so a
/// revoked token is refused once revoke returns.
async fn verify(state: &AppState, hash: &str) -> Result<String, ApiError> {
    if let Some(name) = state.tokens.get(hash, Instant::now()) {
        return Ok(name);
    }
    let asked = Instant::now();
    match state.store.token_lookup(hash).await? {
        Some(name) => {
            state.tokens.insert(hash, name.clone(), asked);
            Ok(name)
        }
        None => Err(ApiError::Unauthorized),
    }
}

/// The credentials of an `Authorization` header of the Bearer scheme, whose name is
/// case-insensitive (RFC 9110, 11.1): `Bearer`, `bearer` and `BEARER` alike.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
}

/// Whether reading the body failed because it did not arrive within the body limit
/// (see `http::Limits::body`).
pub fn timed_out(rejection: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = source {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The whole body of `req`: over the body limit is 413, not all there within the time
/// to send it (see `http::Limits::body`) is 408. For [`JsonBody`], [`RawBody`] and `/mcp`.
pub async fn body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    // Counted in `signoff_http_request_bodies_reading` while it arrives.
    let _reading = state.metrics.body_reading();
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else if timed_out(&rejection) {
            ApiError::RequestTimeout
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })
}

/// The whole body as it came, with [`body`]'s limits and answers: for the Slack
/// endpoints, which check the signature over the exact bytes.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        body(req, state).await.map(RawBody)
    }
}

/// A JSON body, whatever the Content-Type says. Broken JSON is 400; JSON of the wrong
/// shape, with a key twice or a number that cannot be kept exactly is 422 (see
/// [`exact_json`]); over the body limit is 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body(req, state).await?;
        // Read exactly (no key twice, no number rounded), then into the shape.
        let value = exact_json::parse(&bytes).map_err(|error| match error {
            ExactError::Syntax(_) => ApiError::BadRequest(error.to_string()),
            ExactError::Inexact(_) => ApiError::Unprocessable(error.to_string()),
        })?;
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|error| ApiError::Unprocessable(error.to_string()))
    }
}
