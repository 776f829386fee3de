//! Slack's callbacks: `POST /slack/interactions` (button clicks, modal submissions;
//! [`interactions`]) and `POST /slack/commands` (`/approvals`; [`commands`]), and the
//! same two over Slack's Socket Mode WebSocket ([`socket`]). Every HTTP request is
//! verified on its raw body before anything else; a bad signature gets a bare 401 and
//! changes nothing. Each area has a transport-neutral part (the parsed payload in, the
//! [`Answer`] out) that both transports feed, so a click counts, and is refused, the
//! same way over either. Handlers record the decision and answer at once; message
//! updates go through the outbox, and modals and ephemeral replies are sent in the
//! background so the ack stays fast.

mod bulk;
mod commands;
mod interactions;
mod payload;
pub mod socket;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::approval::{Approval, ApprovalId, Rejection};
use crate::http::AppState;
use crate::http::api::ApiError;
use crate::jobs::MessageKey;
use crate::slack::app::SlackApp;
use crate::slack::approvers::mention;
use crate::slack::text::join_limited;
use crate::slack::verify;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/slack/interactions", post(interactions::handler))
        .route("/slack/commands", post(commands::handler))
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

/// What Slack gets back for a callback that was served: nothing (an empty 200, or a
/// bare Socket Mode ack), or a JSON body (a modal's errors, an `/approvals` reply;
/// over Socket Mode, the ack's `payload`).
type Answer = Option<Value>;

/// The HTTP response for a served (or refused) callback.
fn respond(answer: Result<Answer, Refused>) -> Response {
    match answer {
        Ok(Some(body)) => axum::Json(body).into_response(),
        Ok(None) => ().into_response(),
        Err(refused) => refused.into_response(),
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

const GONE: &str = "This approval request does not exist (any more).";
const NOT_FROM_A_REQUEST: &str = "This button is not on a request signoff posted, so it counts for nothing: use the buttons on the request's own message.";

/// Why a click cannot decide the approval it names.
enum Unusable {
    /// No such approval.
    Gone,
    /// The message clicked is not one of the approval's.
    Elsewhere,
    /// The store could not be read.
    Unreadable,
}

impl From<Unusable> for String {
    fn from(unusable: Unusable) -> String {
        match unusable {
            Unusable::Gone => GONE.into(),
            Unusable::Elsewhere => NOT_FROM_A_REQUEST.into(),
            Unusable::Unreadable => {
                "signoff could not read this request just now; please try again.".into()
            }
        }
    }
}

/// The approval a button or modal names, when it was clicked on a message signoff
/// posted for it (its channel message, an escalation, or a reminder DM): a click counts
/// only from there, so "anyone in the channel" means the channel it was posted to.
/// `named`: the message's own metadata names it (Slack signs the payload, and only
/// signoff's app posts the messages whose clicks reach signoff), which also covers a
/// post whose answer was lost before signoff recorded it; else it must be a message
/// signoff recorded, read in the same statement as the approval.
async fn find_from(
    state: &AppState,
    raw_id: &str,
    message: &MessageKey,
    named: &[ApprovalId],
) -> Result<Approval, Unusable> {
    let id: ApprovalId = raw_id.parse().map_err(|_| Unusable::Gone)?;
    let found = if named.contains(&id) {
        let found = state.store.get(id).await;
        found.map(|approval| approval.map(|approval| (approval, true)))
    } else {
        state.store.get_shown_in(id, message).await
    };
    match found {
        Ok(Some((approval, true))) => Ok(approval),
        Ok(Some((_, false))) => Err(Unusable::Elsewhere),
        Ok(None) => Err(Unusable::Gone),
        Err(error) => {
            tracing::error!(%error, "cannot read approval");
            Err(Unusable::Unreadable)
        }
    }
}

/// What a person reads when their decision did not count.
fn refusal_text(rejection: &Rejection, approval: &Approval) -> String {
    match rejection {
        Rejection::RequesterCannotVote => {
            "You asked for this one, so someone else has to decide it.".into()
        }
        Rejection::NotAnApprover => {
            let who: Vec<String> = approval.routing.approvers.iter().map(mention).collect();
            format!(
                "Only the approvers of this request can decide it: {}.",
                join_limited(&who, ", ", 2000)
            )
        }
        other => format!("Your decision was not recorded: {other}."),
    }
}
