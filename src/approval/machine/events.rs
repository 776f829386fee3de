//! The events that move an approval after it opened, a function each: a vote, an
//! edit, the execute gate, a cancel, the expiry.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{
    AuditKind, Decider, Event, Happening, Rejection, Transition, check_can_decide, check_can_vote,
    check_owner, check_pending, decide, parameters_fingerprint, settle,
};
use crate::approval::{Approval, BREAK_GLASS_VIA, Decision, Status, Vote};
use crate::canonical;

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
            parameters_shown,
        } => {
            let shown = parameters_shown.as_deref();
            vote(&mut next, approval, by, (*decision, reason), shown, now)?
        }
        Event::EditApprove {
            by,
            parameters,
            parameters_shown,
        } => {
            let shown = parameters_shown.as_deref();
            edit_approve(&mut next, approval, by, parameters, shown, now)?
        }
        Event::Execute {
            parameters,
            tool_name,
            server,
            caller,
        } => execute(
            &mut next,
            approval,
            parameters,
            (tool_name.as_deref(), server.as_deref()),
            caller.as_deref(),
            now,
        )?,
        Event::BreakGlass {
            by,
            decision,
            reason,
        } => break_glass(&mut next, approval, by, *decision, reason.as_deref(), now)?,
        Event::Cancel { caller } => cancel(&mut next, approval, caller.as_deref(), now)?,
        Event::Expire => expire(&mut next, approval, now)?,
    };
    Ok(Transition { next, happened })
}

