//! The proxy's client for the `signoff serve` it asks: create an approval (spent at
//! once when approved), read it, follow the decision stream, execute it once, cancel
//! it, and ask which tools the policy denies.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// An approval as the HTTP API shows it (the fields the proxy reads).
#[derive(Debug, Clone, Deserialize)]
pub struct View {
    pub approval_id: String,
    pub status: String,
    #[serde(default)]
    pub parameters: Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub channel: Option<String>,
    pub permalink: Option<String>,
    pub original_parameters: Option<Value>,
    /// On an `executed` create answer: whether this request executed it (run it) or an
    /// earlier one did (never run it again).
    #[serde(default)]
    pub spent_by_this_request: Option<bool>,
}

/// Why signoff gave no usable answer; `Display` is what the agent reads.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("signoff is unreachable at {url} ({detail})")]
    Unreachable { url: String, detail: String },
    #[error("signoff refused the proxy's token (check SIGNOFF_TOKEN)")]
    Unauthorized,
    #[error("the arguments are larger than signoff accepts (1 MiB)")]
    TooLarge,
    /// The proxy's requests already waiting reached the policy's `max_pending`.
    #[error("{0}")]
    Throttled(String),
    #[error("signoff answered HTTP {status}: {detail}")]
    Refused { status: u16, detail: String },
    /// The decision stream failed in a way no HTTP answer tells.
    #[error("signoff's decision stream {0}")]
    Stream(&'static str),
}

/// How a decision stream ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Signoff closed it (it went away, or shut down).
    Closed,
    /// Nothing came for too long: given up as dead.
    Silent,
}

/// The HTTP API of one `signoff serve`, with one token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// `base` as errors and logs show it: without its userinfo (credentials), query or
    /// fragment.
    shown: String,
    token: Option<String>,
    /// Requests in flight at once (the event stream aside). A burst of calls queues
    /// here instead of opening a connection each: HTTP/1.1 carries one request per
    /// connection, and a thousand connections would cost the proxy (and the server)
    /// far more memory than the calls themselves.
    in_flight: Arc<Semaphore>,
}

/// Shows where, never the URL's credentials nor the token.
impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.shown)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// How many requests the proxy sends to signoff at once, and keeps connections for.
const CONNECTIONS: usize = 16;

/// Requests other than long-polls get this long before signoff counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Api {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(
                crate::tls::client_config_for(base).map_err(anyhow::Error::msg)?,
            )
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(CONNECTIONS)
            // A redirect is signoff's answer as it stands, not to be followed: a 303
            // from an execute to the approval's `GET` would answer 200 with an
            // approval that is merely `approved`, and never spent.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = base.trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            shown: super::http_client::redact_url(&base),
            base,
            token,
            in_flight: Arc::new(Semaphore::new(CONNECTIONS)),
        })
    }

    /// The decision stream ended: signoff went away (or shut down).
    pub fn stream_closed(&self) -> ApiError {
        ApiError::Unreachable {
            url: self.shown.clone(),
            detail: "it closed the decision stream".into(),
        }
    }

    /// `error` with its causes ("error sending request" alone does not say that a
    /// certificate was refused or the connection was refused).
    fn unreachable(&self, error: reqwest::Error) -> ApiError {
        ApiError::Unreachable {
            url: self.shown.clone(),
            detail: crate::errors::with_causes(&error.without_url()),
        }
    }

    /// Sends `request` with the token; its answer, or why there is none.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request
            .send()
            .await
            .map_err(|error| self.unreachable(error))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        // Never closed: acquiring cannot fail.
        let _turn = self.in_flight.acquire().await.ok();
        let response = self.answer(request.timeout(timeout)).await?;
        if !response.status().is_success() {
            return Self::refused(response).await;
        }
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// The error for a refused answer, read from its JSON body.
    async fn refused<T>(response: reqwest::Response) -> Result<T, ApiError> {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            401 => Err(ApiError::Unauthorized),
            413 => Err(ApiError::TooLarge),
            429 => Err(ApiError::Throttled(
                body["detail"]
                    .as_str()
                    .unwrap_or("too many requests waiting")
                    .to_owned(),
            )),
            _ => Err(ApiError::Refused {
                status,
                detail: body["detail"].as_str().unwrap_or("no detail").to_owned(),
            }),
        }
    }

    fn view(body: Value) -> Result<View, ApiError> {
        serde_json::from_value(body).map_err(|error| ApiError::Refused {
            status: 200,
            detail: format!("unexpected answer: {error}"),
        })
    }

    /// `POST /v1/approvals`: a new approval, or the open one this call joins.
    pub async fn create(&self, body: &Value) -> Result<View, ApiError> {
        let request = self.http.post(format!("{}/v1/approvals", self.base));
        Self::view(self.send(request.json(body), CALL_TIMEOUT).await?)
    }

    /// `GET /v1/approvals/{id}`: the approval as it is now.
    pub async fn get(&self, id: &str) -> Result<View, ApiError> {
        let url = format!("{}/v1/approvals/{id}", self.base);
        Self::view(self.send(self.http.get(url), CALL_TIMEOUT).await?)
    }

    /// `GET /v1/approvals/events`: calls `on_event` with each event's name and data
    /// until the stream ends or breaks. A stream that brings no byte for `silent` (the
    /// server sends a keep-alive every 15 s) is given up as dead: a buffering proxy or a
    /// half-dead peer would otherwise hold it open, bringing nothing, until TCP notices.
    pub async fn events(
        &self,
        silent: Duration,
        mut on_event: impl FnMut(&str, &str),
    ) -> Result<Ended, ApiError> {
        let request = self.http.get(format!("{}/v1/approvals/events", self.base));
        let Ok(response) = tokio::time::timeout(silent, self.answer(request)).await else {
            return Ok(Ended::Silent);
        };
        let mut response = response?;
        if response.status().as_u16() != 200 {
            return Self::refused(response).await;
        }
        let mut blocks = Blocks::default();
        loop {
            let chunk = match tokio::time::timeout(silent, response.chunk()).await {
                Ok(chunk) => chunk.map_err(|e| self.unreachable(e))?,
                Err(_) => return Ok(Ended::Silent),
            };
            let Some(chunk) = chunk else {
                return Ok(Ended::Closed);
            };
            for block in blocks.push(&chunk) {
                let (event, data) = parse_event(&block);
                on_event(event, &data);
            }
        }
    }

    /// `POST /v1/approvals/{id}/execute`: the single-use gate; the parameters to run,
    /// once signoff says that it spent approval `id` (see [`spent`]).
    pub async fn execute(
        &self,
        id: &str,
        tool: &str,
        parameters: &Value,
    ) -> Result<Value, ApiError> {
        let request = self
            .http
            .post(format!("{}/v1/approvals/{id}/execute", self.base))
            .json(&json!({"parameters": parameters, "tool_name": tool}));
        spent(id, self.send(request, CALL_TIMEOUT).await?)
    }

    /// `POST /v1/approvals/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<(), ApiError> {
        let request = self
            .http
            .post(format!("{}/v1/approvals/{id}/cancel", self.base));
        self.send(request, CALL_TIMEOUT).await.map(drop)
    }

    /// `POST /v1/policy/tools`: the names among `tools` that the policy denies outright.
    pub async fn denied_tools(
        &self,
        server: &str,
        tools: &[&str],
    ) -> Result<Vec<String>, ApiError> {
        let listed: Vec<Value> = tools.iter().map(|name| json!({"name": name})).collect();
        let request = self
            .http
            .post(format!("{}/v1/policy/tools", self.base))
            .json(&json!({"server": server, "tools": listed}));
        let body = self.send(request, CALL_TIMEOUT).await?;
        Ok(body["denied"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
            .collect())
    }
}

