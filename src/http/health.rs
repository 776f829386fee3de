//! Liveness (`/healthz`) and approval health (`/health/approvals`): is anything stuck?

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::http::AppState;

/// `GET /healthz`: the process answers.
pub async fn live() -> &'static str {
    "ok"
}

#[derive(Debug, Serialize)]
pub struct ApprovalHealth {
    pub status: &'static str,
    pub pending_count: i64,
    /// Pending or approved past expiry by more than a minute: the scheduler is behind.
    pub stale_pending: i64,
    /// Deliveries given up on or overdue by more than a minute.
    pub undelivered: i64,
    /// `null` while no Slack token is configured.
    pub slack_reachable: Option<bool>,
    /// `connected`, `reconnecting`, or `off` (no `SLACK_APP_TOKEN`).
    pub socket_mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /health/approvals`: 200 when ok, 503 when degraded.
pub async fn approvals(State(state): State<AppState>) -> (StatusCode, Json<ApprovalHealth>) {
    let slack_reachable = state
        .slack
        .as_ref()
        .and_then(|slack| slack.client.reachable());
    let health = match state.store.health(state.clock.now()).await {
        Ok(counts) => {
            let degraded = counts.stale_pending > 0
                || counts.undelivered > 0
                || slack_reachable == Some(false);
            ApprovalHealth {
                status: if degraded { "degraded" } else { "ok" },
                pending_count: counts.pending,
                stale_pending: counts.stale_pending,
                undelivered: counts.undelivered,
                slack_reachable,
                socket_mode: state.socket_status.label(),
                error: None,
            }
        }
        Err(error) => {
            tracing::error!(%error, "health check could not read the store");
            ApprovalHealth {
                status: "degraded",
                pending_count: 0,
                stale_pending: 0,
                undelivered: 0,
                slack_reachable,
                socket_mode: state.socket_status.label(),
                error: Some("the store is unreachable".into()),
            }
        }
    };
    let code = if health.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health))
}
