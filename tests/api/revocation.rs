//! A revoked token stops at once, also where it was let in before the revocation: an
//! event stream open since ends and sends nothing more, and a long-poll waiting since
//! reads nothing back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use signoff::clock::Clock;

use crate::common::TestDb;
use crate::events::Events;
use crate::helpers::*;

crate::on_both_backends!(
    a_revoked_tokens_event_streams_end_and_send_nothing_more,
    a_long_poll_whose_token_is_revoked_meanwhile_reads_nothing,
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
    // The long-poll is let in, then waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    revoke(&app).await;
    app.approve(&id, "U1").await;
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_error(&body, "unauthorized");
}
