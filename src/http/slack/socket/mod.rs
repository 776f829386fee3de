//! Socket Mode: Slack's interactions and `/approvals` over a WebSocket that signoff
//! opens, so no public URL is needed. With `SLACK_APP_TOKEN` (an app-level `xapp-…`
//! token with `connections:write`), [`run`] asks `apps.connections.open` for a socket
//! URL, connects, and feeds every envelope to the same transport-neutral code as the
//! HTTP endpoints (`interactions::interact`, `commands::command`): the same checks of
//! who clicked, the same replies, the same one decision. The ack (with the modal's
//! errors or the `/approvals` reply as its `payload`) goes back on the socket the
//! envelope came on. What comes over the socket needs no signature: it is the TLS
//! connection signoff opened to Slack with the app-level token.
//!
//! - `disconnect` (`refresh_requested`, `warning`, …): a new socket is opened while
//!   the old one keeps serving, and the old one is closed once the new one said
//!   `hello` and the envelopes the old one took are acked, also those Slack sent it
//!   meanwhile; at the latest [`Timings::drain`] after it was replaced or took its
//!   last envelope.
//! - At shutdown the socket is closed the same way, and [`run`] returns once every
//!   socket has sent its acks and its close, or after [`Timings::drain`]: the process
//!   does not exit with a click served but unacked.
//! - A dropped socket, or `apps.connections.open` failing (e.g. `invalid_auth`), is
//!   retried with doubling, jittered backoff ([`Timings::backoff_min`] …
//!   [`Timings::backoff_max`]); `/health/approvals` says `socket_mode: reconnecting`
//!   until a socket is up again. A socket that ends within [`Timings::stable`] of its
//!   `hello`, even at Slack's request, counts as a failure too: the backoff is reset
//!   only by a socket that stayed up, so sockets that end at once are not reopened in
//!   a tight loop. A socket silent for two [`Timings::ping_every`] is
//!   taken for dropped.
//! - A redelivered envelope (Slack retries when an ack is late, on any socket) is
//!   acked on the socket it came on with the first copy's answer, never served twice
//!   (see `envelope::Recent`). A copy that comes while the first is still being served
//!   waits for its answer and is acked too: the first copy's socket may be gone.
//! - A frame that is not JSON, not a Slack frame, or an envelope whose payload cannot
//!   be served is logged and counted (`signoff_socket_mode_unparsed_total`), and not
//!   acknowledged: Slack then shows the clicker that it failed, as an HTTP 400 would.
//!
//! Why not slack-morphism's Socket Mode listener (tested with 2.31): it parses each
//! envelope into typed models, and its `SlackMessageMetadata::event_payload` is a map
//! of strings, so a click on any message signoff posted (whose metadata carries the
//! approval's `version`, a number) fails to parse; the listener then acks that
//! envelope itself, and the click is lost without an answer (see
//! `envelope::tests::slack_morphism_cannot_read_a_click_on_signoffs_message`). It also
//! closes the old socket before opening the new one on `disconnect`. This client is
//! tokio-tungstenite (the WebSocket crate slack-morphism itself uses) and plain
//! `serde_json` values, like the HTTP side.

mod connection;
mod envelope;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use crate::http::AppState;
use crate::slack::client::{SlackClient, SlackError};
use connection::{Event, Handle};
use envelope::Shared;

/// Socket Mode settings: the app-level token, where `apps.connections.open` is (the
/// Web API base, `SLACK_API_URL`), and the timings.
#[derive(Clone)]
pub struct SocketMode {
    app_token: Arc<str>,
    api_url: Arc<str>,
    pub timings: Timings,
}

impl SocketMode {
    /// `app_token` must be an app-level token (`xapp-…`); a bot or user token is a
    /// configuration error that names the variable.
    pub fn new(app_token: &str, api_url: &str) -> Result<Self, String> {
        if !app_token.starts_with("xapp-") {
            return Err(
                "SLACK_APP_TOKEN must be an app-level token (xapp-…, with the connections:write scope), not a bot or user token".into(),
            );
        }
        Ok(Self {
            app_token: app_token.into(),
            api_url: api_url.into(),
            timings: Timings::default(),
        })
    }

