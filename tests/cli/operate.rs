//! The operator's commands through the real binary: `signoff list`, `signoff decide`
//! (break-glass, beside a running `serve` and with Slack messages to update),
//! `signoff policy init`, the first-run hint and JSON logs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::server::{Server, signoff as run_ok, until_metric};
use crate::common::{self, TestDb};
use crate::{assert_one_line_error, on_both_backends, signoff, stderr, stdout};

on_both_backends!(
    a_decision_in_another_process_wakes_the_caller_and_is_audited,
    a_refused_decision_is_one_line_and_changes_nothing,
    list_counts_every_approval_and_a_prefix_must_name_one,
    a_decision_outside_slack_updates_its_messages,
    a_tool_name_another_program_wrote_reaches_the_terminal_escaped,
);

async fn ask(server: &Server, token: &str, parameters: Value) -> String {
    let body = json!({"tool_name": "delete_customer_records", "parameters": parameters});
    let answer: Value = server.ask(token, &body).await.json().await.unwrap();
    answer["approval_id"].as_str().unwrap().to_owned()
}

async fn get(address: &str, token: &str, id: &str, wait: u32) -> Value {
    crate::common::http()
        .get(format!("{address}/v1/approvals/{id}?wait={wait}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn a_decision_in_another_process_wakes_the_caller_and_is_audited(db: TestDb) {
    let token = run_ok(&["token", "create", "agent"], &db.url);
    let server = Server::start(&db.url, &[]);
    let first = ask(&server, &token, json!({"ids": [1]})).await;
    let second = ask(&server, &token, json!({"ids": [2]})).await;

    let listed = stdout(&signoff(&["list"], &db.url));
    assert!(
        listed.contains(&first[..8]) && listed.contains(&second[..8]),
        "{listed}"
    );
    assert!(listed.contains("delete_customer_records") && listed.contains("agent"));
    assert!(listed.contains("2 approvals pending"), "{listed}");
    let views: Vec<Value> =
        serde_json::from_str(&stdout(&signoff(&["list", "--json"], &db.url))).unwrap();
    assert_eq!(views.len(), 2);
    assert_eq!(
        (
            views[0]["approval_id"].as_str(),
            views[0]["status"].as_str()
        ),
        (Some(first.as_str()), Some("pending"))
    );

    // A caller waits on the server; the decision comes from another process.
    let waiting = {
        let (address, token, id) = (server.address.clone(), token.clone(), first.clone());
        tokio::spawn(async move { get(&address, &token, &id, 30).await })
    };
    // Decided once it is parked: decided before, its first read would answer.
    until_metric(&server.address, "signoff_long_polls_waiting", 1.0).await;
    let started = Instant::now();
    let decided = signoff(
        &[
            "decide",
            &first[..8],
            "approve",
            "--as",
            "alice",
            "--reason",
            "Slack is down",
        ],
        &db.url,
    );
    assert!(decided.status.success(), "{}", stderr(&decided));
    assert!(stdout(&decided).contains(&first), "{}", stdout(&decided));
    let seen = waiting.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken late: {:?}",
        started.elapsed()
    );
    assert_eq!(seen["status"], "approved", "{seen}");
    assert_eq!(seen["decided_by"], "alice");
    let updates = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_update'";
    assert_eq!(
        common::raw_count(&db, updates).await,
        0,
        "no Slack, nothing to update"
    );

    let executed = crate::common::http()
        .post(format!("{}/v1/approvals/{first}/execute", server.address))
        .bearer_auth(&token)
        .json(&json!({"tool_name": "delete_customer_records", "parameters": {"ids": [1]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(executed.status(), 200);
    drop(server);

    assert_audited_as_break_glass(&db, &first);
    let listed = stdout(&signoff(&["list", "--status", "all"], &db.url));
    assert!(
        listed.contains("executed") && listed.contains("2 approvals in all"),
        "{listed}"
    );
}

/// `audit verify` passes, and the export shows approval `first` as alice's
/// break-glass decision.
fn assert_audited_as_break_glass(db: &TestDb, first: &str) {
    let verified = signoff(&["audit", "verify"], &db.url);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let export = stdout(&signoff(&["audit", "export"], &db.url));
    let events: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let approved = events
        .iter()
        .find(|e| e["kind"] == "approved" && e["approval_id"] == first)
        .expect("approved event");
    assert_eq!(approved["actor"], "alice");
    assert_eq!(approved["data"]["via"], "cli");
    assert_eq!(approved["data"]["break_glass"], true);
    assert_eq!(approved["data"]["reason"], "Slack is down");
}

async fn a_refused_decision_is_one_line_and_changes_nothing(db: TestDb) {
    let token = run_ok(&["token", "create", "agent"], &db.url);
    let mut server = Server::start(&db.url, &[]);
    let first = ask(&server, &token, json!({"ids": [1]})).await;
    let second = ask(&server, &token, json!({"ids": [2]})).await;
    run_ok(&["decide", &first, "approve", "--as", "alice"], &db.url);
    let refused = [
        (
            vec![
                "decide",
                first.as_str(),
                "deny",
                "--as",
                "bob",
                "--reason",
                "no",
            ],
            "already approved",
        ),
        (
            vec![
                "decide",
                "0a1b2c3d-0000-4000-8000-000000000000",
                "approve",
                "--as",
                "bob",
            ],
            "no approval",
        ),
        (
            vec!["decide", "ffffffff", "approve", "--as", "bob"],
            "no approval id starts with ffffffff",
        ),
        (
            vec!["decide", "ab", "approve", "--as", "bob"],
            "not an approval id",
        ),
        (
            vec!["decide", second.as_str(), "approve", "--as", "agent"],
            "the requester cannot decide",
        ),
        (
            vec!["decide", second.as_str(), "approve", "--as", " "],
            "must not be empty",
        ),
        (
            vec!["decide", second.as_str(), "approve", "--as", "U0ALICE"],
            "--as U0ALICE is a Slack user id",
        ),
    ];
    for (args, says) in refused {
        assert_one_line_error(&signoff(&args, &db.url), says);
    }
    let short: Value = server
        .ask(
            &token,
            &json!({"tool_name": "deploy", "parameters": {}, "expires_in": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = short["approval_id"].as_str().unwrap();
    // The server answers a long-poll at the expiry (no clock of the binary's to move).
    let expired = get(&server.address, &token, id, 10).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_one_line_error(
        &signoff(&["decide", id, "approve", "--as", "bob"], &db.url),
        "expired",
    );
    let untouched = get(&server.address, &token, &second, 0).await;
    assert_eq!(untouched["status"], "pending");
    assert_eq!(untouched["votes"], json!([]));

    // Past its expiry while no server runs to mark it: still `pending` in the table,
    // refused by the decision's own clock (above, a server's pass may mark it first).
    let lapsed = ask(&server, &token, json!({"ids": [3]})).await;
    server.kill();
    let past = common::sql_time(&db, chrono::Utc::now() - chrono::Duration::minutes(5));
    let sql = format!("UPDATE pending_approvals SET expires_at = {past} WHERE id = '{lapsed}'");
    common::raw_execute(&db, &sql).await.unwrap();
    assert_one_line_error(
        &signoff(&["decide", &lapsed, "approve", "--as", "bob"], &db.url),
        "expired",
    );
    let open = format!(
        "SELECT COUNT(*) FROM pending_approvals WHERE id = '{lapsed}' AND status = 'pending' \
         AND NOT EXISTS (SELECT 1 FROM votes WHERE approval_id = '{lapsed}')"
    );
    assert_eq!(
        common::raw_count(&db, &open).await,
        1,
        "the row is untouched"
    );
}

/// A row another program inserted with a terminal escape in its tool name: `decide`
/// shows the name escaped, deciding it and refusing to again, as `list` does.
async fn a_tool_name_another_program_wrote_reaches_the_terminal_escaped(db: TestDb) {
    run_ok(&["migrate"], &db.url);
    let expires = common::sql_time(&db, chrono::Utc::now() + chrono::Duration::days(1));
    let (esc, id) = match db.backend {
        "sqlite" => ("char(27)", "'abcdef0a-0000-4000-8000-000000000000'"),
        _ => ("chr(27)", "'abcdef0a-0000-4000-8000-000000000000'::uuid"),
    };
    let sql = format!(
        "INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, expires_at) \
         VALUES ({id}, 'wipe' || {esc} || ']0;pwned', '{{}}', 'medium', {expires})"
    );
    common::raw_execute(&db, &sql).await.unwrap();
    let decided = signoff(&["decide", "abcdef0a", "deny", "--as", "alice"], &db.url);
    assert!(decided.status.success(), "{}", stderr(&decided));
    let again = signoff(&["decide", "abcdef0a", "deny", "--as", "alice"], &db.url);
    assert!(!again.status.success());
    for (out, shown) in [
        (stdout(&decided), "denied"),
        (stderr(&again), "not decided"),
    ] {
        assert!(
            out.contains(shown) && out.contains("wipe\\u{1b}]0;pwned"),
            "{out}"
        );
        assert!(!out.contains('\u{1b}'), "{out:?}");
    }
}

/// Rows straight into the shared table: `count` numbered ones, and two whose ids share
/// the prefix `abcdef0`.
async fn insert_rows(db: &TestDb, count: u32) {
    let expires = common::sql_time(db, chrono::Utc::now() + chrono::Duration::days(1));
    let sql = if db.backend == "sqlite" {
        let now = common::sql_time(db, chrono::Utc::now());
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, requested_by, expires_at, created_at) \
             SELECT printf('%08x-0000-4000-8000-%012x', i, i), 'bulk_tool', '{{}}', 'medium', 'agent-7', {expires}, {now} FROM n \
             UNION ALL SELECT 'abcdef01-0000-4000-8000-000000000000', 'bulk_tool', '{{}}', 'medium', 'agent-7', {expires}, {now} \
             UNION ALL SELECT 'abcdef02-0000-4000-8000-000000000000', 'bulk_tool', '{{}}', 'medium', 'agent-7', {expires}, {now}"
        )
    } else {
        format!(
            "INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, requested_by, expires_at) \
             SELECT (lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, \
               'bulk_tool', '{{}}'::jsonb, 'medium', 'agent-7', {expires} FROM generate_series(1, {count}) AS i \
             UNION ALL SELECT 'abcdef01-0000-4000-8000-000000000000'::uuid, 'bulk_tool', '{{}}'::jsonb, 'medium', 'agent-7', {expires} \
             UNION ALL SELECT 'abcdef02-0000-4000-8000-000000000000'::uuid, 'bulk_tool', '{{}}'::jsonb, 'medium', 'agent-7', {expires}"
        )
    };
    common::raw_execute(db, &sql).await.unwrap();
}

async fn list_counts_every_approval_and_a_prefix_must_name_one(db: TestDb) {
    run_ok(&["migrate"], &db.url);
    insert_rows(&db, 600).await;
    let listed = stdout(&signoff(&["list"], &db.url));
    assert!(
        listed.contains("602 approvals pending"),
        "{}",
        &listed[listed.len().saturating_sub(200)..]
    );
    assert_eq!(listed.lines().count(), 1 + 602 + 1, "header, rows, count");
    let views: Vec<Value> =
        serde_json::from_str(&stdout(&signoff(&["list", "--json"], &db.url))).unwrap();
    assert_eq!(views.len(), 602);

    assert_one_line_error(
        &signoff(&["decide", "abcdef0", "approve", "--as", "alice"], &db.url),
        "abcdef0 is ambiguous: it starts 2 ids (abcdef01-0000-4000-8000-000000000000, abcdef02-0000-4000-8000-000000000000)",
    );
    assert_one_line_error(
        &signoff(&["decide", "0000", "approve", "--as", "alice"], &db.url),
        "more than 10",
    );
    // Rows no server has classified yet: approving one would skip the policy (a tier
    // it denies, its expiry cap); denying is always safe.
    assert_one_line_error(
        &signoff(&["decide", "ABCDEF01", "approve", "--as", "alice"], &db.url),
        "no signoff server has classified it yet",
    );
    assert!(stdout(&signoff(&["list"], &db.url)).contains("602 approvals pending"));
    // The contract's `[--reason TEXT]`: a deny may give none, as in Slack.
    let decided = signoff(&["decide", "ABCDEF02", "deny", "--as", "alice"], &db.url);
    assert!(decided.status.success(), "{}", stderr(&decided));
    assert!(stdout(&signoff(&["list"], &db.url)).contains("601 approvals pending"));
    let denied = stdout(&signoff(&["list", "--status", "denied"], &db.url));
    assert!(
        denied.contains("abcdef02") && denied.contains("1 approval denied"),
        "{denied}"
    );
    let views: Vec<Value> = serde_json::from_str(&stdout(&signoff(
        &["list", "--status", "denied", "--json"],
        &db.url,
    )))
    .unwrap();
    assert_eq!(
        (&views[0]["decided_by"], &views[0]["reason"]),
        (&json!("alice"), &Value::Null)
    );
    assert!(
        stdout(&signoff(&["list", "--status", "expired"], &db.url))
            .contains("no approvals expired")
    );
}

async fn a_decision_outside_slack_updates_its_messages(db: TestDb) {
    let url = db.url.clone();
    let app = common::app::spawn(
        db,
        common::app::Options::new(
            "[defaults]\nchannel = \"C0APPROVALS\"\n[callbacks]\nallow = [\"hooks.test\"]\n",
        )
        .with_slack(),
    )
    .await;
    app.clock.set(chrono::Utc::now());
    let (receiver, callback_url) = common::receiver::Receiver::start(vec![]).await;
    let created: Value = app
        .http
        .post(app.url("/v1/approvals"))
        .bearer_auth(&app.token)
        .json(
            &json!({"tool_name": "deploy_api", "parameters": {"env": "prod"},
                      "callback_url": callback_url}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["approval_id"].as_str().unwrap().to_owned();
    app.run_jobs().await;
    let slack = app.slack.as_ref().unwrap();
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);

    let decided = signoff(
        &["decide", &id, "deny", "--as", "alice", "--reason", "freeze"],
        &url,
    );
    assert!(decided.status.success(), "{}", stderr(&decided));
    app.clock
        .set(chrono::Utc::now() + chrono::Duration::seconds(1));
    app.run_jobs().await;
    let updates = slack.calls_to("chat.update");
    let last = updates.last().expect("the message is updated");
    let text = last.body.to_string();
    assert!(
        text.contains("Denied by alice outside Slack (signoff decide)") && text.contains("freeze"),
        "{text}"
    );
    assert!(!text.contains("\"actions\""), "no buttons left: {text}");
    // The caller's callback tells the decision too.
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["status"], "denied", "{body}");
    assert!(
        got[0].1.contains("\"decided_by\":\"alice\""),
        "{}",
        got[0].1
    );
}

/// Without Slack, `serve` says how to decide instead. It says so with `RUST_LOG`
/// left empty too, as compose files leave it: an empty filter, read as one, showed
/// nothing at all, errors included.
#[test]
fn serve_without_slack_says_how_to_decide() {
    for rust_log in ["info", ""] {
        let db = common::sqlite();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.log");
        let server = Server::start_logging(
            &db.url,
            &[("RUST_LOG", rust_log)],
            std::fs::File::create(&path).unwrap(),
        );
        drop(server);
        let log = std::fs::read_to_string(&path).unwrap();
        let hint: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("signoff decide"))
            .collect();
        assert_eq!(hint.len(), 1, "RUST_LOG={rust_log:?}: {log}");
        assert!(
            hint[0].contains("signoff list") && hint[0].contains("--as"),
            "{log}"
        );
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_request_and_approval_ids() {
    let db = common::sqlite();
    let token = run_ok(&["token", "create", "agent"], &db.url);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.log");
    let server = Server::start_logging(
        &db.url,
        &[
            ("SIGNOFF_LOG_FORMAT", "json"),
            ("RUST_LOG", "signoff=debug,tower_http=debug"),
        ],
        std::fs::File::create(&path).unwrap(),
    );
    let evil = "agent\nERROR forged \u{1b}[31mred\r\u{2028}\u{85}x";
    let answer: Value = crate::common::http()
        .post(format!("{}/v1/approvals", server.address))
        .bearer_auth(&token)
        .header("x-request-id", "req-42")
        .json(&json!({"tool_name": "transfer", "parameters": {}, "requested_by": evil}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["approval_id"].as_str().unwrap().to_owned();
    drop(server);
    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            assert!(
                !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
                "{line:?}"
            );
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let requested = lines
        .iter()
        .find(|l| l["message"] == "approval requested")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(requested["approval_id"], id.as_str());
    assert_eq!(requested["request_id"], "req-42");
    assert_eq!(
        requested["requested_by"], evil,
        "the value, escaped by JSON"
    );
    assert!(lines.iter().any(|l| l["message"] == "signoff serving"));

    let bad = crate::common::server::command(&["token", "list"], &db.url)
        .env("SIGNOFF_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_one_line_error(&bad, "SIGNOFF_LOG_FORMAT must be text or json");
}

#[test]
fn policy_init_writes_a_policy_that_checks_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(["policy", "init"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let file = dir.path().join("signoff.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, include_str!("../../signoff.example.toml"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let check = signoff(
        &["policy", "check", file.to_str().unwrap()],
        "sqlite://unused.db",
    );
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).contains("is valid"));

    std::fs::write(&file, "# mine\n").unwrap();
    let again = signoff(
        &["policy", "init", file.to_str().unwrap()],
        "sqlite://unused.db",
    );
    assert_one_line_error(&again, "already exists");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    let other = dir.path().join("other.toml");
    assert!(
        signoff(&["policy", "init", other.to_str().unwrap()], "x")
            .status
            .success()
    );
    assert!(other.exists());
}
