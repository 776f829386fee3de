//! `subscriptions/listen` (MCP 2026-07-28): a client on the new protocol gets list
//! changes and resource updates only on streams it opened for them, each with the
//! notifications it asked for (the SDK narrows a request to what the upstream
//! advertises). The proxy subscribes upstream to each resource a stream names
//! (`resources/subscribe`, or a listen stream of its own on a 2026-07-28 upstream;
//! counted, so two streams on one resource subscribe once) and unsubscribes when the
//! last stream naming it closes. A client that began with `initialize` gets the upstream's
//! notifications as they come, as before. A 2026-07-28 upstream sends its own list
//! changes and resource updates only on listen streams, which the proxy opens upstream
//! ([`Listeners::hear_list_changes`] and [`Listeners::subscribe_upstream`], each
//! opened again whenever it ends while it is wanted).
// A session-protocol upstream's subscriptions are the deprecated RPCs.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    ClientRequest, ServerNotification, SubscribeRequest, SubscribeRequestParams,
    SubscriptionFilter, UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::{
    Peer, RoleClient, RoleServer, Subscription, SubscriptionContext, SubscriptionSink,
};
use tokio::task::AbortHandle;

use super::flight;
use super::relay::upstream_error;

/// The client's notification streams, and how it connected.
#[derive(Clone, Default)]
pub struct Listeners {
    /// The client began with `initialize` (a legacy session): notifications go to it
    /// directly, not through streams.
    legacy: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    inner: Arc<Mutex<Inner>>,
    /// The client, once connected (shared with the relay).
    client: Arc<OnceLock<Peer<RoleServer>>>,
    /// How many times the upstream has said its tool list changed, however it said
    /// it: the proxy's table of tools (their annotations, which the policy classifies
    /// calls by) is stale while it was read at an older count, and is read again
    /// before the next call (see `Calls`).
    pub tools_changed: Arc<AtomicU64>,
    /// No stream listens for a 2026-07-28 upstream's tool list changes (one ended and
    /// is not open again yet): a change now goes unheard, so the tool table counts as
    /// stale, read again before each call (see `Calls`).
    pub deaf: Arc<AtomicBool>,
}

/// The first pause before a stream of the upstream's list changes is opened again.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between tries, while the upstream refuses the stream or ends it
/// at once; a stream that lasted this long is opened again after the first pause.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// The pause before an upstream listen stream is opened again: from [`FIRST_PAUSE`],
/// doubling up to [`LONGEST_PAUSE`] while streams are refused or end at once, and the
/// first again after a stream that lasted.
struct Pause(Duration);

impl Pause {
    fn new() -> Self {
        Pause(FIRST_PAUSE)
    }

    /// Runs `listening` (a stream passed on until it ends); one that lasted starts the
    /// pauses over.
    async fn heard(&mut self, listening: impl std::future::Future<Output = ()>) {
        let opened = tokio::time::Instant::now();
        listening.await;
        if opened.elapsed() >= LONGEST_PAUSE {
            self.0 = FIRST_PAUSE;
        }
    }

    /// Waits out the pause, and doubles the next.
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(LONGEST_PAUSE);
    }
}

#[derive(Default)]
struct Inner {
    streams: HashMap<u64, SubscriptionSink>,
    /// Resource URI → how many open streams name it.
    resources: HashMap<String, usize>,
    /// A 2026-07-28 upstream's resource subscriptions: URI → the task passing on the
    /// updates of the listen stream naming it (aborted, it cancels the stream).
    upstream: HashMap<String, AbortHandle>,
}

impl Listeners {
    pub fn new(client: Arc<OnceLock<Peer<RoleServer>>>) -> Self {
        Self {
            client,
            ..Self::default()
        }
    }

