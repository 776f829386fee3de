//! `signoff serve`'s Slack settings: the bot token (posting), the signing secret (the
//! HTTP `/slack/*` endpoints) and the app-level token (Socket Mode), read once.

use anyhow::bail;

use crate::http::slack::socket::SocketMode;
use crate::slack::app::SlackApp;
use crate::slack::client::SlackClient;

/// Slack settings: environment only (secrets do not belong on command lines).
#[derive(Debug, clap::Args)]
pub(super) struct SlackArgs {
    #[arg(
        long = "slack-bot-token",
        env = "SLACK_BOT_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    bot_token: Option<String>,
    #[arg(
        long = "slack-signing-secret",
        env = "SLACK_SIGNING_SECRET",
        hide = true,
        hide_env_values = true
    )]
    signing_secret: Option<String>,
    /// Socket Mode's app-level token (`xapp-…`).
    #[arg(
        long = "slack-app-token",
        env = "SLACK_APP_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    app_token: Option<String>,
    #[arg(long = "slack-api-url", env = "SLACK_API_URL", hide = true, default_value = crate::slack::client::DEFAULT_API_URL, value_parser = crate::config::parse_slack_api_url)]
    api_url: String,
}

/// The Slack side, when `SLACK_BOT_TOKEN` is set, and Socket Mode when
/// `SLACK_APP_TOKEN` is too. A token Slack rejects is a configuration error; Slack
/// being unreachable is not (deliveries wait and retry, the socket reconnects).
pub(super) async fn connect_slack(
    args: &SlackArgs,
) -> anyhow::Result<(Option<SlackApp>, Option<SocketMode>)> {
    let app_token = args.app_token.as_deref().filter(|t| !t.is_empty());
    let Some(token) = args.bot_token.as_deref().filter(|t| !t.is_empty()) else {
        if app_token.is_some() {
            bail!(
                "SLACK_APP_TOKEN (Socket Mode) needs SLACK_BOT_TOKEN as well, to post and answer"
            );
        }
        tracing::warn!(
            "SLACK_BOT_TOKEN is not set, so approvals are not posted to Slack: see what waits with `signoff list` and decide with `signoff decide ID approve --as YOUR_NAME` (or deny --reason TEXT)"
        );
        return Ok((None, None));
    };
    let socket_mode = app_token
        .map(|app_token| SocketMode::new(app_token, &args.api_url))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let client = SlackClient::new(token, &args.api_url).map_err(anyhow::Error::msg)?;
    match client.call("auth.test", &serde_json::json!({})).await {
        Ok(me) => {
            tracing::info!(bot = %me["user"].as_str().unwrap_or("?"), team = %me["team"].as_str().unwrap_or("?"), api = %crate::store::redact(&args.api_url), "connected to Slack")
        }
        Err(error) if error.is_permanent() => {
            bail!("SLACK_BOT_TOKEN was refused by Slack ({error})")
        }
        Err(error) => tracing::warn!(%error, "Slack is not reachable yet; deliveries will retry"),
    }
    let unsigned = args.signing_secret.as_deref().is_none_or(str::is_empty);
    match (unsigned, socket_mode.is_some()) {
        (true, true) => tracing::info!(
            "Socket Mode: Slack's interactions and /approvals come over its WebSocket; /slack/* endpoints answer 503 (no SLACK_SIGNING_SECRET)"
        ),
        (true, false) => {
            tracing::warn!("SLACK_SIGNING_SECRET is not set: /slack/* endpoints answer 503")
        }
        (false, true) => tracing::info!(
            "Socket Mode on; the /slack/* endpoints are served too (SLACK_SIGNING_SECRET)"
        ),
        (false, false) => {}
    }
    Ok((
        Some(SlackApp::new(client, args.signing_secret.clone())),
        socket_mode,
    ))
}
