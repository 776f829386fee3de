//! The break-glass decision (`signoff decide`): final at once, only on a pending and
//! unexpired request, never by the requester, a deny with a reason, audited as such.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::approval::{ApprovalId, BREAK_GLASS_VIA, NewApproval};
use crate::policy::{Classification, Route, Tier, TierAction};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

/// Pending, two approvals required, one already given in Slack.
fn pending() -> Approval {
    let class = Classification {
        tier: Tier::Medium,
        policy_tier: Tier::Medium,
        action: TierAction::RequireApproval,
        rule: None,
        rule_fingerprint: None,
        why: "no rule matched".into(),
        route: Route {
            channel: Some("C0APPROVALS".into()),
            approvers: vec![],
            required_approvals: 2,
            max_pending: 20,
            expires_after: Duration::from_secs(3600),
            remind_after: None,
            remind_every: None,
            escalate_after: None,
            escalation_channel: None,
            escalation_approvers: vec![],
            batch_window: None,
            summary_template: None,
        },
        notes: vec![],
    };
    let mut request = NewApproval::new("deploy_api", json!({"env": "prod"}));
    request.requested_by = Some("agent".into());
    let opened = open(ApprovalId::new(), request, &class, t0()).next;
    let vote = Event::Vote {
        by: Decider::approver("U0ALICE"),
        decision: Decision::Approve,
        reason: None,
        parameters_shown: None,
    };
    apply(&opened, &vote, t0()).unwrap().next
}

fn glass(by: &str, decision: Decision, reason: Option<&str>) -> Event {
    Event::BreakGlass {
        by: by.into(),
        decision,
        reason: reason.map(str::to_owned),
    }
}

#[test]
fn an_approval_outside_slack_decides_at_once_and_is_audited_as_break_glass() {
    let a = pending();
    let at = t0() + chrono::Duration::minutes(1);
    let done = apply(&a, &glass("ops-carol", Decision::Approve, None), at).unwrap();
    let next = &done.next;
    assert_eq!(
        next.status,
        Status::Approved,
        "required_approvals is overridden"
    );
    assert_eq!(next.decided_by.as_deref(), Some("ops-carol"));
    assert_eq!(next.decided_via.as_deref(), Some(BREAK_GLASS_VIA));
    assert!(next.is_break_glass());
    assert_eq!(next.decision_at, Some(at));
    assert_eq!(next.votes.len(), 2);
    let kinds: Vec<_> = done.happened.iter().map(|h| h.kind).collect();
    assert_eq!(kinds, [AuditKind::Vote, AuditKind::Approved]);
    for happening in &done.happened {
        assert_eq!(happening.actor.as_deref(), Some("ops-carol"));
        assert_eq!(happening.data["via"], "cli");
        assert_eq!(happening.data["break_glass"], true);
    }
}

#[test]
fn a_deny_outside_slack_keeps_its_reason_trimmed_and_may_give_none() {
    let a = pending();
    for reason in [None, Some("  ")] {
        let denied = apply(&a, &glass("carol", Decision::Deny, reason), t0()).unwrap();
        assert_eq!(denied.next.status, Status::Denied);
        assert_eq!(denied.next.decided_by.as_deref(), Some("carol"));
        assert_eq!(denied.next.reason, None);
        assert_eq!(denied.happened[1].data["reason"], serde_json::Value::Null);
    }
    let denied = apply(&a, &glass("carol", Decision::Deny, Some(" freeze ")), t0()).unwrap();
    assert_eq!(denied.next.status, Status::Denied);
    assert_eq!(denied.next.reason.as_deref(), Some("freeze"));
    assert_eq!(denied.happened[1].data["reason"], "freeze");
}

#[test]
fn break_glass_refuses_what_a_click_would_refuse() {
    let a = pending();
    let approve = |by: &str| glass(by, Decision::Approve, None);
    assert_eq!(
        apply(&a, &approve("agent"), t0()),
        Err(Rejection::RequesterCannotVote)
    );
    assert_eq!(
        apply(&a, &approve("U0ALICE"), t0()),
        Err(Rejection::AlreadyVoted)
    );
    assert_eq!(
        apply(&a, &approve("carol"), a.expires_at),
        Err(Rejection::Expired)
    );
    let decided = apply(&a, &approve("carol"), t0()).unwrap().next;
    assert_eq!(
        apply(&decided, &approve("dave"), t0()),
        Err(Rejection::AlreadyDecided(Status::Approved))
    );
}
