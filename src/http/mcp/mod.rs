//! `/mcp`: signoff's own MCP endpoint (streamable HTTP, served by rmcp), for MCP servers
//! and agents that ask for approval explicitly. Three tools ([`tools`]) do what the
//! HTTP API does, through the same operations (`http::api::approvals`).
//!
//! Before rmcp sees a request, [`guard`] authenticates it like the API (a Bearer
//! token, looked up on every request), enforces the body's size and time limits as
//! the API does (413, 408) and reads the body exactly (no key twice, no number
//! rounded: parameters decide what runs); a body that is no JSON-RPC message gets the
//! protocol's error, and a tool call whose arguments alone cannot be kept is refused
//! by the tool, as the API refuses them (422). rmcp then
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
use serde::Deserialize;
use serde_json::value::RawValue;
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

/// `https://signoff.example.com[:port]` → (its origin, with its port, and its host as
/// `Host` names it).
///
/// The origin always names its port, the scheme's default when the URL has none: rmcp
/// takes an allowed origin without a port for any port (deprecated; it warns at every
/// start), and matches an `Origin` without one (as browsers send the default port) to
/// the scheme's default port.
fn public_origin(url: &str) -> Option<(String, String)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host().filter(|host| !host.is_empty())?;
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let origin = format!(
        "{scheme}://{host}:{}",
        uri.port_u16().unwrap_or(default_port)
    );
    let authority = match uri.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Some((origin, authority))
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
    // message that can be kept as sent, or a tool call whose arguments alone cannot
    // (the tool refuses those, as the API does).
    if parts.method == Method::POST {
        match read(&bytes) {
            Reading::Exact => {}
            Reading::InexactArguments(detail) => {
                parts.extensions.insert(InexactArguments(detail));
            }
            Reading::Refused(refusal) => return refusal,
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Why a `tools/call`'s arguments cannot be kept as sent (a key twice, a number that
/// would be rounded): `guard` puts it in the request's extensions, and the tool
/// refuses the call with it (`isError`, as the API's 422) without reading them.
#[derive(Debug, Clone)]
pub(super) struct InexactArguments(pub String);

/// What [`guard`] makes of a POSTed body.
enum Reading {
    /// One JSON-RPC message, read exactly.
    Exact,
    /// A `tools/call` read exactly but for its `params.arguments`: why those cannot be.
    InexactArguments(String),
    /// Not one JSON-RPC message read exactly: a JSON-RPC error (HTTP 400). Not JSON
    /// (parse error), JSON that cannot be kept as sent outside a tool call's arguments
    /// (invalid params), or JSON that is no JSON-RPC message (invalid request). rmcp
    /// itself answers the first and the last with a plain-text 415, as if the content
    /// type were wrong.
    Refused(Response),
}

/// What a POSTed body is (see [`Reading`]).
fn read(bytes: &[u8]) -> Reading {
    match exact_json::parse(bytes) {
        Err(error @ ExactError::Syntax(_)) => {
            Reading::Refused(refuse_message(bytes, -32700, &error.to_string()))
        }
        Err(ExactError::Inexact(detail)) => match inexact_arguments(bytes) {
            Some(detail) => Reading::InexactArguments(detail),
            None => Reading::Refused(refuse_message(bytes, -32602, &detail)),
        },
        Ok(_) => match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
            Ok(_) => Reading::Exact,
            Err(error) => {
                let detail = format!("not a JSON-RPC request, notification or response: {error}");
                Reading::Refused(refuse_message(bytes, -32600, &detail))
            }
        },
    }
}

/// For a `tools/call` whose `params.arguments` are the only part of `bytes` that
/// cannot be kept as sent (the rest, with `{}` for them, reads exactly): why they
/// cannot. `None` for anything else, the envelope's own problems included (a key
/// twice in `params` is one).
fn inexact_arguments(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Call<'a> {
        method: String,
        #[serde(borrow)]
        params: Params<'a>,
    }
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow)]
        arguments: &'a RawValue,
    }
    let call: Call<'_> = serde_json::from_slice(bytes).ok()?;
    if call.method != "tools/call" {
        return None;
    }
    let arguments = call.params.arguments.get().as_bytes();
    // Where they are in `bytes`, of which the raw value is a slice.
    let start = (arguments.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    let end = start.checked_add(arguments.len())?;
    let mut envelope = bytes.get(..start)?.to_vec();
    envelope.extend_from_slice(b"{}");
    envelope.extend_from_slice(bytes.get(end..)?);
    exact_json::parse(&envelope).ok()?;
    // rmcp must read the message to hand the call to the tool, which refuses it.
    serde_json::from_slice::<ClientJsonRpcMessage>(bytes).ok()?;
    match exact_json::parse(arguments) {
        Err(ExactError::Inexact(detail)) => Some(detail),
        Ok(_) | Err(ExactError::Syntax(_)) => None,
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
                "https://signoff.example.com:443".into(),
                "signoff.example.com".into()
            ))
        );
        assert_eq!(
            public_origin("http://user@signoff.example.com/"),
            Some((
                "http://signoff.example.com:80".into(),
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

    /// What `signoff serve` accepts as `SIGNOFF_PUBLIC_URL` (`config::parse_public_url`)
    /// always gives `/mcp` an origin and a host; no URL, or one with a bad port, it
    /// refuses.
    #[test]
    fn every_public_url_serve_accepts_gives_an_origin() {
        for url in [
            "https://signoff.example.com",
            " https://signoff.example.com/ ",
            "http://10.0.0.7:8080/signoff",
            "https://[2001:db8::1]:8443",
        ] {
            let accepted = crate::config::parse_public_url(url).expect(url);
            assert!(public_origin(accepted).is_some(), "{url}");
        }
        for url in [
            "signoff.example.com",
            "https://",
            "https:///path",
            "https://signoff.example.com:99999",
            "https://sign off.example.com",
            "ftp://signoff.example.com",
            // signoff's paths go after it: no query or fragment; no credentials.
            "https://signoff.example.com?x=1",
            "https://signoff.example.com/#top",
            "https://user:secret@signoff.example.com",
        ] {
            assert!(crate::config::parse_public_url(url).is_err(), "{url}");
        }
    }
}
