//! The approval message: posted once, updated on every change, delivered through
//! rate limits, outages and dead letters.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use signoff::approval::Status;
use signoff::clock::Clock;

use crate::common::fake_slack::Failure;
use crate::common::{TestDb, raw_count};
use crate::helpers::*;

#[tokio::test]
async fn a_pending_request_is_posted_once_with_buttons_and_a_fallback_text() {
    let app = spawn_app().await;
    let approval = app
        .request(
            "delete_customer_records",
            json!({"customer_ids": ["c1", "c2"]}),
        )
        .await;
    assert_eq!(app.run_jobs().await, 1);
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    let post = &posts[0];
    assert_eq!(
        post.authorization.as_deref(),
        Some("Bearer xoxb-test-token")
    );
    assert_eq!(post.body["channel"], "C0APPROVALS");
    assert!(
        post.body["text"]
            .as_str()
            .is_some_and(|t| t.contains("delete_customer_records"))
    );
    assert_eq!(action_ids(&post.body), ["approve", "deny", "edit"]);
    let text = post.body.to_string();
    assert!(
        text.contains("c1, c2"),
        "parameters are rendered readably: {text}"
    );
    assert_eq!(app.slack.calls_to("chat.getPermalink").len(), 1);

    // Further passes and restarts of the worker do not post it again.
    assert_eq!(app.run_jobs().await, 0);
    app.clock.advance(Duration::from_secs(120));
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0]
            .permalink
            .as_deref()
            .unwrap()
            .starts_with("https://example.slack.com/")
    );
}

#[tokio::test]
async fn a_status_get_links_the_posted_message_while_the_request_waits() {
    let app = spawn_app().await;
    let (status, created) = ask_as(
        &app,
        &app.token,
        "restart_service",
        json!({"service": "api"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["approval_id"].as_str().unwrap().to_owned();
    let get = || async {
        let response = app
            .http
            .get(app.url(&format!("/v1/approvals/{id}")))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<serde_json::Value>().await.unwrap()
    };
    assert_eq!(
        get().await["permalink"],
        serde_json::Value::Null,
        "not posted yet"
    );

    assert_eq!(app.run_jobs().await, 1);
    let waiting = get().await;
    assert!(
        waiting["permalink"]
            .as_str()
            .is_some_and(|link| link.starts_with("https://example.slack.com/")),
        "{waiting}"
    );

    let approval = app.store.get(id.parse().unwrap()).await.unwrap().unwrap();
    let (status, body) = app.click(&approval, "U0ALICE", "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decided = get().await;
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["permalink"], serde_json::Value::Null, "{decided}");
}

#[tokio::test]
async fn auto_approved_requests_are_not_posted() {
    let app = spawn_app().await;
    let approval = app.request("search_orders", json!({"q": "x"})).await;
    assert_eq!(approval.status, Status::Approved);
    app.run_jobs().await;
    assert!(app.slack.calls_to("chat.postMessage").is_empty());
}

#[tokio::test]
async fn an_approve_click_decides_and_every_message_loses_its_buttons() {
    let app = spawn_app().await;
    let approval = app
        .request("restart_service", json!({"service": "api"}))
        .await;
    app.run_jobs().await;
    let (status, body) = app.click(&approval, "U0ALICE", "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decided = app.approval(&approval).await;
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("U0ALICE"));

    app.run_jobs().await;
    let updates = app.slack.calls_to("chat.update");
    assert_eq!(updates.len(), 1);
    let update = &updates[0].body;
    let post = &app.slack.calls_to("chat.postMessage")[0];
    assert_eq!(update["channel"], "C0APPROVALS");
    assert_eq!(
        update["ts"],
        app.store.messages(approval.id).await.unwrap()[0]
            .ts
            .as_str()
    );
    assert!(
        action_ids(update).is_empty(),
        "no buttons after the decision: {update}"
    );
    assert!(
        update.to_string().contains("U0ALICE"),
        "says who decided: {update}"
    );
    assert_ne!(post.body["blocks"], update["blocks"]);
    let kinds: Vec<_> = app
        .store
        .audit_page(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["token_created", "requested", "vote", "approved"]);
}

#[tokio::test]
async fn votes_so_far_show_until_enough_approvers_agree() {
    let app = spawn_app().await;
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    let approval = app
        .request(
            "deploy_api",
            json!({"service": "api", "environment": "prod"}),
        )
        .await;
    app.run_jobs().await;
    let post = &app.slack.calls_to("chat.postMessage")[0];
    assert_eq!(post.body["channel"], "C0DEPLOYS", "the rule's channel");
    assert!(
        post.body.to_string().contains("Deploy api to prod"),
        "the rule's summary template"
    );

    app.click(&approval, "U0ALICE", "approve").await;
    assert_eq!(app.approval(&approval).await.status, Status::Pending);
    app.run_jobs().await;
    let update = app.slack.calls_to("chat.update").pop().expect("vote shown");
    assert!(
        update.body.to_string().contains("1 of 2"),
        "{}",
        update.body
    );
    assert_eq!(action_ids(&update.body).len(), 3, "still open");

    // U0CAROL approves as a member of the S0SRE group.
    let (status, _) = app.click(&approval, "U0CAROL", "approve").await;
    assert_eq!(status, StatusCode::OK);
    let done = app.approval(&approval).await;
    assert_eq!(done.status, Status::Approved);
    assert_eq!(done.decided_by.as_deref(), Some("U0ALICE, U0CAROL"));
    assert_eq!(app.slack.calls_to("usergroups.users.list").len(), 1);
}

#[tokio::test]
async fn rate_limits_are_retried_after_retry_after() {
    let app = spawn_app().await;
    app.slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    assert_eq!(
        app.slack.calls_to("chat.postMessage").len(),
        1,
        "tried once"
    );
    assert!(app.store.messages(approval.id).await.unwrap().is_empty());
    app.clock.advance(Duration::from_secs(6));
    app.run_jobs().await;
    assert_eq!(
        app.slack.calls_to("chat.postMessage").len(),
        1,
        "not before Retry-After"
    );
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 2);
    assert_eq!(app.store.messages(approval.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn server_errors_hangs_and_transient_codes_are_retried_with_backoff() {
    let app = spawn_app().await;
    app.slack
        .fail_next("chat.postMessage", Failure::ServerError);
    app.slack.fail_next("chat.postMessage", Failure::Hang);
    app.slack
        .fail_next("chat.postMessage", Failure::NotOk("internal_error"));
    let approval = app.request("a", json!({})).await;
    for wait in [0, 1, 2, 4] {
        app.clock.advance(Duration::from_secs(wait));
        app.run_jobs().await;
    }
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 4);
    assert_eq!(
        app.store.messages(approval.id).await.unwrap().len(),
        1,
        "delivered on the fourth try"
    );
    let (_, health) = health(&app).await;
    assert_eq!(health["undelivered"], 0);
    assert_eq!(health["slack_reachable"], true);
}

/// A 200 whose body is no Slack answer (a proxy's page) delivered nothing: the post and
/// the update are tried again, not recorded as done.
#[tokio::test]
async fn an_answer_that_is_not_slacks_is_no_delivery_and_is_tried_again() {
    let app = spawn_app().await;
    app.slack.fail_next("chat.postMessage", Failure::NotJson);
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    assert!(
        app.store.messages(approval.id).await.unwrap().is_empty(),
        "no message recorded from a page"
    );
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 2);
    let posted = app.store.messages(approval.id).await.unwrap();
    assert_eq!(posted.len(), 1);
    assert!(!posted[0].ts.is_empty(), "{posted:?}");

    app.slack.fail_next("chat.update", Failure::NotJson);
    app.click(&approval, "U0ALICE", "approve").await;
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.update").len(), 1);
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    let updates = app.slack.calls_to("chat.update");
    assert_eq!(updates.len(), 2, "the update is tried again");
    assert!(
        updates[1].body.to_string().contains("Approved"),
        "{:?}",
        updates[1].body
    );
}

#[tokio::test]
async fn permanent_errors_are_dead_lettered_and_reported_by_health_for_an_hour() {
    let app = spawn_app().await;
    app.slack
        .fail_next("chat.postMessage", Failure::NotOk("channel_not_found"));
    app.request("a", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(
        app.slack.calls_to("chat.postMessage").len(),
        1,
        "not retried"
    );
    let (status, now) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(now["status"], "degraded");
    assert_eq!(now["undelivered"], 1);
    // An hour after it was given up it no longer holds the status at degraded: nothing
    // can bring it back, and a status degraded for good would hide the next failure.
    app.clock.advance(Duration::from_secs(1));
    let (status, later) = health(&app).await;
    assert_eq!(status, StatusCode::OK, "{later}");
    assert_eq!(later["undelivered"], 0);
}

#[tokio::test]
async fn posts_to_one_channel_are_paced_to_one_per_second() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.request("a", json!({ "i": i })).await;
    }
    assert_eq!(app.run_jobs().await, 3);
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    // Each deferred post got a slot of its own: one is due per second, not all of them.
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(app.run_jobs().await, 1, "only the next slot is due");
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 2);
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(app.run_jobs().await, 1);
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 3);
    let (_, health) = health(&app).await;
    assert_eq!(health["undelivered"], 0, "pacing is not failure");
}

