//! Opening an approval: a new request, or a row another program inserted straight into
//! the shared table. Classification decides whether it waits for people, or whether
//! the policy decides it at once (an auto-approve tier, a deny tier).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{AuditKind, Happening, POLICY_ACTOR, Transition, decide};
use crate::approval::{Approval, ApprovalId, NewApproval, Routing, Status, names};
use crate::canonical;
use crate::policy::{Classification, MAX_DURATION, TierAction, render_summary};

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
    let expires_at = after(now, lifetime);
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
        decided_via: None,
        decision_at: None,
        reason: None,
        required_approvals: route.required_approvals.max(1),
        votes: Vec::new(),
        expires_at,
        created_at: now,
        executed_at: None,
        idempotency_key: request.idempotency_key,
        callback_url: request.callback_url,
        routing: Routing {
            annotations: annotations.clone(),
            ..routing_of(class)
        },
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
        rule_fingerprint: class.rule_fingerprint.clone(),
        remind_after_secs: route.remind_after.map(|d| d.as_secs()),
        remind_every_secs: route.remind_every.map(|d| d.as_secs()),
        escalate_after_secs: route.escalate_after.map(|d| d.as_secs()),
        escalation_channel: route.escalation_channel.clone(),
        escalation_approvers: route.escalation_approvers.clone(),
        batch_window_ms: route
            .batch_window
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        annotations: None,
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
                json!({
                    "risk_tier": approval.risk_tier,
                    "parameters_sha256": canonical::value_sha256_hex(&approval.parameters),
                }),
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

/// `lifetime` after `now`, no later than a policy may give ([`MAX_DURATION`]): a
/// policy checked elsewhere, or built in code, cannot overflow the time.
fn after(now: DateTime<Utc>, lifetime: std::time::Duration) -> DateTime<Utc> {
    let lifetime =
        chrono::Duration::from_std(lifetime.min(MAX_DURATION)).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(lifetime)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Classifies a row another program inserted straight into the shared table (status
/// pending, signoff's columns unset), as if it had been requested now: the policy's
/// tier (never lower than the row's), routing, and an expiry no later than the
/// policy allows. `unreviewable` says why its parameters as stored cannot be shown
/// exactly (a number beyond what signoff keeps exactly, a key given twice: what the
/// API refuses with 422); such a row is denied, never put before people who would
/// approve another value than the one stored.
pub fn adopt(
    row: &Approval,
    class: &Classification,
    unreviewable: Option<&str>,
    now: DateTime<Utc>,
) -> Transition {
    let mut next = row.clone();
    next.version += 1;
    next.risk_tier = class.tier.max(row.risk_tier);
    next.required_approvals = class.route.required_approvals.max(1);
    next.routing = routing_of(class);
    let latest = after(now, class.route.expires_after);
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
            "server": next.server,
            "parameters": next.parameters,
            "risk_tier": next.risk_tier,
            "rule": class.rule,
            "expires_at": next.expires_at,
            "source": "shared_table",
        }),
    )];
    // Whatever the row's status said: the policy decides, and a name that does not
    // follow the MCP rule (which the API refuses outright) is denied.
    let refused = match (names::check_tool_name(&next.tool_name), unreviewable) {
        (Err(why), _) => Some(format!("denied: {why}")),
        (Ok(()), Some(why)) => Some(format!(
            "denied: its parameters cannot be shown to approvers exactly as stored: {why}"
        )),
        (Ok(()), None) => None,
    };
    // A row past its expiry (inserted so, or whose time passed while signoff was down)
    // is expired, never approved nor put before people: expired means not run.
    if next.is_expired_at(now) {
        // As an expiry pass records one, and why it came at intake.
        let mut expiry = super::events::expired(&mut next, Status::Pending, now);
        expiry.data["reason"] = json!("past its expiry when signoff took it in");
        happened.push(expiry);
        return Transition { next, happened };
    }
    match refused {
        None => happened.extend(apply_tier_action(&mut next, class, now)),
        Some(reason) => happened.push(deny_by_policy(&mut next, reason, now)),
    }
    Transition { next, happened }
}
