//! One Socket Mode WebSocket: connect, wait for `hello`, then read frames until the
//! socket ends, serving each envelope in a task of its own (so a slow one does not hold
//! the others' acks back) and sending its ack on this socket. What the keeper needs to
//! know (`disconnect`, the socket ended) goes to it as an [`Event`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::envelope::{self, Frame, Shared};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a socket tells the keeper.
#[derive(Debug)]
pub(super) enum Event {
    /// Slack sent `disconnect`: it is about to close this socket.
    Disconnect { id: u64, reason: String },
    /// The socket ended (dropped, closed, or silent too long).
    Closed { id: u64, why: String },
}

/// The keeper's hold on a running socket.
pub(super) struct Handle {
    pub id: u64,
    close: oneshot::Sender<()>,
}

impl Handle {
    /// Closes the socket once the envelopes it took are acked (at most
    /// `Timings::drain` from now or from the last one it takes); it keeps serving what
    /// arrives meanwhile.
    pub fn close(self) {
        let _ = self.close.send(());
    }
}

/// What the writer sends.
enum Out {
    Frame(String),
    Ping,
    Close,
}

/// Connects to `url` and waits for `hello`; then serves the socket in the background.
/// Its writer holds `alive` until it has sent its last frame (see [`super::run`]).
pub(super) async fn open(
    url: &str,
    id: u64,
    shared: Arc<Shared>,
    (events, alive): (mpsc::UnboundedSender<Event>, mpsc::Sender<()>),
) -> Result<Handle, String> {
    let hello_timeout = shared.timings.hello_timeout;
    let tls = tokio_tungstenite::Connector::Rustls(shared.tls.for_url(url)?);
    let connect = tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(tls));
    let (socket, _) = timeout(hello_timeout, connect)
        .await
        .map_err(|_| format!("no WebSocket within {hello_timeout:?}"))?
        .map_err(|error| format!("cannot open the WebSocket: {error}"))?;
    let (sink, stream) = socket.split();
    let (out, outgoing) = mpsc::unbounded_channel();
    tokio::spawn(write(sink, outgoing, alive));
    let mut reader = Reader {
        id,
        shared,
        stream,
        out,
        load: Arc::new(watch::channel(Load::default()).0),
        events,
    };
    match timeout(hello_timeout, reader.until_hello()).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(why),
        Err(_) => return Err(format!("no hello within {hello_timeout:?}")),
    }
    let (close, closing) = oneshot::channel();
    tokio::spawn(reader.serve(closing));
    Ok(Handle { id, close })
}

/// Sends what the reader and the envelope tasks hand it, until told to close, the
/// socket fails, or nothing is left that could hand it a frame; `_alive` goes with it.
async fn write(
    mut sink: SplitSink<Socket, Message>,
    mut outgoing: mpsc::UnboundedReceiver<Out>,
    _alive: mpsc::Sender<()>,
) {
    while let Some(out) = outgoing.recv().await {
        let message = match out {
            Out::Frame(text) => Message::text(text),
            Out::Ping => Message::Ping(Vec::new().into()),
            Out::Close => {
                let _ = sink.send(Message::Close(None)).await;
                return;
            }
        };
        if let Err(error) = sink.send(message).await {
            tracing::debug!(%error, "Socket Mode write failed");
            return;
        }
    }
}

/// The reading side of one socket.
struct Reader {
    id: u64,
    shared: Arc<Shared>,
    stream: SplitStream<Socket>,
    out: mpsc::UnboundedSender<Out>,
    /// The envelopes being served, whose acks are still to be sent.
    load: Arc<watch::Sender<Load>>,
    events: mpsc::UnboundedSender<Event>,
}

/// What one frame read meant.
enum Step {
    Hello,
    Went,
    Ended(String),
}

impl Reader {
    /// Reads until `hello` (serving any envelope that comes before it).
    async fn until_hello(&mut self) -> Result<(), String> {
        loop {
            match self.step().await {
                Step::Hello => return Ok(()),
                Step::Went => {}
                Step::Ended(why) => return Err(format!("the socket ended before hello: {why}")),
            }
        }
    }

    /// Serves the socket until it ends; `closing` fires (or is dropped) when the keeper
    /// replaced it, and then it closes once drained.
    async fn serve(mut self, closing: oneshot::Receiver<()>) {
        let ping_every = self.shared.timings.ping_every;
        let (load, out, drain) = (
            self.load.clone(),
            self.out.clone(),
            self.shared.timings.drain,
        );
        let mut closing = Some(closing);
        let mut last_heard = Instant::now();
        let mut pinged = false;
        let why = loop {
            let quiet_until = last_heard + ping_every * if pinged { 2 } else { 1 };
            tokio::select! {
                step = self.step() => {
                    last_heard = Instant::now();
                    pinged = false;
                    if let Step::Ended(why) = step {
                        break why;
                    }
                }
                () = tokio::time::sleep_until(quiet_until) => {
                    if pinged {
                        break format!("silent for {:?}", ping_every * 2);
                    }
                    let _ = out.send(Out::Ping);
                    pinged = true;
                }
                _ = until_closing(&mut closing) => {
                    closing = None;
                    tokio::spawn(drain_then_close(self.id, load.clone(), out.clone(), drain));
                }
            }
        };
        let _ = self.events.send(Event::Closed { id: self.id, why });
    }

