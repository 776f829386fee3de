//! `POST /slack/interactions`: a button click (Approve, or Deny / Edit & approve,
//! which open a modal; on a batch's message also Approve all / Deny all, see
//! [`super::bulk`]; Show all parameters, which only shows them) or a modal's
//! submission. A decision counts only when it comes
//! from a message signoff posted for that approval, and the state machine decides
//! with who the clicker is (see `slack::approvers`) whether it counts. An Approve
//! click counts for the parameters its message showed, never for ones an edit put in
//! their place since. It goes to the writer without a read of its own, which checks
//! all of that against the approval as it reads it (`Store::vote`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::payload::Payload;
use super::{
    Answer, GONE, NOT_FROM_A_REQUEST, Refused, bulk, find_from, form, refusal_text, respond,
    verified,
};
use crate::approval::machine::{check_can_decide, check_can_vote};
use crate::approval::{Approval, ApprovalId, Decider, Decision, Event, Rejection};
use crate::http::AppState;
use crate::http::api::ApiError;
use crate::http::api::extract::RawBody;
use crate::ids::UserId;
use crate::jobs::MessageKey;
use crate::policy::Classified;
use crate::slack::app::SlackApp;
use crate::slack::batch::{ACTION_APPROVE_ALL, ACTION_DENY_ALL, DENY_ALL_CALLBACK};
use crate::slack::blocks::{
    self, ACTION_APPROVE, ACTION_DENY, ACTION_EDIT, ACTION_SHOW_PARAMETERS,
};
use crate::slack::client::SlackError;
use crate::slack::modals::{self, DENY_CALLBACK, EDIT_CALLBACK, PARAMETERS_INPUT, REASON_INPUT};
use crate::store::{StoreError, Voted};

/// Who clicked or submitted, and where (for a reply only they see).
pub(super) struct Actor {
    pub(super) user: UserId,
    pub(super) channel: Option<String>,
}

#[tracing::instrument(skip_all)]
pub(super) async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    let slack = match verified(&state, &headers, &body) {
        Ok(slack) => slack.clone(),
        Err(refused) => return refused.into_response(),
    };
    let raw = match form(&body).map(|mut fields| fields.remove("payload")) {
        Ok(Some(raw)) => raw,
        Ok(None) => return Refused::BadRequest("missing payload field".into()).into_response(),
        Err(refused) => return refused.into_response(),
    };
    let payload = match Payload::from_json(&raw) {
        Ok(payload) => payload,
        Err(error) => return unreadable(error).into_response(),
    };
    respond(interact(&state, &slack, &payload).await)
}

/// Why a payload could not be read.
pub(super) fn unreadable(error: serde_json::Error) -> Refused {
    Refused::BadRequest(format!("payload is not an interaction payload: {error}"))
}

/// One interaction payload (block_actions, view_submission), however it came: the
/// signed HTTP form's `payload`, or a Socket Mode envelope's. The answer is what to
/// reply (an empty ack, or a modal's errors).
pub(super) async fn interact(
    state: &AppState,
    slack: &SlackApp,
    payload: &Payload<'_>,
) -> Result<Answer, Refused> {
    let Some(Ok(user)) = payload.user.id.as_str().map(UserId::parse) else {
        return Err(Refused::BadRequest("payload has no valid user.id".into()));
    };
    let channel = payload
        .channel
        .id
        .as_str()
        .or(payload.container.channel_id.as_str())
        .map(str::to_owned);
    let actor = Actor { user, channel };
    match payload.kind.as_str() {
        Some("block_actions") => block_action(state, slack, payload, actor).await,
        Some("view_submission") => view_submission(state, slack, payload, actor).await,
        // Other interaction types (view_closed, shortcuts) need nothing from us.
        _ => Ok(None),
    }
}

