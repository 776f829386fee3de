//! A fake Slack Socket Mode server on 127.0.0.1:0, for the tests and the socket_mode
//! bench: the WebSocket that the fake Slack's `apps.connections.open` hands out
//! (`FakeSlack::set_socket_url`). It accepts signoff's connections; for each, a test
//! (through [`Conn`]) says `hello`, sends envelopes, `disconnect` or garbage, reads
//! signoff's acks, and can drop the connection without a close. When each connection
//! opened, was closed by signoff or dropped is logged, in order.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What happened to a connection, numbered from 1 in the order they opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happened {
    Opened(usize),
    ClosedByClient(usize),
    Dropped(usize),
}

#[derive(Clone)]
pub struct FakeSocket {
    /// `ws://127.0.0.1:PORT/link`.
    pub url: String,
    accepted: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Conn>>>,
    log: Arc<Mutex<Vec<(Instant, Happened)>>>,
}

/// What the test has a connection do.
enum Command {
    Send(Message),
    Drop,
    Freeze,
    Deafen,
}

/// One connection from signoff.
pub struct Conn {
    pub number: usize,
    commands: mpsc::UnboundedSender<Command>,
    /// Text frames from signoff; `None` once it closed.
    incoming: mpsc::UnboundedReceiver<String>,
}

impl FakeSocket {
    pub async fn start() -> FakeSocket {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (found, accepted) = mpsc::unbounded_channel();
        let fake = FakeSocket {
            url: format!("ws://{}/link", listener.local_addr().unwrap()),
            accepted: Arc::new(tokio::sync::Mutex::new(accepted)),
            log: Arc::default(),
        };
        let log = fake.log.clone();
        tokio::spawn(async move {
            let mut number = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
                    continue;
                };
                number += 1;
                note(&log, Happened::Opened(number));
                let (commands, to_do) = mpsc::unbounded_channel();
                let (heard, incoming) = mpsc::unbounded_channel();
                tokio::spawn(serve(socket, number, to_do, heard, log.clone()));
                let _ = found.send(Conn {
                    number,
                    commands,
                    incoming,
                });
            }
        });
        fake
    }

    /// The next connection signoff opens (within 10 s).
    pub async fn accept(&self) -> Conn {
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            self.accepted.lock().await.recv().await
        });
        next.await
            .expect("signoff opened no Socket Mode connection within 10 s")
            .expect("the fake socket server stopped")
    }

    /// Whether signoff opens another connection within `within`.
    pub async fn accept_within(&self, within: Duration) -> Option<Conn> {
        let next = tokio::time::timeout(within, async { self.accepted.lock().await.recv().await });
        next.await.ok().flatten()
    }

    /// What happened so far, in order.
    pub fn log(&self) -> Vec<Happened> {
        self.log.lock().unwrap().iter().map(|(_, h)| *h).collect()
    }

    /// When `what` happened, if it did.
    pub fn when(&self, what: Happened) -> Option<Instant> {
        let log = self.log.lock().unwrap();
        log.iter().find(|(_, h)| *h == what).map(|(at, _)| *at)
    }
}

fn note(log: &Mutex<Vec<(Instant, Happened)>>, what: Happened) {
    log.lock().unwrap().push((Instant::now(), what));
}

async fn serve(
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    number: usize,
    mut to_do: mpsc::UnboundedReceiver<Command>,
    heard: mpsc::UnboundedSender<String>,
    log: Arc<Mutex<Vec<(Instant, Happened)>>>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut deaf = false;
    loop {
        tokio::select! {
            command = to_do.recv() => match command {
                Some(Command::Send(message)) => {
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                // Gone without a close frame, as when a network path dies.
                Some(Command::Drop) => {
                    note(&log, Happened::Dropped(number));
                    return;
                }
                // Open, but neither reading nor writing (no pongs either), as a
                // half-open connection looks from signoff's side.
                Some(Command::Freeze) => std::future::pending::<()>().await,
                // Sending still, but reading nothing more: what signoff sends (its
                // close too) waits unread, as in a Slack that has not got to it.
                Some(Command::Deafen) => deaf = true,
                // The test let go of the connection: it stays open.
                None => std::future::pending::<()>().await,
            },
            message = stream.next(), if !deaf => match message {
                Some(Ok(Message::Text(text))) => {
                    let _ = heard.send(text.to_string());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    note(&log, Happened::ClosedByClient(number));
                    let _ = sink.close().await;
                    return;
                }
            },
        }
    }
}

impl Conn {
    /// `hello`, as Slack greets a new connection.
    pub fn hello(&self) {
        self.send(&json!({
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "fake-socket", "approximate_connection_time": 18060},
            "connection_info": {"app_id": "A0APP"}
        }));
    }

    pub fn send(&self, frame: &Value) {
        self.send_text(&frame.to_string());
    }

    pub fn send_text(&self, text: &str) {
        let _ = self.commands.send(Command::Send(Message::text(text)));
    }

    pub fn send_binary(&self, bytes: &[u8]) {
        let _ = self
            .commands
            .send(Command::Send(Message::binary(bytes.to_vec())));
    }

    /// `disconnect` with `reason` (`refresh_requested`, `warning`, `link_disabled`).
    pub fn disconnect(&self, reason: &str) {
        self.send(&json!({"type": "disconnect", "reason": reason,
                          "debug_info": {"host": "fake-socket"}}));
    }

    /// Ends the connection at once, without a close frame.
    pub fn drop_connection(&self) {
        let _ = self.commands.send(Command::Drop);
    }

    /// Keeps the connection open but silent from now on: nothing read, nothing sent,
    /// pings unanswered.
    pub fn freeze(&self) {
        let _ = self.commands.send(Command::Freeze);
    }

    /// Keeps sending what the test asks but reads nothing more from signoff (see
    /// `Command::Deafen`).
    pub fn deafen(&self) {
        let _ = self.commands.send(Command::Deafen);
    }

    /// The next frame signoff sends, within `within`; `None` if none (or it closed).
    pub async fn next_frame(&mut self, within: Duration) -> Option<Value> {
        let text = tokio::time::timeout(within, self.incoming.recv())
            .await
            .ok()
            .flatten()?;
        Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The ack of envelope `id` (within 3 s, Slack's limit), skipping other frames.
    pub async fn ack_of(&mut self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_frame(left).await {
                Some(frame) if frame["envelope_id"] == id => return frame,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no ack of envelope {id} within 3 s");
    }

    /// Everything signoff sends from now on, for a reader of its own (the bench reads
    /// acks while it sends); `next_frame` sees nothing after this.
    pub fn take_incoming(&mut self) -> mpsc::UnboundedReceiver<String> {
        std::mem::replace(&mut self.incoming, mpsc::unbounded_channel().1)
    }

    /// Asserts that signoff sends nothing for `within`.
    pub async fn expect_nothing(&mut self, within: Duration) {
        if let Some(frame) = self.next_frame(within).await {
            panic!("expected no frame, got {frame}");
        }
    }
}

/// An envelope as Slack sends it over the socket.
pub fn envelope(id: &str, kind: &str, payload: &Value, accepts_response_payload: bool) -> Value {
    json!({
        "envelope_id": id,
        "type": kind,
        "payload": payload,
        "accepts_response_payload": accepts_response_payload,
        "retry_attempt": 0,
        "retry_reason": ""
    })
}

/// The same envelope again, as Slack redelivers it when an ack was late.
pub fn redelivery(envelope: &Value, attempt: u64) -> Value {
    let mut again = envelope.clone();
    again["retry_attempt"] = json!(attempt);
    again["retry_reason"] = json!("timeout");
    again
}
