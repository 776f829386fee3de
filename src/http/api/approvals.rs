//! Handlers for `/v1/approvals`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::doc;
use super::error::{ApiError, ErrorBody, path_id};
use super::extract::{Caller, JsonBody};
use crate::approval::{Approval, ApprovalId, Event, NewApproval, Status, Tier, names};
use crate::egress;
use crate::exact_json;
use crate::http::AppState;
use crate::policy::Call;
use crate::store::{Created, StatusChange};
use crate::wire::{ApprovalView, CreatedView, ExecutedView};

/// Longest long-poll, in seconds.
pub const MAX_WAIT_SECS: f64 = 60.0;

const MAX_TEXT: usize = crate::approval::MAX_TEXT_BYTES;
const MAX_SHORT: usize = 200;

/// A request for approval: the call about to be made, and how to ask.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "tool_name": "delete_customer_records",
    "parameters": {"customer_ids": ["c1", "c2"]},
    "summary": "Delete 2 customer records",
    "context": "User asked to purge test accounts",
    "requested_by": "agent-session-42",
    "risk_tier": "medium",
    "expires_in": 3600,
    "idempotency_key": "k-123"
}))]
// A field it does not know is refused, not ignored: `expire_in` for `expires_in` would
// otherwise leave the request open for the policy's whole lifetime, unnoticed.
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The tool: 1–128 characters of `A-Z a-z 0-9 _ - . /`.
    #[schema(example = "delete_customer_records")]
    tool_name: String,
    /// Its arguments, kept exactly (numbers digit for digit).
    #[schema(value_type = Object)]
    parameters: Value,
    /// The MCP server's name (1–128 characters of `A-Z a-z 0-9 _ . - :`); policy rules
    /// match it.
    #[schema(example = "github")]
    server: Option<String>,
    /// The tool's MCP annotations.
    #[schema(value_type = Option<Object>)]
    annotations: Option<Value>,
    /// What the call does, in words (up to 10,000 bytes as UTF-8).
    summary: Option<String>,
    /// Why it is made (up to 10,000 bytes as UTF-8).
    context: Option<String>,
    /// Who asks (up to 200 bytes as UTF-8); default: the token's name.
    requested_by: Option<String>,
    /// The requester's tier: the policy may raise it, never lower it.
    #[schema(value_type = Option<Tier>)]
    risk_tier: Option<String>,
    /// Seconds until it expires: can shorten, never lengthen, the policy's.
    #[schema(minimum = 1)]
    expires_in: Option<u64>,
    /// Binds this call for good, per token (printable ASCII, up to 200).
    idempotency_key: Option<String>,
    /// Where the decision is posted (http or https, up to 2,000 bytes; Standard
    /// Webhooks, signed).
    callback_url: Option<String>,
    /// Spend an approved answer in the same write: the answer is `executed`, with
    /// the parameters to run (an auto-approved call is then one request).
    #[serde(default)]
    execute_if_approved: bool,
}

