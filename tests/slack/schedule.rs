//! Reminders, escalation and decision callbacks, with the clock moved by hand.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{Approval, Status};
use signoff::clock::Clock;

use crate::common::fake_slack::Failure;
use crate::common::receiver::Receiver;
use crate::common::{TestDb, raw_count, raw_execute, sql_time};
use crate::helpers::*;

crate::on_both_backends!(
    reminders_go_on_while_another_program_moves_the_expiry_later,
    a_reminder_due_before_the_expiry_is_marked_keeps_the_chain_going,
    a_reminder_slack_refuses_for_good_gives_up_and_the_next_one_comes_all_the_same,
);

fn opened_for(app: &TestApp) -> Vec<String> {
    app.slack
        .calls_to("conversations.open")
        .into_iter()
        .map(|c| c.body["users"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// [`opened_for`] from the `n`-th on, sorted: a reminder's DMs go out a few at once.
fn sorted(mut opened: Vec<String>, n: usize) -> Vec<String> {
    opened.drain(..n);
    opened.sort();
    opened
}

#[tokio::test]
async fn reminders_go_to_approvers_who_have_not_voted_until_the_decision() {
    let app = spawn_app().await;
    app.slack.set_group("S0SRE", &["U0CAROL", "U0ALICE"]);
    let approval = app.request("remind_rotate", json!({"key": "prod"})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(29 * 60));
    app.run_jobs().await;
    assert!(app.slack.dm_posts().is_empty(), "not before remind_after");

    app.clock.advance(Duration::from_secs(60));
    app.run_jobs().await;
    assert_eq!(
        sorted(opened_for(&app), 0),
        ["U0ALICE", "U0BOB", "U0CAROL"],
        "each approver once, groups expanded"
    );
    let dms = app.slack.dm_posts();
    assert_eq!(dms.len(), 3);
    let dm = dms[0].to_string();
    assert!(dm.contains("Reminder") && dm.contains("left"), "{dm}");
    assert!(
        dm.contains("https://example.slack.com/archives/"),
        "links to the channel message: {dm}"
    );

    app.click(&approval, "U0ALICE", "approve").await;
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(
        sorted(opened_for(&app), 3),
        ["U0BOB", "U0CAROL"],
        "Alice voted: no more reminders for her"
    );

    app.click(&approval, "U0BOB", "approve").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    app.run_jobs().await; // updates every message, DMs included
    let updated = app.slack.channels_of("chat.update");
    assert!(
        updated.iter().filter(|ch| ch.starts_with('D')).count() >= 3,
        "reminder DMs lose their buttons: {updated:?}"
    );
    app.clock.advance(Duration::from_secs(3 * 3600));
    app.run_jobs().await;
    assert_eq!(opened_for(&app).len(), 5, "no reminder after the decision");
}

/// `remind_rotate` requested (reminded at 30 min, then every hour; expires at 4 h) and
/// reminded four times, Alice and Bob each time: 3 h 30 later. With when it began.
async fn reminded_four_times(app: &TestApp) -> (Approval, chrono::DateTime<chrono::Utc>) {
    let began = app.clock.now();
    let approval = app.request("remind_rotate", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(3600));
        app.run_jobs().await;
    }
    assert_eq!(app.slack.dm_posts().len(), 8, "Alice and Bob, four times");
    (approval, began)
}

/// The shared table lets another program move a pending approval's expiry later: its
/// reminders go on until the new expiry (they stopped for good at the first one), and
/// end with it, leaving no reminder job behind.
async fn reminders_go_on_while_another_program_moves_the_expiry_later(db: TestDb) {
    let app = spawn_on(db).await;
    let (approval, began) = reminded_four_times(&app).await;

    let later = sql_time(&app.db, began + chrono::Duration::hours(6));
    let moved = format!(
        "UPDATE pending_approvals SET expires_at = {later} WHERE id = '{}'",
        approval.id
    );
    assert_eq!(raw_execute(&app.db, &moved).await, Ok(1));
    for reminded in [10, 12] {
        app.clock.advance(Duration::from_secs(3600));
        app.run_jobs().await;
        assert_eq!(
            app.slack.dm_posts().len(),
            reminded,
            "reminded again past the first expiry"
        );
    }

    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    assert_eq!(app.approval(&approval).await.status, Status::Expired);
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    assert_eq!(
        app.slack.dm_posts().len(),
        12,
        "nobody reminded once expired"
    );
    let reminders = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind'";
    assert_eq!(raw_count(&app.db, reminders).await, 0, "the chain ended");
}

/// The deliveries run apart from the timers, so a reminder can come due after the
/// approval's expiry and before the timers mark it: nobody is reminded of it, and the
/// chain goes on (it ended there, so an expiry another program moved later after that
/// reminded nobody again).
async fn a_reminder_due_before_the_expiry_is_marked_keeps_the_chain_going(db: TestDb) {
    let app = spawn_on(db).await;
    let (approval, began) = reminded_four_times(&app).await;

    // 4 h 30: the fifth reminder is due, the expiry (4 h) not yet marked.
    app.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        app.scheduler.deliver_once(app.clock.now()).await.unwrap(),
        1
    );
    assert_eq!(app.approval(&approval).await.status, Status::Pending);
    assert_eq!(
        app.slack.dm_posts().len(),
        8,
        "nobody reminded past the expiry"
    );

    let later = sql_time(&app.db, began + chrono::Duration::hours(6));
    let moved = format!(
        "UPDATE pending_approvals SET expires_at = {later} WHERE id = '{}'",
        approval.id
    );
    assert_eq!(raw_execute(&app.db, &moved).await, Ok(1));
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(
        app.slack.dm_posts().len(),
        10,
        "reminded again once the expiry moved"
    );

    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(app.approval(&approval).await.status, Status::Expired);
    assert_eq!(
        app.slack.dm_posts().len(),
        10,
        "nobody reminded once expired"
    );
    let reminders = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind'";
    assert_eq!(raw_count(&app.db, reminders).await, 0, "the chain ended");
}

/// A reminder Slack refuses for good is given up at once (dead-lettered, not retried
/// for two hours), whether the refusal is the user group's (deleted) or every DM's (a
/// missing scope); the next reminder comes all the same, and reaches everyone once
/// Slack is set right.
async fn a_reminder_slack_refuses_for_good_gives_up_and_the_next_one_comes_all_the_same(
    db: TestDb,
) {
    let app = spawn_on(db).await;
    app.request("remind_rotate", json!({})).await;
    app.run_jobs().await;
    let dead = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' AND state = 'dead'";
    let retried = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' \
                   AND state <> 'dead' AND last_error IS NOT NULL";

    // At 30 min, the user group is gone.
    let deleted = Failure::NotOk("no_such_subteam");
    app.slack.fail_next("usergroups.users.list", deleted);
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    assert!(app.slack.dm_posts().is_empty());
    assert_eq!(raw_count(&app.db, dead).await, 1, "given up at once");

    // An hour later the next reminder comes; Slack refuses every DM (no scope).
    for _ in 0..2 {
        app.slack
            .fail_next("conversations.open", Failure::NotOk("missing_scope"));
    }
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(
        opened_for(&app).len(),
        2,
        "the next reminder, for Alice and Bob"
    );
    assert!(app.slack.dm_posts().is_empty());
    assert_eq!(raw_count(&app.db, retried).await, 0, "not retried");
    assert_eq!(raw_count(&app.db, dead).await, 2, "given up at once");

    // Another hour, the scope granted: everyone is reminded again.
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(app.slack.dm_posts().len(), 2, "Alice and Bob reminded");
}

#[tokio::test]
async fn without_an_approvers_list_the_reminder_is_a_thread_reply() {
    let app = spawn_app().await;
    app.request("nudge_backup", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 2);
    let main_ts = app.slack.calls_to("chat.postMessage")[0].body["channel"].clone();
    assert_eq!(posts[1].body["channel"], main_ts);
    assert!(
        posts[1].body["thread_ts"].as_str().is_some(),
        "{}",
        posts[1].body
    );
    assert!(posts[1].body["text"].as_str().unwrap().contains("Reminder"));
    assert!(app.slack.calls_to("conversations.open").is_empty());
}

/// A burst of reminders in one channel meets Slack's rate limit: a reminder refused
/// for it is tried again after Slack's wait, not dropped (the only reminder anyone
/// gets without an approvers list).
#[tokio::test]
async fn a_thread_reminder_slack_refuses_for_its_rate_limit_is_tried_again_after_the_wait() {
    let app = spawn_app().await;
    app.request("nudge_backup", json!({})).await;
    app.run_jobs().await;
    app.slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    let threaded = |app: &TestApp| {
        app.slack
            .calls_to("chat.postMessage")
            .into_iter()
            .filter(|c| c.body["thread_ts"].is_string())
            .count()
    };
    assert_eq!(threaded(&app), 1, "tried once, refused");
    app.clock.advance(Duration::from_secs(6));
    app.run_jobs().await;
    assert_eq!(threaded(&app), 1, "not before Slack's wait is over");
    app.clock.advance(Duration::from_secs(2));
    app.run_jobs().await;
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(threaded(&app), 2, "tried again: {posts:?}");
    let last = &posts.last().unwrap().body;
    assert!(
        last["text"].as_str().unwrap().contains("Reminder"),
        "{last}"
    );
    app.run_jobs().await;
    assert_eq!(threaded(&app), 2, "and posted once");
}

/// Every approver's DM refused for Slack's rate limit: the reminder is tried again
/// after Slack's wait, not after the first backoff's second.
#[tokio::test]
async fn a_reminder_slack_refuses_every_dm_for_its_rate_limit_waits_for_slacks_wait() {
    let app = spawn_app().await;
    app.request("remind_rotate", json!({})).await;
    app.run_jobs().await;
    for _ in 0..2 {
        let limited = Failure::RateLimited {
            retry_after_secs: 30,
        };
        app.slack.fail_next("conversations.open", limited);
    }
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    assert_eq!(opened_for(&app).len(), 2, "Alice and Bob, both refused");
    assert!(app.slack.dm_posts().is_empty());
    app.clock.advance(Duration::from_secs(10));
    app.run_jobs().await;
    assert_eq!(opened_for(&app).len(), 2, "not before Slack's wait");
    app.clock.advance(Duration::from_secs(21));
    app.run_jobs().await;
    assert_eq!(app.slack.dm_posts().len(), 2, "both reminded after it");
}

#[tokio::test]
async fn escalation_posts_live_buttons_to_the_manager_channel_and_notes_it_in_the_thread() {
    let app = spawn_app().await;
    let approval = app
        .request("escalate_payout", json!({"amount": 5000}))
        .await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.run_jobs().await;
    // The note follows the escalation's post as a job of its own.
    app.run_jobs().await;
    let posts = app.slack.calls_to("chat.postMessage");
    let escalated: Vec<_> = posts
        .iter()
        .filter(|c| c.body["channel"] == "C0MANAGERS")
        .collect();
    assert_eq!(escalated.len(), 1);
    assert!(
        escalated[0]
            .body
            .to_string()
            .contains("\"action_id\":\"approve\""),
        "live buttons"
    );
    let note = posts
        .iter()
        .find(|c| c.body["thread_ts"].is_string())
        .expect("thread note");
    assert_eq!(note.body["channel"], "C0APPROVALS");
    assert!(note.body["text"].as_str().unwrap().contains("C0MANAGERS"));

    // A decision in the escalation channel decides it and updates both messages.
    let escalation = app.message(&approval, "escalation").await;
    assert_eq!(escalation.channel, "C0MANAGERS");
    app.click_on(&approval, "U0MANAGER", "approve", &escalation)
        .await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    app.run_jobs().await;
    let updated = app.slack.channels_of("chat.update");
    assert!(
        updated.contains(&"C0APPROVALS".to_owned()) && updated.contains(&"C0MANAGERS".to_owned()),
        "{updated:?}"
    );
}

/// The replies posted in threads so far (escalation notes, thread reminders).
fn thread_notes(app: &TestApp) -> usize {
    let posts = app.slack.calls_to("chat.postMessage");
    posts
        .iter()
        .filter(|c| c.body["thread_ts"].is_string())
        .count()
}

/// The escalation's note in the thread, refused for Slack's rate limit, is sent after
/// Slack's wait, once (it was lost before: best effort, not retried).
#[tokio::test]
async fn an_escalation_note_refused_for_the_rate_limit_is_sent_after_slacks_wait() {
    let app = spawn_app().await;
    app.request("escalate_payout", json!({"amount": 5000}))
        .await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.run_jobs().await;
    assert_eq!(thread_notes(&app), 0, "the escalation is posted first");
    app.slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 30,
        },
    );
    app.run_jobs().await;
    assert_eq!(thread_notes(&app), 1, "tried, and refused");
    app.clock.advance(Duration::from_secs(10));
    app.run_jobs().await;
    assert_eq!(thread_notes(&app), 1, "not before Slack's wait");
    app.clock.advance(Duration::from_secs(25));
    app.run_jobs().await;
    assert_eq!(thread_notes(&app), 2, "sent after it");
    let sent = app.slack.calls_to("chat.postMessage").pop().unwrap();
    assert!(
        sent.body["text"]
            .as_str()
            .unwrap()
            .contains("Escalated to <#C0MANAGERS>"),
        "{}",
        sent.body
    );
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(thread_notes(&app), 2, "once");
}

