//! The JSON shapes callers read: the HTTP API's answers and the body of decision
//! callbacks (field names are the DESIGN.md contract). Their OpenAPI schemas
//! (`GET /openapi.json`) are derived from these types: the fields that are always
//! present, null or not, are marked `required`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::approval::{Approval, ApprovalId, Status, Tier, Vote};
use crate::store::Created;

/// Answer to `POST /v1/approvals`: the whole approval (an auto-approved one can be
/// executed at once with its `parameters`), and where to ask next.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CreatedApproval, example = json!(created_example()))]
pub struct CreatedView<'a> {
    #[serde(flatten)]
    pub approval: ApprovalView<'a>,
    /// Where to read or wait for the decision.
    #[schema(example = "GET /v1/approvals/1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19")]
    pub check_status_with: String,
    /// Present when `status` is `executed`: `true` when this request executed it
    /// (`execute_if_approved`), so run `parameters` now; `false` when an earlier
    /// request did (a retry with the same `idempotency_key`), so do not run it again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_by_this_request: Option<bool>,
}

impl<'a> CreatedView<'a> {
    pub fn new(created: &'a Created) -> Self {
        let a = &created.approval;
        let mut approval = ApprovalView::new(a, None);
        if created.spent {
            approval.next_action = "run the action now, with exactly these parameters: this \
                request executed the approval, which cannot be executed again"
                .into();
        }
        Self {
            approval,
            check_status_with: format!("GET /v1/approvals/{}", a.id),
            spent_by_this_request: (a.status == Status::Executed).then_some(created.spent),
        }
    }
}

/// Answer to `GET /v1/approvals/{id}` (and to cancel).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Approval, example = json!(approval_example()))]
pub struct ApprovalView<'a> {
    pub approval_id: ApprovalId,
    pub status: Status,
    pub tool_name: &'a str,
    /// The MCP server of the tool; null outside MCP.
    #[schema(required = true)]
    pub server: Option<&'a str>,
    /// The parameters that may run: after *Edit & approve*, the edited ones.
    #[schema(value_type = Object)]
    pub parameters: &'a Value,
    pub risk_tier: Tier,
    #[schema(required = true)]
    pub requested_by: Option<&'a str>,
    #[schema(required = true)]
    pub summary: Option<&'a str>,
    /// Who decided: the approvers' Slack user ids (comma-separated), the denier,
    /// `policy`, or the name given to `signoff decide --as`.
    #[schema(required = true)]
    pub decided_by: Option<&'a str>,
    #[schema(required = true)]
    pub decision_at: Option<DateTime<Utc>>,
    /// Why it was denied, or why it ended without a decision.
    #[schema(required = true)]
    pub reason: Option<&'a str>,
    pub votes: &'a [Vote],
    pub required_approvals: u32,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub executed_at: Option<DateTime<Utc>>,
    /// The Slack channel the policy routes the request to (an id such as `C0DEPLOYS`),
    /// set when it is created, also without Slack and for a call the policy approved or
    /// denied at once; null when the policy names none.
    #[schema(required = true)]
    pub channel: Option<&'a str>,
    /// The link to the request's Slack message, given by a read while the request is
    /// `pending` and posted; null otherwise, and always in the answers to create and
    /// cancel and in the event stream.
    #[schema(required = true)]
    pub permalink: Option<&'a str>,
    /// Present when an approver edited the parameters: what was first asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub original_parameters: Option<&'a Value>,
    /// What the caller should do now, in words.
    pub next_action: String,
}

impl<'a> ApprovalView<'a> {
    /// The view of `a`; `permalink` is its message's link where the caller looked it up.
    pub fn new(a: &'a Approval, permalink: Option<&'a str>) -> Self {
        Self {
            approval_id: a.id,
            status: a.status,
            tool_name: &a.tool_name,
            server: a.server.as_deref(),
            parameters: &a.parameters,
            risk_tier: a.risk_tier,
            requested_by: a.requested_by.as_deref(),
            summary: a.summary.as_deref(),
            decided_by: a.decided_by.as_deref(),
            decision_at: a.decision_at,
            reason: a.reason.as_deref(),
            votes: &a.votes,
            required_approvals: a.required_approvals,
            expires_at: a.expires_at,
            created_at: a.created_at,
            executed_at: a.executed_at,
            channel: a.routing.channel.as_ref().map(|c| c.as_str()),
            permalink,
            original_parameters: a.original_parameters.as_ref(),
            next_action: next_action(a),
        }
    }
}

/// What the caller should do now, in words a program's author understands at a glance.
fn next_action(a: &Approval) -> String {
    match a.status {
        Status::Pending => format!(
            "wait for a decision: GET /v1/approvals/{}?wait=30 ({} of {} approvals so far)",
            a.id,
            a.approvals(),
            a.required_approvals
        ),
        Status::Approved => format!(
            "execute: POST /v1/approvals/{}/execute with exactly these parameters, before expires_at",
            a.id
        ),
        Status::Denied => "do not run the action: it was denied".into(),
        Status::Expired => {
            "do not run the action: nobody decided in time; ask again if still needed".into()
        }
        Status::Executed => "nothing: the action was already executed".into(),
        Status::Cancelled => "nothing: the request was cancelled".into(),
    }
}

/// Answer to a successful execute.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Executed, example = json!({
    "approval_id": "1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19",
    "status": "executed",
    "parameters": {"customer_ids": ["c1", "c2"]},
    "executed_at": "2026-11-23T12:05:02Z"
}))]
pub struct ExecutedView<'a> {
    pub approval_id: ApprovalId,
    /// `executed`.
    pub status: Status,
    /// The parameters to run: exactly the approved ones.
    #[schema(value_type = Object)]
    pub parameters: &'a Value,
    #[schema(required = true)]
    pub executed_at: Option<DateTime<Utc>>,
}

impl<'a> ExecutedView<'a> {
    pub fn new(a: &'a Approval) -> Self {
        Self {
            approval_id: a.id,
            status: a.status,
            parameters: &a.parameters,
            executed_at: a.executed_at,
        }
    }
}

/// The OpenAPI example of an approval: approved, waiting to be executed.
fn approval_example() -> Value {
    serde_json::json!({
        "approval_id": "1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19",
        "status": "approved",
        "tool_name": "delete_customer_records",
        "server": null,
        "parameters": {"customer_ids": ["c1", "c2"]},
        "risk_tier": "medium",
        "requested_by": "agent-session-42",
        "summary": "Delete 2 customer records",
        "decided_by": "U0ALICE",
        "decision_at": "2026-11-23T12:04:10Z",
        "reason": null,
        "votes": [{"user": "U0ALICE", "decision": "approve", "at": "2026-11-23T12:04:10Z"}],
        "required_approvals": 1,
        "expires_at": "2026-11-23T16:00:00Z",
        "created_at": "2026-11-23T12:00:00Z",
        "executed_at": null,
        "channel": "C0APPROVALS",
        "permalink": null,
        "next_action": "execute: POST /v1/approvals/1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19/execute with exactly these parameters, before expires_at"
    })
}

/// The OpenAPI example of a new request: pending, posted to Slack.
fn created_example() -> Value {
    let mut example = approval_example();
    let pending = serde_json::json!({
        "status": "pending",
        "decided_by": null,
        "decision_at": null,
        "votes": [],
        "next_action": "wait for a decision: GET /v1/approvals/1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19?wait=30 (0 of 1 approvals so far)",
        "check_status_with": "GET /v1/approvals/1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19"
    });
    if let (Some(example), Some(pending)) = (example.as_object_mut(), pending.as_object()) {
        example.extend(pending.clone());
    }
    example
}
