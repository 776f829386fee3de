//! Rows inserted straight into the shared `pending_approvals` table: noticed,
//! classified, posted and decided like any other. On Postgres, replicas hear about
//! each other's decisions and about new rows through LISTEN/NOTIFY.

use std::time::Duration;

use serde_json::json;
use signoff::approval::{ApprovalId, Status};
use signoff::clock::Clock;
use sqlx::Connection;

use crate::common::TestDb;
use crate::helpers::*;

/// Inserts a row the way an MCP server written against the table would.
async fn insert_row(url: &str, app: &TestApp, tool: &str, tier: &str) -> ApprovalId {
    let expires = app.clock.now() + chrono::Duration::hours(8);
    if url.starts_with("sqlite:") {
        let id = ApprovalId::new();
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(
            "INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, requested_by, expires_at) \
             VALUES ($1, $2, '{\"table\": \"users\"}', $3, 'agent-7', $4)",
        )
        .bind(id.to_string())
        .bind(tool)
        .bind(tier)
        .bind(signoff::audit::format_time(&expires))
        .execute(&mut conn)
        .await
        .unwrap();
        id
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO pending_approvals (tool_name, parameters, risk_tier, requested_by, expires_at) \
             VALUES ($1, '{\"table\": \"users\"}', $2, 'agent-7', $3) RETURNING id",
        )
        .bind(tool)
        .bind(tier)
        .bind(expires)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        ApprovalId(id)
    }
}

async fn shared_table_rows_are_classified_posted_and_decided(db: TestDb) {
    let url = db.url.clone();
    let app = spawn_on(db).await;
    let id = insert_row(&url, &app, "drop_table", "medium").await;
    let auto = insert_row(&url, &app, "search_users", "low").await;

    app.run_jobs().await;
    let row = app.store.get(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Pending);
    assert_eq!(
        row.routing.channel.as_deref(),
        Some("C0APPROVALS"),
        "classified by the policy"
    );
    assert_eq!(
        row.expires_at,
        app.clock.now() + chrono::Duration::hours(1),
        "capped by expires_after"
    );
    assert_eq!(
        app.store.get(auto).await.unwrap().unwrap().status,
        Status::Approved,
        "low tier auto-approves"
    );
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1, "only the one that needs people is posted");
    assert!(posts[0].body.to_string().contains("drop_table"));
    let requested = app.store.audit_page(0, 100).await.unwrap();
    assert!(
        requested
            .iter()
            .any(|e| e.kind == "requested" && e.data["source"] == "shared_table")
    );

    app.click(&row, "U0ALICE", "approve").await;
    let decided = app.store.get(id).await.unwrap().unwrap();
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("U0ALICE"));
    assert!(decided.decision_at.is_some());
    app.clock.advance(Duration::from_secs(5));
    assert_eq!(
        app.run_jobs().await,
        1,
        "the message update; the row is not adopted twice"
    );
}

crate::on_both_backends!(shared_table_rows_are_classified_posted_and_decided);

#[tokio::test]
async fn a_direct_insert_wakes_the_scheduler_and_decisions_reach_other_replicas_on_postgres() {
    let Some(db) = crate::common::postgres("listen_notify").await else {
        return;
    };
    let url = db.url.clone();
    let app = spawn_on(db).await;
    let replica = signoff::store::Store::connect(&url).await.unwrap();
    app.store.hearing().await;
    replica.hearing().await;

    let wakeup = app.store.wakeup();
    let woken = wakeup.notified();
    insert_row(&url, &app, "drop_table", "high").await;
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the trigger's NOTIFY woke the scheduler");

    let approval = app.request("transfer", json!({"amount": 1})).await;
    app.run_jobs().await;
    let mut heard = replica.subscribe();
    app.click(&approval, "U0ALICE", "approve").await;
    let change = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = heard.recv().await.unwrap();
            if change.id == approval.id {
                return change;
            }
        }
    })
    .await
    .expect("the other replica heard the decision");
    assert_eq!(change.status, Status::Approved);
    assert!(!change.is_local(), "it came from another process");
}
