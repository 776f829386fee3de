//! Clicks and commands from where they should not come: a click counts only from a
//! message signoff posted for that approval, and `/approvals` shows an approval only
//! to those who may decide it and in the channels it was posted to.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{Approval, Status};
use signoff::jobs::PostedMessage;
use signoff::slack::text;

use crate::helpers::*;

/// A Deny from the wrong message opens no modal; a form naming the wrong message
/// decides nothing.
async fn a_deny_from_the_wrong_message_decides_nothing(
    app: &TestApp,
    target: &Approval,
    on_other: &PostedMessage,
) {
    app.click_on(target, "U0MALLORY", "deny", on_other).await;
    assert!(app.slack.calls_to("views.open").is_empty());
    let forged_form = json!({
        "type": "view_submission",
        "user": {"id": "U0MALLORY"},
        "view": {"callback_id": "deny_reason",
                 "private_metadata": json!({"approval_id": target.id, "channel": on_other.channel, "ts": on_other.ts}).to_string(),
                 "state": {"values": {"reason": {"reason": {"value": "no"}}}}}
    });
    let (status, answer) = app.interact(&forged_form).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["response_action"], "errors", "{answer}");
    assert_eq!(app.approval(target).await.status, Status::Pending);
}

#[tokio::test]
async fn a_click_counts_only_from_a_message_signoff_posted_for_that_approval() {
    let app = spawn_app().await;
    // No approvers list: anyone in the channel may decide, and only there.
    let target = app.request("restart_db", json!({"db": "prod"})).await;
    let other = app.request("restart_cache", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    let on_target = app.message(&target, "main").await;
    let on_other = app.message(&other, "main").await;
    let elsewhere = |channel: &str, ts: &str| PostedMessage {
        channel: channel.into(),
        ts: ts.into(),
        ..on_target.clone()
    };
    let forged_metadata = {
        let mut click = click_payload(
            &target.id.to_string(),
            "U0MALLORY",
            "approve",
            "C0ELSEWHERE",
            "1.2",
        );
        click["message"] = json!({"ts": "1.2", "metadata": {"event_type": "signoff_approval_posted",
            "event_payload": {"approval_id": other.id.to_string(), "kind": "main", "version": 0}}});
        click
    };
    for (what, from) in [
        ("another approval's message", on_other.clone()),
        (
            "a message that does not exist",
            elsewhere(&on_target.channel, "1700000099.000001"),
        ),
        ("another channel", elsewhere("C0ELSEWHERE", &on_target.ts)),
    ] {
        let (status, _) = app.click_on(&target, "U0MALLORY", "approve", &from).await;
        assert_eq!(status, StatusCode::OK, "{what}: Slack gets its ack");
        assert_eq!(
            app.approval(&target).await.status,
            Status::Pending,
            "{what}"
        );
    }
    app.interact(&forged_metadata).await;
    let replies = app.ephemerals_to("U0MALLORY", 4).await;
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|r| r.contains("not on a request signoff posted")),
        "{replies:?}"
    );
    let unchanged = app.approval(&target).await;
    assert_eq!(
        (unchanged.status, unchanged.votes.len()),
        (Status::Pending, 0)
    );
    assert!(app.slack.calls_to("views.open").is_empty());

    a_deny_from_the_wrong_message_decides_nothing(&app, &target, &on_other).await;
    // From its own message, anyone in the channel decides it.
    app.click_on(&target, "U0MALLORY", "approve", &on_target)
        .await;
    assert_eq!(app.approval(&target).await.status, Status::Approved);
}

