//! The approval state machine as pure functions: given an approval, an event and the
//! time, say what the approval becomes and what happened, or why the event is refused.
//!
//! The store runs these inside a transaction and writes the result with a
//! compare-and-set on `version`, so two concurrent events cannot both win.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Approval, ApprovalId, Decision, NewApproval, Routing, Status, Vote, names};
use crate::canonical;
use crate::policy::{Classification, TierAction, render_summary};

/// Who is deciding, as the edge that heard them established it: their name (a Slack
/// user id, or an operator's name outside Slack) and whether they are one of the
/// approval's approvers (see `slack::approvers`). The machine decides with it whether
/// their decision counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    pub user: String,
    pub approver: bool,
}

impl Decider {
    /// Someone the edge found among the approvers.
    pub fn approver(user: impl Into<String>) -> Self {
        Decider {
            user: user.into(),
            approver: true,
        }
    }
}

/// Something that happens to an approval after it was created.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A person approves or denies.
    Vote {
        by: Decider,
        decision: Decision,
        reason: Option<String>,
    },
    /// "Edit & approve": new parameters, and the editor's approval of them.
    EditApprove { by: Decider, parameters: Value },
    /// The requester runs the action; `parameters` must equal the approved ones, and
    /// `tool_name`, when given, the approved tool.
    Execute {
        parameters: Value,
        tool_name: Option<String>,
        caller: Option<String>,
    },
    /// The requester withdraws a pending request.
    Cancel { caller: Option<String> },
    /// The expiry time has come.
    Expire,
}

/// Kinds of audit events, as written in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Requested,
    AutoApproved,
    DeniedByPolicy,
    Vote,
    Approved,
    Denied,
    Edited,
    Expired,
    Executed,
    Cancelled,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Requested => "requested",
            AuditKind::AutoApproved => "auto_approved",
            AuditKind::DeniedByPolicy => "denied_by_policy",
            AuditKind::Vote => "vote",
            AuditKind::Approved => "approved",
            AuditKind::Denied => "denied",
            AuditKind::Edited => "edited",
            AuditKind::Expired => "expired",
            AuditKind::Executed => "executed",
            AuditKind::Cancelled => "cancelled",
        }
    }
}

/// One thing that happened, to be appended to the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Happening {
    pub kind: AuditKind,
    pub actor: Option<String>,
    pub data: Value,
}

impl Happening {
    fn new(kind: AuditKind, actor: Option<&str>, data: Value) -> Self {
        Self {
            kind,
            actor: actor.map(str::to_owned),
            data,
        }
    }
}

/// The result of an accepted event: the approval as it is now, and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub next: Approval,
    pub happened: Vec<Happening>,
}

impl Transition {
    /// Whether the status changed (so waiters, messages and callbacks need to know).
    pub fn decided(&self, before: Status) -> bool {
        self.next.status != before
    }
}

/// Why an event was refused. `Display` is what the person or client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("this request is already {0}")]
    AlreadyDecided(Status),
    #[error("this request expired")]
    Expired,
    #[error("this request is {0}, not approved")]
    NotApproved(Status),
    #[error("you already voted on this request")]
    AlreadyVoted,
    #[error("the requester cannot decide their own request")]
    RequesterCannotVote,
    #[error("you are not one of this request's approvers")]
    NotAnApprover,
    #[error("the parameters differ from the approved ones")]
    ParametersDiffer,
    #[error("this approval is for another tool")]
    ToolDiffers,
    #[error("edited parameters must be a JSON object")]
    ParametersNotObject,
    #[error("this request belongs to another API token")]
    NotOwner,
    #[error("this request has not reached its expiry time")]
    NotDue,
}

/// The policy's identity in `decided_by` for decisions nobody clicked.
pub const POLICY_ACTOR: &str = "policy";