async fn block_action(
    state: &AppState,
    slack: &SlackApp,
    payload: &Payload<'_>,
    actor: Actor,
) -> Result<Answer, Refused> {
    let action = payload.actions.first();
    let (Some(action_id), Some(value)) = (
        action.and_then(|action| action.action_id.as_str()),
        action.and_then(|action| action.value.as_str()),
    ) else {
        return Err(Refused::BadRequest(
            "block action without action_id and value".into(),
        ));
    };
    let Some(clicked) = clicked_message(payload) else {
        return ephemeral(slack, &actor, NOT_FROM_A_REQUEST.into());
    };
    match action_id {
        ACTION_APPROVE_ALL => {
            return bulk::approve_all(state, slack, value, &clicked, &actor).await;
        }
        ACTION_DENY_ALL => {
            let trigger = payload.trigger_id.as_str();
            return bulk::open_deny_all(state, slack, (value, trigger), &clicked, &actor).await;
        }
        ACTION_SHOW_PARAMETERS => {
            let trigger = payload.trigger_id.as_str();
            return show_parameters(state, slack, (value, trigger), &clicked, &actor).await;
        }
        _ => {}
    }
    // Approve's value also names the parameters its message shows.
    let (value, parameters_shown) = match action_id {
        ACTION_APPROVE => blocks::read_approve_value(value),
        _ => (value, ""),
    };
    if action_id == ACTION_APPROVE
        && let Some(answer) =
            approve(state, slack, (value, parameters_shown), &clicked, &actor).await
    {
        return answer;
    }
    let approval = match find_from(state, value, &clicked.key, &clicked.for_approvals).await {
        Ok(approval) => approval,
        Err(unusable) => return ephemeral(slack, &actor, unusable.into()),
    };
    let by = match decider(slack, &approval, &actor.user, state.clock.now()).await {
        Ok(by) => by,
        Err(message) => return ephemeral(slack, &actor, message),
    };
    match action_id {
        ACTION_APPROVE => {
            let event = Event::Vote {
                by,
                decision: Decision::Approve,
                reason: None,
                parameters_shown: Some(parameters_shown.to_owned()),
            };
            match state
                .store
                .apply(approval.id, event, state.clock.now())
                .await
            {
                Ok(_) => Ok(None),
                Err(error) => refusal(slack, &actor, error),
            }
        }
        ACTION_DENY | ACTION_EDIT => {
            let trigger_id = payload.trigger_id.as_str();
            open_modal(
                state,
                slack,
                (action_id, trigger_id),
                (&approval, &by),
                &clicked,
                &actor,
            )
        }
        other => Err(Refused::BadRequest(format!("unknown action {other:?}"))),
    }
}

/// Deny or Edit & approve: opens the modal that asks for the reason or the edited
/// parameters, unless the clicker may not decide (refused now rather than after they
/// filled it in).
fn open_modal(
    state: &AppState,
    slack: &SlackApp,
    (action_id, trigger_id): (&str, Option<&str>),
    (approval, by): (&Approval, &Decider),
    clicked: &Clicked,
    actor: &Actor,
) -> Result<Answer, Refused> {
    // A Deny is a vote; an approver who approved may still edit.
    let can = if action_id == ACTION_DENY {
        check_can_vote(approval, by, state.clock.now())
    } else {
        check_can_decide(approval, by, state.clock.now())
    };
    if let Err(rejection) = can {
        return ephemeral(slack, actor, refusal_text(&rejection, approval));
    }
    let trigger_id = trigger(trigger_id)?;
    let named = clicked.for_approvals.contains(&approval.id);
    let view = if action_id == ACTION_DENY {
        modals::deny_modal(approval, &clicked.key, named)
    } else {
        modals::edit_modal(approval, &clicked.key, named)
    };
    open_view(slack, trigger_id, view, actor, FORM_NOT_OPENED);
    Ok(None)
}