impl CreateRequest {
    /// Checks every field; the first problem is the error. A callback URL must be able
    /// to work, and one naming an internal address outright is refused here (one whose
    /// host resolves there is refused when it is sent).
    fn validate(self, caller: &Caller, allow: &egress::Allow) -> Result<NewApproval, ApiError> {
        let bad = |detail: String| Err(ApiError::Unprocessable(detail));
        if let Err(why) = names::check_tool_name(&self.tool_name) {
            return bad(why);
        }
        if !self.parameters.is_object() {
            return bad("parameters must be a JSON object".into());
        }
        if let Err(why) = exact_json::check_parameters_depth(&self.parameters) {
            return bad(why);
        }
        if let Some(Err(why)) = self.server.as_deref().map(names::check_server_name) {
            return bad(why);
        }
        if self.annotations.as_ref().is_some_and(|a| !a.is_object()) {
            return bad("annotations must be a JSON object".into());
        }
        // Hints of a few fields, kept with the approval (its routing, rewritten with
        // each decision) to classify an edit: no place for a document.
        if let Some(size) = self.annotations.as_ref().map(|a| a.to_string().len())
            && size > MAX_TEXT
        {
            return bad(format!(
                "annotations are {size} bytes (UTF-8) as JSON, more than {MAX_TEXT}"
            ));
        }
        if let Some(Err(why)) = self
            .idempotency_key
            .as_deref()
            .map(names::check_idempotency_key)
        {
            return bad(why);
        }
        for (field, value, max) in [
            ("summary", &self.summary, MAX_TEXT),
            ("context", &self.context, MAX_TEXT),
            ("requested_by", &self.requested_by, MAX_SHORT),
            ("callback_url", &self.callback_url, 2_000),
        ] {
            if value.as_deref().is_some_and(|v| v.len() > max) {
                return bad(format!("{field} is longer than {max} bytes (UTF-8)"));
            }
        }
        let requested_tier = match self.risk_tier.as_deref() {
            None => None,
            Some(raw) => match raw.parse::<Tier>() {
                Ok(tier) => Some(tier),
                Err(_) => {
                    return bad(format!(
                        "risk_tier must be low, medium or high, not {raw:?}"
                    ));
                }
            },
        };
        if self.expires_in == Some(0) {
            return bad("expires_in must be at least 1 second".into());
        }
        if let Some(url) = &self.callback_url {
            let target = match egress::target(url) {
                Ok(target) => target,
                Err(why) => return bad(why),
            };
            if let Some(ip) = target.ip
                && let Err(why) = egress::check(&target.host, ip, allow)
            {
                return bad(why);
            }
        }
        let non_empty = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        Ok(NewApproval {
            tool_name: self.tool_name,
            parameters: self.parameters,
            server: self.server,
            annotations: self.annotations,
            summary: non_empty(self.summary),
            context: non_empty(self.context),
            requested_by: non_empty(self.requested_by).or_else(|| Some(caller.0.clone())),
            requested_tier,
            expires_in: self.expires_in.map(Duration::from_secs),
            idempotency_key: self.idempotency_key,
            callback_url: self.callback_url,
            token_name: Some(caller.0.clone()),
        })
    }
}

/// `POST /v1/approvals`: 201 new, 200 when an identical open request exists.
#[utoipa::path(
    post,
    path = "/v1/approvals",
    operation_id = "createApproval",
    tag = "approvals",
    summary = "Ask for approval",
    description = "The policy classifies the call: `approved` at once (auto-approved tier), \
        `pending` (people decide), or `denied`. A repeat of an open request of the same token \
        (same tool, server and canonical parameters; pending, or approved and not yet executed) \
        joins it; so does the same `idempotency_key` with the same call.",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created: the approval", body = CreatedView),
        (status = 200, description = "The open request this one repeats, or the one its \
            `idempotency_key` made", body = CreatedView),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 408, response = doc::RequestTimeout),
        (status = 409, description = "The `idempotency_key` was used with another call", body = ErrorBody,
            example = json!({"error": "idempotency_key_reused", "detail": "this idempotency_key was used for another call (approval 1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19): use a new key for a new call"})),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Unprocessable),
        (status = 429, description = "The token has `max_pending` (policy, default 20) requests \
            waiting for people already, and this one would wait too: nothing was opened. A repeat \
            of a waiting request still joins it; calls the policy decides at once are never refused",
            body = ErrorBody, example = json!({
                "error": "too_many_pending",
                "detail": "agent-session-42 has 20 requests waiting for a decision (max_pending is 20): \
                    this one was not opened. Wait for decisions, or cancel requests no longer needed",
                "waiting": 20,
                "max_pending": 20
            })),
        (status = 503, response = doc::Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(token = %caller.0))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<Response, ApiError> {
    let created = ask(&state, &caller, body).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(CreatedView::new(&created))).into_response())
}

