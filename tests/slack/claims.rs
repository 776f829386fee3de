//! The claim: a program that inserted a row into the shared table runs its approved
//! action once, by moving the row from approved to executed itself
//! (`UPDATE … SET status = 'executed' WHERE id = … AND status = 'approved'`). One
//! claim gets the row; signoff records it as its own execute (the `executed` event in
//! the audit chain, the message updated). Everything else is refused or claims nothing.

use std::time::Duration;

use serde_json::json;
use signoff::approval::{ApprovalId, Status};
use signoff::audit::Verifier;
use signoff::clock::Clock;
use sqlx::Connection;

use crate::common::{TestDb, raw_execute, sql_time};
use crate::helpers::*;

crate::on_both_backends!(
    a_claim_runs_an_approved_row_once_and_is_recorded_as_an_execute,
    a_row_not_approved_or_past_its_expiry_or_opened_through_the_api_is_not_claimed,
    a_claim_that_changes_another_column_is_refused,
    of_two_concurrent_claims_one_gets_the_row,
);

/// The claim as docs/operations.md gives it, reading the parameters to run.
fn claim_sql(id: ApprovalId) -> String {
    format!(
        "UPDATE pending_approvals SET status = 'executed' WHERE id = '{id}' AND status = 'approved'"
    )
}

/// An app whose clock is the database's (the claim judges expiry by the database's
/// clock, signoff by its own).
async fn spawn_now(db: TestDb) -> TestApp {
    let app = spawn_on(db).await;
    app.clock.set(chrono::Utc::now());
    app
}

/// Inserts a row as a program written against the shared table does, with
/// `parameters`, expiring in an hour; signoff takes it in and posts it.
async fn inserted(app: &TestApp, parameters: &str) -> signoff::approval::Approval {
    let id = ApprovalId::new();
    let expires = sql_time(&app.db, app.clock.now() + chrono::Duration::hours(1));
    let sql = format!(
        "INSERT INTO pending_approvals (id, tool_name, parameters, requested_by, expires_at) \
         VALUES ('{id}', 'drop_table', '{parameters}', 'agent-7', {expires})"
    );
    assert_eq!(raw_execute(&app.db, &sql).await, Ok(1), "{sql}");
    posted(app).await;
    let row = app.store.get(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Pending, "taken in and posted");
    row
}

/// Runs the scheduler a few seconds on: the posts into one channel are paced.
async fn posted(app: &TestApp) {
    app.clock.advance(Duration::from_secs(3));
    app.run_jobs().await;
}

/// `approval`'s `executed` events.
async fn executed_events(app: &TestApp, id: ApprovalId) -> Vec<signoff::audit::Entry> {
    let events = app.store.audit_page(0, 100_000).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.approval_id == Some(id) && e.kind == "executed")
        .collect()
}

/// The whole chain verifies (what `signoff audit verify` checks of it).
async fn chain_verifies(app: &TestApp) {
    let mut verifier = Verifier::default();
    for entry in app.store.audit_page(0, 100_000).await.unwrap() {
        verifier.check(&entry).expect("the chain links");
    }
    let (seq, hash) = app.store.audit_head().await.unwrap();
    verifier
        .finish(seq, &hash)
        .expect("the head is the last event");
}

/// The claim's parameters (`RETURNING parameters`): what the program runs.
async fn claim_returning(db: &TestDb, id: ApprovalId) -> Vec<serde_json::Value> {
    let sql = sqlx::AssertSqlSafe(format!("{} RETURNING parameters", claim_sql(id)));
    if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
        rows.iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect()
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
    }
}

