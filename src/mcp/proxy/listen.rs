//! `subscriptions/listen` (MCP 2026-07-28): a client on the new protocol gets list
//! changes and resource updates only on streams it opened for them, each with the
//! notifications it asked for (the SDK narrows a request to what the upstream
//! advertises). The proxy subscribes upstream to each resource a stream names (the
//! legacy `resources/subscribe`, the upstream's handshake being the legacy one; counted,
//! so two streams on one resource subscribe once) and unsubscribes when the last
//! stream naming it closes. A client that began with `initialize` gets the upstream's
//! notifications as they come, as before.
// The upstream speaks the legacy protocol: its subscriptions are the deprecated RPCs.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rmcp::model::{
    ClientRequest, ServerNotification, SubscribeRequest, SubscribeRequestParams,
    UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::{Peer, RoleClient, RoleServer, SubscriptionContext, SubscriptionSink};

/// The client's notification streams, and how it connected.
#[derive(Clone, Default)]
pub struct Listeners {
    /// The client began with `initialize` (a legacy session): notifications go to it
    /// directly, not through streams.
    legacy: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    streams: HashMap<u64, SubscriptionSink>,
    /// Resource URI → how many open streams name it.
    resources: HashMap<String, usize>,
}

impl Listeners {
    /// The client began with `initialize`.
    pub fn set_legacy(&self) {
        self.legacy.store(true, Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves one stream until the client cancels it (or goes away).
    pub async fn listen(&self, upstream: &Peer<RoleClient>, stream: SubscriptionContext) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let uris = stream
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let first: Vec<String> = {
            let mut inner = self.lock();
            inner.streams.insert(id, stream.sink().clone());
            uris.iter()
                .filter(|uri| {
                    let count = inner.resources.entry((*uri).clone()).or_default();
                    *count += 1;
                    *count == 1
                })
                .cloned()
                .collect()
        };
        for uri in first {
            let request = SubscribeRequest::new(SubscribeRequestParams::new(uri.clone()));
            subscribe_upstream(upstream, ClientRequest::SubscribeRequest(request), &uri).await;
        }
        stream.cancelled().await;
        let last: Vec<String> = {
            let mut inner = self.lock();
            inner.streams.remove(&id);
            uris.iter()
                .filter(|uri| {
                    let count = inner.resources.entry((*uri).clone()).or_default();
                    *count = count.saturating_sub(1);
                    let gone = *count == 0;
                    if gone {
                        inner.resources.remove(*uri);
                    }
                    gone
                })
                .cloned()
                .collect()
        };
        for uri in last {
            let request = UnsubscribeRequest::new(UnsubscribeRequestParams::new(uri.clone()));
            subscribe_upstream(upstream, ClientRequest::UnsubscribeRequest(request), &uri).await;
        }
    }

    /// Passes an upstream notification on: to a legacy client as it came, to a client
    /// on the new protocol on each of its streams that asked for it (none: dropped).
    pub async fn tell(&self, client: Option<&Peer<RoleServer>>, notification: ServerNotification) {
        if self.legacy.load(Ordering::SeqCst) || !streamed(&notification) {
            if let Some(client) = client {
                let _ = client.send_notification(notification).await;
            }
            return;
        }
        let sinks: Vec<SubscriptionSink> = self.lock().streams.values().cloned().collect();
        for sink in sinks {
            // A stream that did not ask for this kind refuses it: that is the filter.
            let _ = sink.send(notification.clone()).await;
        }
    }
}

/// The notifications that 2026-07-28 clients receive only on their streams.
fn streamed(notification: &ServerNotification) -> bool {
    matches!(
        notification,
        ServerNotification::ToolListChangedNotification(_)
            | ServerNotification::PromptListChangedNotification(_)
            | ServerNotification::ResourceListChangedNotification(_)
            | ServerNotification::ResourceUpdatedNotification(_)
    )
}

/// Sends a legacy (un)subscribe upstream; a refusal only means no updates come.
async fn subscribe_upstream(upstream: &Peer<RoleClient>, request: ClientRequest, uri: &str) {
    if let Err(error) = upstream.send_request(request).await {
        tracing::warn!(%error, uri, "the MCP server refused a resource subscription");
    }
}