/// The parameters an execute answer allows to run, when it says that approval `id` is
/// `executed`: any other answer (one merely `approved`, as a `GET` of it says, or about
/// another approval) spent nothing the proxy can count on, and the call is refused.
fn spent(id: &str, mut body: Value) -> Result<Value, ApiError> {
    if body["status"] == "executed" && body["approval_id"] == id {
        return Ok(body["parameters"].take());
    }
    let detail = match body["status"].as_str() {
        Some("executed") => format!("approval {} executed, not {id}", body["approval_id"]),
        status => format!("status {:?}, not \"executed\"", status.unwrap_or("none")),
    };
    Err(ApiError::Refused {
        status: 200,
        detail: format!("unexpected answer to the execute: {detail}"),
    })
}

/// The event stream's bytes, cut into event blocks. The body comes in chunks that
/// may end anywhere, inside a character too (an approval's parameters hold any
/// text): bytes are kept until their block is whole, and only whole blocks are
/// decoded, so that a character split across chunks is read as itself, not as two
/// replacement characters (which would make the approved parameters differ from
/// the ones executed).
#[derive(Default)]
struct Blocks {
    pending: Vec<u8>,
}

impl Blocks {
    /// Takes `chunk`; the blocks it completed, each with its `\n\n`.
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        // A block's end may straddle the chunks: look from just before this one.
        let mut from = self.pending.len().saturating_sub(1);
        self.pending.extend_from_slice(chunk);
        let mut blocks = Vec::new();
        while let Some(at) = find_end(&self.pending[from..]) {
            let end = from + at + 2;
            blocks.push(String::from_utf8_lossy(&self.pending[..end]).into_owned());
            self.pending.drain(..end);
            from = 0;
        }
        blocks
    }
}

/// Where the first `\n\n` (the end of an event block) starts in `bytes`.
fn find_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\n\n")
}

/// One server-sent event block: its name (`message` when unnamed) and its data lines
/// joined. Comments (keep-alives) give an empty name.
fn parse_event(block: &str) -> (&str, String) {
    let mut name = "";
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim_start();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if name.is_empty() && !data.is_empty() {
        name = "message";
    }
    (name, data.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_debug_form_shows_neither_the_urls_credentials_nor_the_token() {
        let api = Api::new(
            "https://proxy:s3cret@signoff.example.com",
            Some("so_t0ken".into()),
        );
        let shown = format!("{:?}", api.unwrap());
        assert!(shown.contains("signoff.example.com"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("so_t0ken"),
            "{shown}"
        );
    }

    #[test]
    fn characters_and_block_ends_split_across_chunks_come_out_whole() {
        let stream = "event: approval\ndata: {\"text\":\"é日本😀\"}\n\n: keep-alive\n\nevent: ready\ndata: {}\n\n";
        let bytes = stream.as_bytes();
        // Every way of cutting the stream in two, and one byte at a time.
        let mut cuts: Vec<Vec<&[u8]>> = (0..=bytes.len())
            .map(|at| vec![&bytes[..at], &bytes[at..]])
            .collect();
        cuts.push(bytes.chunks(1).collect());
        for chunks in cuts {
            let mut blocks = Blocks::default();
            let got: Vec<String> = chunks.iter().flat_map(|chunk| blocks.push(chunk)).collect();
            let events: Vec<(String, String)> = (got.iter())
                .map(|block| {
                    let (name, data) = parse_event(block);
                    (name.to_owned(), data)
                })
                .collect();
            assert_eq!(
                events,
                [
                    ("approval".into(), "{\"text\":\"é日本😀\"}".into()),
                    (String::new(), String::new()),
                    ("ready".into(), "{}".into()),
                ],
                "{chunks:?}"
            );
        }
    }
}