/// Show all parameters: the read-only modal with the whole parameters of the approval
/// whose message was clicked. Not a vote, so anyone who sees the message may open it;
/// a click for an approval that is not there (or not on that message) is told why.
async fn show_parameters(
    state: &AppState,
    slack: &SlackApp,
    (value, trigger_id): (&str, Option<&str>),
    clicked: &Clicked,
    actor: &Actor,
) -> Result<Answer, Refused> {
    let approval = match find_from(state, value, &clicked.key, &clicked.for_approvals).await {
        Ok(approval) => approval,
        Err(unusable) => return ephemeral(slack, actor, unusable.into()),
    };
    let trigger_id = trigger(trigger_id)?;
    // Perhaps a passing failure, perhaps parameters too large for a form Slack takes.
    let told = format!(
        "Slack would not open the parameters: click Show all parameters again in a \
         moment, or {}",
        modals::where_to_read(&approval)
    );
    open_view(
        slack,
        trigger_id,
        modals::parameters_modal(&approval),
        actor,
        &told,
    );
    Ok(None)
}

/// The click's `trigger_id`, which a form needs: a block action without one is malformed.
pub(super) fn trigger(trigger_id: Option<&str>) -> Result<&str, Refused> {
    trigger_id.ok_or_else(|| Refused::BadRequest("block action without trigger_id".into()))
}

/// Said to the clicker when Slack would not open a form (Deny, Edit & approve, Deny
/// all).
pub(super) const FORM_NOT_OPENED: &str = "Slack would not open the form, so nothing was \
                                          decided: try again, or decide with the \
                                          message's buttons.";

/// Opens `view` for the click `trigger_id` in the background (the trigger expires 3 s
/// after the click: open it right away, and answer Slack without waiting for it), and
/// tells the clicker `told` when Slack would not open it: the click otherwise did
/// nothing they could see.
pub(super) fn open_view(
    slack: &SlackApp,
    trigger_id: &str,
    view: Value,
    actor: &Actor,
    told: &str,
) {
    let client = slack.client.clone();
    let body = json!({ "trigger_id": trigger_id, "view": view });
    let told = actor
        .channel
        .clone()
        .map(|channel| json!({ "channel": channel, "user": actor.user, "text": told }));
    tokio::spawn(async move {
        if let Err(error) = client.call("views.open", &body).await {
            tracing::warn!(%error, "Slack would not open a form: the clicker is told");
            if let Some(told) = told {
                let _ = client.call("chat.postEphemeral", &told).await;
            }
        }
    });
}

/// Approve: the vote goes to the writer at once, which checks the message clicked,
/// the parameters it showed and the approvers against the approval as it reads it
/// ([`Store::vote`]), so the click costs no read of its own. `None` when only Slack
/// can tell whether the clicker is an approver (a user group): the click then takes
/// the path that reads first.
///
/// [`Store::vote`]: crate::store::Store::vote
async fn approve(
    state: &AppState,
    slack: &SlackApp,
    (value, parameters_shown): (&str, &str),
    clicked: &Clicked,
    actor: &Actor,
) -> Option<Result<Answer, Refused>> {
    let Ok(id) = value.parse::<ApprovalId>() else {
        return Some(ephemeral(slack, actor, GONE.into()));
    };
    // A message whose metadata names the approval needs no check: Slack signs the
    // payload, and only signoff's app posts messages whose clicks reach signoff.
    let shown_in = (!clicked.for_approvals.contains(&id)).then_some(&clicked.key);
    let voted = state
        .store
        .vote(
            id,
            &actor.user,
            Decision::Approve,
            (shown_in, Some(parameters_shown)),
            state.clock.now(),
        )
        .await;
    match voted {
        Ok(Voted::Counted(_)) => Some(Ok(None)),
        Ok(Voted::NotShownThere) => Some(ephemeral(slack, actor, NOT_FROM_A_REQUEST.into())),
        Ok(Voted::AskSlack) => None,
        Err(error) => Some(refusal(slack, actor, error)),
    }
}

