//! An upstream request in flight ([`Flight`]): its answer, and its cancellation when it
//! is given up. A request to an upstream on 2026-07-28 that may come back
//! `input_required` (a tool call, a prompt, a resource read) runs as a driver task
//! ([`Flight::driven`]): it asks the client each of the upstream's input requests (see
//! [`Relay::ask`]) and retries with the answers, so the client side sees one request
//! whatever protocol the upstream speaks.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientNotification, ClientRequest,
    InputResponses, ProgressToken, RequestId, ResultType, ServerResult,
};
use rmcp::service::{Peer, RequestHandle, RoleClient, ServiceError};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::relay::{Relay, Route, upstream_error};
use super::rounds::Origin;

/// Progress can arrive just after its response (notifications are handled on tasks of
/// their own), so a token is kept this long after the answer.
const KEEP_TOKEN: Duration = Duration::from_secs(2);

/// How many `input_required` rounds one request may take upstream (as SDK clients cap it).
const MAX_ROUNDS: usize = 10;

/// The proxy's progress token on an upstream request → where its progress goes.
pub type Tokens = Arc<Mutex<HashMap<ProgressToken, Route>>>;

type Answer = Pin<Box<dyn Future<Output = Result<ServerResult, McpError>> + Send>>;

/// A request sent upstream and not answered yet. Dropped unanswered, it is cancelled.
pub struct Flight {
    answer: Answer,
    stop: Stop,
    /// Answered, or its cancellation sent: nothing to cancel on drop.
    done: bool,
    /// The client request whose upstream request asks its questions in its answers
    /// (a driven one); none for a request on the session protocol, whose questions
    /// are tied to no request.
    origin: Option<Origin>,
}

/// How a flight is stopped.
enum Stop {
    /// A request on the wire: `notifications/cancelled`; its progress token is
    /// forgotten a little after the flight is dropped.
    Request {
        upstream: Peer<RoleClient>,
        id: RequestId,
        ours: ProgressToken,
        tokens: Tokens,
    },
    /// A driver task: aborted, which drops (and so cancels) its request on the wire.
    Driver(AbortHandle),
}

impl Flight {
    /// The flight of `handle`, a request sent to `upstream`.
    pub fn request(
        handle: RequestHandle<RoleClient>,
        upstream: Peer<RoleClient>,
        tokens: Tokens,
    ) -> Self {
        let stop = Stop::Request {
            upstream,
            id: handle.id.clone(),
            ours: handle.progress_token.clone(),
            tokens,
        };
        let response = handle.rx;
        let answer = Box::pin(async move {
            response
                .await
                .unwrap_or(Err(ServiceError::TransportClosed))
                .map_err(upstream_error)
        });
        Self {
            answer,
            stop,
            done: false,
            origin: None,
        }
    }

    /// `request` to an upstream on 2026-07-28, driven through its rounds; its
    /// questions are asked from a fresh [`Origin`].
    pub fn driven(
        relay: Relay,
        upstream: Peer<RoleClient>,
        request: ClientRequest,
        theirs: Option<Route>,
    ) -> Self {
        let origin = relay.rounds.origin();
        let (sender, answered) = oneshot::channel();
        let driver = tokio::spawn(async move {
            let _ = sender.send(drive(&relay, &upstream, request, theirs, origin).await);
        });
        let answer = Box::pin(async move {
            answered.await.unwrap_or_else(|_| {
                Err(McpError::internal_error(
                    "the request to the MCP server was given up",
                    None,
                ))
            })
        });
        Self {
            answer,
            stop: Stop::Driver(driver.abort_handle()),
            done: false,
            origin: Some(origin),
        }
    }

    /// The client request whose questions this flight's upstream request asks, when
    /// known.
    pub fn origin(&self) -> Option<Origin> {
        self.origin
    }

    /// The flight, its questions asked from `origin`.
    #[cfg(test)]
    pub fn asked_from(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// A flight that is never answered, and its stand-in driver (aborted when the
    /// flight is cancelled).
    #[cfg(test)]
    pub fn never_answered() -> (Self, tokio::task::JoinHandle<()>) {
        let driver = tokio::spawn(std::future::pending());
        let flight = Self {
            answer: Box::pin(std::future::pending()),
            stop: Stop::Driver(driver.abort_handle()),
            done: false,
            origin: None,
        };
        (flight, driver)
    }

    /// A flight already answered with `answer`.
    #[cfg(test)]
    pub fn answered(answer: ServerResult) -> Self {
        let driver = tokio::spawn(std::future::pending::<()>());
        Self {
            answer: Box::pin(std::future::ready(Ok(answer))),
            stop: Stop::Driver(driver.abort_handle()),
            done: false,
            origin: None,
        }
    }

    /// The upstream's answer (cancel-safe: a later call still gets it).
    pub async fn answer(&mut self) -> Result<ServerResult, McpError> {
        let answer = self.answer.as_mut().await;
        self.done = true;
        let mut answer = answer?;
        stamp_complete(&mut answer);
        Ok(answer)
    }

    /// The answer, or an error when `cancelled` fires first (the upstream request is
    /// then cancelled). An answer that is there is taken even when the cancel is there
    /// too: the call ran, and its approval is spent, which the answer tells.
    pub async fn land(mut self, cancelled: &CancellationToken) -> Result<ServerResult, McpError> {
        tokio::select! {
            biased;
            answer = self.answer() => answer,
            _ = cancelled.cancelled() => {
                self.abandon("cancelled by the client");
                Err(super::relay::cancelled())
            }
        }
    }

    /// Cancels the upstream request, saying `why`.
    pub fn abandon(mut self, why: &str) {
        self.cancel(why);
    }

    fn cancel(&mut self, why: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        match &self.stop {
            Stop::Driver(driver) => driver.abort(),
            Stop::Request { upstream, id, .. } => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let upstream = upstream.clone();
                let cancel = CancelledNotificationParam::new(Some(id.clone()), Some(why.into()));
                runtime.spawn(async move {
                    let cancel = CancelledNotification::new(cancel);
                    let _ = upstream
                        .send_notification(ClientNotification::CancelledNotification(cancel))
                        .await;
                });
            }
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.cancel("abandoned by the MCP client");
        let Stop::Request { ours, tokens, .. } = &self.stop else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tokens, ours) = (tokens.clone(), ours.clone());
        runtime.spawn(async move {
            tokio::time::sleep(KEEP_TOKEN).await;
            tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ours);
        });
    }
}

