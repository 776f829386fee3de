//! A post Slack took but signoff never recorded (the process died, or the call timed
//! out, after Slack had the message) is found in the channel's history by its metadata
//! on the next attempt, and recorded instead of posted again. Reminder DMs likewise.

use std::time::Duration;

use serde_json::json;
use signoff::approval::Status;

use crate::common::fake_slack::Failure;
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
               "event_payload": {"approval_id": approval.id.to_string(), "kind": "main",
                                 "version": 0}})
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
        format!("{}.000000", approval.created_at.timestamp() - 60)
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
async fn a_lost_post_found_after_the_decision_is_brought_up_to_date() {
    let app = spawn_app().await;
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    // Decided while its only message, with buttons, is in the channel unrecorded: the
    // click carries the message as Slack shows it, with signoff's metadata, which
    // says it is this approval's message.
    let lost_ts = app.slack.post_ts(0);
    let posted = app.slack.calls_to("chat.postMessage")[0].body.clone();
    let mut click = click_payload(
        &approval.id.to_string(),
        "U0ALICE",
        "approve",
        "C0APPROVALS",
        &lost_ts,
    );
    click["message"] = json!({"ts": lost_ts, "metadata": posted["metadata"]});
    app.interact(&click).await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    let updates = app.slack.calls_to("chat.update");
    assert_eq!(updates.len(), 1, "the found message is updated");
    assert_eq!(updates[0].body["ts"], lost_ts.as_str());
    assert!(
        action_ids(&updates[0].body).is_empty(),
        "{}",
        updates[0].body
    );
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages[0].ts, lost_ts);
    assert_eq!(
        messages[0].rendered_version,
        app.approval(&approval).await.version
    );
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

#[tokio::test]
async fn a_lost_escalation_found_after_the_decision_loses_its_buttons() {
    let app = spawn_app().await;
    let approval = app
        .request("escalate_payout", json!({"amount": 5000}))
        .await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    app.run_jobs().await;
    let to_managers = || {
        app.slack
            .calls_to("chat.postMessage")
            .into_iter()
            .filter(|c| c.body["channel"] == "C0MANAGERS")
            .count()
    };
    assert_eq!(to_managers(), 1, "the escalation was posted, unrecorded");
    // Decided in the main channel before the escalation job runs again.
    app.click(&approval, "U0ALICE", "approve").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    app.run_jobs().await;
    assert_eq!(to_managers(), 1, "not posted again");
    let escalation_ts = app.slack.post_ts(1);
    let updated = app
        .slack
        .calls_to("chat.update")
        .into_iter()
        .find(|c| c.body["ts"] == escalation_ts.as_str())
        .expect("the escalation message is updated");
    assert_eq!(updated.body["channel"], "C0MANAGERS");
    assert!(action_ids(&updated.body).is_empty(), "{}", updated.body);
}

#[tokio::test]
async fn reminder_dms_slack_took_before_the_calls_failed_are_not_sent_again() {
    let app = spawn_app().await;
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    let approval = app.request("remind_rotate", json!({"key": "prod"})).await;
    app.run_jobs().await;
    // Slack takes each of the reminder's three DMs, and no answer comes back: the
    // reminder failed as far as signoff can tell, and is retried.
    for _ in 0..3 {
        app.slack
            .fail_next("chat.postMessage", Failure::PostThenHang);
    }
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    let sent = app.slack.dm_posts();
    assert_eq!(sent.len(), 3);
    assert!(app.slack.calls_to("conversations.history").is_empty());
    let metadata = &sent[0]["metadata"];
    assert_eq!(metadata["event_type"], "signoff_reminder_sent");
    assert_eq!(
        metadata["event_payload"]["approval_id"],
        approval.id.to_string()
    );
    assert!(metadata["event_payload"]["job"].is_i64(), "{metadata}");
    let lost: Vec<String> = (1..4).map(|n| app.slack.post_ts(n)).collect();

    // Retried once the DMs show in Slack's history, as a lookup would wait.
    app.clock.advance(Duration::from_secs(29));
    app.run_jobs().await;
    assert!(app.slack.calls_to("conversations.history").is_empty());
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    assert_eq!(app.slack.dm_posts().len(), 3, "nobody is reminded twice");
    let history = app.slack.channels_of("conversations.history");
    assert_eq!(history, ["DU0ALICE", "DU0BOB", "DU0CAROL"]);
    let mut recorded: Vec<String> = app
        .store
        .messages(approval.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == signoff::jobs::MessageKind::Dm)
        .map(|m| m.ts)
        .collect();
    recorded.sort();
    assert_eq!(recorded, lost, "the DMs Slack took are recorded");

    // The next reminder is a new one: sent, on its first attempt, without a lookup.
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(app.slack.dm_posts().len(), 6);
    assert_eq!(app.slack.calls_to("conversations.history").len(), 3);
}
