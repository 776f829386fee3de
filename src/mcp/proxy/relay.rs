//! Passing requests through: the client's requests to the upstream (with its progress
//! token mapped back and its cancellation forwarded), and the upstream's progress back
//! to the client under the client's own token.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rmcp::ErrorData as McpError;
use rmcp::model::{
    ClientRequest, InputRequest, ProgressNotificationParam, ProgressToken, ServerResult,
};
use rmcp::service::{
    Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer, ServiceError,
};
use serde_json::Value;

use super::flight::{self, Flight, Tokens};
use super::listen::Listeners;
use super::rounds::{Carried, Rounds};

/// The two peers, the progress tokens in flight, the client's notification streams
/// and the rounds of 2026-07-28 clients' calls.
#[derive(Clone)]
pub struct Relay {
    /// The client, once it has connected.
    pub client: Arc<OnceLock<Peer<RoleServer>>>,
    /// Where the upstream's list changes and resource updates go (see [`Listeners`]).
    pub listeners: Listeners,
    /// Where the upstream's requests for a 2026-07-28 client go (see [`Rounds`]).
    pub rounds: Rounds,
    /// The proxy's progress token on an upstream request → the client's.
    progress: Tokens,
}

/// The client cancelled its request.
pub fn cancelled() -> McpError {
    McpError::internal_error("cancelled by the client", None)
}

impl Relay {
    pub fn new(rounds: Rounds) -> Self {
        let client = Arc::default();
        Self {
            listeners: Listeners::new(Arc::clone(&client)),
            client,
            rounds,
            progress: Arc::default(),
        }
    }

    /// Sends `request` upstream on behalf of the client request `context`, and
    /// waits for its answer (or the client's cancel).
    pub async fn forward(
        &self,
        upstream: &Peer<RoleClient>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        // Boxed: the sending is a one-off, the landing is what waits.
        Box::pin(self.send(upstream, request, context))
            .await?
            .land(&context.ct)
            .await
    }

    /// Sends `request` upstream on behalf of the client request `context`, with the
    /// client's progress token mapped to the upstream request's. To an upstream on
    /// 2026-07-28, a request that may come back `input_required` is driven through its
    /// rounds (see [`Flight::driven`]).
    pub async fn send(
        &self,
        upstream: &Peer<RoleClient>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<Flight, McpError> {
        let _ = self.client.set(context.peer.clone());
        let theirs = context.meta.get_progress_token();
        if flight::modern(upstream) && flight::takes_rounds(&request) {
            let upstream = upstream.clone();
            return Ok(Flight::driven(self.clone(), upstream, request, theirs));
        }
        self.send_once(upstream, request, theirs).await
    }

    /// Sends `request` upstream once, with the client's progress token `theirs`
    /// mapped to the upstream request's.
    pub async fn send_once(
        &self,
        upstream: &Peer<RoleClient>,
        request: ClientRequest,
        theirs: Option<ProgressToken>,
    ) -> Result<Flight, McpError> {
        let handle = upstream
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(upstream_error)?;
        if let Some(theirs) = theirs {
            self.lock().insert(handle.progress_token.clone(), theirs);
        }
        Ok(Flight::request(
            handle,
            upstream.clone(),
            self.progress.clone(),
        ))
    }

    /// Asks the client `request` for the upstream: inside the next round of a
    /// 2026-07-28 client's request (see [`super::rounds`]) when there is one to carry
    /// it, else as an input request of a 2026-07-28 client's task, else as a request
    /// of its own. The client's answer, as JSON.
    pub async fn ask(&self, request: InputRequest) -> Result<Value, McpError> {
        if let Some(carried) = self.rounds.ask(&request) {
            return match carried.await {
                Ok(Carried::Answered(answer)) => Ok(answer),
                Ok(Carried::Uncarried) => self.ask_uncarried(&request).await,
                Err(_) => Err(McpError::internal_error(
                    "the MCP client did not come back with an answer (signoff proxy gave the request up)",
                    None,
                )),
            };
        }
        if let Some(answer) = self.rounds.ask_in_task(&request) {
            return answer.await;
        }
        let client = self
            .client
            .get()
            .ok_or_else(|| McpError::internal_error("no MCP client is connected yet", None))?;
        let request = match request {
            InputRequest::CreateMessage(request) => request.into(),
            InputRequest::Elicitation(request) => request.into(),
            InputRequest::ListRoots(request) => request.into(),
            _ => {
                return Err(McpError::invalid_params(
                    "signoff proxy does not know this kind of input request",
                    None,
                ));
            }
        };
        let answer = client
            .send_request(request)
            .await
            .map_err(|error| match error {
                ServiceError::McpError(error) => error,
                other => McpError::internal_error(format!("the MCP client: {other}"), None),
            })?;
        serde_json::to_value(answer).map_err(|error| {
            McpError::internal_error(format!("the MCP client's answer: {error}"), None)
        })
    }

    /// A question that waited for a 2026-07-28 client's call to carry it when no call
    /// was left that could: a task's input request if a task waits, else an error (such
    /// a client takes no requests of its own).
    async fn ask_uncarried(&self, request: &InputRequest) -> Result<Value, McpError> {
        match self.rounds.ask_in_task(request) {
            Some(answer) => answer.await,
            None => Err(McpError::internal_error(
                "signoff proxy could not put this request to the MCP client: no request of the \
                 client's is left to carry it (the one it waited for was given up)",
                None,
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProgressToken, ProgressToken>> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Upstream progress, passed on under the client's token (dropped when unknown).
    pub async fn progress(&self, mut params: ProgressNotificationParam) {
        let Some(theirs) = self.lock().get(&params.progress_token).cloned() else {
            return;
        };
        params.progress_token = theirs;
        if let Some(client) = self.client.get() {
            let _ = client.notify_progress(params).await;
        }
    }
}

/// An upstream failure as the client's error: the upstream's own error as it came.
pub fn upstream_error(error: ServiceError) -> McpError {
    match error {
        ServiceError::McpError(error) => error,
        other => McpError::internal_error(
            format!("the MCP server behind signoff proxy: {other}"),
            None,
        ),
    }
}