#[tokio::test]
async fn a_click_on_a_reminder_dm_counts() {
    let app = spawn_app().await;
    let approval = app.request("remind_rotate", json!({"key": "k1"})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    let dm = app.message(&approval, "dm").await;
    app.click_on(&approval, "U0ALICE", "approve", &dm).await;
    assert_eq!(app.approval(&approval).await.votes.len(), 1);
}

/// The escalation channel sees a request once it was escalated there, not before, and
/// never one decided before its escalation.
#[tokio::test]
async fn the_escalation_channel_sees_a_request_only_once_it_is_escalated() {
    let app = &spawn_app().await;
    let waiting = app.request("escalate_db", json!({"db": "prod"})).await;
    let decided = app.request("escalate_cache", json!({"cache": "eu"})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    let seen = |approval: &signoff::approval::Approval| {
        let text = format!("status {}", approval.id.short());
        async move {
            let (_, reply) = app.command_in("C0MANAGERS", "U0MALLORY", &text).await;
            !reply.to_string().contains("No approval matches")
        }
    };
    assert!(!seen(&waiting).await, "not escalated yet");
    app.click(&decided, "U0ALICE", "approve").await;
    assert_eq!(app.approval(&decided).await.status, Status::Approved);

    app.clock.advance(Duration::from_secs(2 * 3600));
    app.run_jobs().await;
    assert!(seen(&waiting).await, "escalated to C0MANAGERS");
    assert!(
        !seen(&decided).await,
        "decided before its escalation: never there"
    );
}

#[tokio::test]
async fn approvals_status_shows_an_approval_only_to_its_deciders_and_in_its_channels() {
    let app = spawn_app().await;
    let deploy = app
        .request(
            "deploy_api",
            json!({"service": "api", "environment": "prod"}),
        )
        .await;
    let open = app.request("restart_db", json!({"db": "prod"})).await;
    app.run_jobs().await;
    let status = |approval: &signoff::approval::Approval| format!("status {}", approval.id.short());
    let not_found = |reply: &Value| reply.to_string().contains("No approval matches");

    // Mallory, elsewhere: neither exists for her, exactly like an unknown id.
    for approval in [&deploy, &open] {
        let (code, reply) = app
            .command_in("C0ELSEWHERE", "U0MALLORY", &status(approval))
            .await;
        assert_eq!(code, StatusCode::OK);
        assert!(not_found(&reply), "{reply}");
        assert!(
            !reply.to_string().contains("restart_db") && !reply.to_string().contains("deploy_api")
        );
    }
    let (_, unknown) = app
        .command_in("C0ELSEWHERE", "U0MALLORY", "status 0000dead")
        .await;
    assert!(not_found(&unknown));
    // In the channel it was posted to, anyone may see what anyone there may decide.
    let (_, reply) = app
        .command_in("C0APPROVALS", "U0MALLORY", &status(&open))
        .await;
    assert!(reply.to_string().contains("restart_db"), "{reply}");
    let (_, reply) = app
        .command_in("C0APPROVALS", "U0MALLORY", &status(&deploy))
        .await;
    assert!(
        not_found(&reply),
        "deploys are posted to C0DEPLOYS: {reply}"
    );
    // Its approvers see it anywhere.
    let (_, reply) = app
        .command_in("C0ELSEWHERE", "U0ALICE", &status(&deploy))
        .await;
    assert!(reply.to_string().contains("deploy_api"), "{reply}");
    // Approved by the policy as it was made, it was never posted: its rule's channel
    // does not show it.
    let searched = app
        .request("search_customers", json!({"email": "ceo@example.com"}))
        .await;
    assert_eq!(searched.status.as_str(), "approved");
    app.run_jobs().await;
    let (_, reply) = app
        .command_in("C0APPROVALS", "U0MALLORY", &status(&searched))
        .await;
    assert!(not_found(&reply), "{reply}");
    assert!(!reply.to_string().contains("ceo@example.com"), "{reply}");

    // The pending list follows the same rule.
    let (_, list) = app.command_in("C0ELSEWHERE", "U0MALLORY", "").await;
    assert!(!list.to_string().contains(&open.id.short()), "{list}");
    let (_, list) = app.command_in("C0APPROVALS", "U0MALLORY", "").await;
    assert!(list.to_string().contains(&open.id.short()), "{list}");
}

/// Text that would reorder itself on screen (Unicode's bidirectional overrides), or
/// that shows nothing (a zero-width space in a key, tag characters spelling out a
/// hidden sentence), is shown in its real order and in sight, in the message and in
/// the edit form: `\u{202E}fdp.exe` would read as `exe.pdf` to the approver, and two
/// keys differing by a zero-width space as one.
#[tokio::test]
async fn text_that_would_reorder_itself_or_hide_is_shown_in_its_real_order() {
    let app = spawn_app().await;
    let file = "/tmp/report-\u{202E}fdp.exe";
    // "IG" in tag characters (past U+FFFF), after a value that looks like "yes".
    let smuggled = "yes\u{E0049}\u{E0047}\u{FEFF}";
    let body = json!({"tool_name": "delete_customer_records",
                      "parameters": {"file": file, "con\u{200B}firm": smuggled},
                      "summary": format!("Delete {file}")});
    let approval = asked(&app, &app.token, &body).await;
    app.run_jobs().await;
    let posted = app.slack.calls_to("chat.postMessage")[0].body.to_string();
    let hidden: Vec<char> = posted.chars().filter(|c| text::hidden(*c)).collect();
    assert!(hidden.is_empty(), "{hidden:?} in {posted}");
    // `\u{202e}` as the message's text has it, its backslash escaped in the JSON.
    assert!(posted.contains(r"report-\\u{202e}fdp.exe"), "{posted}");
    assert!(posted.contains(r"con\\u{200b}firm"), "{posted}");
    assert!(
        posted.contains(r"yes\\u{e0049}\\u{e0047}\\u{feff}"),
        "{posted}"
    );

    app.click(&approval, "U0ALICE", "edit").await;
    let opened = app.slack.wait_for("views.open", 1).await;
    let initial = opened[0].body["view"]["blocks"][1]["element"]["initial_value"]
        .as_str()
        .expect("the edit form holds the parameters")
        .to_owned();
    assert!(!initial.chars().any(text::hidden), "{initial}");
    assert!(initial.contains(r"report-\u202efdp.exe"), "{initial}");
    assert!(initial.contains(r"con\u200bfirm"), "{initial}");
    // Past U+FFFF, as JSON writes it: a surrogate pair.
    assert!(
        initial.contains(r"yes\udb40\udc49\udb40\udc47\ufeff"),
        "{initial}"
    );
    let read_back: Value = serde_json::from_str(&initial).unwrap();
    assert_eq!(read_back, approval.parameters, "the same value, escaped");
    // Submitted as shown, it approves exactly the parameters asked for.
    let (status, _) = app
        .submit(&approval, "U0ALICE", "edit_approve", &initial)
        .await;
    assert_eq!(status, StatusCode::OK);
    let decided = app.store.get(approval.id).await.unwrap().unwrap();
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(decided.parameters["file"], file);
}
