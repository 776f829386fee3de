//! Unit and property tests of the pure state machine.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::approval::{ApprovalId, NewApproval};
use crate::policy::{Classification, TierAction};
use crate::policy::{Route, Tier};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn class(action: TierAction, required: u32) -> Classification {
    Classification {
        tier: Tier::Medium,
        policy_tier: Tier::Medium,
        action,
        rule: None,
        rule_fingerprint: None,
        why: "no rule matched".into(),
        route: Route {
            channel: Some("C0APPROVALS".into()),
            approvers: vec![],
            required_approvals: required,
            max_pending: 20,
            expires_after: Duration::from_secs(3600),
            remind_after: None,
            remind_every: None,
            escalate_after: None,
            escalation_channel: None,
            escalation_approvers: vec![],
            batch_window: None,
            summary_template: Some("Delete {customer_ids}".into()),
        },
        notes: vec![],
    }
}

fn request() -> NewApproval {
    {
        let mut request = NewApproval::new(
            "delete_customer_records",
            json!({"customer_ids": ["c1", "c2"]}),
        );
        request.requested_by = Some("U0AGENT".into());
        request.token_name = Some("agent".into());
        request
    }
}

fn pending(required: u32) -> Approval {
    open(
        ApprovalId::new(),
        request(),
        &class(TierAction::RequireApproval, required),
        t0(),
    )
    .next
}

fn vote(user: &str, decision: Decision) -> Event {
    Event::Vote {
        by: crate::approval::Decider::approver(user),
        decision,
        reason: None,
        parameters_shown: None,
    }
}