    /// Other timings (tests shorten them).
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }
}

/// How long things may take; tests run them in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// The first wait before connecting again; it doubles with each failure in a row.
    pub backoff_min: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// How long a new socket has to connect and say `hello`.
    pub hello_timeout: Duration,
    /// A socket silent this long is pinged; silent twice as long, it is dropped.
    pub ping_every: Duration,
    /// A replaced socket closes once the envelopes it took are acked, but at the
    /// latest this long after it was replaced or took its last envelope, whichever is
    /// later.
    pub drain: Duration,
    /// A socket that ends sooner than this after its `hello` (it dropped, or Slack
    /// asked for a new one) counts as a failure: the next one waits its backoff, which
    /// keeps doubling while sockets keep ending this soon.
    pub stable: Duration,
    /// No socket up for this long (none could be opened, or the last one dropped and
    /// none opened since) degrades `/health/approvals`: Slack's clicks and commands
    /// cannot reach signoff.
    pub down_after: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(10),
            ping_every: Duration::from_secs(30),
            // More than serving an envelope takes (a click waits up to 2 s for a user
            // group, then for its vote to be written), and past Slack's 3 s for an ack.
            drain: Duration::from_secs(10),
            // Slack refreshes a socket every few hours.
            stable: Duration::from_secs(30),
            // Past a refresh, or a reconnect after a short outage (backoff 1 s, 2 s…).
            down_after: Duration::from_secs(60),
        }
    }
}

impl Timings {
    /// The wait after `failures` failures in a row: doubling from `backoff_min` up to
    /// `backoff_max`, less up to half of it at random (replicas do not retry in step).
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .backoff_min
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        let full = doubled.min(self.backoff_max);
        full.mul_f64(1.0 - rand::random::<f64>() / 2.0)
    }
}

// 0: off.
const RECONNECTING: u8 = 1;
const CONNECTED: u8 = 2;

/// The Socket Mode connection as `/health/approvals` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SocketState {
    /// A socket is up (after its `hello`).
    Connected,
    /// None is up yet, or it was lost: signoff is connecting, with backoff.
    Reconnecting,
    /// No `SLACK_APP_TOKEN`: Slack reaches signoff over HTTP only.
    Off,
}

/// Whether the socket is up, for `/health/approvals`; cheap to clone.
#[derive(Clone, Default)]
pub struct Status(Arc<StatusInner>);

#[derive(Default)]
struct StatusInner {
    state: AtomicU8,
    /// Since when no socket is up, while none is; and how long that may last before
    /// it degrades health ([`Timings::down_after`]).
    down: Mutex<Option<tokio::time::Instant>>,
    down_after: Duration,
}

impl Status {
    /// Whether a socket is up now.
    pub fn state(&self) -> SocketState {
        match self.0.state.load(Ordering::Relaxed) {
            CONNECTED => SocketState::Connected,
            RECONNECTING => SocketState::Reconnecting,
            _ => SocketState::Off,
        }
    }

    /// Whether Socket Mode is on and no socket has been up for longer than
    /// [`Timings::down_after`].
    pub fn is_down(&self) -> bool {
        let since = *self.0.down.lock().unwrap_or_else(|p| p.into_inner());
        since.is_some_and(|since| since.elapsed() >= self.0.down_after)
    }

    /// Socket Mode is configured, and no socket is up yet.
    pub(crate) fn reconnecting(down_after: Duration) -> Self {
        Status(Arc::new(StatusInner {
            state: AtomicU8::new(RECONNECTING),
            down: Mutex::new(Some(tokio::time::Instant::now())),
            down_after,
        }))
    }

