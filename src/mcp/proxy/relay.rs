//! Passing requests through: the client's requests to the upstream (with its progress
//! token mapped back and its cancellation forwarded), and the upstream's progress back
//! to the client under the client's own token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientNotification, ClientRequest,
    ProgressNotificationParam, ProgressToken, RequestId, ResultType, ServerResult,
};
use rmcp::service::{
    Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer, ServiceError,
};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::listen::Listeners;
use super::rounds::Rounds;

/// Progress can arrive just after its response (notifications are handled on tasks of
/// their own), so a token is kept this long after the answer.
const KEEP_TOKEN: Duration = Duration::from_secs(2);

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
    progress: Arc<Mutex<HashMap<ProgressToken, ProgressToken>>>,
}

/// A request sent upstream and not answered yet. Dropped unanswered, it cancels the
/// upstream request; its progress token is forgotten a little after it is dropped.
pub struct Flight {
    response: oneshot::Receiver<Result<ServerResult, ServiceError>>,
    id: RequestId,
    ours: ProgressToken,
    upstream: Peer<RoleClient>,
    progress: Arc<Mutex<HashMap<ProgressToken, ProgressToken>>>,
    /// Answered, or its cancellation sent: nothing to cancel on drop.
    done: bool,
}

impl Flight {
    /// The upstream's answer (cancel-safe: a later call still gets it).
    pub async fn answer(&mut self) -> Result<ServerResult, McpError> {
        let answer = (&mut self.response).await;
        self.done = true;
        let mut answer = answer
            .unwrap_or(Err(ServiceError::TransportClosed))
            .map_err(upstream_error)?;
        stamp_complete(&mut answer);
        Ok(answer)
    }

    /// The answer, or an error when `cancelled` fires first (the upstream request is
    /// then cancelled).
    pub async fn land(mut self, cancelled: &CancellationToken) -> Result<ServerResult, McpError> {
        tokio::select! {
            answer = self.answer() => answer,
            _ = cancelled.cancelled() => {
                self.abandon("cancelled by the client");
                Err(self::cancelled())
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
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let upstream = self.upstream.clone();
        let cancel = CancelledNotificationParam::new(Some(self.id.clone()), Some(why.into()));
        runtime.spawn(async move {
            let cancel = CancelledNotification::new(cancel);
            let _ = upstream
                .send_notification(ClientNotification::CancelledNotification(cancel))
                .await;
        });
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.cancel("abandoned by the MCP client");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let progress = self.progress.clone();
        let ours = self.ours.clone();
        runtime.spawn(async move {
            tokio::time::sleep(KEEP_TOKEN).await;
            progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ours);
        });
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

/// The client cancelled its request.
pub fn cancelled() -> McpError {
    McpError::internal_error("cancelled by the client", None)
}

impl Relay {
    pub fn new(rounds: Rounds) -> Self {
        Self {
            client: Arc::default(),
            listeners: Listeners::default(),
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
        self.send(upstream, request, context)
            .await?
            .land(&context.ct)
            .await
    }

    /// Sends `request` upstream on behalf of the client request `context`, with the
    /// client's progress token mapped to the upstream request's.
    pub async fn send(
        &self,
        upstream: &Peer<RoleClient>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<Flight, McpError> {
        let _ = self.client.set(context.peer.clone());
        let handle = upstream
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(upstream_error)?;
        let ours = handle.progress_token.clone();
        if let Some(theirs) = context.meta.get_progress_token() {
            self.lock().insert(ours.clone(), theirs);
        }
        Ok(Flight {
            id: handle.id.clone(),
            response: handle.rx,
            ours,
            upstream: upstream.clone(),
            progress: self.progress.clone(),
            done: false,
        })
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
