//! Requests and their edits at the edges: a rule whose `when` cannot be evaluated for a
//! call still decides who reviews it, in the channel and in the Edit & approve modal.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::Status;

use crate::common;
use crate::helpers::*;
use crate::interactions::EDIT_POLICY;

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
