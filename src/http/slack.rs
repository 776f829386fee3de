//! `POST /slack/interactions` (button clicks, modal submissions) and
//! `POST /slack/commands` (`/approvals`). Every request is verified on its raw body
//! before anything else; a bad signature is 401 and changes nothing. Handlers record
//! the vote and answer at once; message updates go through the outbox, and modals and
//! ephemeral replies are sent in the background so the ack stays fast.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::approval::{Approval, ApprovalId, Decision, Event};
use crate::http::AppState;
use crate::http::api::ApiError;
use crate::jobs::MessageKey;
use crate::slack::app::SlackApp;
use crate::slack::blocks::{
    self, ACTION_APPROVE, ACTION_DENY, ACTION_EDIT, DENY_CALLBACK, EDIT_CALLBACK, PARAMETERS_INPUT,
    REASON_INPUT,
};
use crate::slack::commands::{self, Command};
use crate::slack::verify;
use crate::store::StoreError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/slack/interactions", post(interactions))
        .route("/slack/commands", post(slash_command))
}

/// Why a Slack request was not served. A request whose signature does not verify gets
/// a bare 401: the reason goes to the log, never to whoever sent it.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Unsigned(String),
    #[error("Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET")]
    NotConfigured,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Unsigned(reason) => {
                tracing::warn!(reason = %reason, "refused a Slack request");
                axum::http::StatusCode::UNAUTHORIZED.into_response()
            }
            Refused::NotConfigured => ApiError::NotConfigured(self.to_string()).into_response(),
            Refused::BadRequest(detail) => ApiError::BadRequest(detail).into_response(),
            Refused::Api(error) => error.into_response(),
        }
    }
}

/// Checks the signature and returns the Slack side of the state.
fn verified<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'a SlackApp, Refused> {
    let slack = state.slack.as_ref().ok_or(Refused::NotConfigured)?;
    let secret = slack
        .signing_secret
        .as_deref()
        .ok_or(Refused::NotConfigured)?;
    verify::verify_headers(
        secret.as_bytes(),
        headers,
        body,
        state.clock.now().timestamp(),
    )
    .map_err(|error| Refused::Unsigned(error.to_string()))?;
    Ok(slack)
}

fn form(body: &[u8]) -> Result<std::collections::HashMap<String, String>, Refused> {
    serde_urlencoded::from_bytes(body)
        .map_err(|error| Refused::BadRequest(format!("malformed form body: {error}")))
}

/// What a click or submission is about, taken from the payload.
struct Actor {
    user: String,
    channel: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn interactions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let slack = match verified(&state, &headers, &body) {
        Ok(slack) => slack.clone(),
        Err(refused) => return refused.into_response(),
    };
    let payload: Value = match form(&body).map(|mut fields| fields.remove("payload")) {
        Ok(Some(raw)) => match serde_json::from_str(&raw) {
            Ok(payload) => payload,
            Err(error) => {
                return Refused::BadRequest(format!("payload is not JSON: {error}"))
                    .into_response();
            }
        },
        Ok(None) => return Refused::BadRequest("missing payload field".into()).into_response(),
        Err(refused) => return refused.into_response(),
    };
    let Some(user) = payload["user"]["id"].as_str().map(str::to_owned) else {
        return Refused::BadRequest("payload has no user.id".into()).into_response();
    };
    let channel = payload["channel"]["id"]
        .as_str()
        .or(payload["container"]["channel_id"].as_str())
        .map(str::to_owned);
    let actor = Actor { user, channel };
    match payload["type"].as_str() {
        Some("block_actions") => block_action(&state, &slack, &payload, actor).await,
        Some("view_submission") => view_submission(&state, &slack, &payload, actor).await,
        // Other interaction types (view_closed, shortcuts) need nothing from us.
        _ => ().into_response(),
    }
}

