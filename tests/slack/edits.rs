//! Requests and their edits at the edges: a rule whose `when` cannot be evaluated for a
//! call still decides who reviews it, in the channel and in the Edit & approve modal;
//! and an edit nests no deeper than a request's parameters may, so that what signoff
//! keeps of it reads back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::Status;

use crate::common;
use crate::helpers::*;
use crate::interactions::EDIT_POLICY;

crate::on_both_backends!(an_edit_as_deep_as_a_requests_parameters_leaves_the_audit_log_readable);

/// A deploy that leaves `environment` out might be a prod deploy: it needs the prod
/// rule's two named approvers, not one approval from anyone through the everyday
/// deploy rule after it; and an edit that leaves `environment` out of a staging deploy
/// is refused in the modal.
#[tokio::test]
async fn a_call_whose_condition_cannot_be_evaluated_needs_that_rules_approvers_and_count() {
    let app = spawn_policy(common::sqlite(), EDIT_POLICY).await;
    let deploy = |parameters: Value| json!({"tool_name": "deploy_api", "parameters": parameters});
    let unnamed = asked(&app, &app.token, &deploy(json!({"service": "api"}))).await;
    assert_eq!(
        (unnamed.required_approvals, unnamed.routing.rule),
        (2, Some(1))
    );
    // Kept with the rule's index: which rule that index named (see check_edit).
    assert!(unnamed.routing.rule_fingerprint.is_some());
    app.run_jobs().await;

    app.click(&unnamed, "U0CAROL", "approve").await;
    let replies = app.ephemerals_to("U0CAROL", 1).await;
    assert!(replies[0].contains("Only the approvers"), "{replies:?}");
    app.click(&unnamed, "U0ALICE", "approve").await;
    let after = app.approval(&unnamed).await;
    assert_eq!((after.status, after.votes.len()), (Status::Pending, 1));
    app.click(&unnamed, "U0BOB", "approve").await;
    assert_eq!(app.approval(&unnamed).await.status, Status::Approved);

    let staging = json!({"service": "api", "environment": "staging"});
    let staging = asked(&app, &app.token, &deploy(staging)).await;
    assert_eq!(
        (staging.required_approvals, staging.routing.rule),
        (1, Some(2))
    );
    // One post a second per channel.
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    let (status, body) = app
        .submit(&staging, "U0CAROL", "edit_approve", r#"{"service": "api"}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&body).unwrap();
    let why = answer["errors"]["parameters"].as_str().unwrap_or_default();
    assert!(why.contains("rules[1]"), "{body}");
    assert!(why.contains("could not be evaluated"), "{body}");
    let after = app.approval(&staging).await;
    assert_eq!(
        (after.status, &after.parameters, after.version),
        (Status::Pending, &staging.parameters, staging.version)
    );
}

/// Parameters of 100 levels (the most a request's may have) as an edit: approved, and
/// the audit log (the edit's event wraps them in `{"from": …, "to": …}`) and the
/// approval still read back. One level more is refused in the modal.
async fn an_edit_as_deep_as_a_requests_parameters_leaves_the_audit_log_readable(
    db: common::TestDb,
) {
    let app = spawn_on(db).await;
    let nested = |levels: usize| format!("{}1{}", r#"{"a": "#.repeat(levels), "}".repeat(levels));
    let wipe = app.request("wipe", json!({"disk": "sda"})).await;
    app.run_jobs().await;

    let (status, body) = app
        .submit(&wipe, "U0ALICE", "edit_approve", &nested(101))
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&body).unwrap();
    let why = answer["errors"]["parameters"].as_str().unwrap_or_default();
    assert!(why.contains("nested deeper than 100 levels"), "{body}");
    assert_eq!(app.approval(&wipe).await.status, Status::Pending);

    let (status, body) = app
        .submit(&wipe, "U0ALICE", "edit_approve", &nested(100))
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let edited = app.approval(&wipe).await;
    assert_eq!(edited.status, Status::Approved);
    let events = app.store.audit_page(0, 100).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "edited"), "{events:?}");
    let response = app
        .http
        .get(app.url(&format!("/v1/approvals/{}", wipe.id)))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
