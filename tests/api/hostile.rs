//! Hostile and careless callers: every refusal is clear and changes nothing, on both
//! stores.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::clock::Clock;
use signoff::policy::Policy;
use signoff::scheduler::Scheduler;

use crate::common::{TestDb, raw_count, raw_execute, sql_time};
use crate::helpers::*;

crate::on_both_backends!(
    an_idempotency_key_names_one_call_and_cannot_authorise_another,
    parameters_keep_every_number_exactly_or_are_refused,
    a_key_given_twice_in_a_body_is_refused,
    a_token_sees_and_acts_on_only_its_own_approvals,
    rows_inserted_already_decided_start_pending_and_are_classified,
    rows_whose_parameters_cannot_be_shown_exactly_are_denied_at_intake,
    tool_names_outside_the_mcp_rule_are_refused_before_the_policy,
    the_create_answer_carries_what_to_run,
    an_approval_asked_for_one_mcp_server_does_not_run_for_another,
);

async fn approvals_in(db: &TestDb) -> i64 {
    raw_count(db, "SELECT COUNT(*) FROM pending_approvals").await
}

async fn an_idempotency_key_names_one_call_and_cannot_authorise_another(db: TestDb) {
    let app = spawn_on(db).await;
    let read =
        json!({"tool_name": "get_user", "parameters": {"user_id": 5}, "idempotency_key": "step-1"});
    let (status, first) = app.post("/v1/approvals", &read).await;
    assert_eq!(
        (status, first["status"].as_str()),
        (StatusCode::CREATED, Some("approved"))
    );
    let id = first["approval_id"].as_str().unwrap().to_owned();

    for other_call in [
        json!({"tool_name": "drop_users", "parameters": {"user_id": 5}, "idempotency_key": "step-1"}),
        json!({"tool_name": "get_user", "parameters": {"user_id": 6}, "idempotency_key": "step-1"}),
    ] {
        let (status, error) = app.post("/v1/approvals", &other_call).await;
        assert_eq!(status, StatusCode::CONFLICT, "{other_call}: {error}");
        assert_error(&error, "idempotency_key_reused");
        assert!(error.get("approval_id").is_none(), "{error}");
    }
    let (status, again) = app.post("/v1/approvals", &read).await;
    assert_eq!(
        (status, &again["approval_id"]),
        (StatusCode::OK, &json!(id)),
        "a true retry"
    );

    let execute = format!("/v1/approvals/{id}/execute");
    // Another tool is refused; so is a misspelt tool_name, not taken for an execute
    // without the tool check.
    for (tool, refused, says) in [
        ("tool_name", StatusCode::CONFLICT, "another tool"),
        (
            "tool",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `tool`",
        ),
    ] {
        let body = json!({"parameters": {"user_id": 5}, tool: "drop_users"});
        let (status, error) = app.post(&execute, &body).await;
        assert_eq!(status, refused, "{error}");
        let detail = error["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{error}");
    }
    let (_, unchanged) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(unchanged["status"], "approved", "nothing changed");
    assert_eq!(
        approvals_in(&app.db).await,
        1,
        "no approval was opened for the other calls"
    );

    // Named, the MCP server must be the one the approval was asked for (none here).
    let on_server =
        json!({"parameters": {"user_id": 5}, "tool_name": "get_user", "server": "prod"});
    let (status, error) = app.post(&execute, &on_server).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("another MCP server"), "{error}");
    let (_, unchanged) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(unchanged["status"], "approved", "nothing changed");

    let (status, done) = app
        .post(
            &execute,
            &json!({"parameters": {"user_id": 5}, "tool_name": "get_user"}),
        )
        .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (StatusCode::OK, Some("executed"))
    );

    // Asked on its own, the deny tier denies it, naming the rule.
    let (_, denied) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "drop_users", "parameters": {"user_id": 5}}),
        )
        .await;
    assert_eq!(denied["status"], "denied", "{denied}");
    let reason = denied["reason"].as_str().unwrap();
    assert!(reason.contains("rules[1] (tools drop_*)"), "{reason}");

    // A key that first came with a repeat of an open request names that request too.
    let open = json!({"tool_name": "transfer", "parameters": {"amount": 5}});
    let (_, opened) = app.post("/v1/approvals", &open).await;
    let mut repeat = open.clone();
    repeat["idempotency_key"] = json!("step-2");
    let (status, joined) = app.post("/v1/approvals", &repeat).await;
    assert_eq!(
        (status, &joined["approval_id"]),
        (StatusCode::OK, &opened["approval_id"])
    );
    let other_call = json!({"tool_name": "transfer", "parameters": {"amount": 500},
                            "idempotency_key": "step-2"});
    let (status, error) = app.post("/v1/approvals", &other_call).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_error(&error, "idempotency_key_reused");
}

