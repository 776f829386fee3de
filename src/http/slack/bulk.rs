//! Approve all / Deny all on a batch's message (`batch_window`, see `slack::batch`).
//! Each item of the clicked message that still waits gets the clicker's vote through
//! the state machine, exactly as a click on its own button would: the same checks of
//! who may decide, one decision each, its own audit events. Items the clicker may not
//! decide, or that were decided meanwhile, stay as they are, and the clicker is told
//! which and why. Approve all approves the parameters as requested: an item edited
//! since is left to its own Approve button.

use std::collections::HashMap;

use futures_util::future::join_all;
use serde_json::Value;

use super::interactions::{
    Actor, Clicked, FORM_NOT_OPENED, decider, ephemeral, open_view, trigger,
};
use super::{Answer, GONE, NOT_FROM_A_REQUEST, Refused, Unusable, find_from, refusal_text};
use crate::approval::machine::check_can_vote;
use crate::approval::{Approval, ApprovalId, Decision, Event, Status, parameters_fingerprint};
use crate::http::AppState;
use crate::slack::app::SlackApp;
use crate::slack::batch::{deny_all_modal, deny_all_source};
use crate::slack::modals::{REASON_INPUT, modal_errors, submitted_reason};
use crate::store::StoreError;

/// Approve all: the clicker's approve vote on every waiting item of the message.
pub(super) async fn approve_all(
    state: &AppState,
    slack: &SlackApp,
    leader: &str,
    clicked: &Clicked,
    actor: &Actor,
) -> Result<Answer, Refused> {
    let items = match waiting_items(state, leader, clicked).await {
        Ok(items) => items,
        Err(message) => return ephemeral(slack, actor, message),
    };
    let refused = decide_all(state, slack, &items, actor, (Decision::Approve, None)).await;
    match refusals_text(&items, &refused, "approved") {
        Some(text) => ephemeral(slack, actor, text),
        None => Ok(None),
    }
}

/// Deny all: opens the modal that asks for one reason, once the clicker is known to be
/// able to deny at least one waiting item.
pub(super) async fn open_deny_all(
    state: &AppState,
    slack: &SlackApp,
    (leader, trigger_id): (&str, Option<&str>),
    clicked: &Clicked,
    actor: &Actor,
) -> Result<Answer, Refused> {
    let items = match waiting_items(state, leader, clicked).await {
        Ok(items) => items,
        Err(message) => return ephemeral(slack, actor, message),
    };
    let trigger_id = trigger(trigger_id)?;
    let mut first_refusal = None;
    let mut decidable = 0;
    for item in &items {
        let by = match decider(slack, item, &actor.user, state.clock.now()).await {
            Ok(by) => by,
            Err(message) => return ephemeral(slack, actor, message),
        };
        match check_can_vote(item, &by, state.clock.now()) {
            Ok(()) => decidable += 1,
            Err(rejection) => {
                first_refusal.get_or_insert_with(|| refusal_text(&rejection, item));
            }
        }
    }
    if decidable == 0 {
        let text = first_refusal.unwrap_or_else(|| NOT_FROM_A_REQUEST.into());
        return ephemeral(slack, actor, text);
    }
    // The waiting items the message's metadata named (a batch's, so at most ten).
    let named: Vec<ApprovalId> = items
        .iter()
        .map(|item| item.id)
        .filter(|id| clicked.for_approvals.contains(id))
        .collect();
    let view = deny_all_modal(&items[0], items.len(), &clicked.key, &named);
    open_view(slack, trigger_id, view, actor, FORM_NOT_OPENED);
    Ok(None)
}

/// The Deny all modal was submitted: the clicker's deny vote, with the reason, on every
/// item of the message still waiting. When none could be denied the modal stays open
/// and says why.
pub(super) async fn deny_all_submitted(
    state: &AppState,
    slack: &SlackApp,
    view: &Value,
    actor: &Actor,
) -> Result<Answer, Refused> {
    let refuse = |message: &str| Ok(Some(modal_errors(REASON_INPUT, message)));
    let reason = match submitted_reason(view) {
        Ok(reason) => reason,
        Err(message) => return refuse(&message),
    };
    let Some((leader, key, named)) =
        deny_all_source(view["private_metadata"].as_str().unwrap_or_default())
    else {
        return refuse("This form is out of date: open the requests' message and click again.");
    };
    // A submission names no channel: what is left undenied is said where the
    // requests' message is.
    let actor = &Actor {
        user: actor.user.clone(),
        channel: Some(key.channel.clone()),
    };
    // A modal carries no message metadata: the items the clicked message's own
    // metadata listed come back in the form's, which only signoff writes.
    let clicked = Clicked {
        key,
        for_approvals: named,
    };
    let items = match waiting_items(state, &leader.to_string(), &clicked).await {
        Ok(items) => items,
        Err(message) => return refuse(&message),
    };
    let refused = decide_all(state, slack, &items, actor, (Decision::Deny, reason)).await;
    if refused.len() == items.len() {
        let text = refusals_text(&items, &refused, "denied").unwrap_or_default();
        return refuse(&text);
    }
    if let Some(text) = refusals_text(&items, &refused, "denied") {
        return ephemeral(slack, actor, text);
    }
    Ok(None)
}