/// Asks for approval: checks the request, classifies it and stores it (or finds the
/// open request it repeats). The API and the `/mcp` tools both ask through here. With
/// `execute_if_approved`, an approved answer is executed in the same write and comes
/// back `executed` with the parameters to run (one request for an auto-approved call).
pub async fn ask(
    state: &AppState,
    caller: &Caller,
    body: CreateRequest,
) -> Result<Created, ApiError> {
    let spend = body.execute_if_approved;
    let request = body.validate(caller, &state.policy.callbacks)?;
    let call = Call {
        tool: &request.tool_name,
        server: request.server.as_deref(),
        params: &request.parameters,
        annotations: request.annotations.as_ref(),
    };
    let class = state.policy.classify_call(&call, request.requested_tier);
    // The token was checked before the body arrived, which may have taken up to 30 s:
    // a token revoked meanwhile asks for nothing.
    caller.verify_again(state).await?;
    let now = state.clock.now();
    let mut created = if spend {
        state.store.create_and_execute(request, class, now).await?
    } else {
        state.store.create(request, class, now).await?
    };
    if !created.created {
        // One an idempotency key names may be past its expiry: answered as a read is.
        created.approval = created.approval.as_seen_at(now);
    }
    let approval = &created.approval;
    if created.created {
        // Spent in the same write: it was created approved.
        let status = match approval.status {
            Status::Executed => Status::Approved,
            status => status,
        };
        state.metrics.created(approval.risk_tier, status);
        tracing::info!(
            approval_id = %approval.id,
            tool = %approval.tool_name,
            server = approval.server.as_deref(),
            // A caller's text, as a string: quoted in text logs (so `x status=approved`
            // adds no field of its own), a JSON string in JSON ones; logging keeps each
            // event one line.
            requested_by = approval.requested_by.as_deref().unwrap_or("-"),
            status = %approval.status,
            tier = %approval.risk_tier,
            "approval requested"
        );
    }
    if spend && approval.status == Status::Executed {
        tracing::info!(approval_id = %approval.id, "approval executed");
    }
    Ok(created)
}

#[derive(Debug, Deserialize)]
// A parameter it does not know is refused, not ignored: `?wiat=30` would otherwise read
// at once, and a client that believes it long-polls would ask again and again.
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    wait: Option<String>,
}

/// `GET /v1/approvals/{id}[?wait=N]`.
#[utoipa::path(
    get,
    path = "/v1/approvals/{id}",
    operation_id = "getApproval",
    tag = "approvals",
    summary = "Read an approval, or wait for its decision",
    params(
        ("id" = ApprovalId, Path, description = "The approval's id"),
        ("wait" = Option<f64>, Query, minimum = 0, example = 30,
            description = "Seconds (fractions allowed, capped at 60) to wait while it is `pending`: \
                the answer comes the moment the decision commits, or after `wait` with the state read then; \
                a token revoked meanwhile gets 401"),
    ),
    responses(
        (status = 200, description = "The approval", body = ApprovalView),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::NotFound),
        (status = 429, description = "The token has 256 long-polls waiting on this server already \
            (`Limits::waits_per_token`) and this one would wait: follow the token's approvals with \
            one event stream (`GET /v1/approvals/events`) instead, or wait in fewer places at once", body = ErrorBody,
            example = json!({
                "error": "too_many_waits",
                "detail": "agent-session-42 has 256 requests waiting for decisions on this server, \
                    the most a token may have at once: follow its approvals with one event stream \
                    (GET /v1/approvals/events) instead"
            })),
        (status = 503, response = doc::Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    // `?wait=1&wait=2` or undecodable bytes: the API's 400, not axum's plain text.
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let wait = match query.wait.as_deref() {
        None => Duration::ZERO,
        Some(raw) => parse_wait(raw, MAX_WAIT_SECS)?,
    };
    let (approval, permalink) = read(&state, &caller, id, wait).await?;
    Ok(Json(ApprovalView::new(&approval, permalink.as_deref())).into_response())
}

/// A `wait` in seconds (fractions allowed), capped at `max`.
pub fn parse_wait(raw: &str, max: f64) -> Result<Duration, ApiError> {
    match raw.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs.min(max))),
        _ => Err(ApiError::BadRequest(format!(
            "wait must be a number of seconds from 0 to {max}, not {raw:?}"
        ))),
    }
}

