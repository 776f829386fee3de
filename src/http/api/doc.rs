//! The API's refusals as reusable OpenAPI responses (`components.responses`), for the
//! handlers' `#[utoipa::path]` annotations: each is an [`ErrorBody`] with the status's
//! meaning and a real example. Refusals that say something different per endpoint (a
//! `409`'s reasons) are written in that endpoint's annotation instead.
//! These types are descriptions only; nothing constructs them.

use utoipa::ToResponse;

use super::error::ErrorBody;

/// Malformed JSON, query or path (an id whose escapes are not UTF-8).
#[derive(ToResponse)]
#[response(example = json!({"error": "bad_request", "detail": "malformed JSON: expected value at line 1 column 13"}))]
pub struct BadRequest(pub ErrorBody);

/// Missing, unknown or revoked API token.
#[derive(ToResponse)]
#[response(example = json!({
    "error": "unauthorized",
    "detail": "missing or unknown API token: send `Authorization: Bearer <token>` (create one with `signoff token create NAME`)"
}))]
pub struct Unauthorized(pub ErrorBody);

/// No approval with this id for this token: another token's approval is not found
/// either, exactly as an unknown or malformed id.
#[derive(ToResponse)]
#[response(example = json!({"error": "not_found", "detail": "no approval with id 1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19"}))]
pub struct NotFound(pub ErrorBody);

/// Another method on a path of this API (any method a path does not list).
#[derive(ToResponse)]
#[response(example = json!({"error": "method_not_allowed", "detail": "DELETE /v1/approvals is not allowed here"}))]
pub struct MethodNotAllowed(pub ErrorBody);

/// The body did not arrive in time (30 s by default).
#[derive(ToResponse)]
#[response(example = json!({"error": "request_timeout", "detail": "the request body did not arrive in time"}))]
pub struct RequestTimeout(pub ErrorBody);

/// The body is over 1 MiB.
#[derive(ToResponse)]
#[response(example = json!({"error": "payload_too_large", "detail": "request body is larger than the 1 MiB limit"}))]
pub struct PayloadTooLarge(pub ErrorBody);

/// Well-formed JSON of the wrong shape, a key twice, or a number that cannot be kept
/// exactly.
#[derive(ToResponse)]
#[response(example = json!({"error": "unprocessable", "detail": "parameters must be a JSON object"}))]
pub struct Unprocessable(pub ErrorBody);

/// The store is unavailable; retry shortly. Nothing changed.
#[derive(ToResponse)]
#[response(example = json!({"error": "unavailable", "detail": "temporarily unavailable, retry shortly"}))]
pub struct Unavailable(pub ErrorBody);
