//! A batch (`batch_window`) is nudged as one: each approver gets one reminder DM a round
//! (from the first request still waiting that they may vote on, saying how many more
//! wait for them), a batch without an approvers list one thread reminder a round, and
//! the managers one escalation post listing every request.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{ApprovalId, Status};
use signoff::jobs::MessageKind;

use crate::common::fake_slack::Failure;
use crate::common::slack::{SlackMessage, click_on_message};
use crate::common::{TestDb, sqlite};
use crate::helpers::*;

crate::on_both_backends!(
    a_batch_reminds_each_approver_once_a_round_saying_how_many_more_wait,
    a_batch_escalates_as_one_post_listing_every_request,
    a_batch_escalates_when_its_last_item_is_due_and_the_managers_decide_any_item_at_once,
);

const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
batch_window = "30s"
max_pending = 100
expires_after = "8h"

[[rules]]
tools = ["send_*"]
tier = "medium"
approvers = ["U0ALICE", "U0BOB"]
required_approvals = 2
remind_after = "30m"
remind_every = "1h"

[[rules]]
tools = ["notify_*"]
tier = "medium"
remind_after = "30m"
remind_every = "1h"

[[rules]]
tools = ["pay_*"]
tier = "medium"
approvers = ["U0ALICE"]
escalate_after = "2h"
escalation_channel = "C0MANAGERS"
escalation_approvers = ["U0MANAGER"]
"#;

/// `n` look-alike requests for `tool`, then their batch posted (the window passed and
/// the paced posts out); their ids in the message's order.
async fn batch(app: &TestApp, tool: &str, n: usize) -> Vec<ApprovalId> {
    batch_apart(app, tool, n, 0).await
}

/// [`batch`], the requests `secs` apart.
async fn batch_apart(app: &TestApp, tool: &str, n: usize, secs: u64) -> Vec<ApprovalId> {
    let mut ids = Vec::new();
    for i in 0..n {
        if i > 0 {
            app.clock.advance(Duration::from_secs(secs));
        }
        let (status, body) = ask_as(app, &app.token, tool, json!({ "to": format!("u{i}") })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["approval_id"].as_str().unwrap().parse().unwrap());
    }
    app.clock.advance(Duration::from_secs(31));
    run_paced(app, 5).await;
    ids
}

/// Runs the jobs `n` times a second apart: posts and thread replies keep a channel's
/// pace of one a second.
async fn run_paced(app: &TestApp, n: usize) {
    for _ in 0..n {
        app.run_jobs().await;
        app.clock.advance(Duration::from_secs(1));
    }
}

/// Moves the clock on by `secs` and runs the jobs that fall due.
async fn later(app: &TestApp, secs: u64) {
    app.clock.advance(Duration::from_secs(secs));
    run_paced(app, 3).await;
}

/// The batch message's channel post, as a click on it reports it.
fn batch_message(app: &TestApp, leader: ApprovalId) -> SlackMessage {
    app.slack.posted_for(&leader.to_string()).expect("posted")
}

async fn click(app: &TestApp, id: ApprovalId, user: &str, action: &str, on: &SlackMessage) {
    let payload = click_on_message(&id.to_string(), user, action, on);
    let (status, _) = app.interact(&payload).await;
    assert_eq!(status, StatusCode::OK);
}

/// Each reminder DM posted so far: who it went to (its DM channel is `D` and the user)
/// and the request it shows, with its text.
fn reminders(app: &TestApp) -> Vec<(String, String, String)> {
    let opened: Vec<String> = app
        .slack
        .calls_to("conversations.open")
        .into_iter()
        .map(|call| call.body["users"].as_str().unwrap().to_owned())
        .collect();
    let dms = app.slack.dm_posts();
    assert_eq!(dms.len(), opened.len(), "one DM channel opened per DM");
    let mut found: Vec<(String, String, String)> = dms
        .iter()
        .map(|dm| {
            let to = dm["channel"].as_str().unwrap().trim_start_matches('D');
            let about = dm["metadata"]["event_payload"]["approval_id"].as_str();
            (to.to_owned(), about.unwrap().to_owned(), dm.to_string())
        })
        .collect();
    found.sort();
    found
}

