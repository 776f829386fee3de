//! Passing requests through: the client's requests to the upstream (with its progress
//! token mapped back and its cancellation forwarded), and the upstream's progress back
//! to the client under the client's own token, after whatever the gate reported under
//! it while the call was held ([`Sent`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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
use super::rounds::{Carried, Origin, Rounds};

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

/// The progress values sent under one client request's token: the gate's reports
/// while the call is held (1, 2, 3…), then the upstream's once it runs, each upstream
/// request's shifted past what was sent before it began, so that they keep increasing
/// as MCP requires (an upstream counts from its own start, and again from 0 in each
/// round of a call driven in rounds). Shared by every upstream request of the call.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    last: Arc<Mutex<Option<f64>>>,
    /// Held from a value's shift to its send: each upstream notification is handled
    /// on a task of its own, and two sends could otherwise pass each other, a decrease.
    sending: Arc<tokio::sync::Mutex<()>>,
}

impl Sent {
    /// The last value sent under the token, by the gate or for the upstream.
    fn last(&self) -> std::sync::MutexGuard<'_, Option<f64>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gate's next report while the call is held: 1, 2, 3… (the gate reports only
    /// before the call runs, so nothing else was sent before).
    pub fn held(&self) -> f64 {
        let mut last = self.last();
        let next = last.unwrap_or(0.0) + 1.0;
        *last = Some(next);
        next
    }

    /// Where an upstream request beginning now counts from: the last value sent.
    fn base(&self) -> f64 {
        self.last().unwrap_or(0.0)
    }

    /// The upstream's `params` shifted by `base`, its request's (its total too); false
    /// when the value would not be above the last one sent (not to be sent).
    fn shift(&self, params: &mut ProgressNotificationParam, base: f64) -> bool {
        let mut last = self.last();
        params.progress += base;
        if let Some(total) = &mut params.total {
            *total += base;
        }
        if last.is_some_and(|last| params.progress <= last) {
            return false;
        }
        *last = Some(params.progress);
        true
    }
}

/// Where an upstream request's progress goes: the client's token, and what was sent
/// under it.
#[derive(Debug, Clone)]
pub struct Route {
    pub theirs: ProgressToken,
    pub sent: Sent,
    /// What the upstream request's values are shifted by (set as it is sent).
    base: f64,
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
        Box::pin(self.send(upstream, request, context, Sent::default()))
            .await?
            .land(&context.ct)
            .await
    }

    /// Sends `request` upstream on behalf of the client request `context`, with the
    /// client's progress token mapped to the upstream request's (its progress comes
    /// after what `sent` holds). To an upstream on 2026-07-28, a request that may come
    /// back `input_required` is driven through its rounds (see [`Flight::driven`]).
    pub async fn send(
        &self,
        upstream: &Peer<RoleClient>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
        sent: Sent,
    ) -> Result<Flight, McpError> {
        let _ = self.client.set(context.peer.clone());
        let theirs = (context.meta.get_progress_token()).map(|theirs| Route {
            theirs,
            sent,
            base: 0.0,
        });
        if flight::modern(upstream) && flight::takes_rounds(&request) {
            let upstream = upstream.clone();
            return Ok(Flight::driven(self.clone(), upstream, request, theirs));
        }
        self.send_once(upstream, request, theirs).await
    }

    /// Sends `request` upstream once, with the upstream request's progress going to
    /// `theirs`.
    pub async fn send_once(
        &self,
        upstream: &Peer<RoleClient>,
        request: ClientRequest,
        theirs: Option<Route>,
    ) -> Result<Flight, McpError> {
        let handle = upstream
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(upstream_error)?;
        if let Some(theirs) = theirs {
            let base = theirs.sent.base();
            self.lock()
                .insert(handle.progress_token.clone(), Route { base, ..theirs });
        }
        Ok(Flight::request(
            handle,
            upstream.clone(),
            self.progress.clone(),
        ))
    }

    /// Asks the client `request` for the upstream, asked in the client request
    /// `origin` (`None`: tied to no request, as on the session protocol): inside the
    /// next round of a 2026-07-28 client's request (see [`super::rounds`]) when there
    /// is one to carry it (that request itself when the origin is known), else as an
    /// input request of a 2026-07-28 client's task (the origin's own), else as a
    /// request of its own. The client's answer, as JSON.
    pub async fn ask(
        &self,
        request: InputRequest,
        origin: Option<Origin>,
    ) -> Result<Value, McpError> {
        if let Some(carried) = self.rounds.ask(&request, origin) {
            return match carried.await {
                Ok(Carried::Answered(answer)) => Ok(answer),
                Ok(Carried::Uncarried) => self.ask_uncarried(&request, origin).await,
                Err(_) => Err(McpError::internal_error(
                    "the MCP client did not come back with an answer (signoff proxy gave the request up)",
                    None,
                )),
            };
        }
        if let Some(answer) = self.rounds.ask_in_task(&request, origin) {
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
    async fn ask_uncarried(
        &self,
        request: &InputRequest,
        origin: Option<Origin>,
    ) -> Result<Value, McpError> {
        match self.rounds.ask_in_task(request, origin) {
            Some(answer) => answer.await,
            None => Err(McpError::internal_error(
                "signoff proxy could not put this request to the MCP client: no request of the \
                 client's is left to carry it (the one it waited for was given up)",
                None,
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProgressToken, Route>> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Upstream progress, passed on under the client's token after what was sent under
    /// it (dropped when unknown, or when it would not increase).
    pub async fn progress(&self, mut params: ProgressNotificationParam) {
        let Some(route) = self.lock().get(&params.progress_token).cloned() else {
            return;
        };
        let _in_order = route.sent.sending.lock().await;
        if !route.sent.shift(&mut params, route.base) {
            tracing::debug!(
                progress = params.progress,
                "upstream progress that would not increase: not passed on"
            );
            return;
        }
        params.progress_token = route.theirs;
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

/// Whether `error` says the connection to the upstream closed (the upstream died),
/// which a request in flight may learn before the proxy has seen the upstream go.
pub fn upstream_closed(error: &McpError) -> bool {
    *error == upstream_error(ServiceError::TransportClosed)
}

/// Whether `error` is the client's cancel of the request ([`cancelled`]).
pub fn is_cancelled(error: &McpError) -> bool {
    *error == cancelled()
}

#[cfg(test)]
mod tests {
    use rmcp::model::NumberOrString;

    use super::*;

    /// What the client is sent of an upstream request's `progress`, counted from `base`.
    fn passed(sent: &Sent, base: f64, progress: f64) -> Option<f64> {
        let token = ProgressToken(NumberOrString::Number(1));
        let mut params = ProgressNotificationParam::new(token, progress);
        sent.shift(&mut params, base).then_some(params.progress)
    }

    #[test]
    fn progress_keeps_increasing_from_the_waiting_reports_through_every_round() {
        let sent = Sent::default();
        assert_eq!((sent.held(), sent.held()), (1.0, 2.0), "the gate's");
        let first = sent.base();
        assert_eq!(passed(&sent, first, 0.5), Some(2.5));
        assert_eq!(passed(&sent, first, 1.0), Some(3.0));
        // The next round's upstream request counts from 0 again.
        let second = sent.base();
        assert_eq!(passed(&sent, second, 0.5), Some(3.5));
        // A late report of the first round that would go back is not passed on.
        assert_eq!(passed(&sent, first, 1.2), None);
        assert_eq!(passed(&sent, second, 1.0), Some(4.0));
    }
}
