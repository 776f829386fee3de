//! The approval state machine as pure functions: given an approval, an event and the
//! time, say what the approval becomes and what happened, or why the event is refused.
//!
//! The store runs these inside a transaction and writes the result with a
//! compare-and-set on `version`, so two concurrent events cannot both win.

mod events;
mod opening;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Approval, Decision, Status};
use crate::canonical;
pub use events::{apply, claimed, refused};
pub use opening::{adopt, open};

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
        /// When the vote was clicked on a message: the parameters it showed, as
        /// [`parameters_fingerprint`] gives them (empty: a message too old to say). An
        /// approve is refused when the approval was edited to other parameters since
        /// (the message had not been updated yet). `None`: not cast on a message.
        parameters_shown: Option<String>,
    },
    /// "Edit & approve": new parameters, and the editor's approval of them.
    EditApprove {
        by: Decider,
        parameters: Value,
        /// The [`crate::approval::parameters_fingerprint`] of the parameters the edit
        /// started from (the modal showed): refused when someone else's edit has
        /// replaced them since. `None`: not known (nothing to compare).
        parameters_shown: Option<String>,
    },
    /// The requester runs the action; `parameters` must equal the approved ones,
    /// `tool_name`, when given, the approved tool, and `server`, when given, the MCP
    /// server the approval was asked for.
    Execute {
        parameters: Value,
        tool_name: Option<String>,
        server: Option<String>,
        caller: Option<String>,
    },
    /// An operator with access to the database decides alone, outside Slack
    /// (`signoff decide`, break-glass): `by` is the name they gave. It decides at once,
    /// whatever the approvers list and `required_approvals` say, but only a pending,
    /// unexpired request, never the requester's own; a reason is optional, as in Slack.
    BreakGlass {
        by: String,
        decision: Decision,
        reason: Option<String>,
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
    /// An execute the gate refused: the approval is unchanged, the attempt recorded.
    ExecuteRefused,
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
            AuditKind::ExecuteRefused => "execute_refused",
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
    #[error(
        "the parameters were edited after the message you clicked was shown; approve the \
         updated message if you agree with them"
    )]
    EditedSinceShown,
    #[error("this approval is for another tool")]
    ToolDiffers,
    #[error("this approval is for another MCP server")]
    ServerDiffers,
    #[error("edited parameters must be a JSON object")]
    ParametersNotObject,
    #[error("this request belongs to another API token")]
    NotOwner,
    #[error("this request has not reached its expiry time")]
    NotDue,
}

/// How a message shows an approval's parameters to whoever clicks Approve on it
/// ([`Event::Vote`]'s `parameters_shown`): the SHA-256 of their canonical text,
/// numbers by value (a store may give them back in another form).
pub fn parameters_fingerprint(parameters: &Value) -> String {
    canonical::value_sha256_hex(parameters)
}

/// The policy's identity in `decided_by` for decisions nobody clicked.
pub const POLICY_ACTOR: &str = "policy";

/// After a vote: any deny denies; enough distinct approvals approve.
pub(super) fn settle(
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
            json!({ "parameters_sha256": canonical::value_sha256_hex(&next.parameters) }),
        )];
    }
    Vec::new()
}

pub(super) fn decide(
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

pub(super) fn check_pending(approval: &Approval) -> Result<(), Rejection> {
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
    if approval.is_requester(by.user.as_str()) {
        return Err(Rejection::RequesterCannotVote);
    }
    if !by.approver {
        return Err(Rejection::NotAnApprover);
    }
    Ok(())
}

/// Who may vote, now: [`check_can_decide`], and the vote is the decider's first. A
/// Deny click is refused by it before its modal opens, not once the reason is
/// written.
pub fn check_can_vote(
    approval: &Approval,
    by: &Decider,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    check_can_decide(approval, by, now)?;
    if approval.has_voted(&by.user) {
        return Err(Rejection::AlreadyVoted);
    }
    Ok(())
}

/// Execute and cancel belong to the token that asked. Rows inserted straight into the
/// shared table have no token: no token may act on them (their program reads the
/// decision from the table).
pub(super) fn check_owner(approval: &Approval, caller: Option<&str>) -> Result<(), Rejection> {
    match (approval.token_name.as_deref(), caller) {
        (Some(owner), Some(caller)) if owner != caller => Err(Rejection::NotOwner),
        (None, Some(_)) => Err(Rejection::NotOwner),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod break_glass_tests;