/// The messages Slack took in the managers' channel.
fn escalations(app: &TestApp) -> Vec<Value> {
    app.slack.posted_in("C0MANAGERS")
}

/// The `ts` of the escalation recorded for `id`.
async fn escalation_ts(app: &TestApp, id: ApprovalId) -> String {
    let messages = app.store.messages(id).await.unwrap();
    let escalation = messages
        .into_iter()
        .find(|m| m.kind == MessageKind::Escalation);
    escalation.expect("an escalation recorded").ts
}

/// The replies posted in the threads of channel messages.
fn thread_replies(app: &TestApp) -> Vec<Value> {
    let posts = app.slack.calls_to("chat.postMessage");
    let replies = posts
        .into_iter()
        .filter(|c| c.body["thread_ts"].is_string());
    replies.map(|call| call.body).collect()
}

/// The ids a post's metadata lists as its items.
fn items(post: &Value) -> Vec<String> {
    let items = post["metadata"]["event_payload"]["items"].as_array();
    let items = items.into_iter().flatten();
    items.map(|id| id.as_str().unwrap().to_owned()).collect()
}

fn strings(ids: &[ApprovalId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// Three look-alike requests in one message: each approver gets one DM a round, not
/// three, about the first request still waiting for them, saying how many more do;
/// Alice's vote on the first moves hers to the second, Bob's stays on the first.
async fn a_batch_reminds_each_approver_once_a_round_saying_how_many_more_wait(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let ids = batch(&app, "send_email", 3).await;
    assert!(reminders(&app).is_empty(), "not before remind_after");

    later(&app, 30 * 60).await;
    let first = reminders(&app);
    let about: Vec<(&str, &str)> = first.iter().map(|(to, id, _)| (&**to, &**id)).collect();
    let one = ids[0].to_string();
    assert_eq!(about, [("U0ALICE", &*one), ("U0BOB", &*one)], "one DM each");
    for (_, _, dm) in &first {
        assert!(
            dm.contains("this request and 2 more like it in the same message"),
            "{dm}"
        );
        assert!(dm.contains("Open them in the channel"), "{dm}");
    }

    // Two approvals needed: Alice's vote leaves the first waiting for Bob alone.
    click(
        &app,
        ids[0],
        "U0ALICE",
        "approve",
        &batch_message(&app, ids[0]),
    )
    .await;
    assert_eq!(
        app.store.get(ids[0]).await.unwrap().unwrap().status,
        Status::Pending
    );
    later(&app, 3600).await;
    let second: Vec<_> = reminders(&app)
        .into_iter()
        .filter(|reminder| !first.contains(reminder))
        .collect();
    let about: Vec<(&str, &str)> = second.iter().map(|(to, id, _)| (&**to, &**id)).collect();
    let two = ids[1].to_string();
    assert_eq!(about, [("U0ALICE", &*two), ("U0BOB", &*one)]);
    assert!(
        second[0].2.contains("and 1 more like it"),
        "{}",
        second[0].2
    );
    assert!(
        second[1].2.contains("and 2 more like it"),
        "{}",
        second[1].2
    );
}

/// Without an approvers list a reminder is a reply in the message's thread: a batch
/// gets one a round, counting the requests still waiting, not one per request.
#[tokio::test]
async fn a_batch_without_an_approvers_list_gets_one_thread_reminder_a_round() {
    let app = spawn_policy(sqlite(), POLICY).await;
    let ids = batch(&app, "notify_team", 3).await;
    let message = batch_message(&app, ids[0]);

    later(&app, 30 * 60).await;
    let replies = thread_replies(&app);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["thread_ts"], message.ts);
    let text = replies[0]["text"].as_str().unwrap();
    assert!(
        text.contains("3 requests in this message are still waiting"),
        "{text}"
    );

    click(&app, ids[0], "U0CAROL", "approve", &message).await;
    later(&app, 3600).await;
    let replies = thread_replies(&app);
    assert_eq!(replies.len(), 2, "{replies:?}");
    let text = replies[1]["text"].as_str().unwrap();
    assert!(
        text.contains("2 requests in this message are still waiting"),
        "{text}"
    );
}

/// The batch escalates as one post listing all three (the first, decided, among them),
/// with one note in the batch message's thread; a manager's click on an item there
/// decides it, and the post is brought up to date as the batch.
async fn a_batch_escalates_as_one_post_listing_every_request(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let ids = batch(&app, "pay_invoice", 3).await;
    let message = batch_message(&app, ids[0]);
    click(&app, ids[0], "U0ALICE", "approve", &message).await;

    later(&app, 2 * 3600).await;
    later(&app, 60).await; // the other members look again: posted already
    let posts = escalations(&app);
    assert_eq!(posts.len(), 1, "one escalation for the batch: {posts:?}");
    assert_eq!(items(&posts[0]), strings(&ids));
    assert!(
        posts[0].to_string().contains("3 ×"),
        "the batch: {}",
        posts[0]
    );
    let notes = thread_replies(&app);
    assert_eq!(notes.len(), 1, "one note in the thread: {notes:?}");
    assert_eq!(notes[0]["thread_ts"], message.ts);

    let escalation = SlackMessage {
        channel: "C0MANAGERS".into(),
        ts: escalation_ts(&app, ids[2]).await,
        metadata: posts[0]["metadata"].clone(),
    };
    for id in &ids {
        assert_eq!(
            escalation_ts(&app, *id).await,
            escalation.ts,
            "recorded for each"
        );
    }
    click(&app, ids[2], "U0MANAGER", "approve", &escalation).await;
    assert_eq!(
        app.store.get(ids[2]).await.unwrap().unwrap().status,
        Status::Approved
    );
    run_paced(&app, 2).await;
    let update = app.slack.calls_to("chat.update");
    let update = update
        .iter()
        .rev()
        .find(|call| call.body["channel"] == "C0MANAGERS")
        .expect("the escalation was updated");
    assert!(
        update.body.to_string().contains("3 ×"),
        "as the batch: {}",
        update.body
    );
    assert_eq!(escalations(&app).len(), 1);
}

/// Requests ten seconds apart: the first's escalation time passes with nothing posted,
/// the batch escalates at the last's, and a manager's click on any item counts at once
/// (a manager decides an item only from its own escalation time).
async fn a_batch_escalates_when_its_last_item_is_due_and_the_managers_decide_any_item_at_once(
    db: TestDb,
) {
    let app = spawn_policy(db, POLICY).await;
    let ids = batch_apart(&app, "pay_invoice", 3, 10).await;
    // Now 36 s after the last request: the first's escalation is due in 2 h less 56 s,
    // the last's in 2 h less 36 s. 50 s short of 2 h, the first's is past, the last's
    // 14 s off.
    app.clock.advance(Duration::from_secs(2 * 3600 - 50));
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(10));
    app.run_jobs().await;
    assert!(
        escalations(&app).is_empty(),
        "not before the last item is due"
    );
    later(&app, 10).await;
    let posts = escalations(&app);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(items(&posts[0]), strings(&ids));

    let escalation = SlackMessage {
        channel: "C0MANAGERS".into(),
        ts: escalation_ts(&app, ids[0]).await,
        metadata: posts[0]["metadata"].clone(),
    };
    for id in &ids {
        click(&app, *id, "U0MANAGER", "approve", &escalation).await;
        let approval = app.store.get(*id).await.unwrap().unwrap();
        assert_eq!(approval.status, Status::Approved, "{id}");
    }
    later(&app, 5 * 60).await;
    assert_eq!(escalations(&app).len(), 1);
}

