//! A TCP proxy in front of PostgreSQL that cuts a connection at its `COMMIT`: the
//! faults a network plays on a commit, for the writer's handling of a lost reply.
//!
//! It relays every connection it accepts to the server. Once armed, the next frontend
//! message that is a simple query (`Q`) starting with `COMMIT` (the writer's `COMMIT` or
//! `COMMIT; BEGIN`; sqlx sends queries with binds as `Parse`/`Bind`/`Execute`, and the
//! readers send no `COMMIT`) is cut, as [`Cut`] says. Connect with `sslmode=disable`
//! ([`PgCut::db`]): the messages are read as they pass, each (after the startup message,
//! which has no type byte) one type byte, a 4-byte big-endian length that counts
//! itself, and the body.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::TestDb;

/// How a `COMMIT` is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Relayed to the server, which commits; once its reply arrives, both sockets are
    /// closed and the reply is not relayed: the client cannot tell whether it committed.
    ReplyLost,
    /// Never relayed: the client's socket is closed, while the server's is kept open
    /// (as a partition that the server does not notice), its transaction still open
    /// and holding its locks until the server process is ended.
    NeverSent,
}

struct Shared {
    armed: Mutex<Option<Cut>>,
    /// New connections are held, neither answered nor refused, while this is true.
    holding: tokio::sync::watch::Sender<bool>,
    /// `COMMIT`s cut so far.
    cuts: AtomicUsize,
    /// Server sockets kept open by [`Cut::NeverSent`].
    kept: Mutex<Vec<OwnedWriteHalf>>,
}

/// The proxy, listening on 127.0.0.1 at [`PgCut::port`] until dropped.
pub struct PgCut {
    pub port: u16,
    shared: Arc<Shared>,
    accepting: tokio::task::JoinHandle<()>,
}

impl PgCut {
    /// A proxy in front of `db`'s server.
    pub async fn start(db: &TestDb) -> PgCut {
        let (_, rest) = db.url.split_once('@').expect("a URL with a user");
        let server = rest.split(['/', '?']).next().expect("a host").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared {
            armed: Mutex::new(None),
            holding: tokio::sync::watch::Sender::new(false),
            cuts: AtomicUsize::new(0),
            kept: Mutex::new(Vec::new()),
        });
        let accepting = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let shared = shared.clone();
                    let server = server.clone();
                    tokio::spawn(async move {
                        let mut holding = shared.holding.subscribe();
                        if holding.wait_for(|holding| !holding).await.is_err() {
                            return;
                        }
                        if let Ok(upstream) = TcpStream::connect(&server).await {
                            // Each message is written on its own: no waiting for the
                            // last one's acknowledgement (Nagle's algorithm).
                            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                            relay(client, upstream, shared).await;
                        }
                    });
                }
            }
        });
        PgCut {
            port,
            shared,
            accepting,
        }
    }

    /// `db` reached through this proxy, without TLS.
    pub fn db(&self, db: &TestDb) -> TestDb {
        let (scheme, rest) = db.url.split_once("://").expect("a database URL");
        let (user, rest) = rest.split_once('@').expect("a URL with a user");
        let path = &rest[rest.find(['/', '?']).unwrap_or(rest.len())..];
        let joint = if path.contains('?') { '&' } else { '?' };
        TestDb {
            url: format!(
                "{scheme}://{user}@127.0.0.1:{}{path}{joint}sslmode=disable",
                self.port
            ),
            backend: db.backend,
            _dir: None,
        }
    }

    /// Cuts the next `COMMIT` as `cut` says.
    pub fn arm(&self, cut: Cut) {
        *self.shared.armed.lock().unwrap() = Some(cut);
    }

    /// Holds each new connection unanswered (`true`), as a server out of reach whose
    /// packets are lost, or relays them, those held too (`false`). The connections
    /// made already are relayed all along.
    pub fn hold(&self, holding: bool) {
        self.shared.holding.send_replace(holding);
    }

    /// How many `COMMIT`s were cut.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for PgCut {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Relays one connection until either side closes it, or a `COMMIT` is cut.
async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut from_client, to_client) = client.into_split();
    let (from_server, mut to_server) = server.into_split();
    // Set once the cut `COMMIT` is on its way: what the server sends next is its reply.
    let holding = Arc::new(AtomicBool::new(false));
    let (replied, reply) = tokio::sync::oneshot::channel();
    let back = tokio::spawn(relay_back(from_server, to_client, holding.clone(), replied));
    if startup(&mut from_client, &mut to_server).await.is_err() {
        return;
    }
    let (cut, commit) = loop {
        match forward(&mut from_client, &mut to_server, &shared).await {
            Ok(Some(cut)) => break cut,
            Ok(None) => {}
            Err(_) => return,
        }
    };
    shared.cuts.fetch_add(1, Ordering::SeqCst);
    match cut {
        Cut::ReplyLost => {
            holding.store(true, Ordering::SeqCst);
            if to_server.write_all(&commit).await.is_err() {
                return;
            }
            // Both sockets close when this returns and `relay_back` has (all four
            // halves dropped).
            let _ = tokio::time::timeout(Duration::from_secs(10), reply).await;
        }
        Cut::NeverSent => {
            back.abort();
            let _ = back.await;
            shared.kept.lock().unwrap().push(to_server);
        }
    }
}

/// Relays the startup message: a length that counts itself, and a body, no type byte
/// (with `sslmode=disable`, the first message).
async fn startup(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf) -> std::io::Result<()> {
    let mut length = [0u8; 4];
    from.read_exact(&mut length).await?;
    let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
    from.read_exact(&mut body).await?;
    to.write_all(&length).await?;
    to.write_all(&body).await
}

/// Relays one frontend message; answers it unsent instead, with the cut, when it is
/// the `COMMIT` to cut.
async fn forward(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
) -> std::io::Result<Option<(Cut, Vec<u8>)>> {
    let mut head = [0u8; 5];
    from.read_exact(&mut head).await?;
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut message = head.to_vec();
    message.resize(1 + length.max(4), 0);
    from.read_exact(&mut message[5..]).await?;
    if head[0] == b'Q' && message[5..].to_ascii_uppercase().starts_with(b"COMMIT") {
        let armed = shared.armed.lock().unwrap().take();
        if let Some(cut) = armed {
            return Ok(Some((cut, message)));
        }
    }
    to.write_all(&message).await?;
    Ok(None)
}

/// Relays the server's bytes to the client; once `holding`, the next bytes (the cut
/// `COMMIT`'s reply) are not relayed, `replied` is told, and it ends.
async fn relay_back(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    holding: Arc<AtomicBool>,
    replied: tokio::sync::oneshot::Sender<()>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if holding.load(Ordering::SeqCst) {
            let _ = replied.send(());
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
