//! `POST /slack/commands`: `/approvals` (what waits for me), `/approvals status ID`
//! and `/approvals help`. An approval is shown only to its approvers and in the
//! channels it was posted to; to anyone else it does not exist.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{Refused, form, respond, verified};
use crate::approval::machine::check_can_decide;
use crate::approval::{Approval, Decider, Status};
use crate::http::AppState;
use crate::http::api::extract::RawBody;
use crate::ids::UserId;
use crate::slack::app::SlackApp;
use crate::slack::approvers;
use crate::slack::client::SlackError;
use crate::slack::commands::{self, Command};
use crate::store::StoreError;

#[tracing::instrument(skip_all)]
pub(super) async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    // Read once, used only once signed; but Slack checks the certificate of a
    // command's URL now and then with a POST naming no command and asks for a 200,
    // which Slack's own SDKs answer before the signature check, as here. It does
    // nothing and tells nothing. Where signed requests are not served (no Slack, or
    // Socket Mode without a signing secret) it is the same 503 as every other
    // `/slack/*` request, so that a URL set up against the wrong deployment shows.
    let fields = form(&body);
    let served = state
        .slack
        .as_ref()
        .is_some_and(|slack| slack.signing_secret.is_some());
    if served && fields.as_ref().is_ok_and(is_ssl_check) {
        return axum::http::StatusCode::OK.into_response();
    }
    let slack = match verified(&state, &headers, &body) {
        Ok(slack) => slack.clone(),
        Err(refused) => return refused.into_response(),
    };
    let fields = match fields {
        Ok(fields) => fields,
        Err(refused) => return refused.into_response(),
    };
    let field = |name: &str| fields.get(name).map(String::as_str);
    let typed = Typed {
        user_id: field("user_id"),
        channel_id: field("channel_id"),
        text: field("text").unwrap_or_default(),
    };
    respond(command(&state, &slack, &typed).await.map(Some))
}

/// Whether a form is Slack's certificate check (`ssl_check=1`), not a command.
fn is_ssl_check(fields: &HashMap<String, String>) -> bool {
    fields.get("ssl_check").map(String::as_str) == Some("1") && !fields.contains_key("command")
}

/// A slash command's fields, however it came: the signed HTTP form, or a Socket Mode
/// envelope's payload (the same names).
pub(super) struct Typed<'a> {
    pub user_id: Option<&'a str>,
    pub channel_id: Option<&'a str>,
    pub text: &'a str,
}

/// `/approvals …`: the reply (ephemeral, only the person who typed it sees it).
pub(super) async fn command(
    state: &AppState,
    slack: &SlackApp,
    typed: &Typed<'_>,
) -> Result<Value, Refused> {
    let Some(Ok(user)) = typed.user_id.map(UserId::parse) else {
        return Err(Refused::BadRequest("missing or invalid user_id".into()));
    };
    let viewer = Viewer {
        user: &user,
        channel: typed.channel_id,
        at: (state.clock.now(), slack.approvers.deadline()),
    };
    let reply = match commands::parse(typed.text) {
        Command::Pending => pending_for(state, slack, &viewer).await,
        Command::Status(prefix) => status_of(state, slack, &viewer, &prefix).await,
        Command::Help => Ok(commands::text_reply(commands::usage())),
        Command::Unknown(problem) => Ok(commands::text_reply(&commands::unknown_reply(&problem))),
    };
    // A store that cannot be read is said in words (Slack would show its own failure
    // for a 503), as a click's is.
    Ok(reply.unwrap_or_else(|error| {
        tracing::error!(%error, "/approvals could not read the approvals");
        commands::text_reply(
            "signoff could not read the approvals just now; please try again in a moment.",
        )
    }))
}

/// Who typed `/approvals`, and where.
struct Viewer<'a> {
    user: &'a UserId,
    channel: Option<&'a str>,
    /// When it was typed, and when user groups must have answered by, for the reply
    /// to reach Slack in time.
    at: (DateTime<Utc>, tokio::time::Instant),
}

/// Ids a status prefix may match that are looked at; a prefix matching more is too
/// short to say which one is meant.
const PREFIX_MATCHES: i64 = 50;