/// The first request's escalation refused for Slack's rate limit: the others wait for
/// it rather than post their own, and the batch is escalated once, after Slack's wait.
#[tokio::test]
async fn the_others_wait_for_the_first_requests_escalation_and_it_is_posted_once() {
    let app = spawn_policy(sqlite(), POLICY).await;
    let ids = batch(&app, "pay_invoice", 3).await;
    app.slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 50,
        },
    );
    later(&app, 2 * 3600).await;
    assert!(
        escalations(&app).is_empty(),
        "refused, and nobody else posted"
    );
    later(&app, 30).await;
    assert!(escalations(&app).is_empty(), "the others still wait");
    later(&app, 30).await;
    later(&app, 60).await;
    let posts = escalations(&app);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(items(&posts[0]), strings(&ids));
    assert_eq!(thread_replies(&app).len(), 1);
}

/// The first request's escalation reached Slack but its answer was lost, and its
/// retries cannot read the history to find it: the next request, taking over after
/// its grace, finds it in the channel and records it for all three rather than post
/// it again.
#[tokio::test]
async fn a_takeover_finds_the_first_requests_escalation_whose_answer_was_lost() {
    let app = spawn_policy(sqlite(), POLICY).await;
    let ids = batch(&app, "pay_invoice", 3).await;
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    // The first's retries, 1, 3, 7, 15, 31 and 63 s after, find no history; the next
    // at 127 s would. The second takes over at 120 s.
    for _ in 0..6 {
        app.slack
            .fail_next("conversations.history", Failure::ServerError);
    }
    app.clock.advance(Duration::from_secs(2 * 3600 - 36));
    for _ in 0..140 {
        app.run_jobs().await;
        app.clock.advance(Duration::from_secs(1));
    }
    let posts = escalations(&app);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let lost = app.slack.calls_to("chat.postMessage");
    let lost = lost
        .iter()
        .find(|c| c.body["channel"] == "C0MANAGERS")
        .unwrap();
    assert_eq!(
        lost.body["metadata"]["event_payload"]["approval_id"],
        ids[0].to_string()
    );
    let history = app.slack.calls_to("conversations.history");
    assert_eq!(history.len(), 7, "six refused, then the takeover's look");
    let ts = escalation_ts(&app, ids[0]).await;
    for id in &ids {
        assert_eq!(escalation_ts(&app, *id).await, ts, "recorded for each");
    }
}

