//! The HTTP upstream's client, which keeps its credentials where they were given. It
//! follows no redirect: reqwest's default policy would send the `--upstream-header`
//! credentials (any header but `Authorization` and cookies) and the approved call's
//! body on to whatever host a 307 or 308 names; a redirect is an error naming its
//! status instead. Its errors leave out the URL, whose userinfo or query string may
//! be a credential too (`https://host/mcp?api_key=…`), and the proxy shows that URL
//! only through [`redact_url`].

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};

/// An error of the upstream's transport.
type Error = StreamableHttpError<reqwest::Error>;

/// A reqwest client for the upstream that follows no redirect and whose errors carry
/// no URL (see the module's documentation).
#[derive(Clone)]
pub struct Quiet(reqwest::Client);

impl Quiet {
    /// `builder`'s client, with redirects off.
    pub fn build(builder: reqwest::ClientBuilder) -> reqwest::Result<Quiet> {
        builder
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Quiet)
    }
}

/// `error` without the URL reqwest attaches to it.
fn quiet(error: Error) -> Error {
    match error {
        StreamableHttpError::Client(error) => StreamableHttpError::Client(error.without_url()),
        other => other,
    }
}

// Each method is reqwest's own (rmcp's implementation for `reqwest::Client`, which
// applies the transport's size limits), its error made quiet.
impl StreamableHttpClient for Quiet {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        (self.0)
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await
            .map_err(quiet)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Error> {
        (self.0)
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
            .map_err(quiet)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Error> {
        (self.0)
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await
            .map_err(quiet)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Error> {
        (self.0)
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
            .map_err(quiet)
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxedSseResponse, Error> {
        (self.0)
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
            .map_err(quiet)
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxedSseResponse, Error> {
        (self.0)
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
            .map_err(quiet)
    }
}

/// `url` as the proxy shows it: without userinfo, and with `…` for a query string or
/// fragment (`https://user:key@host/mcp?api_key=k` is `https://host/mcp?…`). Works on
/// the text, so that a URL that does not parse is shown no more than one that does.
/// Written without its escapes, a password may hold `/`, `@`, `?` or `#`: the userinfo
/// ends at the last `@` before the first `?` or `#`; an `@` only past one of those is a
/// query's or a password's, which cannot be told apart, so nothing but the scheme is
/// shown.
pub fn redact_url(url: &str) -> String {
    let (scheme, after) = match crate::config::scheme_end(url) {
        Some(end) => url.split_at(end),
        None => ("", url),
    };
    let before_mark = &after[..after.find(['?', '#']).unwrap_or(after.len())];
    let from = match before_mark.rfind('@') {
        Some(at) => at + 1,
        None if after.contains('@') => return format!("{scheme}…"),
        None => 0,
    };
    let shown = &after[from..];
    match shown.find(['?', '#']) {
        Some(at) => format!("{scheme}{}{}…", &shown[..at], &shown[at..=at]),
        None => format!("{scheme}{shown}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_url_is_shown_without_its_userinfo_query_or_fragment() {
        for (url, shown) in [
            ("https://host/mcp", "https://host/mcp"),
            (
                "https://host:8443/mcp?api_key=secret",
                "https://host:8443/mcp?…",
            ),
            ("https://me:secret@host/mcp", "https://host/mcp"),
            ("http://secret@host", "http://host"),
            ("https://host/mcp#secret", "https://host/mcp#…"),
            ("https://u:p@host/a/b?k=secret#f", "https://host/a/b?…"),
            ("not a url?secret", "not a url?…"),
            ("user:secret@host/mcp", "host/mcp"),
            // A password written without its escapes.
            ("https://u:sec/ret@host/mcp", "https://host/mcp"),
            ("https://u:sec@ret@host/mcp?k=v", "https://host/mcp?…"),
            ("https://u:sec?ret@host/mcp", "https://…"),
            ("https://u:sec#ret@host/mcp", "https://…"),
            // An `@` in the query alone: a password's, as far as the text tells.
            ("https://host/mcp?k=sec@ret", "https://…"),
            ("https://u:p@host/mcp?k=sec@ret", "https://host/mcp?…"),
            // A `://` that is no scheme's.
            ("u:sec@host/mcp?next=https://x", "host/mcp?…"),
            ("u:sec://ret@host/mcp", "host/mcp"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("sec"), "{url}");
            assert!(!redact_url(url).contains("ret"), "{url}");
        }
    }
}