async fn parameters_keep_every_number_exactly_or_are_refused(db: TestDb) {
    let app = spawn_on(db).await;
    let (status, error) = app
        .post_raw(
            "/v1/approvals",
            r#"{"tool_name": "transfer", "parameters": {"account": 123456789012345678901234567890}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("123456789012345678901234567890"),
        "{error}"
    );
    assert_eq!(approvals_in(&app.db).await, 0);

    let sent = r#"{"account": 9007199254740993, "max": 18446744073709551615, "min": -9223372036854775808,
                   "rate": 0.1, "huge": 1e300, "tiny": 5e-324, "third": 0.3333333333333333}"#;
    let (status, created) = app
        .post_raw(
            "/v1/approvals",
            format!(r#"{{"tool_name": "transfer", "parameters": {sent}}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["approval_id"].as_str().unwrap().to_owned();
    app.approve(&id, "U1").await;
    let sent: Value = serde_json::from_str(sent).unwrap();
    let (_, stored) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(
        signoff::canonical::to_string(&stored["parameters"]),
        signoff::canonical::to_string(&sent),
        "stored and shown exactly as sent"
    );
    assert_eq!(
        stored["parameters"]["account"].as_u64(),
        Some(9_007_199_254_740_993)
    );

    let execute = format!("/v1/approvals/{id}/execute");
    let mut neighbour = sent.clone();
    neighbour["account"] = json!(9_007_199_254_740_992_u64);
    let (status, _) = app
        .post(&execute, &json!({ "parameters": neighbour }))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a number one apart is another call"
    );
    let rounded = r#"{"parameters": {"account": 9007199254740993, "max": 18446744073709551615,
        "min": -9223372036854775808, "rate": 0.1000000000000000000001, "huge": 1e300, "tiny": 5e-324,
        "third": 0.3333333333333333}}"#;
    let (status, error) = app.post_raw(&execute, rounded).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let (_, still) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(still["status"], "approved");
    let (status, done) = app.post(&execute, &json!({ "parameters": sent })).await;
    assert_eq!(status, StatusCode::OK, "{done}");
}