/// `/approvals status PREFIX`: the one approval the prefix names among those the viewer
/// may see (see `Approvers::may_see`), a channel showing those posted in it. Approvals
/// the viewer may not see are not mentioned, not even as making the prefix ambiguous.
async fn status_of(
    state: &AppState,
    slack: &SlackApp,
    viewer: &Viewer<'_>,
    prefix: &str,
) -> Result<Value, StoreError> {
    let not_found = || commands::text_reply(&format!("No approval matches `{prefix}`."));
    let mut visible = Vec::new();
    let ids = state.store.find_by_prefix(prefix, PREFIX_MATCHES).await?;
    for approval in state.store.get_many(&ids).await? {
        // Where it was posted, or (pending) is to be, as `/approvals pending` says.
        let messages = state.store.messages(approval.id).await?;
        let shown_here = approvers::posted_in(&messages, viewer.channel)
            || (approval.status == Status::Pending
                && approvers::routed_to(&approval, viewer.channel, viewer.at.0));
        if slack
            .approvers
            .may_see(&approval, viewer.user, shown_here, viewer.at)
            .await
        {
            visible.push(approval);
        }
    }
    // Past the ids looked at, the one meant may be among those left out.
    let cut = i64::try_from(ids.len()).unwrap_or(i64::MAX) >= PREFIX_MATCHES;
    Ok(match visible.as_slice() {
        [] | [_] if cut => commands::text_reply(&format!(
            "`{prefix}` is too short to say which approval it names; type more of the id."
        )),
        [] => not_found(),
        [approval] => {
            let now = viewer.at.0;
            commands::status_reply(&approval.clone().as_seen_at(now), now)
        }
        _ => commands::text_reply(&format!(
            "`{prefix}` matches more than one approval; type more of the id."
        )),
    })
}

/// `/approvals pending` scans at once in a process: each reads every pending approval.
static PENDING_SCANS: Semaphore = Semaphore::const_new(2);

/// Pending approvals read at a time by a scan: what it holds, whatever the backlog.
const SCAN_CHUNK: usize = 500;

/// `/approvals pending`: what the viewer may decide, among what they may see: every
/// pending approval is looked at, however long the backlog, so that the count is right,
/// a chunk at a time, keeping the first [`commands::MAX_LISTED`] (at most
/// [`PENDING_SCANS`] at once: the rest wait their turn).
async fn pending_for(
    state: &AppState,
    slack: &SlackApp,
    viewer: &Viewer<'_>,
) -> Result<Value, StoreError> {
    let _turn = PENDING_SCANS.acquire().await;
    let ids = state.store.list_ids(Some(Status::Pending)).await?;
    let (mut mine, mut total, mut unchecked) = (Vec::new(), 0, 0);
    for chunk in ids.chunks(SCAN_CHUNK) {
        for approval in state.store.get_many(chunk).await? {
            match may_decide(slack, viewer, &approval).await {
                Ok(true) => {
                    total += 1;
                    if mine.len() < commands::MAX_LISTED {
                        mine.push(approval);
                    }
                }
                Ok(false) => {}
                Err(_) => unchecked += 1,
            }
        }
    }
    let ids: Vec<_> = mine.iter().map(|a| a.id).collect();
    let links = state.store.main_permalinks(&ids).await?;
    let items: Vec<(&Approval, Option<&str>)> = mine
        .iter()
        .map(|a| (a, links.get(&a.id).map(String::as_str)))
        .collect();
    let found = commands::Found { total, unchecked };
    Ok(commands::pending_list_reply_linked(
        &items,
        found,
        viewer.at.0,
    ))
}

/// Whether the viewer may see and decide the pending `approval` and has not voted;
/// `Err` when a user group it lists could not be read in time to say.
async fn may_decide(
    slack: &SlackApp,
    viewer: &Viewer<'_>,
    approval: &Approval,
) -> Result<bool, SlackError> {
    // Pending: shown where it is posted or is to be (a backlog may hold its post).
    let shown_here = approvers::routed_to(approval, viewer.channel, viewer.at.0);
    if approval.has_voted(viewer.user.as_str())
        || !slack
            .approvers
            .may_see_checked(approval, viewer.user, shown_here, viewer.at)
            .await?
    {
        return Ok(false);
    }
    let approver = slack
        .approvers
        .is_approver(approval, viewer.user, viewer.at)
        .await?;
    let by = Decider {
        user: viewer.user.to_string(),
        approver,
    };
    Ok(check_can_decide(approval, &by, viewer.at.0).is_ok())
}
