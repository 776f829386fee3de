//! `/mcp`: signoff's own MCP endpoint (streamable HTTP, served by rmcp), for MCP servers
//! and agents that ask for approval explicitly. Three tools ([`tools`]) do what the
//! HTTP API does, through the same operations (`http::api::approvals`).
//!
//! Before rmcp sees a request, [`guard`] authenticates it like the API (a Bearer
//! token, looked up on every request), enforces the body's size and time limits as
//! the API does (413, 408) and reads the body exactly (no key twice, no number
//! rounded: parameters decide what runs); a body that is no JSON-RPC message gets the
//! protocol's error. rmcp then
//! checks `Host` and `Origin` against localhost and `SIGNOFF_PUBLIC_URL` (DNS
//! rebinding), and serves without sessions, so any replica answers any request.

mod texts;
mod tools;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use super::api::ApiError;
use super::api::extract::{self, Caller};
use super::{AppState, BODY_LIMIT};
use crate::exact_json::{self, ExactError};

/// The path MCP clients connect to.
pub const PATH: &str = "/mcp";

/// The `/mcp` route.
pub fn router(state: &AppState) -> Router<AppState> {
    let handler = tools::Tools::new(state.clone());
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        NeverSessionManager::default().into(),
        config(state.public_url.as_deref()),
    );
    Router::new()
        .route_service(PATH, service)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
}

/// Stateless, JSON answers where a call needs no stream, and `Host`/`Origin` limited to
/// this machine and the public address.
fn config(public_url: Option<&str>) -> StreamableHttpServerConfig {
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let mut origins = vec![
        "http://localhost:*".to_owned(),
        "http://127.0.0.1:*".to_owned(),
        "http://[::1]:*".to_owned(),
    ];
    if let Some((origin, host)) = public_url.and_then(public_origin) {
        hosts.push(host);
        origins.push(origin);
    }
    StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(BODY_LIMIT)
}

/// `https://signoff.example.com[:port]` → (its origin, its authority).
fn public_origin(url: &str) -> Option<(String, String)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str().to_owned();
    let port = uri
        .port_u16()
        .map_or(String::new(), |port| format!(":{port}"));
    Some((format!("{scheme}://{}{port}", uri.host()?), authority))
}

/// Authenticates the request and reads its body exactly; the caller goes along in the
/// request's extensions, where the tools find it.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => caller,
        Err(error @ ApiError::Unauthorized) => {
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
            return response;
        }
        Err(error) => return error.into_response(),
    };
    parts.extensions.insert(caller);
    // Within the API's limits, answered as the API answers: 413 past the size, 408
    // when the body does not arrive in time.
    let bytes = match extract::body(Request::from_parts(parts.clone(), body), &state).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    // A message is refused here, before anything reads it, unless it is one JSON-RPC
    // message that can be kept as sent.
    if parts.method == Method::POST
        && let Some(refusal) = unreadable(&bytes)
    {
        return refusal;
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Why a POSTed body is not one JSON-RPC message read exactly, as a JSON-RPC error
/// (HTTP 400): not JSON (parse error), JSON that cannot be kept as sent (invalid
/// params), or JSON that is no JSON-RPC message (invalid request). rmcp itself answers
/// the first and the last with a plain-text 415, as if the content type were wrong.
fn unreadable(bytes: &[u8]) -> Option<Response> {
    match exact_json::parse(bytes) {
        Err(error @ ExactError::Syntax(_)) => {
            Some(refuse_message(bytes, -32700, &error.to_string()))
        }
        Err(ExactError::Inexact(detail)) => Some(refuse_message(bytes, -32602, &detail)),
        Ok(_) => serde_json::from_slice::<ClientJsonRpcMessage>(bytes)
            .err()
            .map(|error| {
                let detail = format!("not a JSON-RPC request, notification or response: {error}");
                refuse_message(bytes, -32600, &detail)
            }),
    }
}

/// A JSON-RPC error with `code` for a message that cannot be read (HTTP 400), for the
/// message's id when it has a valid one.
fn refuse_message(bytes: &[u8], code: i64, detail: &str) -> Response {
    let mut error = json!({
        "jsonrpc": "2.0",
        "error": {"code": code, "message": detail},
    });
    // An id that cannot be read is left out, not null: JSON-RPC 2.0 asks for null, but
    // MCP's schema (2025-11-25 on: `JSONRPCErrorResponse.id?: RequestId`, a string or a
    // number) has no null id and leaves it out, as rmcp's own errors do.
    if let Some(id) = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|message| message.get("id").cloned())
        .filter(|id| id.is_string() || id.is_i64() || id.is_u64())
    {
        error["id"] = id;
    }
    (StatusCode::BAD_REQUEST, axum::Json(error)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_gives_an_origin_and_a_host() {
        assert_eq!(
            public_origin("https://signoff.example.com"),
            Some((
                "https://signoff.example.com".into(),
                "signoff.example.com".into()
            ))
        );
        assert_eq!(
            public_origin("https://signoff.example.com:8443/base/"),
            Some((
                "https://signoff.example.com:8443".into(),
                "signoff.example.com:8443".into()
            ))
        );
        assert_eq!(public_origin("not a url"), None);
    }
}
