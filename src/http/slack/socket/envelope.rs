//! Socket Mode frames: reading them (`hello`, `disconnect`, envelopes), serving an
//! envelope through the same code as the HTTP endpoints, its ack, and the memory of
//! recent envelopes that keeps a redelivered one from being served twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Timings;
use crate::http::AppState;
use crate::http::slack::commands::{self, Typed};
use crate::http::slack::payload::Payload;
use crate::http::slack::{Answer, Refused, interactions};
use crate::slack::app::SlackApp;

/// One frame Slack sent, read.
#[derive(Debug, PartialEq)]
pub(super) enum Frame {
    Hello,
    Disconnect { reason: String },
    Envelope(Envelope),
}

/// An envelope: something to serve and acknowledge by its id.
#[derive(Debug, PartialEq)]
pub(super) struct Envelope {
    pub id: String,
    pub kind: Kind,
    pub payload: Value,
    /// Whether the ack may carry a payload (a modal's errors, a command's reply).
    pub accepts_response_payload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Interactive,
    SlashCommands,
    EventsApi,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Interactive => "interactive",
            Kind::SlashCommands => "slash_commands",
            Kind::EventsApi => "events_api",
        }
    }
}

/// Why a frame was not read: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// Not JSON text at all.
    NotJson,
    /// JSON, but no frame type signoff knows, or an envelope without an id or payload.
    NotAFrame,
}

impl Unreadable {
    pub fn label(self) -> &'static str {
        match self {
            Unreadable::NotJson => "not_json",
            Unreadable::NotAFrame => "not_a_frame",
        }
    }
}

/// Reads one text frame.
pub(super) fn parse(text: &str) -> Result<Frame, Unreadable> {
    let mut frame: Value = serde_json::from_str(text).map_err(|_| Unreadable::NotJson)?;
    let kind = match frame["type"].as_str() {
        Some("hello") => return Ok(Frame::Hello),
        Some("disconnect") => {
            let reason = frame["reason"].as_str().unwrap_or("unknown").to_owned();
            return Ok(Frame::Disconnect { reason });
        }
        Some("interactive") => Kind::Interactive,
        Some("slash_commands") => Kind::SlashCommands,
        Some("events_api") => Kind::EventsApi,
        _ => return Err(Unreadable::NotAFrame),
    };
    let accepts_response_payload = frame["accepts_response_payload"] == true;
    // Taken out of the frame, not copied: a click's carries the whole message clicked.
    let payload = frame.get_mut("payload").map(Value::take);
    let (Some(id), Some(payload)) = (frame["envelope_id"].as_str(), payload) else {
        return Err(Unreadable::NotAFrame);
    };
    if id.is_empty() || !payload.is_object() {
        return Err(Unreadable::NotAFrame);
    }
    Ok(Frame::Envelope(Envelope {
        id: id.to_owned(),
        kind,
        payload,
        accepts_response_payload,
    }))
}

/// Serves an envelope with the code the HTTP endpoints use: its answer (the ack's
/// payload), or why it was refused.
pub(super) async fn answer(
    state: &AppState,
    slack: &SlackApp,
    envelope: &Envelope,
) -> Result<Answer, Refused> {
    match envelope.kind {
        Kind::Interactive => {
            let payload =
                Payload::from_value(&envelope.payload).map_err(interactions::unreadable)?;
            interactions::interact(state, slack, &payload).await
        }
        Kind::SlashCommands => {
            let field = |name: &str| envelope.payload[name].as_str();
            let typed = Typed {
                user_id: field("user_id"),
                channel_id: field("channel_id"),
                text: field("text").unwrap_or_default(),
            };
            commands::command(state, slack, &typed).await.map(Some)
        }
        // signoff subscribes to no events; one that comes anyway needs nothing.
        Kind::EventsApi => Ok(None),
    }
}

/// The ack of envelope `id`, with `payload` when there is one.
pub(super) fn ack(id: &str, payload: Option<&Value>) -> String {
    match payload {
        Some(payload) => json!({ "envelope_id": id, "payload": payload }).to_string(),
        None => json!({ "envelope_id": id }).to_string(),
    }
}

/// What the memory knows of an envelope id.
#[derive(Debug)]
pub(super) enum Seen {
    /// New: serve it, and drop the sender once it is answered or forgotten, which
    /// tells the copies that came meanwhile to look again.
    New(watch::Sender<()>),
    /// Another copy is being served: wait until the receiver's sender is gone, then
    /// look again (answered, or forgotten and to be served afresh).
    InFlight(watch::Receiver<()>),
    /// Served: this ack again.
    Answered(String),
}

/// One remembered envelope id.
enum Slot {
    /// Being served; its sender is dropped when it is done.
    Serving(watch::Receiver<()>),
    Answered(String),
}

/// The envelope ids of the last [`Recent::MAX_AGE`], [`Recent::CAPACITY`] at most,
/// and their acks, across sockets (Slack may redeliver on another one).
#[derive(Default)]
pub(super) struct Recent {
    acks: HashMap<String, Slot>,
    /// The ids in the order they came, with when.
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    /// Far more than Slack redelivers in the minutes it retries at signoff's rates.
    pub const CAPACITY: usize = 50_000;
    /// Slack redelivers an envelope a few times within its first minutes; an id is
    /// forgotten this long after it came, so a quiet process keeps no acks for good.
    pub const MAX_AGE: Duration = Duration::from_secs(10 * 60);