/// Reads the caller's approval, first waiting up to `wait` for it to leave `pending`;
/// with the message's link while it is pending (where to look while it waits).
pub async fn read(
    state: &AppState,
    caller: &Caller,
    id: ApprovalId,
    wait: Duration,
) -> Result<(Approval, Option<String>), ApiError> {
    if wait.is_zero() {
        // The approval and its Slack link in one read.
        let (approval, link) = state
            .store
            .get_linked(id)
            .await?
            .filter(|(approval, _)| owned_by(approval, caller))
            .ok_or_else(|| ApiError::not_found(id))?;
        let approval = approval.as_seen_at(state.clock.now());
        let permalink = link.filter(|_| approval.status == Status::Pending);
        return Ok((approval, permalink));
    }
    let approval = wait_for_decision(state, caller, id, wait)
        .await?
        .as_seen_at(state.clock.now());
    // The token was checked up to a minute ago: one revoked meanwhile reads nothing.
    caller.verify_again(state).await?;
    // Without Slack nothing is ever posted: no link to look up.
    let permalink = if approval.status == Status::Pending && state.slack.is_some() {
        state.store.main_permalinks(&[id]).await?.remove(&id)
    } else {
        None
    };
    Ok((approval, permalink))
}

/// Whether the approval belongs to the caller's token (a row inserted straight into the
/// shared table belongs to none).
fn owned_by(approval: &Approval, caller: &Caller) -> bool {
    approval.token_name.as_deref() == Some(caller.0.as_str())
}

/// The approval, if it belongs to the caller's token. Another token's approval (and a
/// row inserted straight into the shared table, which has none) is not found, exactly
/// as an unknown id is: a token cannot even learn that it exists.
async fn load(state: &AppState, caller: &Caller, id: ApprovalId) -> Result<Approval, ApiError> {
    state
        .store
        .get(id)
        .await?
        .filter(|approval| owned_by(approval, caller))
        .ok_or_else(|| ApiError::not_found(id))
}

/// Answers as soon as the approval leaves `pending`, or after `wait` (reading it once
/// more then). Woken by the store's change notices (no polling); subscribing before
/// the first read means a decision committed in between is never missed, and when
/// notices may have been lost (`Store::missed`) it reads again.
async fn wait_for_decision(
    state: &AppState,
    caller: &Caller,
    id: ApprovalId,
    wait: Duration,
) -> Result<Approval, ApiError> {
    let mut changes = state.store.subscribe();
    let mut missed = state.store.missed();
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::Instant::now() + wait;
    let mut approval = load(state, caller, id).await?;
    if !approval.is_pending_at(state.clock.now()) {
        return Ok(approval);
    }
    // Each waits on one of the server's connections: a token has at most so many
    // waiting at once, so that it cannot take them all.
    let name = &caller.0;
    let _counted = state
        .waits
        .open(name, state.limits.waits_per_token)
        .map_err(|open| {
            ApiError::TooManyWaits(format!(
                "{name} has {open} requests waiting for decisions on this server, the most a \
                 token may have at once: follow its approvals with one event stream \
                 (GET /v1/approvals/events) instead"
            ))
        })?;
    // Counted in `signoff_long_polls_waiting` from here (subscribed, and read pending)
    // until it answers or its client leaves.
    let _waiting = state.metrics.long_poll_waiting();
    // One past its expiry is answered at once (as expired, by `read`), not when the
    // scheduler's pass records it.
    while approval.status == Status::Pending
        && !approval.is_expired_at(state.clock.now())
        && !*shutdown.borrow()
    {
        let expiry = until(state.clock.now(), approval.expires_at);
        tokio::select! {
            notice = changes.recv() => match notice {
                Ok(change) if change.id != id => continue,
                // Made here: the committed approval comes with the notice.
                Ok(StatusChange { after: Some(after), .. }) if after.version >= approval.version => {
                    approval = Approval::clone(&after);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => approval = load(state, caller, id).await?,
                Err(RecvError::Closed) => break,
            },
            // Other replicas' notices were lost (PostgreSQL's LISTEN connection dropped).
            Ok(()) = missed.changed() => approval = load(state, caller, id).await?,
            // The last word is a read: a notice lost on its way leaves nothing pending.
            _ = tokio::time::sleep_until(deadline) => {
                approval = load(state, caller, id).await?;
                break;
            }
            // Looked at again at its expiry, on the clock's time.
            _ = tokio::time::sleep(expiry) => {}
            _ = shutdown.changed() => break,
        }
    }
    Ok(approval)
}

/// How long from `now` until `at` (zero once passed).
fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default()
}