async fn view_submission(
    state: &AppState,
    slack: &SlackApp,
    payload: &Payload<'_>,
    actor: Actor,
) -> Result<Answer, Refused> {
    let view = &payload.view;
    let callback = view["callback_id"].as_str().unwrap_or_default();
    let (input, draft) = match callback {
        DENY_CALLBACK => match modals::submitted_reason(view) {
            Ok(reason) => (REASON_INPUT, Draft::Deny { reason }),
            Err(message) => return Ok(Some(modals::modal_errors(REASON_INPUT, &message))),
        },
        EDIT_CALLBACK => {
            let text = view["state"]["values"][PARAMETERS_INPUT][PARAMETERS_INPUT]["value"]
                .as_str()
                .unwrap_or_default();
            match modals::parse_edited_parameters(text) {
                Ok(parameters) => (PARAMETERS_INPUT, Draft::Edit { parameters }),
                Err(message) => {
                    return Ok(Some(modals::modal_errors(PARAMETERS_INPUT, &message)));
                }
            }
        }
        DENY_ALL_CALLBACK => return bulk::deny_all_submitted(state, slack, view, &actor).await,
        _ => return Ok(None),
    };
    let refuse = |message: &str| Ok(Some(modals::modal_errors(input, message)));
    let Some(source) = modals::modal_source(view["private_metadata"].as_str().unwrap_or_default())
    else {
        return refuse("This form is out of date: open the request's message and click again.");
    };
    let id = source.approval_id.to_string();
    // A message known by its own metadata counts as it did for the click.
    let named: &[ApprovalId] = if source.named {
        std::slice::from_ref(&source.approval_id)
    } else {
        &[]
    };
    let approval = match find_from(state, &id, &source.clicked, named).await {
        Ok(approval) => approval,
        Err(unusable) => return refuse(&String::from(unusable)),
    };
    let by = match decider(slack, &approval, &actor.user, state.clock.now()).await {
        Ok(by) => by,
        Err(message) => return refuse(&message),
    };
    if let Draft::Edit { parameters } = &draft
        && let Err(why) = state.policy.check_edit(&classified(&approval), parameters)
    {
        return refuse(&why);
    }
    let event = match draft {
        Draft::Deny { reason } => Event::Vote {
            by,
            decision: Decision::Deny,
            reason,
            parameters_shown: None,
        },
        Draft::Edit { parameters } => Event::EditApprove {
            by,
            parameters,
            parameters_shown: source.shown,
        },
    };
    match state
        .store
        .apply(approval.id, event, state.clock.now())
        .await
    {
        // An empty answer closes the modal.
        Ok(_) => Ok(None),
        Err(StoreError::Rejected {
            rejection: Rejection::EditedSinceShown,
            ..
        }) if input == PARAMETERS_INPUT => refuse(
            "Someone edited the parameters after this form was opened: close it and click \
             Edit & approve again to start from their edit.",
        ),
        Err(StoreError::Rejected { rejection, .. }) => refuse(&refusal_text(&rejection, &approval)),
        Err(error) => Err(ApiError::from(error).into()),
    }
}

/// How `approval`'s request was classified: what an edit must stay within.
fn classified(approval: &Approval) -> Classified<'_> {
    Classified {
        tool: &approval.tool_name,
        server: approval.server.as_deref(),
        annotations: approval.routing.annotations.as_ref(),
        tier: approval.risk_tier,
        rule: approval.routing.rule,
        rule_fingerprint: approval.routing.rule_fingerprint.as_deref(),
        required_approvals: approval.required_approvals,
    }
}

/// The message a click came from, as Slack reports it (and signs).
pub(super) struct Clicked {
    /// Its channel and timestamp.
    pub(super) key: MessageKey,
    /// The approvals its message metadata names, when signoff posted it (a post, a
    /// batch's post or a reminder DM; see [`blocks::POST_EVENT`]).
    pub(super) for_approvals: Vec<ApprovalId>,
}