/// The items of `leader`'s batch on the clicked message that still wait, in order; or
/// the sentence to show.
async fn waiting_items(
    state: &AppState,
    leader: &str,
    clicked: &Clicked,
) -> Result<Vec<Approval>, String> {
    let leader: ApprovalId = leader.parse().map_err(|_| GONE.to_owned())?;
    let members = state.store.batch_members(leader).await.map_err(|error| {
        tracing::error!(%error, "cannot read a batch");
        "signoff could not read these requests just now; please try again.".to_owned()
    })?;
    if members.first() != Some(&leader) {
        return Err(NOT_FROM_A_REQUEST.into());
    }
    // The members the message's metadata names are its own: read together. Any other
    // is checked against the message one by one (as a single click is).
    let named: Vec<ApprovalId> = members
        .iter()
        .copied()
        .filter(|id| clicked.for_approvals.contains(id))
        .collect();
    let mut read: HashMap<ApprovalId, Approval> = match state.store.get_many(&named).await {
        Ok(found) => found.into_iter().map(|item| (item.id, item)).collect(),
        Err(error) => {
            tracing::error!(%error, "cannot read a batch's approvals");
            return Err(Unusable::Unreadable.into());
        }
    };
    let mut on_message = Vec::with_capacity(members.len());
    for id in members {
        let found = if clicked.for_approvals.contains(&id) {
            read.remove(&id).ok_or(Unusable::Gone)
        } else {
            find_from(state, &id.to_string(), &clicked.key, &clicked.for_approvals).await
        };
        match found {
            Ok(item) => on_message.push(item),
            Err(Unusable::Elsewhere) => {}
            Err(unusable) => return Err(unusable.into()),
        }
    }
    if on_message.is_empty() {
        return Err(NOT_FROM_A_REQUEST.into());
    }
    on_message.retain(|item| item.status == Status::Pending);
    if on_message.is_empty() {
        return Err("Every request in this message is decided already.".into());
    }
    Ok(on_message)
}

/// Applies the clicker's vote to each item (together: the writer commits them in one
/// transaction). Answers the refusals: the item's index and what to say.
async fn decide_all(
    state: &AppState,
    slack: &SlackApp,
    items: &[Approval],
    actor: &Actor,
    (decision, reason): (Decision, Option<String>),
) -> Vec<(usize, String)> {
    let now = state.clock.now();
    let votes = items.iter().enumerate().map(|(n, item)| {
        let vote = (decision, reason.clone());
        async move {
            let outcome = vote_on(state, slack, item, actor, vote, now).await;
            outcome.map_err(|message| (n, message))
        }
    });
    join_all(votes)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// Why Approve all passed over an item.
const EDITED: &str = "It was edited after the request: approve it with its own Approve button.";

/// One item's vote; else what to say about it.
async fn vote_on(
    state: &AppState,
    slack: &SlackApp,
    item: &Approval,
    actor: &Actor,
    (decision, reason): (Decision, Option<String>),
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    // Approve all is for the parameters as requested: an item edited since has its
    // own Approve button, which names the parameters its message shows.
    let parameters_shown = match decision {
        Decision::Approve if item.original_parameters.is_some() => return Err(EDITED.into()),
        // Its fingerprint as read: should an edit land before the vote, it is refused.
        Decision::Approve => Some(parameters_fingerprint(&item.parameters)),
        Decision::Deny => None,
    };
    let by = decider(slack, item, &actor.user, now).await?;
    let event = Event::Vote {
        by,
        decision,
        reason,
        parameters_shown,
    };
    match state.store.apply(item.id, event, now).await {
        Ok(_) => Ok(()),
        Err(StoreError::Rejected { rejection, current }) => Err(refusal_text(&rejection, &current)),
        Err(StoreError::NotFound(_)) => Err(GONE.into()),
        Err(error) => {
            tracing::error!(%error, approval_id = %item.id, "bulk vote not recorded");
            Err("signoff could not record this one just now; please try again.".into())
        }
    }
}

/// What the clicker reads when some items were not `done` (approved, denied): each
/// refused item and why, or once when every refusal says the same.
fn refusals_text(items: &[Approval], refused: &[(usize, String)], done: &str) -> Option<String> {
    let (_, first) = refused.first()?;
    let counted = items.len() - refused.len();
    let head = format!("{counted} of {} {done}.", items.len());
    if refused.iter().all(|(_, why)| why == first) {
        return Some(format!("{head} {first}"));
    }
    let lines: Vec<String> = refused
        .iter()
        .map(|(n, why)| format!("• ID `{}`: {why}", items[*n].id.short()))
        .collect();
    Some(format!("{head}\n{}", lines.join("\n")))
}
