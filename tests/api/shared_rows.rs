//! Rows another program inserts into the shared table: one signoff could not read is
//! refused at the insert with the reason, and one that got in before that check is
//! passed over while the schedule (intake, expiries, deliveries) goes on.

use std::sync::Arc;

use signoff::clock::Clock;
use signoff::policy::Policy;
use signoff::scheduler::Scheduler;

use crate::common::{TestDb, raw_count, raw_execute, sql_time};
use crate::helpers::*;

crate::on_both_backends!(
    rows_signoff_could_not_read_are_refused_at_the_insert_with_the_reason,
    a_row_signoff_cannot_decode_is_passed_over_by_every_read,
    a_row_is_created_when_it_is_inserted_whatever_time_it_gives,
);

fn insert(id: &str, parameters: &str, expires: &str) -> String {
    format!(
        "INSERT INTO pending_approvals (id, tool_name, parameters, requested_by, expires_at) \
         VALUES ({id}, 'transfer', '{parameters}', 'other-program', {expires})"
    )
}

/// [`POLICY`]'s defaults with a first reminder: planned from a row's creation time.
const REMINDING: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "1h"
remind_after = "30m"
"#;

/// What each backend's types let in but signoff cannot read, and the reason given.
fn unreadable(backend: &str, expires: &str) -> Vec<(String, &'static str)> {
    let id = |n: u8| format!("'20000000-0000-4000-8000-0000000000{n:02}'");
    let mut rows = vec![
        (
            insert(&id(11), "[1, 2]", expires),
            "parameters must be a JSON object",
        ),
        (
            insert(&id(12), "null", expires),
            "parameters must be a JSON object",
        ),
        (
            insert(&id(18), r#"{"amount": [1, {"huge": 1e400}]}"#, expires),
            "parameters hold a number beyond a 64-bit float",
        ),
        (
            insert(
                &id(19),
                &format!(r#"{{"id": -{}}}"#, "9".repeat(400)),
                expires,
            ),
            "parameters hold a number beyond a 64-bit float",
        ),
    ];
    if backend == "sqlite" {
        // SQLite's columns are text: any id, any parameters, any time.
        rows.extend([
            (
                insert("'not-a-uuid'", "{}", expires),
                "id must be a UUID, such as",
            ),
            (
                insert(&id(13), "not json", expires),
                "parameters must be a JSON object",
            ),
            (
                insert(&id(14), "{}", "'next tuesday'"),
                "expires_at must be a time, such as",
            ),
            (
                insert(&id(15), "{}", "1733480000"),
                "expires_at must be a time, such as",
            ),
            (
                "INSERT INTO pending_approvals (tool_name, parameters, requested_by, expires_at) \
                 VALUES ('transfer', '{}', X'00', '2026-12-06T10:00:00Z')"
                    .into(),
                "tool_name must be text, and requested_by, server, summary and context text",
            ),
        ]);
    } else {
        // PostgreSQL's times reach past what signoff (chrono) represents.
        rows.extend([
            (
                insert(&id(16), "{}", "'infinity'"),
                "expires_at must be a time in the years 1 to 9999",
            ),
            (
                insert(&id(17), "{}", "'20000-01-01 00:00:00+00'"),
                "expires_at must be a time in the years 1 to 9999",
            ),
            (
                format!(
                    "INSERT INTO pending_approvals (tool_name, parameters, created_at, expires_at) \
                     VALUES ('transfer', '{{}}', '-infinity', {expires})"
                ),
                "created_at must be a time in the years 1 to 9999",
            ),
        ]);
    }
    rows
}

async fn rows_signoff_could_not_read_are_refused_at_the_insert_with_the_reason(db: TestDb) {
    let app = spawn_on(db).await;
    let expires = sql_time(&app.db, app.clock.now() + chrono::Duration::minutes(30));
    for (sql, reason) in unreadable(app.db.backend, &expires) {
        let refused = raw_execute(&app.db, &sql).await.expect_err(&sql);
        assert!(refused.contains(&format!("signoff: {reason}")), "{refused}");
    }
    let rows = raw_count(&app.db, "SELECT COUNT(*) FROM pending_approvals").await;
    assert_eq!(rows, 0, "nothing was inserted");

    // A readable row is taken in as before; a nudge it sets is not signoff's plan.
    let fine = insert("'20000000-0000-4000-8000-000000000002'", "{}", &expires);
    assert_eq!(raw_execute(&app.db, &fine).await, Ok(1));
    let nudged = format!(
        "INSERT INTO pending_approvals (tool_name, parameters, nudge_at, expires_at) \
         VALUES ('transfer', '{{}}', {expires}, {expires})"
    );
    assert_eq!(raw_execute(&app.db, &nudged).await, Ok(1));
    let nudges = "SELECT COUNT(*) FROM pending_approvals WHERE nudge_at IS NOT NULL";
    assert_eq!(raw_count(&app.db, nudges).await, 0, "cleared at the insert");

    // Moving an expiry is part of the contract; moving it to a time signoff cannot
    // read is refused like such an insert.
    let unreadable_time = match app.db.backend {
        "sqlite" => "'next tuesday'",
        _ => "'infinity'",
    };
    let moved = format!(
        "UPDATE pending_approvals SET expires_at = {unreadable_time} \
         WHERE id = '20000000-0000-4000-8000-000000000002'"
    );
    let refused = raw_execute(&app.db, &moved).await.expect_err(&moved);
    assert!(
        refused.contains("signoff: expires_at must be a time"),
        "{refused}"
    );

    let policy = Arc::new(Policy::from_toml_str(POLICY).unwrap());
    let scheduler = Scheduler::new(app.store.clone()).with_policy(policy);
    assert_eq!(scheduler.intake(app.clock.now()).await.unwrap(), 2);
}

/// SQLite reads what PostgreSQL's types and defaults give: a row with no id gets one,
/// and a time in any form SQLite reads is kept in signoff's (UTC, fixed width).
#[tokio::test]
async fn on_sqlite_a_row_without_an_id_gets_one_and_its_expiry_is_read_in_any_form() {
    let app = spawn_on(crate::common::sqlite()).await;
    // Half an hour from now, written with a +02:00 offset and a space.
    let expires = (app.clock.now() + chrono::Duration::minutes(30))
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .format("'%Y-%m-%d %H:%M:%S%:z'")
        .to_string();
    assert_eq!(
        raw_execute(&app.db, &insert("NULL", "{}", &expires)).await,
        Ok(1)
    );
    let given = raw_count(
        &app.db,
        "SELECT COUNT(*) FROM pending_approvals WHERE length(id) = 36 AND expires_at LIKE '%Z'",
    )
    .await;
    assert_eq!(given, 1, "an id given, the time in UTC");
    let policy = Arc::new(Policy::from_toml_str(POLICY).unwrap());
    let scheduler = Scheduler::new(app.store.clone()).with_policy(policy);
    scheduler.run_once(app.clock.now()).await.unwrap();
    let [row] = &app.store.list_all(None).await.unwrap()[..] else {
        panic!("one row");
    };
    assert_eq!(row.status.as_str(), "pending");
    let off = (row.expires_at - (app.clock.now() + chrono::Duration::minutes(30)))
        .num_seconds()
        .abs();
    assert!(off <= 1, "expires {} ({off} s off)", row.expires_at);

    // Moved earlier by the program, in the same form: kept in signoff's.
    let sooner = (app.clock.now() + chrono::Duration::minutes(10))
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .format("'%Y-%m-%d %H:%M:%S%:z'");
    let moved = format!("UPDATE pending_approvals SET expires_at = {sooner}");
    assert_eq!(raw_execute(&app.db, &moved).await, Ok(1));
    let kept = "SELECT COUNT(*) FROM pending_approvals WHERE expires_at LIKE '____-__-__T__:__:__.______Z'";
    assert_eq!(raw_count(&app.db, kept).await, 1, "in signoff's form");
    scheduler
        .run_once(app.clock.now() + chrono::Duration::minutes(9))
        .await
        .unwrap();
    let still = app.store.get(row.id).await.unwrap().unwrap();
    assert_eq!(still.status.as_str(), "pending", "not before its time");
    scheduler
        .run_once(app.clock.now() + chrono::Duration::minutes(11))
        .await
        .unwrap();
    let row = app.store.get(row.id).await.unwrap().unwrap();
    assert_eq!(
        row.status.as_str(),
        "expired",
        "at the time it was moved to"
    );
}

/// A row inserted before those checks (here: with the trigger put back as it was) is
/// passed over, and nothing else waits for it.
#[tokio::test]
async fn on_sqlite_a_row_from_before_the_checks_is_passed_over_and_the_schedule_goes_on() {
    let app = spawn_on(crate::common::sqlite()).await;
    let asked = app
        .request("transfer", serde_json::json!({"amount": 1}))
        .await;
    let expires = sql_time(&app.db, app.clock.now() + chrono::Duration::minutes(30));
    // The insert trigger as it was before the checks (migration 0009, in short).
    let unchecked = [
        "DROP TRIGGER pending_approvals_direct_insert",
        "CREATE TRIGGER pending_approvals_direct_insert AFTER INSERT ON pending_approvals \
         WHEN NEW.routing IS NULL BEGIN \
         UPDATE pending_approvals SET status = 'pending', version = 0 WHERE rowid = NEW.rowid; \
         END",
    ];
    for sql in unchecked {
        raw_execute(&app.db, sql).await.unwrap();
    }
    let unreadable = [
        insert("'not-a-uuid'", "{}", &expires),
        insert(
            "'20000000-0000-4000-8000-000000000013'",
            "not json",
            &expires,
        ),
    ];
    for sql in unreadable {
        assert_eq!(raw_execute(&app.db, &sql).await, Ok(1), "{sql}");
    }
    let fine = insert("'20000000-0000-4000-8000-000000000002'", "{}", &expires);
    assert_eq!(raw_execute(&app.db, &fine).await, Ok(1));

    let policy = Arc::new(Policy::from_toml_str(POLICY).unwrap());
    let scheduler = Scheduler::new(app.store.clone()).with_policy(policy);
    assert_eq!(
        scheduler.intake(app.clock.now()).await.unwrap(),
        1,
        "the readable row is taken in, the one without a UUID and the one of no JSON \
         passed over"
    );
    scheduler
        .run_once(app.clock.now() + chrono::Duration::hours(2))
        .await
        .expect("expiries go on past rows signoff cannot read");
    let (_, approval) = app.get(&format!("/v1/approvals/{asked}")).await;
    assert_eq!(approval["status"], "expired", "{approval}");
    let expired = raw_count(
        &app.db,
        "SELECT COUNT(*) FROM pending_approvals WHERE status = 'expired' \
         AND id = '20000000-0000-4000-8000-000000000002'",
    )
    .await;
    assert_eq!(expired, 1, "and the readable row with it");
}

/// A row that got in before the check on numbers (here: with that check taken out
/// again) cannot be read: a number beyond `f64` in its parameters. Every read of many
/// approvals passes over it, a read of it alone answers no approval, and the schedule
/// goes on.
async fn a_row_signoff_cannot_decode_is_passed_over_by_every_read(db: TestDb) {
    let app = spawn_on(db).await;
    let asked = app
        .request("transfer", serde_json::json!({"amount": 1}))
        .await;
    let unchecked = match app.db.backend {
        "sqlite" => "DROP TRIGGER pending_approvals_direct_numbers".to_owned(),
        // The row check as migration 0016 had it.
        _ => {
            let checks = include_str!("../../migrations/postgres/0016_direct_insert_checks.sql");
            let start = checks
                .find("CREATE FUNCTION signoff_check_direct_row")
                .unwrap();
            let end = start + checks[start..].find("$$;").unwrap() + 3;
            checks[start..end].replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        }
    };
    raw_execute(&app.db, &unchecked).await.unwrap();
    let expires = sql_time(&app.db, app.clock.now() + chrono::Duration::minutes(30));
    let id = "'20000000-0000-4000-8000-000000000021'";
    let huge = insert(id, r#"{"amount": 1e400}"#, &expires);
    assert_eq!(raw_execute(&app.db, &huge).await, Ok(1), "{huge}");

    let policy = Arc::new(Policy::from_toml_str(POLICY).unwrap());
    let scheduler = Scheduler::new(app.store.clone()).with_policy(policy);
    assert_eq!(scheduler.intake(app.clock.now()).await.unwrap(), 0);
    let (status, _) = app
        .get("/v1/approvals/20000000-0000-4000-8000-000000000021")
        .await;
    // PostgreSQL's status get passes over it (404); SQLite's says it cannot read it.
    assert!(!status.is_success(), "{status}");
    let listed = app.store.list_all(None).await.expect("the listing goes on");
    assert_eq!(listed.len(), 1, "the API's request alone");
    scheduler
        .run_once(app.clock.now() + chrono::Duration::hours(2))
        .await
        .expect("the expiries go on");
    let (_, approval) = app.get(&format!("/v1/approvals/{asked}")).await;
    assert_eq!(approval["status"], "expired", "{approval}");
}

/// What docs/operations.md advises for other programs on PostgreSQL: a role that may
/// insert the public columns and read the table. Its inserts are taken in as any
/// other program's, and it can neither write a decision nor set signoff's columns.
#[tokio::test]
async fn a_role_granted_the_public_columns_inserts_requests_and_writes_no_decision() {
    let Some(db) = crate::common::postgres("shared_rows_grant").await else {
        return;
    };
    let app = spawn_on(db).await;
    let role = format!("signoff_test_other_{}", uuid::Uuid::new_v4().simple());
    let grant = format!(
        "CREATE ROLE {role} LOGIN; GRANT INSERT (tool_name, parameters, risk_tier, \
         requested_by, expires_at), SELECT ON pending_approvals TO {role}"
    );
    for statement in grant.split("; ") {
        raw_execute(&app.db, statement).await.unwrap();
    }
    let other = app.db.as_role(&role);
    let expires = "now() + interval '1 hour'";
    let request = format!(
        "INSERT INTO pending_approvals (tool_name, parameters, requested_by, expires_at) \
         VALUES ('transfer', '{{\"to\": \"acct-1\"}}', 'other-program', {expires})"
    );
    let inserted = raw_execute(&other, &request).await;
    assert_eq!(inserted, Ok(1));
    for refused in [
        format!(
            "INSERT INTO pending_approvals (tool_name, parameters, expires_at, status) \
             VALUES ('transfer', '{{}}', {expires}, 'approved')"
        ),
        "UPDATE pending_approvals SET status = 'approved'".to_owned(),
        "DELETE FROM pending_approvals".to_owned(),
    ] {
        let error = raw_execute(&other, &refused).await.unwrap_err();
        assert!(error.contains("permission denied"), "{refused}: {error}");
    }
    app.run_jobs().await;
    let pending = "SELECT COUNT(*) FROM pending_approvals WHERE status = 'pending' \
                   AND routing IS NOT NULL";
    assert_eq!(raw_count(&app.db, pending).await, 1, "taken in");
    let revoke = format!("REVOKE ALL ON pending_approvals FROM {role}; DROP ROLE {role}");
    for statement in revoke.split("; ") {
        raw_execute(&app.db, statement).await.unwrap();
    }
}

/// The creation time a row gives is not taken: it is created when it is inserted. On
/// SQLite a row dated in 9999 had its first reminder planned past the year 9999, which
/// SQLite's text order puts before every other time and signoff cannot read back, so
/// every scheduler pass failed on it (no expiry, no reminder, no checkpoint); one dated
/// 1970 was reminded about at once.
async fn a_row_is_created_when_it_is_inserted_whatever_time_it_gives(db: TestDb) {
    let app = spawn_on(db).await;
    let asked = app
        .request("transfer", serde_json::json!({"amount": 1}))
        .await;
    let expires = sql_time(&app.db, app.clock.now() + chrono::Duration::minutes(30));
    let dated = [
        ("21", "'9999-12-31T23:59:59Z'"),
        ("22", "'1970-01-01T00:00:00Z'"),
    ];
    for (n, created) in dated {
        let sql = format!(
            "INSERT INTO pending_approvals (id, tool_name, parameters, requested_by, \
             expires_at, created_at) VALUES ('20000000-0000-4000-8000-0000000000{n}', \
             'transfer', '{{}}', 'other-program', {expires}, {created})"
        );
        assert_eq!(raw_execute(&app.db, &sql).await, Ok(1), "{sql}");
    }
    let policy = Arc::new(Policy::from_toml_str(REMINDING).unwrap());
    let scheduler = Scheduler::new(app.store.clone()).with_policy(policy);
    assert_eq!(scheduler.intake(app.clock.now()).await.unwrap(), 2);
    let rows = app.store.list_all(None).await.unwrap();
    let theirs = rows.iter().filter(|row| row.id.to_string() != asked);
    for row in theirs {
        let off = (row.created_at - chrono::Utc::now()).num_seconds().abs();
        assert!(off < 60, "{} created at {}", row.id, row.created_at);
    }
    scheduler
        .run_once(app.clock.now() + chrono::Duration::hours(2))
        .await
        .expect("the schedule goes on");
    let (_, approval) = app.get(&format!("/v1/approvals/{asked}")).await;
    assert_eq!(approval["status"], "expired", "{approval}");
    let expired = "SELECT COUNT(*) FROM pending_approvals WHERE status = 'expired'";
    assert_eq!(raw_count(&app.db, expired).await, 3, "the two rows with it");
}
