//! Callbacks cannot be aimed inward: a URL that cannot work, or names an internal
//! address outright, is refused with 422; a host that resolves inward is refused when
//! the callback is sent, and dead-lettered with the reason. The tests' resolver
//! (`common::app::TestResolver`) answers 127.0.0.1 for `*.test` and nothing else, so no
//! test reaches an address it did not choose.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use reqwest::StatusCode;
use serde_json::json;
use signoff::clock::Clock;
use signoff::egress::Resolver;
use signoff::outbox::Outbox;
use signoff::policy::Policy;
use signoff::scheduler::Scheduler;

use crate::common::app::{self, Options};
use crate::helpers::*;

async fn create_with(app: &TestApp, url: &str) -> (StatusCode, serde_json::Value) {
    app.post(
        "/v1/approvals",
        &json!({"tool_name": "get_invoice", "parameters": {}, "callback_url": url}),
    )
    .await
}

#[tokio::test]
async fn callback_urls_that_cannot_work_or_name_internal_addresses_are_refused_at_once() {
    let app = spawn_app().await;
    let refused = [
        ("ftp://hooks.example.com/", "http(s)"),
        ("https://user:secret@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/a\u{1}b", "control"),
        ("https:///nothing", ""),
        ("https://1.2.3.4.5/", "not a valid address"),
        ("http://127.0.0.1:9/cb", "loopback"),
        ("http://[::1]/cb", "loopback"),
        ("http://[::ffff:127.0.0.1]/cb", "loopback"),
        ("http://2130706433/cb", "loopback"),
        ("http://0x7f000001/cb", "loopback"),
        ("http://0177.0.0.1/cb", "loopback"),
        ("http://10.0.0.1/cb", "private"),
        ("http://172.16.5.4/cb", "private"),
        ("http://192.168.0.10/cb", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[fd12::1]/", "unique-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
    ];
    for (url, why) in refused {
        let (status, body) = create_with(&app, url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{url}: {detail}");
    }
    let (status, body) = create_with(&app, "https://hooks.example.com/signoff").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_host_that_resolves_inward_is_dead_lettered_with_the_reason() {
    let app = spawn_app().await;
    // Resolves to 127.0.0.1, and only hooks.test is allowed.
    let (status, body) = create_with(&app, "http://inward.test:9/cb").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.run_jobs().await;
    let (status, health) = app.get("/health/approvals").await;
    assert_eq!(health["callbacks_given_up"], 1, "{health}");
    // The receiver is the caller's: its callback given up does not degrade health
    // (any token could hold it at 503 so).
    assert_eq!(health["undelivered"], 0, "{health}");
    assert_eq!(status, StatusCode::OK, "{health}");
    let (error, attempts): (String, i64) = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query_as("SELECT last_error, attempts FROM jobs WHERE state = 'dead'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    assert!(
        error.contains("inward.test is a loopback address (127.0.0.1)"),
        "{error}"
    );
    assert_eq!(attempts, 1, "dead at once, not retried");
}

/// A callback still waiting for a slot long after it fell due (its receiver slow,
/// or a backlog of them) does not degrade health either: any token holder could
/// queue enough callbacks to a receiver that never answers to keep some overdue.
#[tokio::test]
async fn a_callback_overdue_in_the_queue_does_not_degrade_health() {
    let app = spawn_app().await;
    let (status, body) = create_with(&app, "http://hooks.test:9/cb").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.clock.advance(std::time::Duration::from_secs(600));
    let ready: i64 = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = 'callback' AND state = 'ready'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(ready, 1, "the callback waits, ten minutes overdue");
    let (status, health) = app.get("/health/approvals").await;
    assert_eq!(health["undelivered"], 0, "{health}");
    assert_eq!(status, StatusCode::OK, "{health}");
}

/// Answers `first` for the first lookup and 127.0.0.1 for every later one (DNS
/// rebinding), counting the lookups.
struct Rebinding {
    first: IpAddr,
    lookups: AtomicUsize,
}

impl Resolver for Rebinding {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        let ip = match self.lookups.fetch_add(1, SeqCst) {
            0 => self.first,
            _ => [127, 0, 0, 1].into(),
        };
        Box::pin(std::future::ready(Ok(vec![(ip, port).into()])))
    }
}

/// A server on `ip:port` (0: any port) that counts the requests it gets; its port.
async fn counting(ip: [u8; 4], port: u16) -> (Arc<AtomicUsize>, u16) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let server = axum::Router::new().fallback(move || {
        counter.fetch_add(1, SeqCst);
        std::future::ready(StatusCode::OK)
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, port)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, server).await });
    (hits, port)
}

