//! Escalation approvers: the managers a rule names (`escalation_approvers`) decide a
//! request once it is escalated to them, as its approvers do, and not before.

use std::time::Duration;

use serde_json::json;
use signoff::approval::Status;

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(
    a_manager_decides_once_the_request_is_escalated_and_not_before,
    a_managers_group_decides_once_escalated_and_nobody_else_does,
);

const POLICY: &str = r#"
[[rules]]
tools = ["refund_*"]
tier = "medium"
channel = "C0PAYMENTS"
approvers = ["U0ALICE"]
escalate_after = "1h"
escalation_channel = "C0MANAGERS"
escalation_approvers = ["U0MGR", "S0MGRS"]
expires_after = "4h"
"#;

/// A refund asked for through the API, under [`POLICY`].
async fn refund(app: &TestApp) -> signoff::approval::Approval {
    let body = json!({"tool_name": "refund_big", "parameters": {"amount": 900}});
    asked(app, &app.token, &body).await
}

/// Whether `/approvals pending` typed by `user` lists the refund.
async fn pending_for(app: &TestApp, user: &str) -> bool {
    let (_, reply) = app.command(user, "pending").await;
    reply.to_string().contains("refund_big")
}

async fn a_manager_decides_once_the_request_is_escalated_and_not_before(db: TestDb) {
    let app = spawn_with(db, crate::common::app::Options::new(POLICY).with_slack()).await;
    let approval = refund(&app).await;
    app.run_jobs().await;
    let main = app.message(&approval, "main").await;
    app.click_on(&approval, "U0MGR", "approve", &main).await;
    let before = app.approval(&approval).await;
    assert_eq!(before.status, Status::Pending, "not escalated yet");
    assert!(before.votes.is_empty(), "{:?}", before.votes);
    assert!(
        !pending_for(&app, "U0MGR").await,
        "not theirs to decide yet"
    );

    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    let escalation = app.message(&approval, "escalation").await;
    assert!(pending_for(&app, "U0MGR").await, "theirs once escalated");
    app.click_on(&approval, "U0MGR", "approve", &escalation)
        .await;
    let decided = app.approval(&approval).await;
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("U0MGR"));
}

async fn a_managers_group_decides_once_escalated_and_nobody_else_does(db: TestDb) {
    let app = spawn_with(db, crate::common::app::Options::new(POLICY).with_slack()).await;
    app.slack.set_group("S0MGRS", &["U0CAROL"]);
    let approval = refund(&app).await;
    app.run_jobs().await;
    let main = app.message(&approval, "main").await;
    app.click_on(&approval, "U0CAROL", "approve", &main).await;
    assert!(app.approval(&approval).await.votes.is_empty(), "not before");

    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    let escalation = app.message(&approval, "escalation").await;
    app.click_on(&approval, "U0MALLORY", "approve", &escalation)
        .await;
    assert!(
        app.approval(&approval).await.votes.is_empty(),
        "in the managers' channel, but neither an approver nor a manager"
    );
    // A Deny with a reason, submitted from the modal the escalation message opened.
    let denial = submission(
        &approval,
        "U0CAROL",
        "deny_reason",
        "too large",
        &escalation,
    );
    let (status, body) = app.interact(&denial).await;
    assert!(status.is_success(), "{body}");
    let decided = app.approval(&approval).await;
    assert_eq!(decided.status, Status::Denied);
    assert_eq!(decided.decided_by.as_deref(), Some("U0CAROL"));
}