/// Opens a new approval: classification decides whether it waits for people, is
/// approved at once (auto-approve tier) or denied at once (deny tier).
pub fn open(
    id: ApprovalId,
    request: NewApproval,
    class: &Classification,
    now: DateTime<Utc>,
) -> Transition {
    let route = &class.route;
    let lifetime = request
        .expires_in
        .map_or(route.expires_after, |asked| asked.min(route.expires_after));
    let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
    let summary = request.summary.clone().or_else(|| {
        route
            .summary_template
            .as_deref()
            .map(|template| render_summary(template, &request.parameters))
    });
    let annotations = request.annotations.clone();
    let mut approval = Approval {
        id,
        tool_name: request.tool_name,
        server: request.server,
        parameters: request.parameters,
        original_parameters: None,
        risk_tier: class.tier,
        status: Status::Pending,
        requested_by: request.requested_by,
        token_name: request.token_name,
        summary,
        context: request.context,
        decided_by: None,
        decision_at: None,
        reason: None,
        required_approvals: route.required_approvals.max(1),
        votes: Vec::new(),
        expires_at,
        created_at: now,
        executed_at: None,
        idempotency_key: request.idempotency_key,
        callback_url: request.callback_url,
        routing: routing_of(class),
        version: 0,
    };
    let mut happened = vec![Happening::new(
        AuditKind::Requested,
        approval.requested_by.as_deref(),
        json!({
            "tool_name": approval.tool_name,
            "server": approval.server,
            "annotations": annotations,
            "parameters": approval.parameters,
            "risk_tier": approval.risk_tier,
            "rule": class.rule,
            "expires_at": approval.expires_at,
            "token": approval.token_name,
        }),
    )];
    happened.extend(apply_tier_action(&mut approval, class, now));
    Transition {
        next: approval,
        happened,
    }
}

/// Where and when people are asked, as the classification says.
fn routing_of(class: &Classification) -> Routing {
    let route = &class.route;
    Routing {
        channel: route.channel.clone(),
        approvers: route.approvers.clone(),
        rule: class.rule,
        remind_after_secs: route.remind_after.map(|d| d.as_secs()),
        remind_every_secs: route.remind_every.map(|d| d.as_secs()),
        escalate_after_secs: route.escalate_after.map(|d| d.as_secs()),
        escalation_channel: route.escalation_channel.clone(),
    }
}

/// Auto-approve and deny tiers decide at once; the policy is the decider.
fn apply_tier_action(
    approval: &mut Approval,
    class: &Classification,
    now: DateTime<Utc>,
) -> Option<Happening> {
    match class.action {
        TierAction::RequireApproval => None,
        TierAction::AutoApprove => {
            decide(approval, Status::Approved, POLICY_ACTOR, None, now);
            Some(Happening::new(
                AuditKind::AutoApproved,
                Some(POLICY_ACTOR),
                json!({ "risk_tier": approval.risk_tier }),
            ))
        }
        TierAction::Deny => {
            let reason = format!(
                "denied by policy: risk tier {} is denied ({})",
                approval.risk_tier, class.why
            );
            Some(deny_by_policy(approval, reason, now))
        }
    }
}

/// The policy denies at once, for `reason`.
fn deny_by_policy(approval: &mut Approval, reason: String, now: DateTime<Utc>) -> Happening {
    decide(
        approval,
        Status::Denied,
        POLICY_ACTOR,
        Some(reason.clone()),
        now,
    );
    Happening::new(
        AuditKind::DeniedByPolicy,
        Some(POLICY_ACTOR),
        json!({ "risk_tier": approval.risk_tier, "reason": reason }),
    )
}

