//! Decisions for every held call from one event stream (`GET /v1/approvals/events`)
//! instead of one long-poll connection per call: a thousand held calls cost the proxy
//! and the server one connection.
//!
//! A held call registers its approval ([`Watch::watch`]), which starts the stream if
//! none runs and returns once the stream listens; the call then reads its approval once
//! (a decision made before the stream listened) and waits on its [`Waiting`]. When the
//! stream breaks, every registered call gets the error (it fails closed, as a failed
//! long-poll did); the next registration opens a new stream. A stream that goes silent
//! (no byte for [`SILENT`], though the server sends a keep-alive every 15 s: a
//! buffering proxy, a half-dead peer) is given up and a new one started in its place;
//! the held calls keep waiting, and every registered approval is read again then and
//! once the new one listens (a decision may have come meanwhile); a call held before it
//! listens registers at once ([`Phase::Resuming`]). The first stream, when it has not
//! said it listens within [`CONNECT`] (a buffering proxy holds back even that), is taken
//! the same way: calls register, read their approval once, and get their decision from
//! the reads at each give-up (or once it says it listens after all). A `resync` event (the server may have dropped changes)
//! reads every registered approval again too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::api::{Api, ApiError, Ended, View};

/// How long registrations wait for the first stream to listen before they go ahead
/// without it ([`Phase::Resuming`]).
const CONNECT: Duration = Duration::from_secs(30);

/// How long the stream may bring nothing before it is given up as dead: three of the
/// server's 15 s keep-alives.
pub const SILENT: Duration = Duration::from_secs(45);

/// The stream's state, as registrations see it.
#[derive(Debug, Clone)]
enum Phase {
    Connecting,
    Listening,
    /// A stream given up for silence, a new one not listening yet (or the first one
    /// not listening after [`CONNECT`]): a registration goes ahead (the call reads
    /// its approval once, and every registered approval is read again at each give-up
    /// and once a stream listens), rather than wait for a stream that a buffering
    /// proxy may never let say it listens.
    Resuming,
    Broken(ApiError),
}

type Answer = Result<View, ApiError>;

#[derive(Default)]
struct Shared {
    /// The held calls, by approval id: each one's key and where its answer goes.
    waiters: HashMap<String, Vec<(u64, oneshot::Sender<Answer>)>>,
    next_key: u64,
    /// The running stream's phase; `None` when no stream runs.
    stream: Option<watch::Receiver<Phase>>,
}

/// The proxy's one stream of decisions, shared by its held calls.
#[derive(Clone)]
pub struct Watch {
    api: Api,
    /// How long the stream may bring nothing ([`SILENT`]; shorter in tests).
    silent: Duration,
    /// How long registrations wait for the first stream to listen ([`CONNECT`]).
    connect: Duration,
    shared: Arc<Mutex<Shared>>,
}

/// One held call's registration; dropping it (the call answered or abandoned)
/// forgets it.
pub struct Waiting {
    id: String,
    key: u64,
    answer: oneshot::Receiver<Answer>,
    shared: Arc<Mutex<Shared>>,
}

