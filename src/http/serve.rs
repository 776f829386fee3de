//! The server loop: accepts connections on a given listener and serves the router on
//! each, within [`Limits`], until a shutdown future resolves; then lets in-flight
//! requests finish (long-polls answer at once with the current state), and Socket
//! Mode ack the envelopes it is serving.
//!
//! The limits keep a client that sends slowly, or not at all, from holding the server:
//! a connection has [`Limits::header`] to send each request's head (also when it sits
//! idle between requests), a request [`Limits::body`] to send its whole body, and at
//! most [`Limits::max_connections`] are served at once (past it, new connections wait
//! in the listen queue, and the log says so). An answer being written that the client
//! does not read for [`Limits::write`] closes the connection ([`super::stalled`]).
//! A request being answered has no time limit here: long-polls keep their own, and
//! event streams, which last, are at most [`Limits::streams_per_token`] per token (one
//! token cannot take every connection).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::AppState;
use super::stalled::Stalled;

/// Per-connection limits (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's first line and headers, counted from when the
    /// connection waits for one: an idle keep-alive connection is closed after it.
    pub header: Duration,
    /// Time to send a whole request body, from when the handler starts reading it.
    pub body: Duration,
    /// Time a write of the answer may wait for the client to read (any progress
    /// starts it again): past it, the connection is closed.
    pub write: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Event streams (`GET /v1/approvals/events`) one token may have open at once on
    /// this server; past it, `429 too_many_streams`.
    pub streams_per_token: usize,
    /// Long-polls (`GET /v1/approvals/{id}?wait=N`, and `/mcp`'s
    /// `check_approval_status` with a wait) one token may have waiting at once on this
    /// server; past it, `429 too_many_waits`.
    pub waits_per_token: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            write: Duration::from_secs(30),
            max_connections: 1024,
            streams_per_token: 64,
            waits_per_token: 256,
        }
    }
}

/// How long in-flight requests get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);
/// The "connection limit reached" warning is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `state` on `listener` until `shutdown` resolves (see the module doc), with
/// the Socket Mode connection beside it when `state.socket_mode` is set.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    let router = super::app(state.clone());
    let decisions = tokio::spawn(super::metrics::count_decisions(
        state.store.clone(),
        state.metrics.clone(),
    ));
    // Stops when `begin_shutdown` below turns `state.shutdown` true.
    let socket = state
        .socket_mode
        .clone()
        .map(|mode| tokio::spawn(super::slack::socket::run(state.clone(), mode)));
    // HTTP/1.1 only: its parser times the head from the first moment it waits for
    // one, where telling HTTP/2 apart would first wait for bytes with no limit.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached; new connections wait"
                    );
                    last_warning = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let stream = TokioIo::new(Stalled::new(stream, limits.write));
        let connection = graceful.watch(builder.serve_connection(stream, service));
        tokio::spawn(async move {
            // Held until the connection closes.
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    state.begin_shutdown();
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN:?}; stopping anyway");
    }
    decisions.abort();
    if let Some(socket) = socket {
        let _ = socket.await;
    }
    Ok(())
}