/// Classifies a row another program inserted straight into the shared table (status
/// pending, signoff's columns unset), as if it had been requested now: the policy's
/// tier (never lower than the row's), routing, and an expiry no later than the
/// policy allows.
pub fn adopt(row: &Approval, class: &Classification, now: DateTime<Utc>) -> Transition {
    let mut next = row.clone();
    next.version += 1;
    next.risk_tier = class.tier.max(row.risk_tier);
    next.required_approvals = class.route.required_approvals.max(1);
    next.routing = routing_of(class);
    let latest = now
        + chrono::Duration::from_std(class.route.expires_after).unwrap_or(chrono::Duration::MAX);
    next.expires_at = row.expires_at.min(latest);
    if next.summary.is_none() {
        next.summary = class
            .route
            .summary_template
            .as_deref()
            .map(|template| render_summary(template, &row.parameters));
    }
    let mut happened = vec![Happening::new(
        AuditKind::Requested,
        next.requested_by.as_deref(),
        json!({
            "tool_name": next.tool_name,
            "parameters": next.parameters,
            "risk_tier": next.risk_tier,
            "rule": class.rule,
            "expires_at": next.expires_at,
            "source": "shared_table",
        }),
    )];
    // Whatever the row's status said: the policy decides, and a name that does not
    // follow the MCP rule (which the API refuses outright) is denied.
    match names::check_tool_name(&next.tool_name) {
        Ok(()) => happened.extend(apply_tier_action(&mut next, class, now)),
        Err(why) => happened.push(deny_by_policy(&mut next, format!("denied: {why}"), now)),
    }
    Transition { next, happened }
}