/// Whether `upstream` speaks 2026-07-28 or later (it was reached with `server/discover`).
pub fn modern(upstream: &Peer<RoleClient>) -> bool {
    upstream
        .peer_info()
        .is_some_and(|info| info.protocol_version >= rmcp::model::ProtocolVersion::V_2026_07_28)
}

/// Whether `request` may come back `input_required`.
pub fn takes_rounds(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::CallToolRequest(_)
            | ClientRequest::GetPromptRequest(_)
            | ClientRequest::ReadResourceRequest(_)
    )
}

/// Sends `request` until the upstream answers it with something else than
/// `input_required`: each round's input requests go to the client at once, and their
/// answers (with the round's `requestState`) go with the next try. The questions are
/// asked from `origin`: the client request (or its task) this one serves carries them.
async fn drive(
    relay: &Relay,
    upstream: &Peer<RoleClient>,
    mut request: ClientRequest,
    theirs: Option<Route>,
    origin: Origin,
) -> Result<ServerResult, McpError> {
    for _ in 0..MAX_ROUNDS {
        let mut flight = relay
            .send_once(upstream, request.clone(), theirs.clone())
            .await?;
        let input = match flight.answer().await? {
            ServerResult::InputRequiredResult(input) => input,
            answer => return Ok(answer),
        };
        let asked = input.input_requests.unwrap_or_default();
        let answers = asked.into_iter().map(|(key, asked)| async move {
            let answer = relay.ask(asked, Some(origin)).await;
            answer.map(|answer| (key, answer))
        });
        let answers: InputResponses = futures_util::future::try_join_all(answers)
            .await?
            .into_iter()
            .collect();
        continue_with(&mut request, answers, input.request_state);
    }
    Err(McpError::internal_error(
        format!("the MCP server asked for input more than {MAX_ROUNDS} times in one request"),
        None,
    ))
}

/// Sets the next try's answers and state.
fn continue_with(request: &mut ClientRequest, answers: InputResponses, state: Option<String>) {
    match request {
        ClientRequest::CallToolRequest(request) => {
            request.params.input_responses = Some(answers);
            request.params.request_state = state;
        }
        ClientRequest::GetPromptRequest(request) => {
            request.params.input_responses = Some(answers);
            request.params.request_state = state;
        }
        ClientRequest::ReadResourceRequest(request) => {
            request.params.input_responses = Some(answers);
            request.params.request_state = state;
        }
        _ => {}
    }
}

/// Marks a final result `resultType: "complete"` where the upstream left it out (an
/// upstream on the session protocol does): 2026-07-28 requires it of a server, and
/// `rmcp` strips it again for a client on an older protocol.
fn stamp_complete(result: &mut ServerResult) {
    let result_type = match result {
        ServerResult::CompleteResult(r) => &mut r.result_type,
        ServerResult::GetPromptResult(r) => &mut r.result_type,
        ServerResult::ListPromptsResult(r) => &mut r.result_type,
        ServerResult::ListResourcesResult(r) => &mut r.result_type,
        ServerResult::ListResourceTemplatesResult(r) => &mut r.result_type,
        ServerResult::ReadResourceResult(r) => &mut r.result_type,
        ServerResult::ListToolsResult(r) => &mut r.result_type,
        ServerResult::CallToolResult(r) => &mut r.result_type,
        _ => return,
    };
    result_type.get_or_insert(ResultType::COMPLETE);
}

#[cfg(test)]
mod tests {
    use rmcp::model::{CallToolResult, ContentBlock};

    use super::*;

    /// An answer that came as the call was cancelled is the call's outcome: it ran.
    #[tokio::test]
    async fn a_flight_answered_as_it_is_cancelled_lands_with_its_answer() {
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        // `select!` picks at random among the ready branches unless told otherwise.
        for _ in 0..64 {
            let answer = CallToolResult::success(vec![ContentBlock::text("ran")]);
            let flight = Flight::answered(ServerResult::CallToolResult(answer));
            let landed = flight.land(&cancelled).await;
            assert!(
                matches!(&landed, Ok(ServerResult::CallToolResult(result)) if result.is_error != Some(true)),
                "{landed:?}"
            );
        }
    }
}
