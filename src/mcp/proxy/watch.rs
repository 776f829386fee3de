//! Decisions for every held call from one event stream (`GET /v1/approvals/events`)
//! instead of one long-poll connection per call: a thousand held calls cost the proxy
//! and the server one connection.
//!
//! A held call registers its approval ([`Watch::watch`]), which starts the stream if
//! none runs and returns once the stream listens; the call then reads its approval once
//! (a decision made before the stream listened) and waits on its [`Waiting`]. When the
//! stream breaks, every registered call gets the error (it fails closed, as a failed
//! long-poll did); the next registration opens a new stream. A `resync` event (the
//! server may have dropped changes) reads every registered approval again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::api::{Api, ApiError, View};

/// How long a registration waits for a new stream to listen.
const CONNECT: Duration = Duration::from_secs(30);

/// The stream's state, as registrations see it.
#[derive(Debug, Clone)]
enum Phase {
    Connecting,
    Listening,
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
            Err(_) => Err(ApiError::Refused {
                status: 0,
                detail: "the decision stream closed".into(),
            }),
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
    pub fn new(api: Api) -> Self {
        Self {
            api,
            shared: Arc::default(),
        }
    }

    /// Registers a held call for approval `id`; returns once the stream listens, so
    /// that every change after this is delivered.
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
        let listening = phase.wait_for(|phase| !matches!(phase, Phase::Connecting));
        match tokio::time::timeout(CONNECT, listening).await {
            Ok(Ok(phase)) => match &*phase {
                Phase::Broken(error) => Err(error.clone()),
                _ => Ok(waiting),
            },
            Ok(Err(_)) | Err(_) => Err(ApiError::Refused {
                status: 0,
                detail: "the decision stream did not start".into(),
            }),
        }
    }

    /// Starts the stream (called with the lock held, so only one starts).
    fn start(&self, shared: &mut Shared) -> watch::Receiver<Phase> {
        let (phase, listening) = watch::channel(Phase::Connecting);
        shared.stream = Some(listening.clone());
        tokio::spawn(self.clone().follow(phase));
        listening
    }

    /// Runs the stream until it ends; then fails every call still waiting.
    async fn follow(self, phase: watch::Sender<Phase>) {
        let outcome = self
            .api
            .events(|event, data| match event {
                "ready" => {
                    phase.send_replace(Phase::Listening);
                }
                "approval" => match serde_json::from_str::<View>(data) {
                    Ok(view) => self.deliver(view),
                    Err(error) => tracing::warn!(%error, "unreadable approval event"),
                },
                "resync" => self.resync(),
                _ => {}
            })
            .await;
        let error = outcome.err().unwrap_or_else(|| self.api.stream_closed());
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