impl Waiting {
    /// The approval once it is no longer pending, or why the stream broke.
    pub async fn decided(&mut self) -> Answer {
        match (&mut self.answer).await {
            Ok(answer) => answer,
            // Never: the sender is only dropped after answering or on our own drop.
            Err(_) => Err(ApiError::Stream("closed")),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if let Some(list) = shared.waiters.get_mut(&self.id) {
            list.retain(|(key, _)| *key != self.key);
            if list.is_empty() {
                shared.waiters.remove(&self.id);
            }
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The lock guards plain maps that no panic leaves half-changed.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    pub fn new(api: Api, silent: Duration) -> Self {
        Self {
            api,
            silent,
            connect: CONNECT,
            shared: Arc::default(),
        }
    }

    /// The same, with registrations going ahead after `connect` instead of [`CONNECT`].
    #[cfg(test)]
    fn connecting_within(mut self, connect: Duration) -> Self {
        self.connect = connect;
        self
    }

    /// Registers a held call for approval `id`; returns once the stream listens, so
    /// that every change after this is delivered, or once it is taken to be behind a
    /// buffering proxy ([`Phase::Resuming`]): the call then reads its approval once,
    /// and the reads at each give-up bring a later decision.
    pub async fn watch(&self, id: &str) -> Result<Waiting, ApiError> {
        let (sender, answer) = oneshot::channel();
        let (waiting, mut phase) = {
            let mut shared = lock(&self.shared);
            let key = shared.next_key;
            shared.next_key += 1;
            shared
                .waiters
                .entry(id.to_owned())
                .or_default()
                .push((key, sender));
            let phase = match &shared.stream {
                Some(phase) => phase.clone(),
                None => self.start(&mut shared),
            };
            let waiting = Waiting {
                id: id.to_owned(),
                key,
                answer,
                shared: self.shared.clone(),
            };
            (waiting, phase)
        };
        // The stream leaves `Connecting` within `connect` (see `follow`).
        match phase
            .wait_for(|phase| !matches!(phase, Phase::Connecting))
            .await
        {
            Ok(phase) => match &*phase {
                Phase::Broken(error) => Err(error.clone()),
                _ => Ok(waiting),
            },
            // Never: the stream says it broke before it ends.
            Err(_) => Err(ApiError::Stream("ended before it listened")),
        }
    }

    /// Starts the stream (called with the lock held, so only one starts).
    fn start(&self, shared: &mut Shared) -> watch::Receiver<Phase> {
        let (phase, listening) = watch::channel(Phase::Connecting);
        shared.stream = Some(listening.clone());
        tokio::spawn(self.clone().follow(phase));
        listening
    }

    /// Runs the stream until it ends, with a new one in place of each that went
    /// silent; then fails every call still waiting.
    async fn follow(self, phase: watch::Sender<Phase>) {
        let error = loop {
            let events = self.api.events(self.silent, |event, data| match event {
                "ready" => {
                    // Calls went ahead without a stream that listened (in place of a
                    // silent one, or a late first one): decisions may have come meanwhile.
                    if let Phase::Resuming = phase.send_replace(Phase::Listening) {
                        self.resync();
                    }
                }
                "approval" => match serde_json::from_str::<View>(data) {
                    Ok(view) => self.deliver(view),
                    Err(error) => tracing::warn!(%error, "unreadable approval event"),
                },
                "resync" => self.resync(),
                _ => {}
            });
            match self.within_connect(events, &phase).await {
                Ok(Ended::Silent) => {
                    tracing::info!(silent = ?self.silent, "the decision stream went silent: starting a new one");
                    phase.send_replace(Phase::Resuming);
                    // Read now, not only once the new one listens: behind a reverse
                    // proxy that buffers streams, it never says it does.
                    self.resync();
                }
                Ok(Ended::Closed) => break self.api.stream_closed(),
                Err(error) => break error,
            }
        };
        tracing::debug!(%error, "decision stream ended");
        let waiters = {
            let mut shared = lock(&self.shared);
            shared.stream = None;
            std::mem::take(&mut shared.waiters)
        };
        phase.send_replace(Phase::Broken(error.clone()));
        for (_, sender) in waiters.into_values().flatten() {
            let _ = sender.send(Err(error.clone()));
        }
    }

    /// Runs `events`; when the stream has not said it listens within `connect`,
    /// registrations go ahead without it ([`Phase::Resuming`]) while it runs on.
    async fn within_connect<T>(
        &self,
        events: impl Future<Output = T>,
        phase: &watch::Sender<Phase>,
    ) -> T {
        let mut events = std::pin::pin!(events);
        tokio::select! {
            outcome = &mut events => return outcome,
            () = tokio::time::sleep(self.connect) => {}
        }
        phase.send_if_modified(|phase| {
            let connecting = matches!(phase, Phase::Connecting);
            if connecting {
                tracing::info!(connect = ?self.connect, "the decision stream does not say it listens (a buffering proxy?): calls are held without it");
                *phase = Phase::Resuming;
            }
            connecting
        });
        events.await
    }

    /// Answers the calls held for `view` if it is decided.
    fn deliver(&self, view: View) {
        if view.status == "pending" {
            return;
        }
        let senders = lock(&self.shared).waiters.remove(&view.approval_id);
        for (_, sender) in senders.into_iter().flatten() {
            let _ = sender.send(Ok(view.clone()));
        }
    }

    /// Reads every registered approval again (changes may have been missed).
    fn resync(&self) {
        let ids: Vec<String> = lock(&self.shared).waiters.keys().cloned().collect();
        for id in ids {
            let watch = self.clone();
            tokio::spawn(async move {
                match watch.api.get(&id).await {
                    Ok(view) => watch.deliver(view),
                    Err(error) => tracing::warn!(%error, approval_id = id, "cannot read again"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::get;
    use serde_json::json;

    use super::*;

    /// A signoff whose decision streams say they listen, then go silent (no
    /// keep-alive); its approval `a1` is approved. With how many streams it opened.
    /// Every stream from the `buffered`th on (0 the first, `usize::MAX` none) brings
    /// nothing at all, not even that it listens, as behind a reverse proxy that
    /// buffers them.
    async fn silent_signoff(buffered: usize) -> (String, Arc<AtomicUsize>) {
        let opened = Arc::new(AtomicUsize::new(0));
        let counted = opened.clone();
        let events = move || {
            let nth = counted.fetch_add(1, Ordering::SeqCst);
            let said = if nth < buffered {
                "event: ready\ndata: {}\n\n"
            } else {
                ""
            };
            let ready = futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(axum::body::Bytes::from(said))
            });
            let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(
                ready,
                futures_util::stream::pending(),
            ));
            async move {
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap()
            }
        };
        let approved = json!({"approval_id": "a1", "status": "approved", "parameters": {}});
        let router = Router::new()
            .route("/v1/approvals/events", get(events))
            .route(
                "/v1/approvals/a1",
                get(move || std::future::ready(axum::Json(approved.clone()))),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (base, opened)
    }

    /// A stream that brings nothing for the silent time is given up and a new one
    /// started; once it listens, a decision the silent one never brought is read, and
    /// the held call gets it (not an error).
    #[tokio::test]
    async fn a_silent_decision_stream_is_replaced_and_the_held_call_still_gets_its_decision() {
        decided_after_silence(usize::MAX).await;
    }

    /// `a1`'s decision, as a held call gets it from [`silent_signoff`] (`buffered` as
    /// there); checks that a new stream was opened.
    async fn decided_after_silence(buffered: usize) {
        let (base, opened) = silent_signoff(buffered).await;
        let watch = Watch::new(Api::new(&base, None).unwrap(), Duration::from_millis(200));
        let mut waiting = watch.watch("a1").await.unwrap();
        let decided = tokio::time::timeout(Duration::from_secs(5), waiting.decided())
            .await
            .expect("the silent stream is given up, and the decision read again")
            .unwrap();
        assert_eq!(decided.status, "approved");
        assert!(opened.load(Ordering::SeqCst) >= 2, "a new stream");
    }

    /// A call held after the stream went silent, while the new one does not say it
    /// listens (buffered): registered at once, not after the 30 s a new stream has to
    /// start, and its decision comes with the next give-up's reads.
    #[tokio::test]
    async fn a_call_held_while_a_buffered_stream_resumes_is_registered_at_once() {
        let (base, opened) = silent_signoff(1).await;
        let watch = Watch::new(Api::new(&base, None).unwrap(), Duration::from_millis(200));
        let first = watch.watch("a1").await.unwrap();
        let replaced = async {
            while opened.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), replaced)
            .await
            .expect("the silent stream is given up");
        let mut waiting = tokio::time::timeout(Duration::from_secs(2), watch.watch("a1"))
            .await
            .expect("registered without waiting for the stream to listen")
            .unwrap();
        let decided = tokio::time::timeout(Duration::from_secs(5), waiting.decided())
            .await
            .expect("read again at the next give-up")
            .unwrap();
        assert_eq!(decided.status, "approved");
        drop(first);
    }

    /// Behind a reverse proxy that buffers the streams, the new stream never says it
    /// listens: the held call's approval is read again when the silent one is given up,
    /// and the call gets its decision all the same.
    #[tokio::test]
    async fn a_held_call_gets_its_decision_when_the_new_stream_is_buffered_too() {
        decided_after_silence(1).await;
    }

    /// Behind a reverse proxy that buffers every stream, the first one never says it
    /// listens either: past the connect time the call is registered all the same (not
    /// refused), and its decision comes with the reads when the stream is given up.
    #[tokio::test]
    async fn a_call_is_registered_when_the_first_stream_never_says_it_listens() {
        let (base, opened) = silent_signoff(0).await;
        let watch = Watch::new(Api::new(&base, None).unwrap(), Duration::from_secs(2))
            .connecting_within(Duration::from_millis(300));
        let mut waiting = tokio::time::timeout(Duration::from_millis(1500), watch.watch("a1"))
            .await
            .expect("registered after the connect time, before the give-up")
            .expect("registered, not refused");
        assert_eq!(
            opened.load(Ordering::SeqCst),
            1,
            "registered before the give-up"
        );
        let decided = tokio::time::timeout(Duration::from_secs(5), waiting.decided())
            .await
            .expect("read again at the give-up")
            .unwrap();
        assert_eq!(decided.status, "approved");
    }
}