/// The thread of a decided request never says "no decision after…": not when the
/// escalation's post is found in Slack's history after the decision (an attempt whose
/// answer was lost), nor when the decision lands between the post and its note.
#[tokio::test]
async fn no_escalation_note_once_decided() {
    // Slack takes the escalation, its answer is lost; decided before the retry.
    let app = spawn_app().await;
    let approval = app.request("escalate_payout", json!({"amount": 1})).await;
    app.run_jobs().await;
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.run_jobs().await;
    app.click(&approval, "U0ALICE", "approve").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    app.run_jobs().await;
    let escalation = app.message(&approval, "escalation").await;
    assert_eq!(escalation.channel, "C0MANAGERS", "found and recorded");
    assert_eq!(thread_notes(&app), 0, "no note in the thread");

    // The note's own job comes after the decision.
    let app = spawn_app().await;
    let approval = app.request("escalate_payout", json!({"amount": 2})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.run_jobs().await;
    app.message(&approval, "escalation").await;
    app.click(&approval, "U0ALICE", "approve").await;
    app.run_jobs().await;
    app.run_jobs().await;
    assert_eq!(thread_notes(&app), 0, "no note in the thread");
}

#[tokio::test]
async fn nothing_is_escalated_once_decided() {
    let app = spawn_app().await;
    let approval = app.request("escalate_payout", json!({"amount": 1})).await;
    app.run_jobs().await;
    app.click(&approval, "U0ALICE", "deny").await;
    app.submit(&approval, "U0ALICE", "deny_reason", "no").await;
    app.clock.advance(Duration::from_secs(3 * 3600));
    app.run_jobs().await;
    assert!(
        app.slack
            .calls_to("chat.postMessage")
            .iter()
            .all(|c| c.body["channel"] != "C0MANAGERS")
    );
}

/// An escalation post whose delivery comes only past the approval's expiry, before the
/// timers have marked it (paced, retried, a pass behind), is not posted: its buttons
/// would be live in the managers' channel for a request nobody may decide any more.
#[tokio::test]
async fn an_escalation_due_before_the_expiry_and_delivered_after_it_is_not_posted() {
    let app = spawn_app().await;
    app.request("escalate_payout", json!({"amount": 1})).await;
    app.run_jobs().await;
    let replica = unpaced(&app);
    app.clock.advance(Duration::from_secs(2 * 3600));
    replica.fire_timers(app.clock.now()).await.unwrap();
    let planned = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_post' AND state = 'ready'";
    assert_eq!(
        raw_count(&app.db, planned).await,
        1,
        "the escalation, planned"
    );
    // Delivered past the expiry (4 h), the timers not run since.
    app.clock.advance(Duration::from_secs(2 * 3600 + 1));
    replica.deliver_once(app.clock.now()).await.unwrap();
    let to_managers = app.slack.calls_to("chat.postMessage");
    assert!(
        to_managers
            .iter()
            .all(|c| c.body["channel"] != "C0MANAGERS"),
        "{to_managers:?}"
    );
}

#[tokio::test]
async fn decisions_are_posted_to_the_callback_url_signed_and_retried() {
    let app = spawn_app().await;
    let (receiver, url) = Receiver::start(vec![StatusCode::INTERNAL_SERVER_ERROR]).await;
    let approval = app
        .request_with_callback("a", json!({"n": 1}), Some(url))
        .await;
    app.run_jobs().await;
    assert!(
        receiver.got().is_empty(),
        "nothing to announce while pending"
    );

    app.click(&approval, "U0ALICE", "approve").await;
    app.run_jobs().await;
    assert_eq!(receiver.got().len(), 1, "first attempt answered 500");
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    let got = receiver.got();
    assert_eq!(got.len(), 2, "retried after backoff");

    let (headers, body) = &got[1];
    let json: Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["status"], "approved");
    assert_eq!(json["approval_id"], approval.id.to_string());
    assert_eq!(json["approval"]["decided_by"], "U0ALICE");
    // Standard Webhooks headers, signed with the server's key; the redelivery kept
    // its id.
    assert_eq!(headers["webhook-id"], got[0].0["webhook-id"]);
    let id = headers["webhook-id"].to_str().unwrap();
    let timestamp = headers["webhook-timestamp"].to_str().unwrap();
    assert_eq!(timestamp, app.clock.now().timestamp().to_string());
    let signature = headers["webhook-signature"].to_str().unwrap();
    let signature = signature.strip_prefix("v1a,").unwrap();
    let public = app.signer.public_key();
    assert!(public.verify(format!("{id}.{timestamp}.{body}").as_bytes(), signature));
    assert!(!public.verify(
        format!("{id}.{timestamp}.{}", body.replace("approved", "denied")).as_bytes(),
        signature
    ));

    // Later, but before the approval expires (which is announced too).
    app.clock.advance(Duration::from_secs(1800));
    app.run_jobs().await;
    assert_eq!(receiver.got().len(), 2, "delivered once");
}

#[tokio::test]
async fn expiry_is_announced_to_the_callback_url() {
    let app = spawn_app().await;
    app.store
        .token_insert(
            "agent",
            &signoff::tokens::hash(&signoff::tokens::generate()),
            app.clock.now(),
        )
        .await
        .unwrap();
    let (receiver, url) = Receiver::start(vec![]).await;
    app.request_with_callback("a", json!({}), Some(url)).await;
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await; // expire
    app.run_jobs().await; // deliver
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    assert!(got[0].1.contains("\"status\":\"expired\""));
}