    fn set(&self, value: u8) {
        let mut down = self.0.down.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            CONNECTED => *down = None,
            _ => {
                down.get_or_insert_with(tokio::time::Instant::now);
            }
        }
        self.0.state.store(value, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SocketMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("SocketMode")
            .field("api_url", &self.api_url)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

/// Keeps one Socket Mode connection up until `state.shutdown` turns true, then closes
/// the sockets once what they serve is acked, waiting at most [`Timings::drain`] (see
/// the module doc). Needs the Slack side (`state.slack`) for the replies.
pub async fn run(state: AppState, mode: SocketMode) {
    let status = state.socket_status.clone();
    let mut shutdown = state.shutdown.clone();
    let Some(slack) = state.slack.clone() else {
        tracing::error!("Socket Mode needs SLACK_BOT_TOKEN as well; not connecting");
        return;
    };
    let opener = match SlackClient::new(&mode.app_token, &mode.api_url) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "Socket Mode cannot start");
            return;
        }
    };
    status.set(RECONNECTING);
    let shared = Arc::new(Shared::new(state, slack, mode.timings));
    let (alive, mut all_closed) = mpsc::channel(1);
    let mut keeper = Keeper {
        opener,
        shared,
        timings: mode.timings,
        status,
        events: mpsc::unbounded_channel(),
        alive,
        current: None,
        failures: 0,
        next_id: 0,
    };
    tokio::select! {
        () = keeper.keep_up() => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    if let Some(current) = keeper.current.take() {
        current.close();
    }
    drop(keeper);
    // Each socket's writer holds a clone of `alive` until its last frame is sent: the
    // acks of what its socket is serving, then the close.
    let drain = mode.timings.drain;
    if tokio::time::timeout(drain, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "Socket Mode stops with envelopes still being served; they are not acked"
        );
    }
}

/// The loop that keeps a socket up: which one is current, and how many attempts in a
/// row failed.
struct Keeper {
    opener: SlackClient,
    shared: Arc<Shared>,
    timings: Timings,
    status: Status,
    events: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
    /// Held by every socket's writer (see [`run`]).
    alive: mpsc::Sender<()>,
    current: Option<Handle>,
    failures: u32,
    next_id: u64,
}

impl Keeper {
    async fn keep_up(&mut self) {
        loop {
            match self.connect().await {
                Ok(handle) => {
                    let up_since = tokio::time::Instant::now();
                    tracing::info!(socket = handle.id, "Socket Mode connected");
                    if let Some(old) = self.current.replace(handle) {
                        old.close();
                    }
                    self.status.set(CONNECTED);
                    // Until Slack asks for a new socket, or this one drops.
                    let replace = self.watch_current().await;
                    let stayed_up = up_since.elapsed() >= self.timings.stable;
                    if stayed_up {
                        self.failures = 0;
                    }
                    // A new socket asked for by Slack opens at once, unless the last
                    // one ended right after its hello.
                    if !replace || !stayed_up {
                        self.failures = self.failures.saturating_add(1);
                        let wait = self.timings.backoff(self.failures);
                        if replace {
                            tracing::warn!(retry_in = ?wait, "Slack asked for a new socket right after the last one's hello; waiting");
                        }
                        self.wait(wait).await;
                    }
                }
                Err((error, retry_after)) => {
                    self.failures = self.failures.saturating_add(1);
                    // No sooner than Slack asked, when it rate-limits the asks.
                    let wait = self
                        .timings
                        .backoff(self.failures)
                        .max(retry_after.unwrap_or_default());
                    tracing::warn!(%error, retry_in = ?wait, "Socket Mode cannot connect");
                    if self.current.is_none() {
                        self.status.set(RECONNECTING);
                    }
                    self.wait(wait).await;
                }
            }
        }
    }

    /// `apps.connections.open`, then the WebSocket until its `hello`; else why not, and
    /// how long Slack asked to wait before asking again (a 429's `Retry-After`).
    async fn connect(&mut self) -> Result<Handle, (String, Option<Duration>)> {
        let answer = self
            .opener
            .call("apps.connections.open", &json!({}))
            .await
            .map_err(|error| {
                let why = match &error {
                    SlackError::Api { code } => format!(
                        "apps.connections.open refused SLACK_APP_TOKEN ({code}): check that it is the app-level token with connections:write and that Socket Mode is on"
                    ),
                    other => format!("apps.connections.open failed: {other}"),
                };
                (why, error.retry_after())
            })?;
        let url = answer["url"].as_str().ok_or((
            "apps.connections.open answered without a url".to_owned(),
            None,
        ))?;
        self.next_id += 1;
        let ties = (self.events.0.clone(), self.alive.clone());
        connection::open(url, self.next_id, self.shared.clone(), ties)
            .await
            .map_err(|why| (why, None))
    }

