//! Liveness (`/healthz`) and approval health (`/health/approvals`): is anything stuck?

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::http::AppState;

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
    /// Expiries or deliveries overdue, Slack unreachable, or the store unreachable.
    Degraded,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "status": "ok", "pending_count": 3, "stale_pending": 0, "undelivered": 0, "slack_reachable": true
}))]
pub struct ApprovalHealth {
    pub status: HealthStatus,
    /// Approvals waiting for a decision.
    pub pending_count: i64,
    /// Pending or approved past expiry by more than a minute: the scheduler is behind.
    pub stale_pending: i64,
    /// Deliveries given up on or overdue by more than a minute.
    pub undelivered: i64,
    /// `null` while no Slack token is configured.
    #[schema(required = true)]
    pub slack_reachable: Option<bool>,
    /// Why the counts are missing (the store could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
            minute, Slack unreachable, or the store unreachable (then with `error`)", body = ApprovalHealth,
            example = json!({
                "status": "degraded", "pending_count": 3, "stale_pending": 1, "undelivered": 0,
                "slack_reachable": true
            })),
    )
)]
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
                status: if degraded {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Ok
                },
                pending_count: counts.pending,
                stale_pending: counts.stale_pending,
                undelivered: counts.undelivered,
                slack_reachable,
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
                slack_reachable,
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
