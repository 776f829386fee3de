//! Replies in an approval's thread (a reminder under a rule with no approvers list, an
//! escalation's note) are posts to the approval's channel like any other: Slack's one
//! chat.postMessage per second per channel holds for them too, however many fall due
//! at once.

use std::time::Duration;

use serde_json::json;
use signoff::clock::Clock;

use crate::common::fake_slack::Failure;
use crate::helpers::*;

/// Three escalations, each to a channel of its own, so that their notes fall due in
/// the approvals' channel at once.
const THREE_ESCALATIONS: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "4h"

[[rules]]
tools = ["pay_a"]
tier = "medium"
escalate_after = "2h"
escalation_channel = "C0MANAGERSA"

[[rules]]
tools = ["pay_b"]
tier = "medium"
escalate_after = "2h"
escalation_channel = "C0MANAGERSB"

[[rules]]
tools = ["pay_c"]
tier = "medium"
escalate_after = "2h"
escalation_channel = "C0MANAGERSC"
"#;

/// The replies posted in threads of `channel` so far.
fn replies_in(app: &TestApp, channel: &str) -> usize {
    app.slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.body["thread_ts"].is_string() && c.body["channel"] == channel)
        .count()
}

/// Runs a pass a second (on the manual clock) until `n` channel messages are posted.
async fn posted(app: &TestApp, n: usize) {
    for _ in 0..n {
        app.run_jobs().await;
        app.clock.advance(Duration::from_secs(1));
    }
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), n);
}

/// After a pass at the time thread replies fell due, one more each second, the last
/// after `n` passes.
async fn one_a_second(app: &TestApp, n: usize) {
    for sent in 1..=n {
        app.run_jobs().await;
        assert_eq!(
            replies_in(app, "C0APPROVALS"),
            sent,
            "one reply a second in the channel"
        );
        app.clock.advance(Duration::from_secs(1));
    }
    app.run_jobs().await;
    assert_eq!(replies_in(app, "C0APPROVALS"), n, "each once");
}

#[tokio::test]
async fn thread_reminders_due_at_once_go_out_one_a_second_in_their_channel() {
    let app = spawn_app().await;
    // A reminder at 30 min, in the thread: the rule names no approvers.
    for n in 0..4 {
        app.request("nudge_backup", json!({ "n": n })).await;
    }
    posted(&app, 4).await;
    app.clock.advance(Duration::from_secs(30 * 60));
    one_a_second(&app, 4).await;
}

#[tokio::test]
async fn escalation_notes_due_at_once_go_out_one_a_second_in_their_channel() {
    let app = spawn_policy(crate::common::sqlite(), THREE_ESCALATIONS).await;
    for tool in ["pay_a", "pay_b", "pay_c"] {
        let body = json!({ "tool_name": tool, "parameters": {} });
        asked(&app, &app.token, &body).await;
    }
    posted(&app, 3).await;
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.run_jobs().await;
    let escalated = app.slack.channels_of("chat.postMessage");
    assert_eq!(escalated.len(), 6, "each escalated at once: {escalated:?}");
    assert_eq!(replies_in(&app, "C0APPROVALS"), 0, "the notes follow");
    one_a_second(&app, 3).await;
}

/// A thread reminder Slack took while its holder died before recording it (the reply
/// posted, Slack's answer never read): the replica that claims the reminder once the
/// lease has run out finds the reply in the thread by its metadata and posts no
/// second one. Before, every such retry replied again.
#[tokio::test]
async fn a_thread_reminder_slack_took_before_its_holder_died_is_not_posted_again() {
    const LEASE: Duration = Duration::from_secs(6);
    let app = spawn_app().await;
    let approval = app.request("nudge_backup", json!({})).await;
    app.run_jobs().await;
    let main = app.store.messages(approval.id).await.unwrap().remove(0);
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    let replica = || unpaced(&app).with_lease(LEASE);
    let first = {
        let (scheduler, now) = (replica(), app.clock.now());
        tokio::spawn(async move { scheduler.run_once(now).await })
    };
    app.slack.wait_for("chat.postMessage", 2).await;
    first.abort();
    app.clock.advance(LEASE + Duration::from_secs(1));
    let claimed = replica().run_once(app.clock.now()).await.unwrap();
    assert_eq!(claimed, 1, "the reminder, claimed again");
    assert_eq!(replies_in(&app, "C0APPROVALS"), 1, "replied once");
    let looked = app.slack.calls_to("conversations.replies");
    assert_eq!(looked.len(), 1, "{looked:?}");
    assert_eq!(looked[0].body["channel"], main.channel.as_str());
    assert_eq!(looked[0].body["ts"], main.ts.as_str());
    let reply = &app.slack.calls_to("chat.postMessage")[1];
    assert_eq!(reply.body["metadata"]["event_type"], "signoff_thread_note");
}