    /// Serves until the current socket has to be replaced: `true` when Slack asked for
    /// a new one (the old one keeps serving meanwhile), `false` when it dropped.
    async fn watch_current(&mut self) -> bool {
        while let Some(event) = self.events.1.recv().await {
            if let Some(replace) = self.on_event(event) {
                return replace;
            }
        }
        false
    }

    /// Waits `wait` before the next attempt, noting meanwhile whether the current socket
    /// drops.
    async fn wait(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                Some(event) = self.events.1.recv() => {
                    self.on_event(event);
                }
            }
        }
    }

    /// What an event about a socket means: `Some(true)` the current one is to be
    /// replaced, `Some(false)` it dropped, `None` nothing for the loop to do (an event
    /// of a socket already replaced).
    fn on_event(&mut self, event: Event) -> Option<bool> {
        let current = self.current.as_ref().map(|handle| handle.id);
        match event {
            Event::Disconnect { id, reason } if Some(id) == current => {
                if reason == "link_disabled" {
                    tracing::error!(
                        socket = id,
                        "Slack disabled this app's Socket Mode (link_disabled); retrying"
                    );
                } else {
                    tracing::info!(socket = id, %reason, "Slack asks for a new socket");
                }
                Some(true)
            }
            Event::Closed { id, why } if Some(id) == current => {
                tracing::warn!(socket = id, %why, "Socket Mode socket dropped; reconnecting");
                self.current = None;
                self.status.set(RECONNECTING);
                Some(false)
            }
            Event::Disconnect { .. } | Event::Closed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_least_to_the_most_and_is_jittered_by_up_to_half() {
        let timings = Timings {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1_000),
            ..Timings::default()
        };
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let wait = timings.backoff(failures);
                assert!(wait <= full && wait >= full / 2, "{failures}: {wait:?}");
            }
        }
        assert!(timings.backoff(0) <= Duration::from_millis(100));
    }

    #[test]
    fn a_replaced_socket_waits_for_a_click_that_waited_for_its_user_group() {
        // Such a click may wait this long, and then still has Slack's 3 s for its ack.
        let longest = crate::slack::approvers::INTERACTIVE_WAIT + Duration::from_secs(3);
        assert!(Timings::default().drain >= longest);
    }

    #[test]
    fn only_an_app_level_token_turns_socket_mode_on_and_it_is_never_shown() {
        let error = SocketMode::new("xoxb-1-bot", "https://slack.com/api").unwrap_err();
        assert!(
            error.contains("SLACK_APP_TOKEN must be an app-level token"),
            "{error}"
        );
        assert!(!error.contains("xoxb-1-bot"));
        let mode = SocketMode::new("xapp-1-A0APP-secret", "https://slack.com/api").unwrap();
        assert!(!format!("{mode:?}").contains("secret"));
        assert_eq!(Status::default().state(), SocketState::Off);
        let minute = Duration::from_secs(60);
        assert_eq!(
            Status::reconnecting(minute).state(),
            SocketState::Reconnecting
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_socket_up_past_its_grace_is_down_counted_from_each_outages_start() {
        let status = Status::reconnecting(Duration::from_secs(60));
        assert!(!status.is_down());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(status.is_down(), "never connected");
        status.set(CONNECTED);
        assert!(!status.is_down());
        status.set(RECONNECTING);
        tokio::time::advance(Duration::from_secs(59)).await;
        status.set(RECONNECTING);
        assert!(!status.is_down(), "a new outage counts from its own start");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(status.is_down());
        assert!(!Status::default().is_down(), "Socket Mode off");
    }
}