async fn a_key_given_twice_in_a_body_is_refused(db: TestDb) {
    let app = spawn_on(db).await;
    for body in [
        r#"{"tool_name": "transfer", "parameters": {"to": "acct-1", "to": "acct-2"}}"#,
        r#"{"tool_name": "search_x", "tool_name": "transfer", "parameters": {}}"#,
        r#"{"tool_name": "transfer", "parameters": {"a": [{"b": 1, "b": 1}]}}"#,
    ] {
        let (status, error) = app.post_raw("/v1/approvals", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert!(
            error["detail"].as_str().unwrap().contains("appears twice"),
            "{error}"
        );
    }
    assert_eq!(approvals_in(&app.db).await, 0);
}

async fn a_token_sees_and_acts_on_only_its_own_approvals(db: TestDb) {
    let app = spawn_on(db).await;
    let id = app.request("transfer", json!({"amount": 1})).await;
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let get_as = |token: String, path: String| {
        let request = app.http.get(app.url(&path)).bearer_auth(token);
        async move { read(request.send().await.unwrap()).await }
    };
    let (status, mine) = get_as(app.token.clone(), format!("/v1/approvals/{id}")).await;
    assert_eq!(
        (status, mine["approval_id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let (status, theirs) = get_as(other.clone(), format!("/v1/approvals/{id}")).await;
    let (_, nothing) = get_as(other.clone(), format!("/v1/approvals/{unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    assert_eq!(
        theirs["error"], nothing["error"],
        "the same answer as an unknown id"
    );
    assert!(theirs.get("parameters").is_none());
    let started = std::time::Instant::now();
    let (status, _) = get_as(other.clone(), format!("/v1/approvals/{id}?wait=5")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "refused before waiting"
    );
    for action in ["execute", "cancel"] {
        let (status, _) = app
            .post_as(
                &other,
                &format!("/v1/approvals/{id}/{action}"),
                &json!({"parameters": {"amount": 1}}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}");
    }
    let (_, after) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(after["status"], "pending");
}

/// A gate that names the MCP server about to run the call spends only an approval
/// asked for that server: one asked for a sandbox (auto-approved there, say) does not
/// run for production, and nothing changes; named as asked, it runs.
async fn an_approval_asked_for_one_mcp_server_does_not_run_for_another(db: TestDb) {
    let app = spawn_on(db).await;
    let ask = json!({"tool_name": "get_user", "server": "sandbox", "parameters": {"user_id": 5}});
    let (status, created) = app.post("/v1/approvals", &ask).await;
    assert_eq!(
        (status, created["status"].as_str()),
        (StatusCode::CREATED, Some("approved"))
    );
    let execute = format!(
        "/v1/approvals/{}/execute",
        created["approval_id"].as_str().unwrap()
    );
    let run_on = |server: &str| json!({"parameters": {"user_id": 5}, "tool_name": "get_user", "server": server});
    let (status, error) = app.post(&execute, &run_on("prod")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_error(&error, "conflict");
    assert_eq!(error["status"], "approved", "{error}");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("another MCP server"), "{error}");
    let (status, done) = app.post(&execute, &run_on("sandbox")).await;
    assert_eq!(
        (status, done["status"].as_str()),
        (StatusCode::OK, Some("executed"))
    );
    // Each refusal is on record, by the caller, with why and what it sent; the run too.
    let mut events = app.store.audit_page(0, 100).await.unwrap();
    events.retain(|event| event.approval_id.is_some());
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["requested", "auto_approved", "execute_refused", "executed"]
    );
    let refused = &events[2];
    assert_eq!(
        refused.actor.as_deref(),
        Some(crate::common::app::TOKEN_NAME)
    );
    assert_eq!(
        refused.data["reason"],
        "this approval is for another MCP server"
    );
    assert_eq!(
        (&refused.data["server_named"], &refused.data["server"]),
        (&json!("prod"), &json!("sandbox"))
    );
    let sent = signoff::canonical::value_sha256_hex(&json!({"user_id": 5}));
    assert_eq!(refused.data["parameters_sha256"], sent.as_str());
}

/// Even a row that sets signoff's own columns as signoff would starts as a new,
/// unclassified request: only signoff's connections may set them (they say so with
/// `signoff.writer`). PostgreSQL only: SQLite's trigger resets every direct insert.
async fn a_forged_signoff_row_is_reset(db: &TestDb, expires: &str) {
    let sql = format!(
        "INSERT INTO pending_approvals (tool_name, parameters, status, routing, version, \
         token_name, expires_at) VALUES ('transfer', '{{}}', 'approved', '{{}}', 3, 'agent', {expires})"
    );
    assert_eq!(raw_execute(db, &sql).await, Ok(1));
    let forged = raw_count(
        db,
        "SELECT COUNT(*) FROM pending_approvals WHERE routing IS NULL AND token_name IS NULL \
         AND version = 0 AND status = 'pending' AND tool_name = 'transfer' AND parameters = '{}'",
    )
    .await;
    assert_eq!(forged, 1, "reset to a new, unclassified request");
    raw_execute(db, "DELETE FROM pending_approvals WHERE parameters = '{}'")
        .await
        .unwrap();
}

async fn rows_inserted_already_decided_start_pending_and_are_classified(db: TestDb) {
    let app = spawn_on(db).await;
    let expires = sql_time(&app.db, app.clock.now() + chrono::Duration::hours(1));
    let (id, fresh_id) = match app.db.backend {
        "sqlite" => (
            "'10000000-0000-4000-8000-000000000001'",
            "'10000000-0000-4000-8000-000000000002'",
        ),
        _ => (
            "'10000000-0000-4000-8000-000000000001'::uuid",
            "'10000000-0000-4000-8000-000000000002'::uuid",
        ),
    };
    for (id, tool) in [(id, "drop_table"), (fresh_id, "transfer")] {
        let sql = format!(
            "INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, status, decided_by, \
             requested_by, expires_at) VALUES ({id}, '{tool}', '{{\"n\": 1}}', 'low', 'approved', \
             'U0ATTACKER', 'agent-7', {expires})"
        );
        assert_eq!(raw_execute(&app.db, &sql).await, Ok(1), "{sql}");
    }
    if app.db.backend == "postgres" {
        a_forged_signoff_row_is_reset(&app.db, &expires).await;
    }
    let statuses = raw_count(
        &app.db,
        "SELECT COUNT(*) FROM pending_approvals WHERE status = 'pending' AND decided_by IS NULL",
    )
    .await;
    assert_eq!(
        statuses, 2,
        "whatever status they carried, both start pending"
    );

    let policy = Arc::new(Policy::from_toml_str(POLICY).unwrap());
    let scheduler = Scheduler::new(app.store.clone()).with_policy(policy);
    assert_eq!(scheduler.intake(app.clock.now()).await.unwrap(), 2);
    let denied = app.store.get(id_of(id)).await.unwrap().unwrap();
    assert_eq!(denied.status.as_str(), "denied", "the deny tier denies it");
    assert!(
        denied.reason.as_deref().unwrap().contains("rules[1]"),
        "{:?}",
        denied.reason
    );
    let pending = app.store.get(id_of(fresh_id)).await.unwrap().unwrap();
    assert_eq!(pending.status.as_str(), "pending", "a person decides it");

    let audit = app.store.audit_page(0, 100).await.unwrap();
    let intakes = audit
        .iter()
        .filter(|e| e.kind == "requested" && e.data["source"] == "shared_table")
        .count();
    assert_eq!(intakes, 2, "the audit log records both intakes");
    assert!(audit.iter().any(|e| e.kind == "denied_by_policy"));
    for target in [id, fresh_id] {
        let path = format!("/v1/approvals/{}/execute", id_of(target));
        let (status, _) = app.post(&path, &json!({"parameters": {"n": 1}})).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "no token runs a shared-table row"
        );
    }
}

/// Another program's row whose parameters signoff cannot show as stored (what the API
/// refuses with 422) is denied at intake, whatever its tier: an approver would
/// otherwise approve a neighbouring number, or one of a key's two values. Numbers that
/// are kept exactly are taken in as usual.
async fn rows_whose_parameters_cannot_be_shown_exactly_are_denied_at_intake(db: TestDb) {
    let app = spawn_on(db).await;
    let expires = sql_time(&app.db, app.clock.now() + chrono::Duration::hours(1));
    let mut rows = vec![
        (
            "'20000000-0000-4000-8000-000000000001'",
            r#"{"account": 123456789012345678901234567890}"#,
            Some("cannot be kept exactly"),
        ),
        (
            "'20000000-0000-4000-8000-000000000002'",
            r#"{"amount": 0.1000000000000000000001}"#,
            Some("cannot be kept exactly"),
        ),
        (
            "'20000000-0000-4000-8000-000000000003'",
            r#"{"max": 18446744073709551615, "rate": 0.1, "tiny": 5e-324, "n": 1e2}"#,
            None,
        ),
    ];
    if app.db.backend == "sqlite" {
        // PostgreSQL's jsonb keeps one of the two itself, so only SQLite's text can.
        rows.push((
            "'20000000-0000-4000-8000-000000000004'",
            r#"{"to": "a@example.com", "to": "b@example.com"}"#,
            Some("appears twice"),
        ));
    }
    for (id, parameters, _) in &rows {
        let id = if app.db.backend == "postgres" {
            format!("{id}::uuid")
        } else {
            id.to_string()
        };
        let sql = format!(
            "INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, status, \
             requested_by, expires_at) VALUES ({id}, 'search_accounts', '{parameters}', 'low', \
             'pending', 'agent-7', {expires})"
        );
        assert_eq!(raw_execute(&app.db, &sql).await, Ok(1), "{sql}");
    }

    let policy = Arc::new(Policy::from_toml_str(POLICY).unwrap());
    let scheduler = Scheduler::new(app.store.clone()).with_policy(policy);
    assert_eq!(scheduler.intake(app.clock.now()).await.unwrap(), rows.len());
    for (id, parameters, refused) in &rows {
        let row = app.store.get(id_of(id)).await.unwrap().unwrap();
        match refused {
            Some(why) => {
                assert_eq!(row.status.as_str(), "denied", "{parameters}");
                let reason = row.reason.as_deref().unwrap();
                assert!(reason.contains(why), "{parameters}: {reason}");
                assert!(reason.contains("exactly as stored"), "{reason}");
            }
            None => assert_eq!(
                row.status.as_str(),
                "approved",
                "{parameters}: the low tier approves an exact row at once"
            ),
        }
    }
}

fn id_of(literal: &str) -> signoff::approval::ApprovalId {
    literal
        .trim_end_matches("::uuid")
        .trim_matches('\'')
        .parse()
        .unwrap()
}

async fn tool_names_outside_the_mcp_rule_are_refused_before_the_policy(db: TestDb) {
    let app = spawn_on(db).await;
    for name in [
        "drop users",
        "drоp_users", // a Cyrillic о
        "drop_users\u{200b}",
        "drop_users\n",
        "drop\u{1b}[31m_users",
        "",
        &"x".repeat(129),
    ] {
        let (status, error) = app
            .post(
                "/v1/approvals",
                &json!({"tool_name": name, "parameters": {}}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}: {error}"
        );
        assert!(
            error["detail"].as_str().unwrap().contains("MCP rule"),
            "{error}"
        );
    }
    assert_eq!(approvals_in(&app.db).await, 0);
    let (_, shouted) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "DROP_Users", "parameters": {}}),
        )
        .await;
    assert_eq!(
        shouted["status"], "denied",
        "another case does not dodge `drop_*`: {shouted}"
    );
    // Annotations are a few hints, kept with the approval: not a document.
    let long = json!({"title": "x".repeat(10_001)});
    let (status, error) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "transfer", "parameters": {}, "annotations": long}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("annotations are"),
        "{error}"
    );
    // A misspelt field is refused, naming it: `expire_in` would otherwise leave the
    // request open for the policy's whole lifetime.
    let (status, error) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "transfer", "parameters": {}, "expire_in": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("unknown field `expire_in`"), "{error}");
    assert_eq!(approvals_in(&app.db).await, 1, "the shouted one alone");
}