#[tokio::test]
async fn expiry_updates_the_message_to_say_so() {
    let app = spawn_app().await;
    let approval = app.request("a", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await; // expires; plans the update
    app.run_jobs().await; // delivers it
    assert_eq!(app.approval(&approval).await.status, Status::Expired);
    let update = app
        .slack
        .calls_to("chat.update")
        .pop()
        .expect("message updated");
    assert!(action_ids(&update.body).is_empty());
    assert!(
        update.body.to_string().to_lowercase().contains("expired"),
        "{}",
        update.body
    );
}

/// Two replicas update one message: the first renders the approval as a vote left it
/// and reaches Slack late, after the second showed the decision that came next. The
/// first reads the approval again once its call is done and shows the decision too,
/// rather than leave a stale message with live buttons.
async fn an_update_that_reaches_slack_after_a_newer_one_shows_the_newest(db: TestDb) {
    let app = spawn_on(db).await;
    let approval = app.posted_deploy("prod").await;
    let main = app.message(&approval, "main").await;
    app.click(&approval, "U0ALICE", "approve").await;
    app.slack
        .fail_next("chat.update", Failure::Slow(Duration::from_millis(600)));
    let first = {
        let (replica, now) = (unpaced(&app), app.clock.now());
        tokio::spawn(async move { replica.run_once(now).await })
    };
    app.slack.wait_for("chat.update", 1).await;
    app.click(&approval, "U0BOB", "approve").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    unpaced(&app).run_once(app.clock.now()).await.unwrap();
    first.await.unwrap().unwrap();
    while app.run_jobs().await > 0 {}

    let shown = app.slack.shown(&main.channel, &main.ts).unwrap();
    assert!(action_ids(&shown).is_empty(), "shows the decision: {shown}");
    let updates = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_update'";
    assert_eq!(
        raw_count(&app.db, updates).await,
        0,
        "nothing left to update"
    );
    let version = app.approval(&approval).await.version;
    assert_eq!(
        app.message(&approval, "main").await.rendered_version,
        version
    );
}

crate::on_both_backends!(an_update_that_reaches_slack_after_a_newer_one_shows_the_newest);