    /// Reads one message and acts on it.
    async fn step(&mut self) -> Step {
        let message = match self.stream.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Step::Ended(error.to_string()),
            None => return Step::Ended("closed".into()),
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Step::Ended(frame.map_or("closed".into(), |f| format!("closed: {f}")));
            }
            // Pings are answered by tungstenite itself; pongs only show it is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Step::Went,
            Message::Binary(bytes) => {
                self.unreadable(envelope::Unreadable::NotJson, bytes.len());
                return Step::Went;
            }
        };
        match envelope::parse(text.as_str()) {
            Ok(Frame::Hello) => return Step::Hello,
            Ok(Frame::Disconnect { reason }) => {
                let _ = self.events.send(Event::Disconnect {
                    id: self.id,
                    reason,
                });
            }
            Ok(Frame::Envelope(envelope)) => self.dispatch(envelope),
            Err(unreadable) => self.unreadable(unreadable, text.len()),
        }
        Step::Went
    }

    /// Serves `envelope` in a task of its own; its ack goes out on this socket. Once
    /// the socket's close is queued, an envelope that still arrives is left unserved
    /// and unacked: its ack could not go out, and Slack delivers it again elsewhere.
    fn dispatch(&self, envelope: envelope::Envelope) {
        let shared = self.shared.clone();
        let out = self.out.clone();
        let load = self.load.clone();
        let taken = load.send_if_modified(|load| {
            if load.closed {
                return false;
            }
            load.serving += 1;
            load.last_taken = Some(Instant::now());
            true
        });
        if !taken {
            tracing::info!(socket = self.id, envelope_id = %envelope.id, "Socket Mode envelope after the socket's close: left for Slack to deliver again");
            let kind = envelope.kind.label();
            self.shared.state.metrics.socket_envelope(kind, "left");
            return;
        }
        tokio::spawn(async move {
            if let Some(ack) = shared.serve(&envelope).await {
                let _ = out.send(Out::Frame(ack));
            }
            // After the ack is queued: the writer sends it before a close.
            load.send_modify(|load| load.serving -= 1);
        });
    }

    /// Logs and counts a frame that could not be read; it is not acked.
    fn unreadable(&self, why: envelope::Unreadable, bytes: usize) {
        tracing::warn!(
            socket = self.id,
            reason = why.label(),
            bytes,
            "Socket Mode frame cannot be read; not acked"
        );
        self.shared.state.metrics.socket_unparsed(why.label());
    }
}

/// Resolves when the keeper closes (or drops) its handle; never again after that.
async fn until_closing(closing: &mut Option<oneshot::Receiver<()>>) {
    match closing.as_mut() {
        Some(receiver) => {
            let _ = receiver.await;
        }
        None => std::future::pending().await,
    }
}

/// What a socket is serving: how many envelopes whose acks are still to be sent, and
/// when it took the latest.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    serving: usize,
    last_taken: Option<Instant>,
    /// The close is queued: nothing more is taken (set only with nothing serving).
    closed: bool,
}

/// Closes a replaced socket once the envelopes it took are acked: at the latest
/// `drain` after it was replaced or took its last envelope, whichever is later (Slack
/// may still send on it meanwhile, and each envelope gets its time to be served).
async fn drain_then_close(
    id: u64,
    taking: Arc<watch::Sender<Load>>,
    out: mpsc::UnboundedSender<Out>,
    drain: Duration,
) {
    let replaced = Instant::now();
    let mut load = taking.subscribe();
    loop {
        // Checked and closed in one step, so that no envelope is taken in between.
        let idle = taking.send_if_modified(|load| {
            load.closed = load.serving == 0;
            load.closed
        });
        if idle {
            break;
        }
        let current = *load.borrow_and_update();
        let deadline = current.last_taken.map_or(replaced, |at| at.max(replaced)) + drain;
        tokio::select! {
            changed = load.changed() => if changed.is_err() {
                break;
            },
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(socket = id, unacked = current.serving, "closing a replaced Socket Mode socket before all its envelopes were acked");
                taking.send_modify(|load| load.closed = true);
                break;
            }
        }
    }
    let _ = out.send(Out::Close);
}