async fn the_create_answer_carries_what_to_run(db: TestDb) {
    let app = spawn_on(db).await;
    let (status, created) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "get_user", "parameters": {"user_id": 5}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["status"], "approved");
    assert_eq!(created["parameters"], json!({"user_id": 5}));
    assert_eq!(created["tool_name"], "get_user");
    assert!(
        created["check_status_with"]
            .as_str()
            .unwrap()
            .starts_with("GET /v1/approvals/")
    );
    let id = created["approval_id"].as_str().unwrap();
    let (status, _) = app
        .post(
            &format!("/v1/approvals/{id}/execute"),
            &json!({"parameters": created["parameters"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

crate::on_both_backends!(a_revoked_or_rotated_token_is_refused_at_once_on_every_replica);

/// Revocation takes effect when `signoff token revoke` returns: the very next request,
/// on this server and on another one sharing the database, is 401.
async fn a_revoked_or_rotated_token_is_refused_at_once_on_every_replica(db: TestDb) {
    let app = spawn_on(db).await;
    let replica = app.replica().await;
    let id = app.request("transfer", json!({"amount": 1})).await;
    let get_from = |address: &str, token: &str| {
        let request = app
            .http
            .get(format!("{address}/v1/approvals/{id}"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    let everywhere = [app.address.clone(), replica.address.clone()];
    for address in &everywhere {
        assert_eq!(get_from(address, &app.token).await, StatusCode::OK);
    }
    let cli = |args: &[&str]| {
        let output = crate::common::server::command(args, &app.db.url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let rotated = cli(&["token", "rotate", "agent"]);
    for address in &everywhere {
        assert_eq!(
            get_from(address, &app.token).await,
            StatusCode::UNAUTHORIZED,
            "old secret"
        );
        assert_eq!(
            get_from(address, &rotated).await,
            StatusCode::OK,
            "new secret"
        );
    }
    cli(&["token", "revoke", "agent"]);
    for address in &everywhere {
        assert_eq!(
            get_from(address, &rotated).await,
            StatusCode::UNAUTHORIZED,
            "{address}"
        );
    }
}