    /// Subscribes the upstream to `uri`: with `resources/subscribe`, or on a 2026-07-28
    /// upstream (which has no such method) with a listen stream naming it, whose
    /// updates are passed on as a session upstream's.
    pub async fn subscribe_upstream(
        &self,
        upstream: &Peer<RoleClient>,
        uri: &str,
    ) -> Result<(), McpError> {
        if !flight::modern(upstream) {
            let request = SubscribeRequest::new(SubscribeRequestParams::new(uri));
            return send(upstream, ClientRequest::SubscribeRequest(request)).await;
        }
        if self.lock().upstream.contains_key(uri) {
            return Ok(());
        }
        // Boxed, as in `send`.
        let stream = Box::pin(upstream.listen(naming(uri)))
            .await
            .map_err(upstream_error)?;
        // Spawned under the lock: the task finds itself registered when it looks.
        let mut inner = self.lock();
        let updates = tokio::spawn(self.clone().keep_resource(
            upstream.clone(),
            uri.to_owned(),
            stream,
        ));
        let replaced = inner
            .upstream
            .insert(uri.to_owned(), updates.abort_handle());
        if let Some(replaced) = replaced {
            replaced.abort();
        }
        Ok(())
    }

    /// Passes on the updates of `stream`, a 2026-07-28 upstream's listen stream naming
    /// `uri`, and opens it again whenever it ends (after a pause as in
    /// [`Listeners::keep_listening`]) while the subscription stands (this task is the
    /// one registered for `uri`, until [`Listeners::unsubscribe_upstream`]) and the
    /// upstream is there; then forgets it, so that a later subscription opens anew.
    async fn keep_resource(self, upstream: Peer<RoleClient>, uri: String, stream: Subscription) {
        let mut stream = Some(stream);
        let mut pause = Pause::new();
        loop {
            if let Some(stream) = stream.take() {
                pause.heard(self.clone().pass_on(stream)).await;
            }
            if upstream.is_transport_closed() || !self.registered(&uri) {
                break;
            }
            pause.wait().await;
            // Boxed, as in `send`.
            match Box::pin(upstream.listen(naming(&uri))).await {
                Ok(opened) => stream = Some(opened),
                Err(error) => {
                    tracing::debug!(%error, uri, "the MCP server refused a resource's stream again");
                }
            }
        }
        let mut inner = self.lock();
        if inner.upstream.get(&uri).is_some_and(is_this_task) {
            inner.upstream.remove(&uri);
        }
    }

    /// Whether the running task is the one registered for `uri`'s updates.
    fn registered(&self, uri: &str) -> bool {
        self.lock().upstream.get(uri).is_some_and(is_this_task)
    }

    /// Ends the upstream's subscription to `uri` (see [`Listeners::subscribe_upstream`]).
    pub async fn unsubscribe_upstream(
        &self,
        upstream: &Peer<RoleClient>,
        uri: &str,
    ) -> Result<(), McpError> {
        if !flight::modern(upstream) {
            let request = UnsubscribeRequest::new(UnsubscribeRequestParams::new(uri));
            return send(upstream, ClientRequest::UnsubscribeRequest(request)).await;
        }
        if let Some(updates) = self.lock().upstream.remove(uri) {
            updates.abort();
        }
        Ok(())
    }

    /// A 2026-07-28 upstream sends list changes only on a `subscriptions/listen`
    /// stream: this opens one for the list changes the upstream advertises and passes
    /// them on, and opens it again whenever it ends (closed by the upstream, given up
    /// as lagging) while the upstream is there (see [`Listeners::keep_listening`]).
    /// Until the first stream listens, the tool table is read again before each call.
    pub fn hear_list_changes(&self, upstream: Peer<RoleClient>) {
        let Some(info) = upstream.peer_info() else {
            return;
        };
        let capabilities = &info.capabilities;
        let mut filter = SubscriptionFilter::builder();
        if capabilities.tools.as_ref().and_then(|c| c.list_changed) == Some(true) {
            filter = filter.tools_list_changed();
        }
        if capabilities.prompts.as_ref().and_then(|c| c.list_changed) == Some(true) {
            filter = filter.prompts_list_changed();
        }
        if capabilities.resources.as_ref().and_then(|c| c.list_changed) == Some(true) {
            filter = filter.resources_list_changed();
        }
        let filter = filter.build();
        if filter == SubscriptionFilter::default() {
            return;
        }
        let tools = filter.tools_list_changed == Some(true);
        self.deaf.store(tools, Ordering::SeqCst);
        tokio::spawn(self.clone().keep_listening(upstream, filter));
    }

