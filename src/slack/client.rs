//! Slack Web API calls, through slack-morphism's hyper connector. The connector
//! accepts plain `http://` as well as `https://`, so `SLACK_API_URL` can point tests
//! at a local fake. Every call has a timeout (a hanging Slack must not hang a worker)
//! and its failure is classified: retry later, or give up (dead letter).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::SlackClientHyperConnector;
use slack_morphism::{SlackApiToken, SlackApiTokenValue};

/// Slack's production API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

/// One call's time limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;

/// Why a call failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// `{"ok": false, "error": code}`.
    #[error("Slack answered ok:false ({code})")]
    Api { code: String },
    /// HTTP 429; retry after the given delay.
    #[error("rate limited by Slack (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("Slack answered HTTP {status}")]
    Http { status: u16 },
    /// Could not reach Slack, or no answer in time.
    #[error("cannot reach Slack: {0}")]
    Transport(String),
}

/// `ok:false` codes that retrying cannot fix: configuration, permission or payload
/// problems. Anything else (internal_error, fatal_error, ratelimited, …) is retried.
const PERMANENT_CODES: &[&str] = &[
    "account_inactive",
    "cant_update_message",
    "channel_not_found",
    "edit_window_closed",
    "ekm_access_denied",
    "invalid_arguments",
    "invalid_auth",
    "invalid_blocks",
    "invalid_blocks_format",
    "invalid_trigger_id",
    "is_archived",
    "message_not_found",
    "method_not_supported_for_channel_type",
    "missing_scope",
    "msg_too_long",
    "no_permission",
    "no_text",
    "not_authed",
    "not_in_channel",
    "restricted_action",
    "team_access_not_granted",
    "token_expired",
    "token_revoked",
    "user_not_found",
    "users_not_found",
    "no_such_subteam",
    "subteam_not_found",
];

impl SlackError {
    /// How long Slack asked to wait before calling again (a 429's `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SlackError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// True when retrying the same call cannot succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            SlackError::Api { code } => PERMANENT_CODES.contains(&code.as_str()),
            SlackError::Http { status } => (400..500).contains(status) && *status != 408,
            SlackError::RateLimited { .. } | SlackError::Transport(_) => false,
        }
    }

    fn from_client(error: SlackClientError) -> Self {
        match error {
            SlackClientError::ApiError(api) => SlackError::Api { code: api.code },
            SlackClientError::RateLimitError(limit) => SlackError::RateLimited {
                retry_after: limit.retry_after,
            },
            SlackClientError::HttpError(http) => SlackError::Http {
                status: http.status_code.as_u16(),
            },
            other => SlackError::Transport(other.to_string()),
        }
    }
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A cheap-to-clone Web API client for one bot token.
#[derive(Clone)]
pub struct SlackClient {
    inner: Arc<slack_morphism::SlackClient<Connector>>,
    token: Arc<SlackApiToken>,
    /// Whether the last call reached Slack (for `/health/approvals`).
    reachable: Arc<AtomicU8>,
    timeout: Duration,
}

impl SlackClient {
    /// A client for `api_url` (e.g. `https://slack.com/api` or `http://127.0.0.1:PORT/api`),
    /// the only place it calls: on plain HTTP it needs no root certificates.
    pub fn new(bot_token: &str, api_url: &str) -> Result<Self, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config_for(api_url)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        // The connector joins base and method with a `/` of its own.
        let base = api_url.trim_end_matches('/');
        let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(base);
        Ok(Self {
            inner: Arc::new(slack_morphism::SlackClient::new(connector)),
            token: Arc::new(SlackApiToken::new(SlackApiTokenValue(bot_token.to_owned()))),
            reachable: Arc::new(AtomicU8::new(UNKNOWN)),
            timeout: CALL_TIMEOUT,
        })
    }

    /// Changes the per-call time limit (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls a Web API method that takes a JSON body (`chat.postMessage`, …); the
    /// answer is the whole JSON envelope when `ok` is true.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let session = self.inner.open_session(&self.token);
        let call = session
            .http_session_api
            .http_post::<Value, Value>(method, body, None);
        self.finish(method, call).await
    }

    /// Calls a read method (`conversations.history`, `chat.getPermalink`,
    /// `usergroups.users.list`): Slack takes their arguments only as a query string or
    /// form, never as a JSON body.
    pub async fn get(&self, method: &str, params: &[(&str, &str)]) -> Result<Value, SlackError> {
        let session = self.inner.open_session(&self.token);
        let params: Vec<(&str, Option<&str>)> = params
            .iter()
            .map(|(name, value)| (*name, Some(*value)))
            .collect();
        let call = session
            .http_session_api
            .http_get::<Value, _, &str>(method, &params, None);
        self.finish(method, call).await
    }

    /// Applies the time limit, classifies the failure and notes whether Slack answered.
    async fn finish(
        &self,
        method: &str,
        call: impl Future<Output = Result<Value, SlackClientError>>,
    ) -> Result<Value, SlackError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            // Slack's answers all say `ok`; an answer without `"ok": true` (a proxy's
            // page, which the client reads as `{}`) is no success, and is retried.
            Ok(Ok(answer)) if answer["ok"] != true => Err(SlackError::Transport(format!(
                "{method}: the answer is not Slack's (no \"ok\": true)"
            ))),
            Ok(result) => result.map_err(SlackError::from_client),
            Err(_) => Err(SlackError::Transport(format!(
                "{method} timed out after {:?}",
                self.timeout
            ))),
        };
        let reached = !matches!(
            result,
            Err(SlackError::Transport(_) | SlackError::Http { status: 500.. })
        );
        self.reachable
            .store(if reached { UP } else { DOWN }, Ordering::Relaxed);
        if let Err(error) = &result {
            tracing::warn!(method, %error, "Slack call failed");
        }
        result
    }

    /// `None` before the first call; then whether the last call reached Slack.
    pub fn reachable(&self) -> Option<bool> {
        match self.reachable.load(Ordering::Relaxed) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_are_permanent_and_outages_are_not() {
        assert!(
            SlackError::Api {
                code: "channel_not_found".into()
            }
            .is_permanent()
        );
        assert!(
            SlackError::Api {
                code: "invalid_auth".into()
            }
            .is_permanent()
        );
        assert!(
            !SlackError::Api {
                code: "internal_error".into()
            }
            .is_permanent()
        );
        assert!(!SlackError::RateLimited { retry_after: None }.is_permanent());
        assert!(!SlackError::Http { status: 503 }.is_permanent());
        assert!(SlackError::Http { status: 404 }.is_permanent());
        assert!(!SlackError::Transport("refused".into()).is_permanent());
    }
}