#[tokio::test]
async fn a_callback_connects_to_the_address_that_was_checked_never_to_a_later_answer() {
    // 127.0.0.2 stands for a public address: allowed, and reachable from the test.
    let policy =
        "[callbacks]\nallow = [\"127.0.0.2\"]\n\n[[rules]]\ntools = [\"get_*\"]\ntier = \"low\"\n";
    let app = TestApp::from(app::spawn(crate::common::sqlite(), Options::new(policy)).await);
    let (checked, port) = counting([127, 0, 0, 2], 0).await;
    let (inward, _) = counting([127, 0, 0, 1], port).await;
    let resolver = Arc::new(Rebinding {
        first: [127, 0, 0, 2].into(),
        lookups: AtomicUsize::new(0),
    });
    let outbox = Outbox::new(app.store.clone(), None, app.signer.clone())
        .unwrap()
        .with_allow(Policy::from_toml_str(policy).unwrap().callbacks)
        .with_resolver(resolver.clone());
    let scheduler = Scheduler::with_outbox(app.store.clone(), outbox);
    let url = format!("http://rebind.example:{port}/cb");
    for id in [1, 2] {
        let body =
            json!({"tool_name": "get_invoice", "parameters": {"id": id}, "callback_url": url});
        let (status, created) = app.post("/v1/approvals", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        scheduler.run_once(app.clock.now()).await.unwrap();
    }
    // The first callback went where its host was checked to be (the connection did not
    // look the host up again); the second lookup answered 127.0.0.1, which is refused,
    // so that callback went nowhere.
    assert_eq!(resolver.lookups.load(SeqCst), 2, "one lookup per callback");
    assert_eq!(checked.load(SeqCst), 1);
    assert_eq!(inward.load(SeqCst), 0, "never a connection to 127.0.0.1");
    let (_, health) = app.get("/health/approvals").await;
    assert_eq!(health["callbacks_given_up"], 1, "{health}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_with_the_refusal_as_its_error() {
    let app = spawn_app().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://hooks.test:{port}/services/T0/B0/secretsecret");
    let (status, body) = create_with(&app, &url).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.run_jobs().await;
    let (error, state): (String, String) = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query_as("SELECT last_error, state FROM jobs WHERE last_error IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    // Not hyper's bare "client error (Connect)", which a TLS refusal, a pin miss and a
    // closed port all print alike.
    assert!(
        error.starts_with(&format!("callback to http://hooks.test:{port}/…: "))
            && error.to_lowercase().contains("connection refused"),
        "{error}"
    );
    // A webhook URL's path is its secret: the error keeps it out.
    assert!(!error.contains("secret"), "{error}");
    assert_ne!(state, "dead", "retried");
}

/// A receiver on 127.0.0.1 that answers each request 204 and never closes a socket
/// itself: its port. `closed` hears of each socket the other side closed.
async fn keeps_sockets_open(closed: tokio::sync::mpsc::UnboundedSender<()>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let (mut request, mut chunk) = (Vec::new(), [0; 4096]);
                let mut answered = false;
                while let Ok(read @ 1..) = socket.read(&mut chunk).await {
                    request.extend_from_slice(&chunk[..read]);
                    if !answered && whole_request(&request) {
                        let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
                        answered = socket.write_all(answer).await.is_ok();
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    port
}

/// Whether `bytes` hold an HTTP/1.1 request's head and its whole body.
fn whole_request(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

#[tokio::test]
async fn callbacks_close_their_connections_once_answered_though_receivers_keep_them_open() {
    let app = spawn_app().await;
    let (closed, mut heard) = tokio::sync::mpsc::unbounded_channel();
    // Three receivers on three ports: a pooled connection would be one per host and
    // port, open for as long as the receiver keeps it.
    for n in 0..3 {
        let port = keeps_sockets_open(closed.clone()).await;
        let url = format!("http://hooks.test:{port}/cb");
        let body = json!({"tool_name": "get_invoice", "parameters": {"n": n}, "callback_url": url});
        let (status, created) = app.post("/v1/approvals", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    app.run_jobs().await;
    let delivered = "SELECT COUNT(*) FROM jobs WHERE kind = 'callback'";
    assert_eq!(
        crate::common::raw_count(&app.db, delivered).await,
        0,
        "all answered"
    );
    for socket in 1..=3 {
        let wait = tokio::time::timeout(std::time::Duration::from_secs(2), heard.recv());
        assert!(
            wait.await.is_ok(),
            "socket {socket} closed by signoff at once"
        );
    }
}

/// A resolver that never answers.
struct Silent;

impl Resolver for Silent {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_callback_whose_host_never_resolves_is_retried_after_5_seconds() {
    let app = spawn_app().await;
    let outbox = Outbox::new(app.store.clone(), None, app.signer.clone())
        .unwrap()
        .with_resolver(Arc::new(Silent));
    let scheduler = Scheduler::with_outbox(app.store.clone(), outbox);
    let (status, body) = create_with(&app, "https://hooks.example.com/cb").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let began = std::time::Instant::now();
    scheduler.run_once(app.clock.now()).await.unwrap();
    assert!(
        began.elapsed() < std::time::Duration::from_secs(8),
        "not its job's 24 s"
    );
    let sql = "SELECT last_error FROM jobs WHERE kind = 'callback' AND locked_until IS NULL";
    let error: String = crate::common::raw_value(&app.db, sql).await;
    assert_eq!(
        error,
        "callback to https://hooks.example.com/…: no DNS answer within 5s"
    );
}
