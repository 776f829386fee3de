//! Connections that send slowly or not at all cannot hold the server: heads and bodies
//! have time limits, idle connections are closed, and past the connection cap new
//! clients wait instead of exhausting the process. Long-polls keep their own limit.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use signoff::http::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;
use crate::helpers::*;

const LIMITS: Limits = Limits {
    header: Duration::from_millis(300),
    body: Duration::from_millis(300),
    write: Duration::from_millis(300),
    max_connections: 4,
    streams_per_token: 64,
    waits_per_token: 256,
};

async fn spawn() -> TestApp {
    spawn_limited(common::sqlite(), LIMITS).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; what it sent, and how long that took.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_that_sends_half_a_header_is_cut_off() {
    let app = spawn().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut stream).await;
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_refused_and_changes_nothing() {
    let app = spawn().await;
    let head = format!(
        "POST /v1/approvals HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"tool_name\":",
        app.token
    );
    refused_as_late(&app, &head).await;
    let pending = app
        .store
        .health(signoff::clock::Clock::now(&app.clock))
        .await
        .unwrap();
    assert_eq!(pending.pending, 0);
}

/// `/mcp` times a body as the API does: one that stops coming is 408, not 413.
#[tokio::test]
async fn a_body_sent_too_slowly_to_mcp_is_refused_as_late_not_as_too_large() {
    let app = spawn().await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 1000\r\n\r\n{{\"jsonrpc\"",
        app.token
    );
    refused_as_late(&app, &head).await;
}

/// Slack's endpoints read a body with the API's limits and answers: one that stops
/// coming is 408, not a plain-text 400.
#[tokio::test]
async fn a_body_sent_too_slowly_to_slack_is_refused_as_late() {
    let app = spawn().await;
    for path in ["/slack/interactions", "/slack/commands"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\npayload="
        );
        refused_as_late(&app, &head).await;
    }
}

/// Sends `head` (a request whose body stops short) and expects 408 `request_timeout`
/// once the body's time limit has passed.
async fn refused_as_late(app: &TestApp, head: &str) {
    let mut stream = connect(app).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, took) = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
}

#[tokio::test]
async fn past_the_connection_cap_clients_wait_and_are_served_once_slots_free() {
    let app = spawn().await;
    // Four connections that never send a request hold every slot. No slot frees
    // before the header limit has passed since the first of them was taken (and
    // that is after `started`).
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..LIMITS.max_connections {
        idle.push(connect(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "served, not refused");
    let waited = started.elapsed();
    assert!(
        waited >= LIMITS.header && waited < Duration::from_secs(3),
        "waited {waited:?} for a slot: the idle ones were cut after the header limit"
    );
    drop(idle);
}

#[tokio::test]
async fn a_long_poll_outlives_the_header_and_body_limits() {
    let app = spawn().await;
    let id = app.request("transfer", json!({"amount": 1})).await;
    let started = Instant::now();
    let (status, body) = app.get(&format!("/v1/approvals/{id}?wait=1")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// A client that asks and never reads its answers (here, the OpenAPI document again and
/// again, pipelined, more than the sockets' buffers hold) is cut off once the server's
/// writes have waited [`Limits::write`]: it cannot hold its slot for good.
#[tokio::test]
async fn clients_that_never_read_their_answers_are_cut_off() {
    let app = spawn().await;
    // One answer's size, on a connection closed after it (a pooled one would hold a
    // slot).
    let mut asker = connect(&app).await;
    asker
        .write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (document, _) = read_until_closed(&mut asker).await;
    assert!(document.starts_with("HTTP/1.1 200"), "{document}");
    let size = document.len();
    // Well past what the server's send buffer (up to 4 MiB here) and ours hold.
    let requests = 12 * 1024 * 1024 / size + 1;
    let asked = "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
    let mut hogs = Vec::new();
    for _ in 0..LIMITS.max_connections {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let address = app.address.trim_start_matches("http://").parse().unwrap();
        let mut stream = socket.connect(address).await.unwrap();
        stream.write_all(asked.as_bytes()).await.unwrap();
        hogs.push(stream);
    }
    let started = Instant::now();
    let mut client = connect(&app).await;
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let served = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer));
    served
        .await
        .expect("a slot freed: the hogs were cut off")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    // The hogs' connections were closed: past what they had buffered, nothing more.
    for mut hog in hogs {
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), hog.read_to_end(&mut sink)).await;
        let got = match read {
            Ok(Ok(n)) => n,
            // A reset after the server's close is as closed.
            Ok(Err(_)) => 0,
            Err(_) => panic!("a hog's connection is still open"),
        };
        assert!(got < requests * size, "it got every answer ({got} bytes)");
    }
}
