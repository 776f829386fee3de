//! Liveness (`/healthz`) and approval health (`/health/approvals`): is anything stuck?

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::http::AppState;
use crate::http::slack::socket::SocketState;
use crate::store::QueuedPosts;

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "liveness",
    tag = "operations",
    summary = "Liveness",
    description = "The process answers. No token needed.",
    responses((status = 200, description = "Alive", content_type = "text/plain", body = String, example = "ok"))
)]
pub async fn live() -> &'static str {
    "ok"
}

/// Whether anything is stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    /// Expiries or deliveries overdue, a channel's posts behind, Slack unreachable, or
    /// the store unreachable.
    Degraded,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "status": "ok", "pending_count": 3, "stale_pending": 0, "undelivered": 0,
    "callbacks_given_up": 0, "slack_reachable": true, "behind": [], "socket_mode": "off"
}))]
pub struct ApprovalHealth {
    pub status: HealthStatus,
    /// Approvals waiting for a decision.
    pub pending_count: i64,
    /// Pending or approved past expiry by more than a minute: the scheduler is behind.
    pub stale_pending: i64,
    /// Slack deliveries overdue by more than a minute or given up within the last
    /// hour (callbacks waiting for a free slot are not counted: see
    /// `callbacks_given_up`).
    pub undelivered: i64,
    /// Callbacks given up within the last hour. Their receivers are the callers' to
    /// run, so these do not degrade the status, and neither do callbacks overdue (a
    /// caller's receiver that is down or never answers, or a `callback_url` that the
    /// egress rules refuse, says nothing of signoff's health).
    pub callbacks_given_up: i64,
    /// `null` while no Slack token is configured.
    #[schema(required = true)]
    pub slack_reachable: Option<bool>,
    /// Channels whose queued posts (one a second) fall so far behind that some
    /// approval would expire before it is posted.
    pub behind: Vec<Behind>,
    /// Slack's Socket Mode connection: `off` without `SLACK_APP_TOKEN`.
    pub socket_mode: SocketState,
    /// Why the counts are missing (the store could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A channel that falls behind: its queued posts, how long they take to drain, and the
/// soonest expiry among them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "channel": "C0DEPLOYS", "queued_posts": 900, "drains_in_secs": 900,
    "first_expiry": "2026-11-23T12:10:00Z"
}))]
pub struct Behind {
    pub channel: String,
    pub queued_posts: i64,
    pub drains_in_secs: i64,
    pub first_expiry: DateTime<Utc>,
}

/// The channels whose backlog, posted a post a second, reaches past one of its
/// approvals' expiry (a pessimistic reading: the soonest to expire might be last).
fn behind(queued: Vec<QueuedPosts>, now: DateTime<Utc>) -> Vec<Behind> {
    queued
        .into_iter()
        .filter(|q| now + chrono::Duration::seconds(q.posts) > q.first_expiry)
        .map(|q| Behind {
            channel: q.channel,
            queued_posts: q.posts,
            drains_in_secs: q.posts,
            first_expiry: q.first_expiry,
        })
        .collect()
}

/// `GET /health/approvals`: 200 when ok, 503 when degraded.
#[utoipa::path(
    get,
    path = "/health/approvals",
    operation_id = "approvalHealth",
    tag = "operations",
    summary = "Approval health: is anything stuck?",
    description = "No token needed.",
    responses(
        (status = 200, description = "Ok", body = ApprovalHealth),
        (status = 503, description = "Degraded: expiries or deliveries overdue by more than a \
            minute, a Slack delivery given up within the hour, a channel's queued posts that would reach an approval only after it expired \
            (`behind`), Slack unreachable, or the store unreachable (then with `error`)",
            body = ApprovalHealth, example = json!({
                "status": "degraded", "pending_count": 903, "stale_pending": 0, "undelivered": 0,
                "callbacks_given_up": 0, "slack_reachable": true,
                "behind": [{
                    "channel": "C0DEPLOYS", "queued_posts": 900, "drains_in_secs": 900,
                    "first_expiry": "2026-11-23T12:10:00Z"
                }],
                "socket_mode": "off"
            })),
    )
)]
pub async fn approvals(State(state): State<AppState>) -> (StatusCode, Json<ApprovalHealth>) {
    let slack_reachable = state
        .slack
        .as_ref()
        .and_then(|slack| slack.client.reachable());
    let now = state.clock.now();
    let health = match state.store.health(now).await {
        Ok(counts) => {
            let behind = behind(counts.queued_posts, now);
            let degraded = counts.stale_pending > 0
                || counts.undelivered > 0
                || !behind.is_empty()
                || slack_reachable == Some(false)
                || state.socket_status.is_down();
            ApprovalHealth {
                status: if degraded {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Ok
                },
                pending_count: counts.pending,
                stale_pending: counts.stale_pending,
                undelivered: counts.undelivered,
                callbacks_given_up: counts.callbacks_given_up,
                slack_reachable,
                behind,
                socket_mode: state.socket_status.state(),
                error: None,
            }
        }
        Err(error) => {
            tracing::error!(%error, "health check could not read the store");
            ApprovalHealth {
                status: HealthStatus::Degraded,
                pending_count: 0,
                stale_pending: 0,
                undelivered: 0,
                callbacks_given_up: 0,
                slack_reachable,
                behind: Vec::new(),
                socket_mode: state.socket_status.state(),
                error: Some("the store is unreachable".into()),
            }
        }
    };
    let code = if health.status == HealthStatus::Ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health))
}