fn vote(
    next: &mut Approval,
    approval: &Approval,
    by: &Decider,
    (decision, reason): (Decision, &Option<String>),
    parameters_shown: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_can_vote(approval, by, now)?;
    if decision == Decision::Approve && edited_since_shown(approval, parameters_shown) {
        return Err(Rejection::EditedSinceShown);
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

/// Whether an edit has replaced the parameters whose fingerprint a message or form
/// showed (`parameters_shown`; `None`: nothing to compare). Parameters change only by
/// an edit: an approval never edited shows the same ones everywhere, so only an edited
/// one is hashed to compare.
fn edited_since_shown(approval: &Approval, parameters_shown: Option<&str>) -> bool {
    approval.original_parameters.is_some()
        && parameters_shown
            .is_some_and(|shown| shown != parameters_fingerprint(&approval.parameters))
}

/// An edit changes what would run, so approvals given for the old parameters no
/// longer count; the editor's own approval counts for the new ones. An edit started
/// from parameters another edit has replaced since is refused (it would silently undo
/// that edit), and one that changes nothing is the editor's approve, one per person,
/// so that submitting the form unchanged cannot withdraw everyone else's approvals.
fn edit_approve(
    next: &mut Approval,
    approval: &Approval,
    by: &Decider,
    parameters: &Value,
    parameters_shown: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_can_decide(approval, by, now)?;
    if !parameters.is_object() {
        return Err(Rejection::ParametersNotObject);
    }
    if edited_since_shown(approval, parameters_shown) {
        return Err(Rejection::EditedSinceShown);
    }
    if crate::canonical::same_value(parameters, &approval.parameters) {
        return vote(next, approval, by, (Decision::Approve, &None), None, now);
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
/// tool (and MCP server, when the caller names the ones about to run) and parameters.
/// An open request past its expiry is refused as expired before anything else is
/// looked at: expired is what a read says it is (`as_seen_at`).
fn execute(
    next: &mut Approval,
    approval: &Approval,
    parameters: &Value,
    (tool_name, server): (Option<&str>, Option<&str>),
    caller: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_owner(approval, caller)?;
    if !approval.status.is_terminal() && approval.is_expired_at(now) {
        return Err(Rejection::Expired);
    }
    if tool_name.is_some_and(|tool| tool != approval.tool_name) {
        return Err(Rejection::ToolDiffers);
    }
    // An approval asked for without a server runs for none.
    if server.is_some_and(|server| approval.server.as_deref() != Some(server)) {
        return Err(Rejection::ServerDiffers);
    }
    if approval.status != Status::Approved {
        return Err(match approval.status {
            Status::Pending => Rejection::NotApproved(Status::Pending),
            other => Rejection::AlreadyDecided(other),
        });
    }
    if !canonical::same_value(parameters, &approval.parameters) {
        return Err(Rejection::ParametersDiffer);
    }
    next.status = Status::Executed;
    next.executed_at = Some(now);
    Ok(vec![Happening::new(
        AuditKind::Executed,
        caller,
        // The approved parameters' hash, as the `approved` event has it: the caller's
        // text may write the same numbers otherwise (`1e2` for `100`).
        json!({ "parameters_sha256": canonical::value_sha256_hex(&approval.parameters) }),
    )])
}

/// The audit event of an execute `event` the gate refused for `rejection`: the approval
/// is unchanged, but the attempt is on record (an agent asking to run other parameters,
/// another tool or server, or twice), by its caller, with why and the hash of the
/// parameters it sent. `None` for any other event.
pub fn refused(event: &Event, rejection: &Rejection) -> Option<Happening> {
    let Event::Execute {
        parameters,
        tool_name,
        server,
        caller,
    } = event
    else {
        return None;
    };
    Some(Happening::new(
        AuditKind::ExecuteRefused,
        caller.as_deref(),
        json!({
            "reason": rejection.to_string(),
            "parameters_sha256": canonical::value_sha256_hex(parameters),
            "tool_name": tool_name,
            "server_named": server,
        }),
    ))
}

/// Another program's claim of `approval` in the shared table: its row, inserted there
/// (no token), moved from approved to executed at `at` by the program itself, which
/// the database allows only as [`execute`] would (approved, unexpired, the parameters
/// as approved; see migrations/postgres/0025_shared_claim.sql). Answers the approval
/// as it was before the claim (what its message and waiters knew) and the `executed`
/// event to record, as the API's execute records one, by the row's requester (as its
/// `requested` event names it); `None` when `approval` is not so claimed.
pub fn claimed(approval: &Approval, at: DateTime<Utc>) -> Option<(Approval, Happening)> {
    if approval.status != Status::Executed || approval.token_name.is_some() {
        return None;
    }
    let mut before = approval.clone();
    before.status = Status::Approved;
    before.executed_at = None;
    let happening = Happening::new(
        AuditKind::Executed,
        approval.requested_by.as_deref(),
        json!({
            "parameters_sha256": canonical::value_sha256_hex(&approval.parameters),
            "source": "shared_table",
            "claimed_at": at,
        }),
    );
    Some((before, happening))
}

/// A decision by an operator outside Slack: final at once, recorded as a vote by `by`
/// and, in the audit log, as break-glass (`via`, `break_glass`).
fn break_glass(
    next: &mut Approval,
    approval: &Approval,
    by: &str,
    decision: Decision,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_pending(approval)?;
    if approval.is_expired_at(now) {
        return Err(Rejection::Expired);
    }
    if approval.is_requester(by) {
        return Err(Rejection::RequesterCannotVote);
    }
    if approval.has_voted(by) {
        return Err(Rejection::AlreadyVoted);
    }
    let reason = reason
        .map(str::trim)
        .filter(|reason| !reason.is_empty())
        .map(str::to_owned);
    next.votes.push(Vote {
        user: by.to_owned(),
        decision,
        at: now,
        reason: reason.clone(),
    });
    let (status, kind, mut data) = match decision {
        Decision::Approve => (
            Status::Approved,
            AuditKind::Approved,
            json!({ "parameters_sha256": canonical::value_sha256_hex(&next.parameters) }),
        ),
        Decision::Deny => (Status::Denied, AuditKind::Denied, json!({})),
    };
    decide(next, status, by, reason.clone(), now);
    next.decided_via = Some(BREAK_GLASS_VIA.to_owned());
    let mut vote = json!({ "decision": decision.as_str() });
    for fields in [&mut vote, &mut data] {
        fields["reason"] = json!(reason);
        fields["via"] = json!(BREAK_GLASS_VIA);
        fields["break_glass"] = json!(true);
    }
    Ok(vec![
        Happening::new(AuditKind::Vote, Some(by), vote),
        Happening::new(kind, Some(by), data),
    ])
}

fn cancel(
    next: &mut Approval,
    approval: &Approval,
    caller: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, Rejection> {
    check_owner(approval, caller)?;
    check_pending(approval)?;
    // Past its expiry it is expired, whether or not the expiry has been recorded yet.
    if approval.is_expired_at(now) {
        return Err(Rejection::Expired);
    }
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
    Ok(vec![expired(next, approval.status, now)])
}

/// Records that `next`, open as `was`, expired at `now`: by the scheduler's pass, or
/// when signoff takes in a row already past its expiry.
pub(super) fn expired(next: &mut Approval, was: Status, now: DateTime<Utc>) -> Happening {
    next.status = Status::Expired;
    // An approval that was never executed keeps its decider; a pending one was decided
    // by nobody.
    if was == Status::Pending {
        next.decision_at = Some(now);
    }
    Happening::new(AuditKind::Expired, None, json!({ "was": was.as_str() }))
}
