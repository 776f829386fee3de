//! `GET /v1/approvals/events`: one server-sent event stream of the decisions on the
//! caller's approvals, so that a client holding many undecided calls (the MCP proxy)
//! waits on one connection instead of one long-poll each.
//!
//! Events: `ready` once the stream listens (every change committed after it arrives),
//! `approval` with the approval as `GET` shows it whenever one of the caller's
//! approvals changes status (once per status), and `resync` when changes may have
//! been missed (the client reads again the approvals it waits for). A comment every
//! 15 s keeps idle connections open. The stream ends when the server shuts down, and
//! when its token no longer verifies (revoked or rotated): checked before each event,
//! so none is sent once revoke returns, and every [`RECHECK`] while it is quiet.
//!
//! A stream lasts, and holds one of the server's connections (`Limits`) as long: a
//! token has at most `Limits::streams_per_token` open at once on one server
//! ([`PerToken`](super::per_token::PerToken)), so that it cannot take every connection (Slack's callbacks need
//! some).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use super::doc;
use super::error::{ApiError, ErrorBody};
use super::extract::Caller;
use super::per_token::Counted;
use crate::approval::{ApprovalId, Status};
use crate::http::AppState;
use crate::store::StatusChange;
use crate::wire::ApprovalView;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often a quiet stream verifies its token again: through the token cache, which
/// every stream and request of the token shares, so most checks read no database.
pub const RECHECK: Duration = Duration::from_secs(2);

/// What the stream follows between events.
struct Follow {
    state: AppState,
    caller: Caller,
    changes: broadcast::Receiver<StatusChange>,
    /// Moves when other replicas' notices may have been missed (`Store::missed`).
    missed: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    /// When to verify the token again while no event comes.
    recheck: tokio::time::Interval,
    /// The latest approvals and statuses sent: a change is heard twice on PostgreSQL
    /// (made here, then its NOTIFY), and sent once.
    sent: VecDeque<(ApprovalId, Status)>,
    /// This stream in its token's count, until the stream ends or its client leaves.
    _counted: Counted,
}

/// How many sent changes a stream remembers to leave out repeats.
const REMEMBER: usize = 256;

/// The OpenAPI example of the stream: it listens, then one approval is decided.
const STREAM_EXAMPLE: &str = "event: ready\ndata: {}\n\nevent: approval\ndata: \
    {\"approval_id\":\"1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19\",\"status\":\"approved\",…}\n\n";

#[utoipa::path(
    get,
    path = "/v1/approvals/events",
    operation_id = "followApprovals",
    tag = "approvals",
    summary = "Follow the decisions on all of the token's approvals",
    description = "A server-sent event stream. `ready` (data `{}`) once it listens: every \
        change committed after it arrives. `approval` (data: the approval as `GET \
        /v1/approvals/{id}` shows it, schema `Approval`) each time one of the token's \
        approvals changes status. `resync` (data `{}`) when changes may have been missed: \
        read again the approvals you wait for. A comment every 15 s keeps the connection \
        open; the stream ends when the server shuts down, and when the token is revoked \
        or rotated (no event is sent once revoke returns; a quiet stream ends within 2 s).",
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream",
            body = String, example = json!(STREAM_EXAMPLE)),
        (status = 401, response = doc::Unauthorized),
        (status = 429, description = "The token has 64 streams open on this server already \
            (`Limits::streams_per_token`): nothing was opened", body = ErrorBody,
            example = json!({
                "error": "too_many_streams",
                "detail": "agent-session-42 has 64 event streams open on this server, the most a \
                    token may have at once: close one (one stream follows all of a token's approvals)"
            })),
        (status = 503, response = doc::Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let name = &caller.0;
    let counted = state
        .streams
        .open(name, state.limits.streams_per_token)
        .map_err(|open| {
            ApiError::TooManyStreams(format!(
                "{name} has {open} event streams open on this server, the most a token may \
                 have at once: close one (one stream follows all of a token's approvals)"
            ))
        })?;
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Subscribed before `ready` is sent: nothing committed after it is missed.
    let follow = Follow {
        changes: state.store.subscribe(),
        missed: state.store.missed(),
        shutdown: state.shutdown.clone(),
        recheck,
        state,
        caller,
        sent: VecDeque::with_capacity(REMEMBER),
        _counted: counted,
    };
    let ready = Event::default().event("ready").data("{}");
    let events = stream::once(async { Ok(ready) }).chain(stream::unfold(follow, next));
    // nginx holds a proxied answer back until it is whole unless told not to: a
    // stream it buffered would bring nothing (`Cache-Control: no-cache` is axum's).
    let unbuffered = [(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        "no",
    )];
    Ok((
        unbuffered,
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    ))
}

/// The next event for the caller, or `None` when the stream ends.
async fn next(mut follow: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    loop {
        if *follow.shutdown.borrow() {
            return None;
        }
        let event = tokio::select! {
            notice = follow.changes.recv() => match notice {
                Ok(change) => match approval_event(&mut follow, change).await {
                    Some(event) => event,
                    None => continue,
                },
                Err(RecvError::Lagged(_)) => resync(),
                Err(RecvError::Closed) => return None,
            },
            // Other replicas' notices were lost (PostgreSQL's LISTEN connection dropped).
            Ok(()) = follow.missed.changed() => resync(),
            _ = follow.shutdown.changed() => return None,
            _ = follow.recheck.tick() => match follow.caller.verify_again(&follow.state).await {
                Err(ApiError::Unauthorized) => return None,
                // The store is out of reach: the next event checks, or the next tick.
                Ok(()) | Err(_) => continue,
            },
        };
        let event = match follow.caller.verify_again(&follow.state).await {
            Ok(()) => event,
            Err(ApiError::Unauthorized) => return None,
            // Not verified, so not sent: the client reads again (and is checked then).
            Err(_) => resync(),
        };
        return Some((Ok(event), follow));
    }
}

/// The `approval` event for a change to one of the caller's approvals; `None` for
/// anyone else's.
async fn approval_event(follow: &mut Follow, change: StatusChange) -> Option<Event> {
    let approval = match change.after {
        Some(after) => after,
        // Heard from another replica: read what it committed.
        None => match follow.state.store.get(change.id).await {
            Ok(Some(approval)) => approval.into(),
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(%error, approval_id = %change.id, "cannot read a changed approval");
                return Some(resync());
            }
        },
    };
    if approval.token_name.as_deref() != Some(follow.caller.0.as_str()) {
        return None;
    }
    let key = (approval.id, approval.status);
    if follow.sent.contains(&key) {
        return None;
    }
    if follow.sent.len() == REMEMBER {
        follow.sent.pop_front();
    }
    follow.sent.push_back(key);
    let view = ApprovalView::new(&approval, None);
    match Event::default().event("approval").json_data(&view) {
        Ok(event) => Some(event),
        Err(error) => {
            tracing::error!(%error, "cannot write an approval event");
            Some(resync())
        }
    }
}

fn resync() -> Event {
    Event::default().event("resync").data("{}")
}