    /// Notes `id`, come at `now`, as being served, unless it is being served or was
    /// answered.
    pub fn begin(&mut self, id: &str, now: Instant) -> Seen {
        self.forget_older(now);
        match self.acks.get(id) {
            Some(Slot::Answered(ack)) => return Seen::Answered(ack.clone()),
            Some(Slot::Serving(done)) if done.has_changed().is_ok() => {
                return Seen::InFlight(done.clone());
            }
            // Its sender is gone with neither an answer nor a `forget`: the task
            // serving it was dropped. This copy serves it.
            Some(Slot::Serving(_)) => {}
            None => {
                if self.order.len() >= Self::CAPACITY
                    && let Some((_, oldest)) = self.order.pop_front()
                {
                    self.acks.remove(&oldest);
                }
                self.order.push_back((now, id.to_owned()));
            }
        }
        let (serving, done) = watch::channel(());
        self.acks.insert(id.to_owned(), Slot::Serving(done));
        Seen::New(serving)
    }

    /// `id` was served and acked with `ack`.
    pub fn answered(&mut self, id: &str, ack: &str) {
        if let Some(slot) = self.acks.get_mut(id) {
            *slot = Slot::Answered(ack.to_owned());
        }
    }

    /// `id` was not served (refused or failed): a redelivery is served afresh.
    pub fn forget(&mut self, id: &str) {
        self.acks.remove(id);
        self.order.retain(|(_, known)| known != id);
    }

    /// Forgets the ids that came more than [`Recent::MAX_AGE`] before `now`.
    fn forget_older(&mut self, now: Instant) {
        while let Some((came, _)) = self.order.front()
            && now.saturating_duration_since(*came) > Self::MAX_AGE
        {
            if let Some((_, id)) = self.order.pop_front() {
                self.acks.remove(&id);
            }
        }
    }
}

/// What every socket shares: the app, the memory of envelopes, and the TLS config.
pub(super) struct Shared {
    pub state: AppState,
    pub slack: SlackApp,
    pub timings: Timings,
    pub recent: Mutex<Recent>,
    /// The sockets' TLS config, its root certificates loaded once for every reconnect.
    pub tls: crate::tls::Kept,
}

impl Shared {
    pub fn new(state: AppState, slack: SlackApp, timings: Timings) -> Self {
        Self {
            state,
            slack,
            timings,
            recent: Mutex::default(),
            tls: crate::tls::Kept::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A panic elsewhere cannot leave the map half-changed: each change is one call.
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves `envelope` once: the ack to send, or `None` (refused or failed). Logs
    /// and counts it either way. A copy that comes while another is being served (a
    /// redelivery, on this socket or another) waits for that one and is acked with its
    /// answer, on the socket it came on: the first copy's may be gone.
    pub async fn serve(&self, envelope: &Envelope) -> Option<String> {
        let metrics = &self.state.metrics;
        let kind = envelope.kind.label();
        let serving = match self.claim(envelope).await {
            Ok(serving) => serving,
            Err(ack) => return Some(ack),
        };
        let answered = match answer(&self.state, &self.slack, envelope).await {
            Ok(payload) => {
                let payload = payload.filter(|_| envelope.accepts_response_payload);
                let ack = ack(&envelope.id, payload.as_ref());
                self.recent().answered(&envelope.id, &ack);
                metrics.socket_envelope(kind, "acked");
                Some(ack)
            }
            Err(refused) => {
                self.recent().forget(&envelope.id);
                self.refused(envelope, &refused);
                None
            }
        };
        // Copies waiting for this one look again now.
        drop(serving);
        answered
    }

    /// Claims `envelope` for serving (`Ok`: drop the sender when done), or the ack of
    /// the copy served before it (`Err`), once that copy is done if it is being served.
    async fn claim(&self, envelope: &Envelope) -> Result<watch::Sender<()>, String> {
        let mut seen = self.recent().begin(&envelope.id, Instant::now());
        if !matches!(seen, Seen::New(_)) {
            tracing::info!(envelope_id = %envelope.id, "redelivered; acked with the first answer");
            let kind = envelope.kind.label();
            self.state.metrics.socket_envelope(kind, "redelivered");
        }
        loop {
            match seen {
                Seen::New(serving) => return Ok(serving),
                Seen::Answered(ack) => return Err(ack),
                // Resolves (as an error) once that copy is answered or forgotten; if
                // forgotten, this one is served afresh.
                Seen::InFlight(mut done) => {
                    let _ = done.changed().await;
                }
            }
            seen = self.recent().begin(&envelope.id, Instant::now());
        }
    }

    /// Logs and counts an envelope that was not served; it is not acked, so Slack
    /// tells the person it failed (and may redeliver it).
    fn refused(&self, envelope: &Envelope, refused: &Refused) {
        let metrics = &self.state.metrics;
        match refused {
            Refused::BadRequest(detail) => {
                tracing::warn!(envelope_id = %envelope.id, kind = envelope.kind.label(), %detail, "Socket Mode envelope cannot be served; not acked");
                metrics.socket_unparsed("bad_payload");
            }
            other => {
                tracing::error!(envelope_id = %envelope.id, error = %other, "Socket Mode envelope failed; not acked");
                metrics.socket_envelope(envelope.kind.label(), "failed");
            }
        }
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