/// The first request expires a minute after its own escalation time, before the last
/// one's: the batch escalates at the first's time, not later.
#[tokio::test]
async fn a_batch_escalates_before_its_first_request_expires() {
    let app = spawn_policy(sqlite(), POLICY).await;
    let first = json!({ "tool_name": "pay_invoice", "parameters": {"to": "u0"}, "expires_in": 2 * 3600 + 60 });
    let (status, body) = ask_body(&app, &app.token, &first).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.clock.advance(Duration::from_secs(20));
    let (status, body) = ask_as(&app, &app.token, "pay_invoice", json!({"to": "u1"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.clock.advance(Duration::from_secs(31));
    run_paced(&app, 5).await;
    // 56 s after the first: its escalation is due in 2 h less 56 s, the second's 20 s
    // later, past the first's expiry less a minute.
    app.clock.advance(Duration::from_secs(2 * 3600 - 56));
    run_paced(&app, 3).await;
    let posts = escalations(&app);
    assert_eq!(posts.len(), 1, "at the first's time: {posts:?}");
    assert_eq!(items(&posts[0]).len(), 2);
    later(&app, 60).await;
    assert_eq!(escalations(&app).len(), 1);
}

/// The first request's escalation given up (Slack refused it for good, once): the next
/// waits its grace (two minutes past the batch's escalation time), then escalates the
/// batch itself, once.
#[tokio::test]
async fn when_the_first_requests_escalation_is_given_up_the_next_posts_the_batch() {
    let app = spawn_policy(sqlite(), POLICY).await;
    let ids = batch(&app, "pay_invoice", 3).await;
    app.slack
        .fail_next("chat.postMessage", Failure::NotOk("channel_not_found"));
    later(&app, 2 * 3600).await;
    assert!(escalations(&app).is_empty());
    later(&app, 60).await;
    assert!(
        escalations(&app).is_empty(),
        "within the grace, the others wait"
    );
    later(&app, 60).await;
    later(&app, 60).await;
    let posts = escalations(&app);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(items(&posts[0]), strings(&ids));
    let poster = posts[0]["metadata"]["event_payload"]["approval_id"].as_str();
    assert_eq!(poster, Some(&*ids[1].to_string()), "the second took over");
    later(&app, 5 * 60).await;
    assert_eq!(escalations(&app).len(), 1, "the third found it posted");
}