fn clicked_message(payload: &Payload<'_>) -> Option<Clicked> {
    let container = &payload.container;
    let channel = container
        .channel_id
        .as_str()
        .or(payload.channel.id.as_str())?;
    let ts = container
        .message_ts
        .as_str()
        .or(payload.message.ts.as_str())?;
    let metadata = &payload.message.metadata;
    let signoffs = [blocks::POST_EVENT, blocks::REMINDER_EVENT];
    let mut for_approvals = Vec::new();
    if metadata
        .event_type
        .as_str()
        .is_some_and(|event| signoffs.contains(&event))
    {
        let payload = &metadata.event_payload;
        let named = std::iter::once(&payload.approval_id).chain(&payload.items);
        for_approvals.extend(named.filter_map(|id| id.as_str()?.parse::<ApprovalId>().ok()));
    }
    Some(Clicked {
        key: MessageKey {
            channel: channel.to_owned(),
            ts: ts.to_owned(),
        },
        for_approvals,
    })
}

/// What a submitted modal decides, before who decides it is known.
enum Draft {
    Deny { reason: Option<String> },
    Edit { parameters: Value },
}

/// Who is deciding: the clicker, and whether they are one of the approval's approvers
/// (for the state machine to weigh). Else the sentence to show: a user group could not
/// be read, so the answer is not known (fail closed).
pub(super) async fn decider(
    slack: &SlackApp,
    approval: &Approval,
    user: &UserId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Decider, String> {
    let by = slack.approvers.deadline();
    match slack.approvers.is_approver(approval, user, (now, by)).await {
        Ok(approver) => Ok(Decider {
            user: user.to_string(),
            approver,
        }),
        Err(error) => Err(group_unknown(&error)),
    }
}

/// Why a click whose clicker's group membership could not be read counts for nothing.
/// A refusal from Slack (a deleted group, a missing scope) does not pass in a minute.
fn group_unknown(error: &SlackError) -> String {
    match error {
        SlackError::Api { code } if error.is_permanent() => format!(
            "Slack would not list the members of this request's approver group (it said \
             `{code}`), so I cannot tell whether you may decide it: ask whoever runs signoff \
             to check the policy's approvers."
        ),
        _ => "I could not check your approver group membership with Slack just now; please \
              try again in a minute."
            .into(),
    }
}

/// Tells `actor` why their vote did not count; the text reads the approval as the
/// writer saw it when it refused. A click whose clicker's vote is already on the
/// approval (a click served again: redelivered to another replica, or after a
/// restart, or clicked twice) is told so, not that their decision was not recorded.
fn refusal(slack: &SlackApp, actor: &Actor, error: StoreError) -> Result<Answer, Refused> {
    match error {
        StoreError::Rejected {
            rejection: Rejection::AlreadyDecided(status),
            current,
        } if current.has_voted(actor.user.as_str()) => ephemeral(
            slack,
            actor,
            format!("Your vote is already recorded: this request is {status}."),
        ),
        StoreError::Rejected { rejection, current } => {
            ephemeral(slack, actor, refusal_text(&rejection, &current))
        }
        StoreError::NotFound(_) => ephemeral(slack, actor, GONE.into()),
        other => Err(ApiError::from(other).into()),
    }
}

/// Tells only `actor` why nothing happened (chat.postEphemeral, in the background),
/// and acks the click.
pub(super) fn ephemeral(slack: &SlackApp, actor: &Actor, text: String) -> Result<Answer, Refused> {
    if let Some(channel) = &actor.channel {
        let client = slack.client.clone();
        let body = json!({ "channel": channel, "user": actor.user, "text": text });
        tokio::spawn(async move {
            let _ = client.call("chat.postEphemeral", &body).await;
        });
    }
    Ok(None)
}