    /// Listens for the upstream's list changes with `filter` until the upstream is
    /// gone: a stream that ends is opened again after a pause (100 ms, doubling up to
    /// 5 s while the upstream refuses it or ends it at once). A change said while no
    /// stream listened is never heard, so the tool table counts as stale meanwhile
    /// (`deaf`), and again once a stream is acknowledged (a change just before it was
    /// missed too); and the client is told that each list may have changed, once a
    /// stream listens again after one ended.
    async fn keep_listening(self, upstream: Peer<RoleClient>, filter: SubscriptionFilter) {
        let tools = filter.tools_list_changed == Some(true);
        let mut pause = Pause::new();
        let mut refused = false;
        let mut heard_before = false;
        while !upstream.is_transport_closed() {
            // Boxed, as in `send`.
            match Box::pin(upstream.listen(filter.clone())).await {
                Ok(stream) => {
                    self.tools_changed.fetch_add(1, Ordering::SeqCst);
                    self.deaf.store(false, Ordering::SeqCst);
                    if std::mem::replace(&mut heard_before, true) {
                        self.tell_lists_may_have_changed(&filter).await;
                    }
                    refused = false;
                    pause.heard(self.clone().pass_on(stream)).await;
                    self.deaf.store(tools, Ordering::SeqCst);
                    self.tools_changed.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!(
                        "the MCP server's stream of list changes ended: listening again"
                    );
                }
                Err(error) if !refused && !upstream.is_transport_closed() => {
                    refused = true;
                    tracing::warn!(%error, "the MCP server refused a stream of its list changes");
                }
                Err(_) => {}
            }
            pause.wait().await;
        }
    }

    /// Tells the client that each list `filter` follows may have changed: what the
    /// upstream said while no stream listened was lost.
    async fn tell_lists_may_have_changed(&self, filter: &SubscriptionFilter) {
        let mut told = Vec::new();
        if filter.tools_list_changed == Some(true) {
            told.push(ServerNotification::ToolListChangedNotification(
                Default::default(),
            ));
        }
        if filter.prompts_list_changed == Some(true) {
            told.push(ServerNotification::PromptListChangedNotification(
                Default::default(),
            ));
        }
        if filter.resources_list_changed == Some(true) {
            told.push(ServerNotification::ResourceListChangedNotification(
                Default::default(),
            ));
        }
        for notification in told {
            self.tell(notification).await;
        }
    }

    /// Passes on what an upstream listen stream brings, as a session upstream's
    /// notifications, until it ends.
    async fn pass_on(self, mut stream: Subscription) {
        while let Ok(Some(notification)) = stream.next().await {
            self.tell(notification).await;
        }
    }

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
            if let Err(error) = self.subscribe_upstream(upstream, &uri).await {
                tracing::warn!(%error, uri, "the MCP server refused a resource subscription");
            }
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
            if let Err(error) = self.unsubscribe_upstream(upstream, &uri).await {
                tracing::warn!(%error, uri, "the MCP server refused to end a resource subscription");
            }
        }
    }

    /// Passes an upstream notification on: to a legacy client as it came, to a client
    /// on the new protocol on each of its streams that asked for it (none: dropped).
    /// Every upstream notification comes through here, a session upstream's and a
    /// 2026-07-28 upstream's listen streams' alike: a tool list change marks the
    /// proxy's tool table stale, before the client hears of it.
    pub async fn tell(&self, notification: ServerNotification) {
        if matches!(
            notification,
            ServerNotification::ToolListChangedNotification(_)
        ) {
            self.tools_changed.fetch_add(1, Ordering::SeqCst);
        }
        if self.legacy.load(Ordering::SeqCst) || !streamed(&notification) {
            if let Some(client) = self.client.get() {
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

/// A listen filter naming resource `uri`.
fn naming(uri: &str) -> SubscriptionFilter {
    SubscriptionFilter::builder()
        .resource_subscriptions(vec![uri.to_owned()])
        .build()
}

/// Whether `handle` is the running task's.
fn is_this_task(handle: &AbortHandle) -> bool {
    tokio::task::try_id() == Some(handle.id())
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

/// Sends a session-protocol (un)subscribe upstream. Boxed: a held call's task is as
/// large as the largest of the proxy's request handlers, and this is a one-off.
async fn send(upstream: &Peer<RoleClient>, request: ClientRequest) -> Result<(), McpError> {
    let sent = Box::pin(upstream.send_request(request)).await;
    sent.map(drop).map_err(upstream_error)
}