/// The call about to run: it must be the approved one, exactly.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "tool_name": "delete_customer_records",
    "parameters": {"customer_ids": ["c1", "c2"]}
}))]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Equal to the approved parameters (key order does not matter).
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// The tool about to run; when given (always give it), it must be the approved one.
    pub tool_name: Option<String>,
    /// The MCP server about to run it; when given (a gate in front of MCP servers:
    /// always give it), it must be the one the approval was asked for, and an approval
    /// asked for without a server is not run for one.
    pub server: Option<String>,
}

/// `POST /v1/approvals/{id}/execute`: the single-use gate.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/execute",
    operation_id = "executeApproval",
    tag = "approvals",
    summary = "Execute an approved call, once",
    description = "Succeeds once, only if the approval is `approved`, unexpired, and the \
        parameters (and `tool_name` and `server`, when given) equal the approved ones. \
        Anything else is `409` and changes nothing.",
    params(("id" = ApprovalId, Path, description = "The approval's id")),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "Executed: run exactly these parameters", body = ExecutedView),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::NotFound),
        (status = 408, response = doc::RequestTimeout),
        (status = 409, description = "Refused: not approved, expired, already executed, or \
            another tool or other parameters; `status` says where it stands", body = ErrorBody,
            example = json!({"error": "conflict", "detail": "this request is pending, not approved", "status": "pending"})),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Unprocessable),
        (status = 503, response = doc::Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let approval = run(&state, caller, id, body).await?;
    Ok(Json(ExecutedView::new(&approval)).into_response())
}

/// Spends the approval on this call: exactly once, only approved, only with the
/// approved tool and parameters (the state machine decides; refusals change nothing).
#[tracing::instrument(skip_all, fields(token = %caller.0, approval_id = %id))]
pub async fn run(
    state: &AppState,
    caller: Caller,
    id: ApprovalId,
    body: ExecuteRequest,
) -> Result<Approval, ApiError> {
    // As in `ask`: a token revoked while the body arrived runs nothing.
    caller.verify_again(state).await?;
    let event = Event::Execute {
        parameters: body.parameters,
        tool_name: body.tool_name,
        server: body.server,
        caller: Some(caller.0),
    };
    let approval = state.store.apply(id, event, state.clock.now()).await?;
    tracing::info!("approval executed");
    Ok(approval)
}

/// `POST /v1/approvals/{id}/cancel`: the requester withdraws a pending request.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/cancel",
    operation_id = "cancelApproval",
    tag = "approvals",
    summary = "Withdraw a pending request",
    params(("id" = ApprovalId, Path, description = "The approval's id")),
    responses(
        (status = 200, description = "Cancelled: the approval", body = ApprovalView),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::NotFound),
        (status = 409, description = "It is not pending; `status` says where it stands", body = ErrorBody,
            example = json!({"error": "conflict", "detail": "this request is already approved", "status": "approved"})),
        (status = 503, response = doc::Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(token = %caller.0, approval_id = tracing::field::Empty))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    tracing::Span::current().record("approval_id", tracing::field::display(id));
    let event = Event::Cancel {
        caller: Some(caller.0),
    };
    let approval = state.store.apply(id, event, state.clock.now()).await?;
    tracing::info!("approval cancelled");
    Ok(Json(ApprovalView::new(&approval, None)).into_response())
}
