//! A post Slack took but signoff never recorded (the process died, or the call timed
//! out, after Slack had the message) is found in the channel's history by its metadata
//! on the next attempt, and recorded instead of posted again.

use std::time::Duration;

use serde_json::json;

use crate::fake::Failure;
use crate::helpers::*;

#[tokio::test]
async fn a_post_slack_took_before_the_call_failed_is_found_and_not_posted_again() {
    let app = spawn_app().await;
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    assert!(
        app.slack.calls_to("conversations.history").is_empty(),
        "a first attempt posts without reading the history"
    );
    assert!(app.store.messages(approval.id).await.unwrap().is_empty());
    let lost_ts = app.slack.post_ts(0);
    let post = &app.slack.calls_to("chat.postMessage")[0];
    assert_eq!(
        post.body["metadata"],
        json!({"event_type": "signoff_approval_posted",
               "event_payload": {"approval_id": approval.id.to_string(), "kind": "main"}})
    );

    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    assert_eq!(
        app.slack.calls_to("chat.postMessage").len(),
        1,
        "not posted again"
    );
    let history = app.slack.calls_to("conversations.history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body["channel"], channel_of(&approval));
    assert_eq!(history[0].body["include_all_metadata"], "true");
    assert_eq!(
        history[0].body["oldest"],
        format!("{}.000000", approval.created_at.timestamp() - 1)
    );
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].ts, lost_ts,
        "the message Slack took is recorded"
    );

    // It is that message the decision updates.
    app.click(&approval, "U0ALICE", "approve").await;
    app.run_jobs().await;
    let updates = app.slack.calls_to("chat.update");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].body["ts"], lost_ts.as_str());
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
}

#[tokio::test]
async fn a_lost_post_is_found_beyond_the_first_page_of_history() {
    let app = spawn_app().await;
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    app.slack.chatter(&channel_of(&approval), 450);
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("conversations.history").len(), 3);
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages[0].ts, app.slack.post_ts(0));
}

#[tokio::test]
async fn a_retry_that_finds_no_earlier_post_posts() {
    let app = spawn_app().await;
    // Slack never took the first message (a hang before it was posted).
    app.slack.fail_next("chat.postMessage", Failure::Hang);
    let approval = app.request("a", json!({})).await;
    // Another approval's post in the same channel is no match.
    let other = app.request("a", json!({"other": true})).await;
    // One post per second to the channel: the hang, the other one, the retry.
    app.run_jobs().await;
    for _ in 0..2 {
        app.clock.advance(Duration::from_secs(1));
        app.run_jobs().await;
    }
    assert_eq!(app.slack.calls_to("conversations.history").len(), 1);
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 3);
    let mine = app.store.messages(approval.id).await.unwrap();
    let theirs = app.store.messages(other.id).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (1, 1));
    assert_ne!(mine[0].ts, theirs[0].ts);
}

#[tokio::test]
async fn without_the_history_scope_a_retry_posts_again() {
    let app = spawn_app().await;
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    app.slack
        .fail_next("conversations.history", Failure::NotOk("missing_scope"));
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    // At least once: the approval is shown, at the price of a second message.
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 2);
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].ts, app.slack.post_ts(1));
    let (_, health) = health(&app).await;
    assert_eq!(health["undelivered"], 0);
}

#[tokio::test]
async fn a_history_outage_is_retried_and_never_posts_blind() {
    let app = spawn_app().await;
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    app.slack
        .fail_next("conversations.history", Failure::ServerError);
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("conversations.history").len(), 1);
    assert_eq!(
        app.slack.calls_to("chat.postMessage").len(),
        1,
        "no blind repost"
    );
    assert!(app.store.messages(approval.id).await.unwrap().is_empty());
    // The next backoff step: the history answers, the lost post is recorded.
    app.clock.advance(Duration::from_secs(4));
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("conversations.history").len(), 2);
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages[0].ts, app.slack.post_ts(0));
}
