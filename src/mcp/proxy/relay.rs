//! Passing requests through: the client's requests to the upstream (with its progress
//! token mapped back and its cancellation forwarded), and the upstream's progress back
//! to the client under the client's own token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientNotification, ClientRequest,
    ProgressNotificationParam, ProgressToken, ServerResult,
};
use rmcp::service::{
    Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer, ServiceError,
};

use super::listen::Listeners;

/// Progress can arrive just after its response (notifications are handled on tasks of
/// their own), so a token is kept this long after the answer.
const KEEP_TOKEN: Duration = Duration::from_secs(2);

/// The two peers, the progress tokens in flight, and the client's notification streams.
#[derive(Clone, Default)]
pub struct Relay {
    /// The client, once it has connected.
    pub client: Arc<OnceLock<Peer<RoleServer>>>,
    /// Where the upstream's list changes and resource updates go (see [`Listeners`]).
    pub listeners: Listeners,
    /// The proxy's progress token on an upstream request → the client's.
    progress: Arc<Mutex<HashMap<ProgressToken, ProgressToken>>>,
}

impl Relay {
    /// Sends `request` upstream on behalf of the client request `context`.
    pub async fn forward(
        &self,
        upstream: &Peer<RoleClient>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let _ = self.client.set(context.peer.clone());
        let handle = upstream
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(upstream_error)?;
        let id = handle.id.clone();
        let ours = handle.progress_token.clone();
        if let Some(theirs) = context.meta.get_progress_token() {
            self.lock().insert(ours.clone(), theirs);
        }
        let result = tokio::select! {
            result = handle.await_response() => result.map_err(upstream_error),
            _ = context.ct.cancelled() => {
                let cancel = CancelledNotificationParam::new(Some(id), Some("cancelled by the client".into()));
                let _ = upstream
                    .send_notification(ClientNotification::CancelledNotification(CancelledNotification::new(cancel)))
                    .await;
                Err(McpError::internal_error("cancelled by the client", None))
            }
        };
        let progress = self.progress.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_TOKEN).await;
            progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ours);
        });
        result
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
