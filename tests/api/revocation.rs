//! A revoked token stops at once, also where it was let in before the revocation: an
//! event stream open since ends and sends nothing more, a long-poll waiting since reads
//! nothing back, and a body that arrives after revoke returned asks for or runs nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use signoff::clock::Clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestDb;
use crate::events::Events;
use crate::helpers::*;

crate::on_both_backends!(
    a_revoked_tokens_event_streams_end_and_send_nothing_more,
    a_long_poll_whose_token_is_revoked_meanwhile_reads_nothing,
    a_body_that_arrives_after_its_token_was_revoked_asks_for_and_runs_nothing,
);

/// Revokes the app's token as `signoff token revoke` does (returning once no replica
/// accepts it any more).
async fn revoke(app: &TestApp) {
    let revoked = app.store.token_revoke("agent", app.clock.now()).await;
    assert!(revoked.unwrap(), "the token was active");
}

async fn a_revoked_tokens_event_streams_end_and_send_nothing_more(db: TestDb) {
    let app = spawn_on(db).await;
    let replica = app.replica().await;
    let id = app.request("delete_repo", json!({"repo": "a"})).await;
    let mut busy = Events::open(&app, &app.token).await;
    assert_eq!(busy.next().await.0, "ready");
    let mut quiet = Events::open_at(&app, &replica.address, &app.token).await;
    assert_eq!(quiet.next().await.0, "ready");

    revoke(&app).await;
    app.approve(&id, "U1").await;
    assert_eq!(
        busy.end(Duration::from_secs(5)).await,
        Some(vec![]),
        "the stream ends without the decision"
    );
    // A quiet stream (here on another replica) ends too, within events::RECHECK.
    assert_eq!(quiet.end(Duration::from_secs(5)).await, Some(vec![]));
}

async fn a_long_poll_whose_token_is_revoked_meanwhile_reads_nothing(db: TestDb) {
    let app = spawn_on(db).await;
    let id = app.request("delete_repo", json!({"repo": "a"})).await;
    let waiting = app
        .http
        .get(app.url(&format!("/v1/approvals/{id}?wait=10")))
        .bearer_auth(&app.token)
        .send();
    let waiting = tokio::spawn(async move { read(waiting.await.unwrap()).await });
    // The long-poll is let in, then waits: revoked only once it is parked.
    app.until_metric("signoff_long_polls_waiting", 1.0).await;
    revoke(&app).await;
    app.approve(&id, "U1").await;
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_error(&body, "unauthorized");
}

/// A connection that has sent a request's head (its token checked), not its body.
async fn head_only(app: &TestApp, path: &str, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Sends the body; the status line of the answer.
async fn finish(mut stream: TcpStream, body: &str) -> String {
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer")
        .unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

async fn a_body_that_arrives_after_its_token_was_revoked_asks_for_and_runs_nothing(db: TestDb) {
    let app = spawn_on(db).await;
    let (_, approved) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "get_user", "parameters": {"id": 1}}),
        )
        .await;
    assert_eq!(approved["status"], "approved", "{approved}");
    let id = approved["approval_id"].as_str().unwrap().to_owned();
    let ask = r#"{"tool_name": "get_user", "parameters": {"id": 2}}"#;
    let run = r#"{"tool_name": "get_user", "parameters": {"id": 1}}"#;
    let tools = r#"{"tools": [{"name": "drop_table"}]}"#;
    let asking = head_only(&app, "/v1/approvals", ask).await;
    let running = head_only(&app, &format!("/v1/approvals/{id}/execute"), run).await;
    let listing = head_only(&app, "/v1/policy/tools", tools).await;
    // Each head is read and its token checked (each request now reads its body); then
    // the token is revoked.
    app.until_metric("signoff_http_request_bodies_reading", 3.0)
        .await;
    revoke(&app).await;

    let answers = [
        finish(asking, ask).await,
        finish(running, run).await,
        finish(listing, tools).await,
    ];
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 401"), "{answers:?}");
    }
    let all = app.store.list_all(None).await.unwrap();
    assert_eq!(all.len(), 1, "nothing was asked for");
    assert_eq!(
        all[0].status,
        signoff::approval::Status::Approved,
        "nothing ran"
    );
}