async fn block_action(
    state: &AppState,
    slack: &SlackApp,
    payload: &Value,
    actor: Actor,
) -> Response {
    let action = &payload["actions"][0];
    let (Some(action_id), Some(value)) = (action["action_id"].as_str(), action["value"].as_str())
    else {
        return Refused::BadRequest("block action without action_id and value".into())
            .into_response();
    };
    let approval = match find(state, value).await {
        Ok(approval) => approval,
        Err(message) => return ephemeral(slack, &actor, message),
    };
    let Some(clicked) = clicked_message(payload) else {
        return ephemeral(slack, &actor, NOT_FROM_A_REQUEST.into());
    };
    if let Err(message) = posted_for(state, &approval, &clicked).await {
        return ephemeral(slack, &actor, message);
    }
    if let Err(message) = slack.approvers.may_decide(&approval, &actor.user).await {
        return ephemeral(slack, &actor, message);
    }
    match action_id {
        ACTION_APPROVE => {
            let event = Event::Vote {
                user: actor.user.clone(),
                decision: Decision::Approve,
                reason: None,
            };
            match state
                .store
                .apply(approval.id, event, state.clock.now())
                .await
            {
                Ok(_) => ().into_response(),
                Err(error) => refusal(slack, &actor, error),
            }
        }
        ACTION_DENY | ACTION_EDIT => {
            // Refuse now rather than after the person filled in a modal.
            if let Err(rejection) = crate::approval::machine::check_can_decide(
                &approval,
                &actor.user,
                state.clock.now(),
            ) {
                return ephemeral(slack, &actor, not_counted(&rejection.to_string()));
            }
            let Some(trigger_id) = payload["trigger_id"].as_str() else {
                return Refused::BadRequest("block action without trigger_id".into())
                    .into_response();
            };
            let view = if action_id == ACTION_DENY {
                blocks::deny_modal(&approval, &clicked.key)
            } else {
                blocks::edit_modal(&approval, &clicked.key)
            };
            let client = slack.client.clone();
            let body = json!({ "trigger_id": trigger_id, "view": view });
            // The trigger expires 3 s after the click: open the modal right away, and
            // answer Slack without waiting for it.
            tokio::spawn(async move {
                let _ = client.call("views.open", &body).await;
            });
            ().into_response()
        }
        other => Refused::BadRequest(format!("unknown action {other:?}")).into_response(),
    }
}

