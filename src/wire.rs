//! The JSON shapes callers read: the HTTP API's answers and the body of decision
//! callbacks (field names are the DESIGN.md contract).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::approval::{Approval, ApprovalId, Status, Tier, Vote};

/// Answer to `POST /v1/approvals`: the whole approval (an auto-approved one can be
/// executed at once with its `parameters`), and where to ask next.
#[derive(Debug, Serialize)]
pub struct CreatedView<'a> {
    #[serde(flatten)]
    pub approval: ApprovalView<'a>,
    pub check_status_with: String,
}

impl<'a> CreatedView<'a> {
    pub fn new(a: &'a Approval) -> Self {
        Self {
            approval: ApprovalView::new(a, None),
            check_status_with: format!("GET /v1/approvals/{}", a.id),
        }
    }
}

/// Answer to `GET /v1/approvals/{id}` (and to cancel).
#[derive(Debug, Serialize)]
pub struct ApprovalView<'a> {
    pub approval_id: ApprovalId,
    pub status: Status,
    pub tool_name: &'a str,
    /// The MCP server of the tool; null outside MCP.
    pub server: Option<&'a str>,
    pub parameters: &'a Value,
    pub risk_tier: Tier,
    pub requested_by: Option<&'a str>,
    pub summary: Option<&'a str>,
    pub decided_by: Option<&'a str>,
    pub decision_at: Option<DateTime<Utc>>,
    pub reason: Option<&'a str>,
    pub votes: &'a [Vote],
    pub required_approvals: u32,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub executed_at: Option<DateTime<Utc>>,
    /// The Slack channel the request is posted to (an id such as `C0DEPLOYS`).
    pub channel: Option<&'a str>,
    /// The link to the request's message once it is posted, while it waits.
    pub permalink: Option<&'a str>,
    /// Present when an approver edited the parameters: what was first asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_parameters: Option<&'a Value>,
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
#[derive(Debug, Serialize)]
pub struct ExecutedView<'a> {
    pub approval_id: ApprovalId,
    pub status: Status,
    /// The parameters to run: exactly the approved ones.
    pub parameters: &'a Value,
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
