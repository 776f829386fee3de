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

/// The requests to the channel (not thread notes) that the fake Slack received.
fn channel_posts(slack: &FakeSlack) -> Vec<common::fake_slack::Call> {
    slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.body["channel"] == "C0APPROVALS" && c.body["thread_ts"].is_null())
        .collect()
}

/// Ten requests, asked at both replicas in turn: their ids.
async fn ask_at_both(http: &reqwest::Client, token: &str, servers: [&Server; 2]) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..10 {
        let answer: Value = http
            .post(format!("{}/v1/approvals", servers[i % 2].address))
            .bearer_auth(token)
            .json(&json!({"tool_name": "rotate_key", "parameters": {"key": i}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(answer["approval_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// A long-poll on `a` for `id`, and Alice's click on its message sent to `b`: the
/// poll is woken by the other replica's decision.
async fn poll_on_one_click_on_the_other(
    (http, token): (&reqwest::Client, &str),
    slack: &FakeSlack,
    [a, b]: [&Server; 2],
    id: &str,
) {
    let poll = {
        let (http, token) = (http.clone(), token.to_owned());
        let url = format!("{}/v1/approvals/{id}?wait=30", a.address);
        tokio::spawn(async move {
            let answer = http.get(url).bearer_auth(token).send().await.unwrap();
            answer.json::<Value>().await.unwrap()
        })
    };
    let posted = eventually(Duration::from_secs(30), || slack.posted_for(id).is_some()).await;
    assert!(posted, "the first request was posted");
    let message = slack.posted_for(id).unwrap();
    let click = click_on_message(id, "U0ALICE", "approve", &message);
    let (body, timestamp, signature) = signed(SECRET, &click);
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
}

/// Waits until no delivery is due or in flight on either replica.
async fn settle(conn: &mut sqlx::PgConnection) {
    let mut busy = i64::MAX;
    for _ in 0..500 {
        busy = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = 'ready' \
             AND (due_at <= NOW() OR locked_until > NOW())",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(busy, 0, "both replicas settled");
}

/// Each of `ids` (short ids) was posted to the channel exactly once, and nothing else.
fn each_posted_once(slack: &FakeSlack, ids: &[String]) {
    let mut per_approval: HashMap<String, usize> = HashMap::new();
    for post in channel_posts(slack) {
        let approval = approval_in(&post.body).expect("id in the message");
        *per_approval.entry(approval).or_default() += 1;
    }
    assert_eq!(per_approval.len(), ids.len(), "{per_approval:?}");
    assert!(
        per_approval.values().all(|&n| n == 1),
        "each approval posted once: {per_approval:?}"
    );
    for id in ids {
        assert!(per_approval.contains_key(id), "{id} posted");
    }
}

/// Each reminder once: one DM per approval and approver. Reminders fall due 5 s after
/// a request, so on a slow run those decided or inserted meanwhile (`racing`) may have
/// been reminded before their decision or the count; the nine that stayed pending all
/// were, by both approvers.
fn each_reminded_once(slack: &FakeSlack, racing: &[String]) {
    let mut reminders: HashMap<(String, String), usize> = HashMap::new();
    for dm in slack.dm_posts() {
        let approval = approval_in(&dm).expect("id in the reminder");
        let key = (approval, dm["channel"].as_str().unwrap().to_owned());
        *reminders.entry(key).or_default() += 1;
    }
    assert!(
        reminders.values().all(|&n| n == 1),
        "each reminder sent once: {reminders:?}"
    );
    let pending = reminders
        .keys()
        .filter(|(approval, _)| !racing.contains(approval))
        .count();
    assert_eq!(
        pending, 18,
        "every pending approval reminded: {reminders:?}"
    );
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
    let http = crate::common::http();

    let ids = ask_at_both(&http, &token, [&a, &b]).await;
    let first = ids[0].clone();
    poll_on_one_click_on_the_other((&http, &token), &slack, [&a, &b], &first).await;
    let all_posted = eventually(Duration::from_secs(20), || {
        channel_posts(&slack).len() >= 10
    });
    assert!(all_posted.await, "all posted");
    // Reminders (due 5 s after each request): the nine still pending, two approvers each.
    let dms = || slack.dm_posts().len();
    let reminded = eventually(Duration::from_secs(20), || dms() >= 18).await;
    assert!(reminded, "reminders sent: {}", dms());

    // A row inserted straight into the table is picked up by one of them.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let inserted: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO pending_approvals (tool_name, parameters, risk_tier, requested_by, expires_at) \
         VALUES ('drop_table', '{\"table\": \"users\"}', 'medium', 'agent-7', NOW() + INTERVAL '1 hour') RETURNING id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let picked_up = eventually(Duration::from_secs(10), || {
        channel_posts(&slack).len() >= 11
    });
    assert!(picked_up.await, "the inserted row was posted");

    // Settled, nothing happened twice.
    settle(&mut conn).await;
    let mut everyone: Vec<String> = ids.iter().map(|id| short(id)).collect();
    everyone.push(short(&inserted.to_string()));
    each_posted_once(&slack, &everyone);
    each_reminded_once(&slack, &[short(&first), short(&inserted.to_string())]);
    let row: (String, Option<String>) =
        sqlx::query_as("SELECT status, decided_by FROM pending_approvals WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&first).unwrap())
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let decided = ("approved".to_owned(), Some("U0ALICE".to_owned()));
    assert_eq!(row, decided, "the decision is in the shared row");
    assert!(signoff(&["audit", "verify"], &db.url).contains("audit chain ok"));
}