/// Applies `event` to `approval` at `now`. Refusals change nothing.
pub fn apply(
    approval: &Approval,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<Transition, Rejection> {
    let mut next = approval.clone();
    next.version += 1;
    let happened = match event {
        Event::Vote {
            by,
            decision,
            reason,
        } => vote(&mut next, approval, by, *decision, reason, now)?,
        Event::EditApprove { by, parameters } => {
            edit_approve(&mut next, approval, by, parameters, now)?
        }
        Event::Execute {
            parameters,
            tool_name,
            caller,
        } => execute(
            &mut next,
            approval,
            parameters,
            tool_name.as_deref(),
            caller.as_deref(),
            now,
        )?,
        Event::Cancel { caller } => cancel(&mut next, approval, caller.as_deref(), now)?,
        Event::Expire => expire(&mut next, approval, now)?,
    };
    Ok(Transition { next, happened })
}

fn vote(
    next: &mut Approval,
    approval: &Approval,
    by: &Decider,
    decision: Decision,
    reason: &Option<String>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_can_decide(approval, by, now)?;
    if approval.has_voted(&by.user) {
        return Err(Rejection::AlreadyVoted);
    }
    next.votes.push(Vote {
        user: by.user.clone(),
        decision,
        at: now,
        reason: reason.clone(),
    });
    let mut happened = vec![Happening::new(
        AuditKind::Vote,
        Some(&by.user),
        json!({ "decision": decision.as_str(), "reason": reason }),
    )];
    happened.extend(settle(next, &by.user, reason.clone(), now));
    Ok(happened)
}

/// An edit changes what would run, so approvals given for the old parameters no
/// longer count; the editor's own approval counts for the new ones.
fn edit_approve(
    next: &mut Approval,
    approval: &Approval,
    by: &Decider,
    parameters: &Value,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_can_decide(approval, by, now)?;
    if !parameters.is_object() {
        return Err(Rejection::ParametersNotObject);
    }
    next.votes.retain(|vote| vote.decision != Decision::Approve);
    next.votes.push(Vote {
        user: by.user.clone(),
        decision: Decision::Approve,
        at: now,
        reason: None,
    });
    if next.original_parameters.is_none() {
        next.original_parameters = Some(approval.parameters.clone());
    }
    next.parameters = parameters.clone();
    let mut happened = vec![
        Happening::new(
            AuditKind::Edited,
            Some(&by.user),
            json!({ "from": approval.parameters, "to": parameters }),
        ),
        Happening::new(
            AuditKind::Vote,
            Some(&by.user),
            json!({ "decision": "approve" }),
        ),
    ];
    happened.extend(settle(next, &by.user, None, now));
    Ok(happened)
}

/// The single-use gate: only the owner, only approved and unexpired, only the approved
/// tool and parameters.
fn execute(
    next: &mut Approval,
    approval: &Approval,
    parameters: &Value,
    tool_name: Option<&str>,
    caller: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_owner(approval, caller)?;
    if tool_name.is_some_and(|tool| tool != approval.tool_name) {
        return Err(Rejection::ToolDiffers);
    }
    if approval.status != Status::Approved {
        return Err(match approval.status {
            Status::Pending => Rejection::NotApproved(Status::Pending),
            other => Rejection::AlreadyDecided(other),
        });
    }
    if approval.is_expired_at(now) {
        return Err(Rejection::Expired);
    }
    if !canonical::equal(parameters, &approval.parameters) {
        return Err(Rejection::ParametersDiffer);
    }
    next.status = Status::Executed;
    next.executed_at = Some(now);
    Ok(vec![Happening::new(
        AuditKind::Executed,
        caller,
        json!({ "parameters_sha256": canonical::sha256_hex(parameters) }),
    )])
}

fn cancel(
    next: &mut Approval,
    approval: &Approval,
    caller: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_owner(approval, caller)?;
    check_pending(approval)?;
    let actor = caller.unwrap_or("requester");
    decide(next, Status::Cancelled, actor, None, now);
    Ok(vec![Happening::new(
        AuditKind::Cancelled,
        Some(actor),
        json!({}),
    )])
}

fn expire(
    next: &mut Approval,
    approval: &Approval,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    if approval.status.is_terminal() {
        return Err(Rejection::AlreadyDecided(approval.status));
    }
    if !approval.is_expired_at(now) {
        return Err(Rejection::NotDue);
    }
    let was = approval.status;
    next.status = Status::Expired;
    // An approval that was never executed keeps its decider; a pending one was decided
    // by nobody.
    if was == Status::Pending {
        next.decision_at = Some(now);
    }
    Ok(vec![Happening::new(
        AuditKind::Expired,
        None,
        json!({ "was": was.as_str() }),
    )])
}

/// After a vote: any deny denies; enough distinct approvals approve.
fn settle(
    next: &mut Approval,
    user: &str,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Vec<Happening> {
    if next
        .votes
        .iter()
        .any(|vote| vote.decision == Decision::Deny)
    {
        decide(next, Status::Denied, user, reason.clone(), now);
        return vec![Happening::new(
            AuditKind::Denied,
            Some(user),
            json!({ "reason": reason }),
        )];
    }
    if next.approvals() >= next.required_approvals as usize {
        let approvers: Vec<&str> = next
            .votes
            .iter()
            .filter(|vote| vote.decision == Decision::Approve)
            .map(|vote| vote.user.as_str())
            .collect();
        let decided_by = approvers.join(", ");
        decide(next, Status::Approved, &decided_by, None, now);
        return vec![Happening::new(
            AuditKind::Approved,
            Some(&decided_by),
            json!({ "parameters_sha256": canonical::sha256_hex(&next.parameters) }),
        )];
    }
    Vec::new()
}

fn decide(
    next: &mut Approval,
    status: Status,
    by: &str,
    reason: Option<String>,
    now: DateTime<Utc>,
) {
    next.status = status;
    next.decided_by = Some(by.to_owned());
    next.decision_at = Some(now);
    next.reason = reason;
}

fn check_pending(approval: &Approval) -> Result<(), Rejection> {
    match approval.status {
        Status::Pending => Ok(()),
        other => Err(Rejection::AlreadyDecided(other)),
    }
}

/// Who may decide, now: the approval is pending and unexpired, and the decider is not
/// the requester and is one of its approvers (a vote also needs to be their first;
/// an approver who approved may still edit). Also used to refuse a Deny or Edit click
/// before a modal opens.
pub fn check_can_decide(
    approval: &Approval,
    by: &Decider,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    check_pending(approval)?;
    if approval.is_expired_at(now) {
        return Err(Rejection::Expired);
    }
    if approval.requested_by.as_deref() == Some(by.user.as_str()) {
        return Err(Rejection::RequesterCannotVote);
    }
    if !by.approver {
        return Err(Rejection::NotAnApprover);
    }
    Ok(())
}

/// Execute and cancel belong to the token that asked. Rows inserted straight into the
/// shared table have no token: no token may act on them (their program reads the
/// decision from the table).
fn check_owner(approval: &Approval, caller: Option<&str>) -> Result<(), Rejection> {
    match (approval.token_name.as_deref(), caller) {
        (Some(owner), Some(caller)) if owner != caller => Err(Rejection::NotOwner),
        (None, Some(_)) => Err(Rejection::NotOwner),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