async fn view_submission(
    state: &AppState,
    slack: &SlackApp,
    payload: &Value,
    actor: Actor,
) -> Response {
    let view = &payload["view"];
    let callback = view["callback_id"].as_str().unwrap_or_default();
    let (input, event) = match callback {
        DENY_CALLBACK => {
            let reason = view["state"]["values"][REASON_INPUT][REASON_INPUT]["value"]
                .as_str()
                .map(str::trim)
                .filter(|reason| !reason.is_empty())
                .map(str::to_owned);
            let event = Event::Vote {
                user: actor.user.clone(),
                decision: Decision::Deny,
                reason,
            };
            (REASON_INPUT, event)
        }
        EDIT_CALLBACK => {
            let text = view["state"]["values"][PARAMETERS_INPUT][PARAMETERS_INPUT]["value"]
                .as_str()
                .unwrap_or_default();
            match blocks::parse_edited_parameters(text) {
                Ok(parameters) => (
                    PARAMETERS_INPUT,
                    Event::EditApprove {
                        user: actor.user.clone(),
                        parameters,
                    },
                ),
                Err(message) => {
                    return axum::Json(blocks::modal_errors(PARAMETERS_INPUT, &message))
                        .into_response();
                }
            }
        }
        _ => return ().into_response(),
    };
    let refuse = |message: &str| axum::Json(blocks::modal_errors(input, message)).into_response();
    let Some((id, clicked)) =
        blocks::modal_source(view["private_metadata"].as_str().unwrap_or_default())
    else {
        return refuse("This form is out of date: open the request's message and click again.");
    };
    let approval = match find(state, &id.to_string()).await {
        Ok(approval) => approval,
        Err(message) => return refuse(&message),
    };
    if let Err(message) = posted_message(state, &approval, &clicked).await {
        return refuse(&message);
    }
    if let Err(message) = slack.approvers.may_decide(&approval, &actor.user).await {
        return axum::Json(blocks::modal_errors(input, &message)).into_response();
    }
    match state
        .store
        .apply(approval.id, event, state.clock.now())
        .await
    {
        // An empty 200 closes the modal.
        Ok(_) => ().into_response(),
        Err(StoreError::Rejected { rejection, .. }) => axum::Json(blocks::modal_errors(
            input,
            &not_counted(&rejection.to_string()),
        ))
        .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

const NOT_FROM_A_REQUEST: &str = "This button is not on a request signoff posted, so it counts for nothing: use the buttons on the request's own message.";

/// The message a click came from, as Slack reports it (and signs).
struct Clicked {
    /// Its channel and timestamp.
    key: MessageKey,
    /// The approval its message metadata names, when signoff posted it (a post or a
    /// reminder DM; see [`blocks::POST_EVENT`]).
    for_approval: Option<ApprovalId>,
}

fn clicked_message(payload: &Value) -> Option<Clicked> {
    let container = &payload["container"];
    let channel = container["channel_id"]
        .as_str()
        .or(payload["channel"]["id"].as_str())?;
    let ts = container["message_ts"]
        .as_str()
        .or(payload["message"]["ts"].as_str())?;
    let metadata = &payload["message"]["metadata"];
    let signoffs = [blocks::POST_EVENT, blocks::REMINDER_EVENT];
    let for_approval = metadata["event_type"]
        .as_str()
        .filter(|event| signoffs.contains(event))
        .and_then(|_| metadata["event_payload"]["approval_id"].as_str())
        .and_then(|id| id.parse().ok());
    Some(Clicked {
        key: MessageKey {
            channel: channel.to_owned(),
            ts: ts.to_owned(),
        },
        for_approval,
    })
}

/// `Ok` when the click came from a message signoff posted for `approval` (its channel
/// message, an escalation, or a reminder DM): a click counts only from there, so
/// "anyone in the channel" means the channel it was posted to. The message's own
/// metadata may say so (Slack signs the payload, and only signoff's app posts the
/// messages whose clicks reach signoff), which also covers a post whose answer was lost
/// before signoff recorded it; else it must be a message signoff recorded. Otherwise
/// the sentence to show.
async fn posted_for(
    state: &AppState,
    approval: &Approval,
    clicked: &Clicked,
) -> Result<(), String> {
    if clicked.for_approval == Some(approval.id) {
        return Ok(());
    }
    posted_message(state, approval, &clicked.key).await
}

/// `Ok` when signoff recorded `key` as one of `approval`'s messages.
async fn posted_message(
    state: &AppState,
    approval: &Approval,
    key: &MessageKey,
) -> Result<(), String> {
    match state.store.messages(approval.id).await {
        Ok(messages)
            if messages
                .iter()
                .any(|m| m.channel == key.channel && m.ts == key.ts) =>
        {
            Ok(())
        }
        Ok(_) => Err(NOT_FROM_A_REQUEST.into()),
        Err(error) => {
            tracing::error!(%error, "cannot read the approval's messages");
            Err("signoff could not check this request just now; please try again.".into())
        }
    }
}

/// The approval a button or modal names, or the sentence to show when there is none.
async fn find(state: &AppState, raw_id: &str) -> Result<Approval, String> {
    let gone = || "This approval request does not exist (any more).".to_owned();
    let id: ApprovalId = raw_id.parse().map_err(|_| gone())?;
    match state.store.get(id).await {
        Ok(Some(approval)) => Ok(approval),
        Ok(None) => Err(gone()),
        Err(error) => {
            tracing::error!(%error, "cannot read approval");
            Err("signoff could not read this request just now; please try again.".into())
        }
    }
}

fn not_counted(why: &str) -> String {
    format!("Your decision was not recorded: {why}.")
}

fn refusal(slack: &SlackApp, actor: &Actor, error: StoreError) -> Response {
    match error {
        StoreError::Rejected { rejection, .. } => {
            ephemeral(slack, actor, not_counted(&rejection.to_string()))
        }
        StoreError::NotFound(_) => ephemeral(
            slack,
            actor,
            "This approval request does not exist (any more).".into(),
        ),
        other => ApiError::from(other).into_response(),
    }
}

/// Tells only `actor` why nothing happened (chat.postEphemeral, in the background),
/// and acks the click.
fn ephemeral(slack: &SlackApp, actor: &Actor, text: String) -> Response {
    if let Some(channel) = &actor.channel {
        let client = slack.client.clone();
        let body = json!({ "channel": channel, "user": actor.user, "text": text });
        tokio::spawn(async move {
            let _ = client.call("chat.postEphemeral", &body).await;
        });
    }
    ().into_response()
}

#[tracing::instrument(skip_all)]
async fn slash_command(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let slack = match verified(&state, &headers, &body) {
        Ok(slack) => slack.clone(),
        Err(refused) => return refused.into_response(),
    };
    let fields = match form(&body) {
        Ok(fields) => fields,
        Err(refused) => return refused.into_response(),
    };
    let Some(user) = fields.get("user_id") else {
        return Refused::BadRequest("missing user_id".into()).into_response();
    };
    let viewer = Viewer {
        user,
        channel: fields.get("channel_id").map(String::as_str),
    };
    let text = fields.get("text").map_or("", String::as_str);
    let reply = match commands::parse(text) {
        Command::Pending => pending_for(&state, &slack, &viewer).await,
        Command::Status(prefix) => status_of(&state, &slack, &viewer, &prefix).await,
        Command::Help => Ok(commands::text_reply(commands::usage())),
        Command::Unknown(problem) => Ok(commands::text_reply(&commands::unknown_reply(&problem))),
    };
    match reply {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Who typed `/approvals`, and where.
struct Viewer<'a> {
    user: &'a str,
    channel: Option<&'a str>,
}

/// Ids a status prefix may match that are looked at; a prefix matching more is too
/// short to say which one is meant.
const PREFIX_MATCHES: i64 = 50;

/// `/approvals status PREFIX`: the one approval the prefix names among those the viewer
/// may see (see `Approvers::may_see`). Approvals the viewer may not see are not
/// mentioned, not even as making the prefix ambiguous.
async fn status_of(
    state: &AppState,
    slack: &SlackApp,
    viewer: &Viewer<'_>,
    prefix: &str,
) -> Result<Value, StoreError> {
    let not_found = || commands::text_reply(&format!("No approval matches `{prefix}`."));
    let mut visible = Vec::new();
    for id in state.store.find_by_prefix(prefix, PREFIX_MATCHES).await? {
        let Some(approval) = state.store.get(id).await? else {
            continue;
        };
        if slack
            .approvers
            .may_see(&approval, viewer.user, viewer.channel)
            .await
        {
            visible.push(approval);
        }
    }
    Ok(match visible.as_slice() {
        [] => not_found(),
        [approval] => commands::status_reply(approval, state.clock.now()),
        _ => commands::text_reply(&format!(
            "`{prefix}` matches more than one approval; type more of the id."
        )),
    })
}

/// How many pending approvals `/approvals` looks through.
const PENDING_SCAN: i64 = 500;

/// `/approvals pending`: what the viewer may decide, among what they may see.
async fn pending_for(
    state: &AppState,
    slack: &SlackApp,
    viewer: &Viewer<'_>,
) -> Result<Value, StoreError> {
    let mut mine = Vec::new();
    for approval in state.store.list_pending(PENDING_SCAN).await? {
        if approval.has_voted(viewer.user)
            || !slack
                .approvers
                .may_see(&approval, viewer.user, viewer.channel)
                .await
            || slack
                .approvers
                .may_decide(&approval, viewer.user)
                .await
                .is_err()
        {
            continue;
        }
        mine.push(approval);
    }
    let ids: Vec<_> = mine.iter().map(|a| a.id).collect();
    let links = state.store.main_permalinks(&ids).await?;
    let items: Vec<(&Approval, Option<&str>)> = mine
        .iter()
        .map(|a| (a, links.get(&a.id).map(String::as_str)))
        .collect();
    Ok(commands::pending_list_reply_linked(
        &items,
        state.clock.now(),
    ))
}