fn later(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

#[test]
fn a_new_request_waits_for_people_and_records_who_asked() {
    let t = open(
        ApprovalId::new(),
        request(),
        &class(TierAction::RequireApproval, 1),
        t0(),
    );
    assert_eq!(t.next.status, Status::Pending);
    assert_eq!(t.next.expires_at, later(3600));
    assert_eq!(t.next.summary.as_deref(), Some("Delete c1, c2"));
    assert_eq!(t.happened.len(), 1);
    assert_eq!(t.happened[0].kind, AuditKind::Requested);
    assert_eq!(t.happened[0].actor.as_deref(), Some("U0AGENT"));
}

#[test]
fn auto_approve_and_deny_tiers_decide_at_once() {
    let approved = open(
        ApprovalId::new(),
        request(),
        &class(TierAction::AutoApprove, 1),
        t0(),
    );
    assert_eq!(approved.next.status, Status::Approved);
    assert_eq!(approved.next.decided_by.as_deref(), Some(POLICY_ACTOR));
    assert_eq!(approved.happened[1].kind, AuditKind::AutoApproved);

    let denied = open(
        ApprovalId::new(),
        request(),
        &class(TierAction::Deny, 1),
        t0(),
    );
    assert_eq!(denied.next.status, Status::Denied);
    assert!(
        denied
            .next
            .reason
            .as_deref()
            .unwrap()
            .contains("denied by policy")
    );
    assert_eq!(denied.happened[1].kind, AuditKind::DeniedByPolicy);
}

#[test]
fn a_lifetime_past_what_a_time_holds_expires_within_a_year_instead_of_panicking() {
    let mut forever = class(TierAction::RequireApproval, 1);
    forever.route.expires_after = Duration::MAX;
    let opened = open(ApprovalId::new(), request(), &forever, t0()).next;
    assert_eq!(opened.expires_at, t0() + chrono::Duration::days(366));
    let adopted = adopt(&pending(1), &forever, None, t0()).next;
    assert_eq!(
        adopted.expires_at,
        pending(1).expires_at,
        "the row's own, sooner"
    );
}

#[test]
fn a_shorter_expires_in_wins_but_a_longer_one_does_not() {
    let mut short = request();
    short.expires_in = Some(Duration::from_secs(60));
    let t = open(
        ApprovalId::new(),
        short,
        &class(TierAction::RequireApproval, 1),
        t0(),
    );
    assert_eq!(t.next.expires_at, later(60));

    let mut long = request();
    long.expires_in = Some(Duration::from_secs(86_400));
    let t = open(
        ApprovalId::new(),
        long,
        &class(TierAction::RequireApproval, 1),
        t0(),
    );
    assert_eq!(t.next.expires_at, later(3600));
}

#[test]
fn the_request_summary_beats_the_template() {
    let mut req = request();
    req.summary = Some("Purge test accounts".into());
    let t = open(
        ApprovalId::new(),
        req,
        &class(TierAction::RequireApproval, 1),
        t0(),
    );
    assert_eq!(t.next.summary.as_deref(), Some("Purge test accounts"));
}

#[test]
fn one_approval_approves_when_one_is_required() {
    let t = apply(&pending(1), &vote("U1", Decision::Approve), later(1)).unwrap();
    assert_eq!(t.next.status, Status::Approved);
    assert_eq!(t.next.decided_by.as_deref(), Some("U1"));
    assert_eq!(t.next.decision_at, Some(later(1)));
    let kinds: Vec<_> = t.happened.iter().map(|h| h.kind).collect();
    assert_eq!(kinds, [AuditKind::Vote, AuditKind::Approved]);
}

#[test]
fn two_required_approvals_need_two_distinct_people() {
    let a = pending(2);
    let one = apply(&a, &vote("U1", Decision::Approve), later(1))
        .unwrap()
        .next;
    assert_eq!(one.status, Status::Pending);
    assert_eq!(one.approvals(), 1);
    assert_eq!(
        apply(&one, &vote("U1", Decision::Approve), later(2)),
        Err(Rejection::AlreadyVoted)
    );
    let two = apply(&one, &vote("U2", Decision::Approve), later(3))
        .unwrap()
        .next;
    assert_eq!(two.status, Status::Approved);
    assert_eq!(two.decided_by.as_deref(), Some("U1, U2"));
}

#[test]
fn only_an_approver_decides_whatever_the_event() {
    let p = pending(1);
    let outsider = crate::approval::Decider {
        user: "U0MALLORY".into(),
        approver: false,
    };
    let events = [
        Event::Vote {
            by: outsider.clone(),
            decision: Decision::Approve,
            reason: None,
            parameters_shown: None,
        },
        Event::Vote {
            by: outsider.clone(),
            decision: Decision::Deny,
            reason: Some("no".into()),
            parameters_shown: None,
        },
        Event::EditApprove {
            by: outsider,
            parameters: json!({"customer_ids": []}),
            parameters_shown: None,
        },
    ];
    for event in events {
        assert_eq!(
            apply(&p, &event, later(1)),
            Err(Rejection::NotAnApprover),
            "{event:?}"
        );
    }
    // The requester is refused as such, approver or not.
    let requester = crate::approval::Decider::approver(p.requested_by.clone().unwrap());
    let own = Event::Vote {
        by: requester,
        decision: Decision::Approve,
        reason: None,
        parameters_shown: None,
    };
    assert_eq!(
        apply(&p, &own, later(1)),
        Err(Rejection::RequesterCannotVote)
    );
    // So is the token that asked, and `requested_by` with spaces or in other letters,
    // whether they click or decide outside Slack.
    for who in ["agent", " u0agent "] {
        let click = Event::Vote {
            by: crate::approval::Decider::approver(who.trim()),
            decision: Decision::Approve,
            reason: None,
            parameters_shown: None,
        };
        let outside = Event::BreakGlass {
            by: who.trim().to_owned(),
            decision: Decision::Approve,
            reason: None,
        };
        for event in [click, outside] {
            assert_eq!(
                apply(&p, &event, later(1)),
                Err(Rejection::RequesterCannotVote),
                "{who}: {event:?}"
            );
        }
    }
}

#[test]
fn any_deny_denies_even_after_approvals() {
    let one = apply(&pending(2), &vote("U1", Decision::Approve), later(1))
        .unwrap()
        .next;
    let event = Event::Vote {
        by: crate::approval::Decider::approver("U2"),
        decision: Decision::Deny,
        reason: Some("wrong customer".into()),
        parameters_shown: None,
    };
    let t = apply(&one, &event, later(2)).unwrap();
    assert_eq!(t.next.status, Status::Denied);
    assert_eq!(t.next.decided_by.as_deref(), Some("U2"));
    assert_eq!(t.next.reason.as_deref(), Some("wrong customer"));
}

#[test]
fn the_requester_cannot_vote() {
    assert_eq!(
        apply(&pending(1), &vote("U0AGENT", Decision::Approve), later(1)),
        Err(Rejection::RequesterCannotVote)
    );
}

#[test]
fn votes_after_expiry_or_decision_are_refused() {
    let a = pending(1);
    assert_eq!(
        apply(&a, &vote("U1", Decision::Approve), later(3600)),
        Err(Rejection::Expired)
    );
    let decided = apply(&a, &vote("U1", Decision::Deny), later(1))
        .unwrap()
        .next;
    assert_eq!(
        apply(&decided, &vote("U2", Decision::Approve), later(2)),
        Err(Rejection::AlreadyDecided(Status::Denied))
    );
}

#[test]
fn edit_resets_approvals_and_counts_as_the_editors() {
    let a = pending(2);
    let one = apply(&a, &vote("U1", Decision::Approve), later(1))
        .unwrap()
        .next;
    let edit = Event::EditApprove {
        by: crate::approval::Decider::approver("U2"),
        parameters: json!({"customer_ids": ["c1"]}),
        parameters_shown: None,
    };
    let t = apply(&one, &edit, later(2)).unwrap();
    assert_eq!(
        t.next.status,
        Status::Pending,
        "U1 approved other parameters"
    );
    assert_eq!(t.next.votes.len(), 1);
    assert_eq!(t.next.votes[0].user, "U2");
    assert_eq!(t.next.parameters, json!({"customer_ids": ["c1"]}));
    assert_eq!(
        t.next.original_parameters,
        Some(json!({"customer_ids": ["c1", "c2"]}))
    );
    let t = apply(&t.next, &vote("U1", Decision::Approve), later(3)).unwrap();
    assert_eq!(t.next.status, Status::Approved);
}

#[test]
fn an_approve_clicked_on_a_message_showing_parameters_an_edit_replaced_is_refused() {
    let a = pending(2);
    let requested = crate::approval::parameters_fingerprint(&a.parameters);
    let edit = Event::EditApprove {
        by: crate::approval::Decider::approver("U2"),
        parameters: json!({"customer_ids": ["c1", "c2", "c3"]}),
        parameters_shown: None,
    };
    let edited = apply(&a, &edit, later(1)).unwrap().next;
    let on_a_message_showing = |shown: &str, decision| Event::Vote {
        by: crate::approval::Decider::approver("U1"),
        decision,
        reason: None,
        parameters_shown: Some(shown.to_owned()),
    };
    // The message had not been updated yet, or it was posted before buttons said.
    for stale in [requested.as_str(), ""] {
        assert_eq!(
            apply(
                &edited,
                &on_a_message_showing(stale, Decision::Approve),
                later(2)
            ),
            Err(Rejection::EditedSinceShown)
        );
    }
    // The updated message counts; so does a deny from the stale one (it runs nothing).
    let current = crate::approval::parameters_fingerprint(&edited.parameters);
    let approved = apply(
        &edited,
        &on_a_message_showing(&current, Decision::Approve),
        later(2),
    );
    assert_eq!(approved.unwrap().next.status, Status::Approved);
    let denied = apply(
        &edited,
        &on_a_message_showing(&requested, Decision::Deny),
        later(2),
    );
    assert_eq!(denied.unwrap().next.status, Status::Denied);
    // Before any edit, any message of it shows the parameters as requested.
    let unedited = apply(&a, &on_a_message_showing("", Decision::Approve), later(2));
    assert_eq!(unedited.unwrap().next.votes.len(), 1);
}

/// An edit from a form opened before another edit would undo that edit unseen: it is
/// refused. An edit that changes nothing is the editor's approve, once: it withdraws
/// nobody's approval.
#[test]
fn an_edit_from_a_stale_form_is_refused_and_an_unchanged_one_is_an_approve() {
    let a = pending(3);
    let requested = crate::approval::parameters_fingerprint(&a.parameters);
    let edit = |by: &str, parameters: serde_json::Value, shown: &str| Event::EditApprove {
        by: crate::approval::Decider::approver(by),
        parameters,
        parameters_shown: Some(shown.to_owned()),
    };
    let approved = apply(&a, &vote("U1", Decision::Approve), later(1))
        .unwrap()
        .next;
    let unchanged = edit("U2", a.parameters.clone(), &requested);
    let t = apply(&approved, &unchanged, later(2)).unwrap();
    assert_eq!(
        t.next.votes.len(),
        2,
        "U1's approval stands: {:?}",
        t.next.votes
    );
    assert_eq!(t.next.original_parameters, None, "nothing was edited");
    assert!(t.happened.iter().all(|h| h.kind != AuditKind::Edited));
    assert_eq!(
        apply(&t.next, &unchanged, later(3)),
        Err(Rejection::AlreadyVoted),
        "one approve per person, by a click or an unchanged edit"
    );

    let bobs = edit("U2", json!({"customer_ids": ["c1"]}), &requested);
    let edited = apply(&approved, &bobs, later(2)).unwrap().next;
    let from_the_old_form = edit("U3", json!({"customer_ids": ["c9"]}), &requested);
    assert_eq!(
        apply(&edited, &from_the_old_form, later(3)),
        Err(Rejection::EditedSinceShown)
    );
    let current = crate::approval::parameters_fingerprint(&edited.parameters);
    let from_the_new_form = edit("U3", json!({"customer_ids": ["c9"]}), &current);
    let t = apply(&edited, &from_the_new_form, later(3)).unwrap();
    assert_eq!(t.next.parameters, json!({"customer_ids": ["c9"]}));
}

#[test]
fn edit_must_be_an_object() {
    let edit = Event::EditApprove {
        by: crate::approval::Decider::approver("U2"),
        parameters: json!(["not", "an", "object"]),
        parameters_shown: None,
    };
    assert_eq!(
        apply(&pending(1), &edit, later(1)),
        Err(Rejection::ParametersNotObject)
    );
}

#[test]
fn a_refused_execute_is_recorded_with_why_and_what_was_sent_and_nothing_else_is() {
    let execute = Event::Execute {
        parameters: json!({"customer_ids": ["c9"]}),
        tool_name: Some("delete_everything".into()),
        server: Some("prod".into()),
        caller: Some("agent".into()),
    };
    let happening = refused(&execute, &Rejection::ToolDiffers).unwrap();
    assert_eq!(happening.kind, AuditKind::ExecuteRefused);
    assert_eq!(happening.actor.as_deref(), Some("agent"));
    assert_eq!(
        happening.data,
        json!({
            "reason": "this approval is for another tool",
            "parameters_sha256": canonical::value_sha256_hex(&json!({"customer_ids": ["c9"]})),
            "tool_name": "delete_everything",
            "server_named": "prod",
        })
    );
    let cancel = Event::Cancel {
        caller: Some("agent".into()),
    };
    assert_eq!(refused(&cancel, &Rejection::NotOwner), None);
}

#[test]
fn execute_runs_once_with_the_approved_parameters_only() {
    let approved = apply(&pending(1), &vote("U1", Decision::Approve), later(1))
        .unwrap()
        .next;
    let caller = Some("agent".to_string());
    let other = Event::Execute {
        parameters: json!({"customer_ids": ["c1", "c3"]}),
        tool_name: None,
        server: None,
        caller: caller.clone(),
    };
    assert_eq!(
        apply(&approved, &other, later(2)),
        Err(Rejection::ParametersDiffer)
    );
    let another_tool = Event::Execute {
        parameters: json!({"customer_ids": ["c1", "c2"]}),
        tool_name: Some("delete_everything".into()),
        server: None,
        caller: caller.clone(),
    };
    assert_eq!(
        apply(&approved, &another_tool, later(2)),
        Err(Rejection::ToolDiffers)
    );
    // Named, the MCP server must be the one asked for: none here, then another.
    let on_server = |server: &str| Event::Execute {
        parameters: json!({"customer_ids": ["c1", "c2"]}),
        tool_name: None,
        server: Some(server.into()),
        caller: caller.clone(),
    };
    assert_eq!(
        apply(&approved, &on_server("prod"), later(2)),
        Err(Rejection::ServerDiffers)
    );
    let mut on_sandbox = approved.clone();
    on_sandbox.server = Some("sandbox".into());
    assert_eq!(
        apply(&on_sandbox, &on_server("prod"), later(2)),
        Err(Rejection::ServerDiffers)
    );
    let executed = apply(&on_sandbox, &on_server("sandbox"), later(2));
    assert_eq!(executed.unwrap().next.status, Status::Executed);
    let same = Event::Execute {
        parameters: json!({"customer_ids": ["c1", "c2"]}),
        tool_name: Some(approved.tool_name.clone()),
        server: None,
        caller: caller.clone(),
    };
    let executed = apply(&approved, &same, later(2)).unwrap().next;
    assert_eq!(executed.status, Status::Executed);
    assert_eq!(executed.executed_at, Some(later(2)));
    assert_eq!(
        apply(&executed, &same, later(3)),
        Err(Rejection::AlreadyDecided(Status::Executed))
    );
}

#[test]
fn execute_is_refused_when_pending_expired_or_someone_elses() {
    let p = pending(1);
    let exec = |caller: &str| Event::Execute {
        parameters: p.parameters.clone(),
        tool_name: None,
        server: None,
        caller: Some(caller.into()),
    };
    assert_eq!(
        apply(&p, &exec("agent"), later(1)),
        Err(Rejection::NotApproved(Status::Pending))
    );
    let approved = apply(&p, &vote("U1", Decision::Approve), later(1))
        .unwrap()
        .next;
    assert_eq!(
        apply(&approved, &exec("other"), later(2)),
        Err(Rejection::NotOwner)
    );
    assert_eq!(
        apply(&approved, &exec("agent"), later(3600)),
        Err(Rejection::Expired)
    );
    // Past its expiry, before the scheduler's pass: expired, whatever else is wrong.
    assert_eq!(
        apply(&p, &exec("agent"), later(3600)),
        Err(Rejection::Expired)
    );
    let another_tool = Event::Execute {
        parameters: p.parameters.clone(),
        tool_name: Some("drop_everything".into()),
        server: None,
        caller: Some("agent".into()),
    };
    assert_eq!(
        apply(&approved, &another_tool, later(3600)),
        Err(Rejection::Expired)
    );
}

#[test]
fn expiry_applies_to_pending_and_approved_only_once_due() {
    let p = pending(1);
    assert_eq!(apply(&p, &Event::Expire, later(10)), Err(Rejection::NotDue));
    let expired = apply(&p, &Event::Expire, later(3600)).unwrap().next;
    assert_eq!(expired.status, Status::Expired);
    assert_eq!(
        apply(&expired, &Event::Expire, later(3601)),
        Err(Rejection::AlreadyDecided(Status::Expired))
    );
    let approved = apply(&p, &vote("U1", Decision::Approve), later(1))
        .unwrap()
        .next;
    let t = apply(&approved, &Event::Expire, later(3600)).unwrap();
    assert_eq!(t.next.status, Status::Expired);
    assert_eq!(
        t.next.decided_by.as_deref(),
        Some("U1"),
        "who approved stays on record"
    );
}

#[test]
fn only_the_owner_cancels_and_only_while_pending() {
    let p = pending(1);
    let cancel = |caller: &str| Event::Cancel {
        caller: Some(caller.into()),
    };
    assert_eq!(
        apply(&p, &cancel("other"), later(1)),
        Err(Rejection::NotOwner)
    );
    let cancelled = apply(&p, &cancel("agent"), later(1)).unwrap().next;
    assert_eq!(cancelled.status, Status::Cancelled);
    assert_eq!(
        apply(&cancelled, &cancel("agent"), later(2)),
        Err(Rejection::AlreadyDecided(Status::Cancelled))
    );
    // Past its expiry, before the scheduler has recorded it, it is expired already.
    let at_expiry = p.expires_at - t0();
    assert_eq!(
        apply(&p, &cancel("agent"), later(at_expiry.num_seconds())),
        Err(Rejection::Expired)
    );
}

#[test]
fn a_row_from_the_shared_table_is_classified_as_if_requested_now() {
    let mut row = pending(1);
    row.routing = Default::default();
    row.required_approvals = 1;
    row.summary = None;
    row.risk_tier = Tier::High;
    row.expires_at = later(86_400 * 30);
    row.server = Some("github".into());
    let mut class = class(TierAction::RequireApproval, 2);
    class.tier = Tier::Medium;
    let t = adopt(&row, &class, None, later(5));
    assert_eq!(
        t.next.risk_tier,
        Tier::High,
        "the row's tier is never lowered"
    );
    assert_eq!(t.next.required_approvals, 2);
    assert_eq!(t.next.routing.channel.as_deref(), Some("C0APPROVALS"));
    assert_eq!(
        t.next.expires_at,
        later(5 + 3600),
        "capped by the policy's expires_after"
    );
    assert_eq!(t.next.summary.as_deref(), Some("Delete c1, c2"));
    assert_eq!(t.next.version, row.version + 1);
    assert_eq!(t.happened[0].kind, AuditKind::Requested);
    assert_eq!(t.happened[0].data["source"], "shared_table");
    assert_eq!(
        t.happened[0].data["server"], "github",
        "audit events carry the server, as the API's do"
    );

    let denied = adopt(&row, &self::class(TierAction::Deny, 1), None, later(5));
    assert_eq!(denied.next.status, Status::Denied);
    assert_eq!(denied.happened[1].kind, AuditKind::DeniedByPolicy);

    let auto = self::class(TierAction::AutoApprove, 1);
    let inexact = adopt(&row, &auto, Some("the number 1e400 …"), later(5));
    assert_eq!(
        inexact.next.status,
        Status::Denied,
        "not even the auto-approve tier approves what cannot be shown"
    );
    let reason = inexact.next.reason.as_deref().unwrap();
    assert!(
        reason.contains("exactly as stored: the number 1e400"),
        "{reason}"
    );
}

// ---- property test: no sequence of events reaches an illegal state ----

fn arb_event() -> impl Strategy<Value = Event> {
    let user = prop::sample::select(vec!["U1", "U2", "U3", "U0AGENT"]);
    let caller = prop::sample::select(vec![Some("agent"), Some("other"), None]);
    let params = prop::sample::select(vec![
        json!({"customer_ids": ["c1", "c2"]}),
        json!({"customer_ids": ["c1"]}),
        json!([1]),
    ]);
    prop_oneof![
        (user.clone(), any::<bool>()).prop_map(|(u, approve)| vote(
            u,
            if approve {
                Decision::Approve
            } else {
                Decision::Deny
            }
        )),
        (user, params.clone()).prop_map(|(u, p)| Event::EditApprove {
            by: crate::approval::Decider::approver(u),
            parameters: p,
            parameters_shown: None,
        }),
        (params, caller.clone()).prop_map(|(p, c)| Event::Execute {
            parameters: p,
            tool_name: None,
            server: None,
            caller: c.map(Into::into)
        }),
        caller.prop_map(|c| Event::Cancel {
            caller: c.map(Into::into)
        }),
        Just(Event::Expire),
    ]
}

fn legal(from: Status, to: Status) -> bool {
    use Status::*;
    from == to
        || matches!(
            (from, to),
            (Pending, Approved | Denied | Expired | Cancelled) | (Approved, Executed | Expired)
        )
}

proptest! {
    #[test]
    fn no_event_sequence_reaches_an_illegal_state_or_executes_twice(
        required in 1u32..4,
        steps in prop::collection::vec((arb_event(), 0i64..900), 1..40),
    ) {
        let mut current = pending(required);
        let mut now = t0();
        let mut executions = 0;
        let mut approved_parameters = None;
        for (event, dt) in steps {
            now += chrono::Duration::seconds(dt);
            // A refusal leaves `current` untouched by construction (it is only borrowed).
            if let Ok(t) = apply(&current, &event, now) {
                {
                    let next = t.next;
                    prop_assert!(legal(current.status, next.status), "{} -> {}", current.status, next.status);
                    prop_assert_eq!(next.version, current.version + 1);
                    prop_assert!(!t.happened.is_empty());
                    if current.status.is_terminal() {
                        prop_assert!(false, "a terminal state accepted {:?}", event);
                    }
                    if next.status == Status::Approved && current.status == Status::Pending {
                        prop_assert!(next.approvals() >= required as usize);
                        prop_assert!(now < next.expires_at);
                        approved_parameters = Some(next.parameters.clone());
                    }
                    if next.status == Status::Executed {
                        executions += 1;
                        if let Event::Execute { parameters, .. } = &event {
                            prop_assert_eq!(Some(parameters), approved_parameters.as_ref());
                        }
                        prop_assert!(now < next.expires_at);
                    }
                    let mut users: Vec<_> = next.votes.iter().map(|v| v.user.clone()).collect();
                    users.sort();
                    users.dedup();
                    prop_assert_eq!(users.len(), next.votes.len(), "one vote per person");
                    prop_assert!(next.votes.iter().all(|v| Some(&v.user) != next.requested_by.as_ref()));
                    current = next;
                }
            }
        }
        prop_assert!(executions <= 1, "executed {} times", executions);
    }
}

#[test]
fn a_claim_in_the_shared_table_is_recorded_as_an_execute_by_the_rows_requester() {
    let mut row = pending(1);
    row.token_name = None;
    let approved = apply(&row, &vote("U0ALICE", Decision::Approve), t0())
        .unwrap()
        .next;
    assert_eq!(
        claimed(&approved, t0()),
        None,
        "not claimed: still approved"
    );
    let mut executed = approved.clone();
    executed.status = Status::Executed;
    executed.executed_at = Some(t0());
    let (before, happening) = claimed(&executed, t0()).unwrap();
    assert_eq!(before.status, Status::Approved);
    assert_eq!(before.executed_at, None);
    assert_eq!(happening.kind, AuditKind::Executed);
    assert_eq!(happening.actor.as_deref(), Some("U0AGENT"));
    assert_eq!(happening.data["source"], "shared_table");
    assert_eq!(
        happening.data["parameters_sha256"],
        canonical::value_sha256_hex(&executed.parameters)
    );
    executed.token_name = Some("agent".into());
    assert_eq!(
        claimed(&executed, t0()),
        None,
        "a token's row is not claimed"
    );
}
