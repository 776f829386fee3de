//! A vote clicked in Slack, checked on the writer against the approval as the batch
//! reads it, so that the click needs no read of its own before it: whether the message
//! clicked is one of the approval's (when its metadata does not name the approval;
//! looked up in the statement that reads the batch's approvals, see [`asked`]), and
//! whether the voter is one of
//! its approvers where the list alone says so (`Routing::lists`). A user group that
//! does not name the voter directly is Slack's to expand: the vote answers
//! [`Voted::AskSlack`] and changes nothing, and the caller asks Slack and votes with
//! `Op::Apply`, as any other edge does.

use chrono::{DateTime, Utc};

use super::current::Current;
use super::work::apply;
use super::{Done, Op};
use crate::approval::{ApprovalId, Decider, Decision, Event};
use crate::ids::UserId;
use crate::jobs::{Deliveries, MessageKey};
use crate::store::{Result, StoreError, Voted};

/// Where a vote was clicked, as far as the writer checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shown {
    /// On a message whose metadata names the approval: Slack signs the payload, and
    /// only signoff's app posts messages whose clicks reach signoff.
    Named,
    /// On this message, which counts if it is one of the approval's recorded
    /// messages; the batch's read finds out ([`check_shown`]).
    On(MessageKey),
    /// Checked in this batch: whether it is.
    Checked(bool),
}

/// The messages the batch's votes were clicked on that [`check_shown`] must look up,
/// each with its approval.
pub(super) fn asked(ops: &[Op]) -> Vec<(ApprovalId, &MessageKey)> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Vote {
                id,
                shown: Shown::On(message),
                ..
            } => Some((*id, message)),
            _ => None,
        })
        .collect()
}

/// Records what the batch's read found for the pairs [`asked`] gave, in its order:
/// whether each message is one of its approval's.
pub(super) fn check_shown(ops: &mut [Op], found: Vec<bool>) {
    let mut found = found.into_iter();
    for op in ops {
        if let Op::Vote {
            shown: shown @ Shown::On(_),
            ..
        } = op
        {
            *shown = Shown::Checked(found.next().unwrap_or(false));
        }
    }
}

/// A vote clicked in Slack, as [`cast`] checks it.
pub(super) struct Click<'a> {
    pub user: &'a UserId,
    pub decision: Decision,
    /// Where it was clicked.
    pub shown: &'a Shown,
    /// The parameters the message showed ([`Event::Vote`]'s `parameters_shown`).
    pub parameters_shown: Option<&'a str>,
}

/// Casts a `click`'s vote on an approval of `current`: the message first, then the
/// approver list, then the state machine with every other rule.
pub(super) fn cast(
    current: &mut Current,
    id: ApprovalId,
    Click {
        user,
        decision,
        shown,
        parameters_shown,
    }: Click<'_>,
    now: DateTime<Utc>,
    deliveries: Deliveries,
) -> Result<(Voted, Done)> {
    let approval = current.get(id).ok_or(StoreError::NotFound(id))?;
    // Fail closed: a message not checked (there is no such path) counts as elsewhere.
    if !matches!(shown, Shown::Named | Shown::Checked(true)) {
        return Ok((Voted::NotShownThere, Done::default()));
    }
    let Some(approver) = approval.lists(user.as_str(), now) else {
        return Ok((Voted::AskSlack, Done::default()));
    };
    let by = Decider {
        user: user.to_string(),
        approver,
    };
    let event = Event::Vote {
        by,
        decision,
        reason: None,
        parameters_shown: parameters_shown.map(str::to_owned),
    };
    let (after, done) = apply(current, id, &event, now, deliveries)?;
    Ok((Voted::Counted(Box::new(after)), done))
}