async fn a_claim_runs_an_approved_row_once_and_is_recorded_as_an_execute(db: TestDb) {
    let app = spawn_now(db).await;
    let row = inserted(&app, r#"{"table": "users"}"#).await;
    let (status, _) = app.click(&row, "U0ALICE", "approve").await;
    assert!(status.is_success(), "{status}");
    assert_eq!(app.approval(&row).await.status, Status::Approved);
    let before = app.approval(&row).await.version;

    // On PostgreSQL, as a role granted what docs/operations.md says a program needs.
    let role = (app.db.backend == "postgres")
        .then(|| format!("signoff_test_claim_{}", uuid::Uuid::new_v4().simple()));
    let role_db = if let Some(role) = &role {
        let grant = format!(
            "CREATE ROLE {role} LOGIN; GRANT INSERT (tool_name, parameters, risk_tier, \
             requested_by, expires_at), SELECT, UPDATE (expires_at, status) \
             ON pending_approvals TO {role}"
        );
        for statement in grant.split("; ") {
            raw_execute(&app.db, statement).await.unwrap();
        }
        Some(app.db.as_role(role))
    } else {
        None
    };
    let program = role_db.as_ref().unwrap_or(&app.db);
    assert_eq!(
        claim_returning(program, row.id).await,
        vec![json!({"table": "users"})],
        "one row: this worker runs it, with the approved parameters"
    );
    assert_eq!(
        raw_execute(program, &claim_sql(row.id)).await,
        Ok(0),
        "claimed already"
    );
    let claimed = app.approval(&row).await;
    assert_eq!(claimed.status, Status::Executed);
    assert!(claimed.executed_at.is_some(), "the claim's time");
    assert!(claimed.version > before, "signoff's version checks see it");

    assert!(app.run_jobs().await >= 1, "the claim recorded");
    let events = executed_events(&app, row.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor.as_deref(), Some("agent-7"), "its requester");
    assert_eq!(events[0].data["source"], "shared_table");
    assert_eq!(
        events[0].data["parameters_sha256"],
        signoff::canonical::value_sha256_hex(&json!({"table": "users"}))
    );
    chain_verifies(&app).await;
    let update = app
        .slack
        .calls_to("chat.update")
        .pop()
        .expect("the message updated");
    assert!(
        update.body.to_string().contains("Executed"),
        "{}",
        update.body
    );
    let updates = app.slack.calls_to("chat.update").len();
    app.clock.advance(Duration::from_secs(5));
    app.run_jobs().await;
    assert_eq!(
        executed_events(&app, row.id).await.len(),
        1,
        "recorded once"
    );
    assert_eq!(app.slack.calls_to("chat.update").len(), updates);

    // An approver's edit is what is approved, and what the claim gives to run.
    let edited = inserted(&app, r#"{"table": "users"}"#).await;
    let (status, _) = app
        .submit(&edited, "U0ALICE", "edit_approve", r#"{"table": "guests"}"#)
        .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(app.approval(&edited).await.status, Status::Approved);
    assert_eq!(
        claim_returning(program, edited.id).await,
        vec![json!({"table": "guests"})]
    );
    app.run_jobs().await;
    let events = executed_events(&app, edited.id).await;
    assert_eq!(
        events[0].data["parameters_sha256"],
        signoff::canonical::value_sha256_hex(&json!({"table": "guests"}))
    );
    chain_verifies(&app).await;
    // Roles outlive their test's database: this one goes with it.
    if let Some(role) = role {
        let revoke = format!("REVOKE ALL ON pending_approvals FROM {role}; DROP ROLE {role}");
        for statement in revoke.split("; ") {
            raw_execute(&app.db, statement).await.unwrap();
        }
    }
}

async fn a_row_not_approved_or_past_its_expiry_or_opened_through_the_api_is_not_claimed(
    db: TestDb,
) {
    let app = spawn_now(db).await;
    let postgres = app.db.backend == "postgres";
    // Pending: the claim's condition finds nothing; set without it, refused.
    let pending = inserted(&app, "{}").await;
    assert_eq!(raw_execute(&app.db, &claim_sql(pending.id)).await, Ok(0));
    let unconditioned = format!(
        "UPDATE pending_approvals SET status = 'executed' WHERE id = '{}'",
        pending.id
    );
    let refused = raw_execute(&app.db, &unconditioned).await.unwrap_err();
    assert!(
        refused.contains("signoff: only an approved row may be claimed"),
        "{refused}"
    );

    // Denied.
    let denied = inserted(&app, "{}").await;
    let (status, _) = app
        .submit(&denied, "U0ALICE", "deny_reason", "not today")
        .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(app.approval(&denied).await.status, Status::Denied);
    assert_eq!(raw_execute(&app.db, &claim_sql(denied.id)).await, Ok(0));

    // Approved, and past its expiry before a pass recorded it (moved there as a
    // replica's writer could; on SQLite any program may).
    let lapsed = inserted(&app, "{}").await;
    app.click(&lapsed, "U0ALICE", "approve").await;
    assert_eq!(app.approval(&lapsed).await.status, Status::Approved);
    let past = sql_time(&app.db, chrono::Utc::now() - chrono::Duration::seconds(1));
    let moved = format!(
        "UPDATE pending_approvals SET expires_at = {past} WHERE id = '{}'",
        lapsed.id
    );
    let writer = postgres.then(|| app.db.as_signoff_writer());
    assert_eq!(
        raw_execute(writer.as_ref().unwrap_or(&app.db), &moved).await,
        Ok(1)
    );
    assert_eq!(
        raw_execute(&app.db, &claim_sql(lapsed.id)).await,
        Ok(0),
        "expired, as signoff reads it"
    );
    assert_eq!(app.approval(&lapsed).await.status, Status::Approved);

    // Opened through the API (its token claims it through the API's execute).
    let asked = app.request("drop_table", json!({"table": "orders"})).await;
    posted(&app).await;
    app.click(&asked, "U0ALICE", "approve").await;
    assert_eq!(app.approval(&asked).await.status, Status::Approved);
    let refused = raw_execute(&app.db, &claim_sql(asked.id))
        .await
        .unwrap_err();
    assert!(
        refused.contains("signoff: this request was made through signoff's API or MCP proxy"),
        "{refused}"
    );
    assert_eq!(app.approval(&asked).await.status, Status::Approved);

    app.run_jobs().await;
    for id in [pending.id, denied.id, lapsed.id, asked.id] {
        assert!(executed_events(&app, id).await.is_empty(), "{id}");
    }
    assert_eq!(app.approval(&lapsed).await.status, Status::Expired);
    assert_eq!(app.approval(&pending).await.status, Status::Pending);
    chain_verifies(&app).await;
}

async fn a_claim_that_changes_another_column_is_refused(db: TestDb) {
    let app = spawn_now(db).await;
    let row = inserted(&app, r#"{"table": "users"}"#).await;
    app.click(&row, "U0ALICE", "approve").await;
    let sql = format!(
        "UPDATE pending_approvals SET status = 'executed', parameters = '{{\"table\": \"orders\"}}' \
         WHERE id = '{}' AND status = 'approved'",
        row.id
    );
    let refused = raw_execute(&app.db, &sql).await.unwrap_err();
    let expected = if app.db.backend == "postgres" {
        "signoff: another program may change only expires_at in pending_approvals"
    } else {
        "signoff: a claim sets status alone"
    };
    assert!(refused.contains(expected), "{refused}");
    let kept = app.approval(&row).await;
    assert_eq!(kept.status, Status::Approved);
    assert_eq!(kept.parameters, json!({"table": "users"}));
    app.run_jobs().await;
    assert!(executed_events(&app, row.id).await.is_empty());
}

/// A connection of another program's, in a transaction that holds its writes: on
/// SQLite `BEGIN IMMEDIATE`, which waits for the other writer, as a program claiming
/// on SQLite should (a deferred transaction would fail on its stale snapshot).
enum Program {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Program {
    async fn begin(backend: &str, url: &str) -> Program {
        if backend == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Program::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
            Program::Postgres(conn)
        }
    }

    /// The claim: how many rows it claimed.
    async fn claim(&mut self, id: ApprovalId) -> u64 {
        let sql = sqlx::AssertSqlSafe(claim_sql(id));
        match self {
            Program::Sqlite(conn) => sqlx::query(sql)
                .execute(conn)
                .await
                .unwrap()
                .rows_affected(),
            Program::Postgres(conn) => sqlx::query(sql)
                .execute(conn)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    async fn commit(self) {
        match self {
            Program::Sqlite(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
            Program::Postgres(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
        }
    }
}

async fn of_two_concurrent_claims_one_gets_the_row(db: TestDb) {
    let app = spawn_now(db).await;
    let row = inserted(&app, "{}").await;
    app.click(&row, "U0ALICE", "approve").await;
    let mut first = Program::begin(app.db.backend, &app.db.url).await;
    assert_eq!(first.claim(row.id).await, 1);
    let (backend, url) = (app.db.backend, app.db.url.clone());
    let second = tokio::spawn(async move {
        let mut second = Program::begin(backend, &url).await;
        let claimed = second.claim(row.id).await;
        second.commit().await;
        claimed
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second waits for the first");
    first.commit().await;
    assert_eq!(second.await.unwrap(), 0, "the first got it");
    app.run_jobs().await;
    assert_eq!(executed_events(&app, row.id).await.len(), 1);
    chain_verifies(&app).await;
}

/// On PostgreSQL the claim wakes every replica's scheduler (the intake's `NOTIFY`), so
/// that it is recorded within a second, not at the next sweep.
#[tokio::test]
async fn a_claim_wakes_the_scheduler_on_postgres() {
    let Some(db) = crate::common::postgres("claim_wakes").await else {
        return;
    };
    let app = spawn_now(db).await;
    let row = inserted(&app, "{}").await;
    app.click(&row, "U0ALICE", "approve").await;
    app.store.hearing().await;
    let wakeup = app.store.wakeup();
    // A wake-up stored before (the insert's, the listener's) is not the claim's.
    let _ = tokio::time::timeout(Duration::from_millis(300), wakeup.notified()).await;
    let woken = wakeup.notified();
    assert_eq!(raw_execute(&app.db, &claim_sql(row.id)).await, Ok(1));
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the claim's NOTIFY woke the scheduler");
}
