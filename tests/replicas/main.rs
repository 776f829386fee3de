//! Two real `signoff serve` processes on one PostgreSQL database, talking to one fake
//! Slack: each approval is posted once, each reminder sent once, a click on either
//! replica decides, a long-poll on one is woken by a decision on the other, and a row
//! inserted straight into the shared table is picked up.

#[path = "../common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fake_slack::FakeSlack;
use common::server::{Server, eventually, signoff};
use common::slack::{click_on_message, signed};
use serde_json::{Value, json};
use sqlx::Connection;

const SECRET: &str = "replica-test-secret";

const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
approvers = ["U0ALICE", "U0BOB"]
expires_after = "1h"
remind_after = "5s"
remind_every = "1h"
"#;

/// The short approval id in a posted message. Every rendering carries it in its "ID"
/// line, including one posted after the approval was already decided (no buttons).
fn approval_in(message: &Value) -> Option<String> {
    let text = message["blocks"].to_string();
    let start = text.find("ID `")? + "ID `".len();
    Some(text.get(start..start + 8)?.to_owned())
}

fn short(id: &str) -> String {
    uuid::Uuid::parse_str(id).unwrap().simple().to_string()[..8].to_owned()
}

// Several threads: the fake Slack must answer while this test waits on the servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_table_without_doing_anything_twice() {
    let Some(db) = common::postgres("two_replicas").await else {
        return;
    };
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    signoff(&["migrate"], &db.url);
    let token = signoff(&["token", "create", "agent"], &db.url);
    let env = [
        ("SLACK_BOT_TOKEN", "xoxb-replicas"),
        ("SLACK_SIGNING_SECRET", SECRET),
        ("SLACK_API_URL", slack.url.as_str()),
        ("SIGNOFF_POLICY", policy.to_str().unwrap()),
    ];
    let a = Server::start(&db.url, &env);
    let b = Server::start(&db.url, &env);
    let http = reqwest::Client::new();

    // Requests arrive at both replicas.
    let mut ids = Vec::new();
    for i in 0..10 {
        let server = if i % 2 == 0 { &a } else { &b };
        let answer: Value = http
            .post(format!("{}/v1/approvals", server.address))
            .bearer_auth(&token)
            .json(&json!({"tool_name": "rotate_key", "parameters": {"key": i}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(answer["approval_id"].as_str().unwrap().to_owned());
    }
    let channel_posts = || {
        slack
            .calls_to("chat.postMessage")
            .into_iter()
            .filter(|c| c.body["channel"] == "C0APPROVALS" && c.body["thread_ts"].is_null())
            .collect::<Vec<_>>()
    };
    // A long-poll on A, a click on B.
    let first = ids[0].clone();
    let poll = {
        let (http, url, token) = (
            http.clone(),
            format!("{}/v1/approvals/{first}?wait=30", a.address),
            token.clone(),
        );
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Alice clicks its message once it is posted.
    assert!(
        eventually(Duration::from_secs(30), || slack
            .posted_for(&first)
            .is_some())
        .await,
        "the first request was posted"
    );
    let message = slack.posted_for(&first).unwrap();
    let (body, timestamp, signature) = signed(
        SECRET,
        &click_on_message(&first, "U0ALICE", "approve", &message),
    );
    let clicked = http
        .post(format!("{}/slack/interactions", b.address))
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(clicked.status(), 200);
    let answered = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken by the other replica")
        .unwrap();
    assert_eq!(answered["status"], "approved");
    assert_eq!(answered["decided_by"], "U0ALICE");
    assert!(
        eventually(Duration::from_secs(20), || channel_posts().len() >= 10).await,
        "all posted"
    );

    // Reminders (due 5 s after each request): the nine still pending, two approvers each.
    let dms = || slack.dm_posts().len();
    assert!(
        eventually(Duration::from_secs(20), || dms() >= 18).await,
        "reminders sent: {}",
        dms()
    );

    // A row inserted straight into the table is picked up by one of them.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let inserted: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO pending_approvals (tool_name, parameters, risk_tier, requested_by, expires_at) \
         VALUES ('drop_table', '{\"table\": \"users\"}', 'medium', 'agent-7', NOW() + INTERVAL '1 hour') RETURNING id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || channel_posts().len() >= 11).await,
        "the inserted row was posted"
    );

    // Settle (no delivery due or in flight on either replica), then count: nothing
    // happened twice.
    let mut busy = i64::MAX;
    for _ in 0..500 {
        busy = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = 'ready' \
             AND (due_at <= NOW() OR locked_until > NOW())",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(busy, 0, "both replicas settled");
    let mut per_approval: HashMap<String, usize> = HashMap::new();
    for post in channel_posts() {
        *per_approval
            .entry(approval_in(&post.body).expect("id in the message"))
            .or_default() += 1;
    }
    assert_eq!(per_approval.len(), 11);
    assert!(
        per_approval.values().all(|&n| n == 1),
        "each approval posted once: {per_approval:?}"
    );
    assert!(per_approval.contains_key(&short(&inserted.to_string())));
    for id in &ids {
        assert!(per_approval.contains_key(&short(id)), "{id} posted");
    }
    // Each reminder once: one DM per approval and approver. Reminders fall due 5 s
    // after a request, so on a slow run the first request (decided by a click) and the
    // inserted row may have been reminded before their decision or the count; the
    // nine that stayed pending all were.
    let mut reminders: HashMap<(String, String), usize> = HashMap::new();
    for dm in slack.dm_posts() {
        let approval = approval_in(&dm).expect("id in the reminder");
        *reminders
            .entry((approval, dm["channel"].as_str().unwrap().to_owned()))
            .or_default() += 1;
    }
    assert!(
        reminders.values().all(|&n| n == 1),
        "each reminder sent once: {reminders:?}"
    );
    let racing = [short(&first), short(&inserted.to_string())];
    let pending = reminders
        .keys()
        .filter(|(approval, _)| !racing.contains(approval))
        .count();
    assert_eq!(
        pending, 18,
        "every pending approval reminded: {reminders:?}"
    );
    let row: (String, Option<String>) =
        sqlx::query_as("SELECT status, decided_by FROM pending_approvals WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&first).unwrap())
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        row,
        ("approved".to_owned(), Some("U0ALICE".to_owned())),
        "the decision is in the shared row"
    );
    assert!(signoff(&["audit", "verify"], &db.url).contains("audit chain ok"));
}
