//! Requests as Slack sends them: signed (`v0=` HMAC-SHA256 of `v0:{ts}:{body}`) button
//! clicks on a message signoff posted.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A message as a click reports it: where it is, and the metadata signoff gave it.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    pub metadata: Value,
}

impl SlackMessage {
    /// The channel message signoff posts for `approval_id` in `channel`, as a click on
    /// it reports it: its metadata names the approval and its version (a number), as
    /// the outbox writes it. For clicks on a message whose post has not been recorded
    /// yet (the benches click faster than posts are paced).
    pub fn signoffs(approval_id: &str, channel: &str) -> SlackMessage {
        SlackMessage {
            channel: channel.into(),
            ts: "1700000000.000001".into(),
            metadata: json!({"event_type": "signoff_approval_posted",
                             "event_payload": {"approval_id": approval_id, "kind": "main", "version": 0}}),
        }
    }
}

/// Slack's signature of `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// A block_actions payload shaped as Slack sends it, for a click on the message
/// `channel`/`ts`.
pub fn click_payload(
    approval_id: &str,
    user: &str,
    action: &str,
    channel: &str,
    ts: &str,
) -> Value {
    json!({
        "type": "block_actions",
        "team": {"id": "T0TEAM", "domain": "test"},
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "trigger_id": "12345.98765.abcd",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "channel": {"id": channel, "name": "approvals"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/x",
        "actions": [{
            "type": "button",
            "action_id": action,
            "block_id": format!("approval:{approval_id}"),
            "value": approval_id,
            "action_ts": "1700000001.000200"
        }]
    })
}

/// A click on `message` with the message as Slack includes it (with its metadata).
pub fn click_on_message(
    approval_id: &str,
    user: &str,
    action: &str,
    message: &SlackMessage,
) -> Value {
    let mut payload = click_payload(approval_id, user, action, &message.channel, &message.ts);
    payload["message"] = json!({"type": "message", "ts": message.ts, "metadata": message.metadata});
    payload
}

/// `payload=<url-encoded JSON>`, as Slack posts interactions.
pub fn interaction_body(payload: &Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// `POST {base}/slack/interactions` with `payload`, signed with `secret` now, as Slack
/// sends it.
pub fn signed_post(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    payload: &Value,
) -> reqwest::RequestBuilder {
    let (body, timestamp, signature) = signed(secret, payload);
    http.post(format!("{base}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body)
}

/// The form body of a click, signed now: (body, timestamp header, signature header).
pub fn signed(secret: &str, payload: &Value) -> (String, String, String) {
    let body = interaction_body(payload);
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign(secret, timestamp, &body);
    (body, timestamp.to_string(), signature)
}
