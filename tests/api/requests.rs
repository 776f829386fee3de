//! Asking for approval: classification, duplicates, authentication and bad input.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::app::{self, Options};
use crate::helpers::*;

#[tokio::test]
async fn a_request_is_created_pending_with_its_classification() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/v1/approvals",
            &json!({
                "tool_name": "delete_customer_records",
                "parameters": {"customer_ids": ["c1", "c2"]},
                "summary": "Delete 2 customer records",
                "context": "User asked to purge test accounts",
                "requested_by": "agent-session-42",
                "expires_in": 600
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["approval_id"].as_str().unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["risk_tier"], "medium", "unknown tools are medium");
    assert_eq!(body["expires_at"], "2026-11-23T12:10:00Z");
    assert_eq!(body["check_status_with"], format!("GET /v1/approvals/{id}"));

    let (status, full) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(full["approval_id"], id);
    assert_eq!(full["tool_name"], "delete_customer_records");
    assert_eq!(full["parameters"], json!({"customer_ids": ["c1", "c2"]}));
    assert_eq!(full["requested_by"], "agent-session-42");
    assert_eq!(full["summary"], "Delete 2 customer records");
    assert_eq!(full["votes"], json!([]));
    assert_eq!(full["required_approvals"], 1);
    assert_eq!(full["decided_by"], json!(null));
    assert_eq!(full["created_at"], "2026-11-23T12:00:00Z");
    assert!(full["next_action"].as_str().unwrap().starts_with("wait"));
    for field in ["decision_at", "reason", "expires_at", "risk_tier", "status"] {
        assert!(full.get(field).is_some(), "missing {field}");
    }
}

#[tokio::test]
async fn policy_tiers_decide_at_once_and_can_only_raise_the_requested_tier() {
    let app = spawn_app().await;
    let (status, auto) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "search_orders", "parameters": {"q": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (auto["status"].as_str(), auto["risk_tier"].as_str()),
        (Some("approved"), Some("low"))
    );

    let (_, raised) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "search_orders", "parameters": {"q": "y"}, "risk_tier": "medium"}),
        )
        .await;
    assert_eq!(
        raised["status"], "pending",
        "the requester may raise the tier"
    );

    let (_, lowered) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "drop_table", "parameters": {}, "risk_tier": "low"}),
        )
        .await;
    assert_eq!(
        (lowered["status"].as_str(), lowered["risk_tier"].as_str()),
        (Some("denied"), Some("high"))
    );
    let (_, full) = app
        .get(&format!(
            "/v1/approvals/{}",
            lowered["approval_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(full["decided_by"], "policy");
    assert!(
        full["reason"]
            .as_str()
            .unwrap()
            .contains("denied by policy")
    );

    let (_, deploy) = app
        .post("/v1/approvals", &json!({"tool_name": "deploy_api", "parameters": {"service": "api", "environment": "prod"}}))
        .await;
    let (_, full) = app
        .get(&format!(
            "/v1/approvals/{}",
            deploy["approval_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        full["summary"], "Deploy api to prod",
        "the rule's template fills the summary"
    );
    assert_eq!(full["required_approvals"], 2);
}

/// A deny says what decided the tier: the rule alone, or the caller's request above it.
#[tokio::test]
async fn a_policy_deny_says_whether_the_rule_or_the_caller_set_the_tier() {
    let app = spawn_app().await;
    let (_, dropped) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "drop_table", "parameters": {}}),
        )
        .await;
    let (_, raised) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "search_orders", "parameters": {}, "risk_tier": "high"}),
        )
        .await;
    let mut reasons = Vec::new();
    for body in [dropped, raised] {
        assert_eq!(body["status"], "denied", "{body}");
        let id = body["approval_id"].as_str().unwrap();
        let (_, full) = app.get(&format!("/v1/approvals/{id}")).await;
        reasons.push(full["reason"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        reasons,
        [
            "denied by policy: risk tier high is denied (rules[1] (tools drop_*))",
            "denied by policy: risk tier high is denied (rules[0] (tools search_*, get_*) sets \
             low, raised to high by the caller's request)",
        ]
    );
}

/// A condition the policy cannot evaluate never auto-approves (docs/operations.md): an
/// amount sent as a string does not slip past the rule on large transfers into
/// `medium`, which this policy auto-approves; it is taken at the rule's tier.
#[tokio::test]
async fn a_parameter_that_makes_a_condition_fail_is_never_auto_approved() {
    for (high, expected) in [("require_approval", "pending"), ("deny", "denied")] {
        let policy = format!(
            "[tiers]\nlow = \"auto_approve\"\nmedium = \"auto_approve\"\nhigh = \"{high}\"\n\n\
             [[rules]]\ntools = [\"transfer_funds\"]\nwhen = \"params.amount > 1000\"\n\
             tier = \"high\"\n"
        );
        let app = TestApp::from(app::spawn(crate::common::sqlite(), Options::new(&policy)).await);
        for (amount, status, tier) in [
            (json!(10), "approved", "medium"),
            (json!(5000), expected, "high"),
            (json!("5000"), expected, "high"),
            (json!(null), expected, "high"),
        ] {
            let (code, body) = app
                .post(
                    "/v1/approvals",
                    &json!({"tool_name": "transfer_funds", "parameters": {"amount": amount}}),
                )
                .await;
            assert_eq!(code, StatusCode::CREATED, "{body}");
            assert_eq!(
                (body["status"].as_str(), body["risk_tier"].as_str()),
                (Some(status), Some(tier)),
                "{high}: amount {amount}"
            );
        }
    }
}

#[tokio::test]
async fn duplicate_requests_return_the_existing_approval_with_200() {
    let app = spawn_app().await;
    let body = json!({"tool_name": "refund", "parameters": {"amount": 5, "order": "o1"}});
    let (first, a) = app.post("/v1/approvals", &body).await;
    let (second, b) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "refund", "parameters": {"order": "o1", "amount": 5}}),
        )
        .await;
    assert_eq!((first, second), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a["approval_id"], b["approval_id"]);

    let keyed =
        json!({"tool_name": "refund", "parameters": {"amount": 6}, "idempotency_key": "k-1"});
    let (s1, k1) = app.post("/v1/approvals", &keyed).await;
    let (s2, k2) = app.post("/v1/approvals", &keyed).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(k1["approval_id"], k2["approval_id"]);
}

#[tokio::test]
async fn the_bearer_schemes_name_is_read_in_any_case() {
    let app = spawn_app().await;
    let id = app.request("transfer", json!({"amount": 1})).await;
    let get = |authorization: String| {
        let request = app
            .http
            .get(app.url(&format!("/v1/approvals/{id}")))
            .header("authorization", authorization);
        async move { request.send().await.unwrap().status() }
    };
    for scheme in ["Bearer", "bearer", "BEARER"] {
        assert_eq!(
            get(format!("{scheme} {}", app.token)).await,
            StatusCode::OK,
            "{scheme}"
        );
    }
    for refused in [
        format!("Bearer{}", app.token),
        format!("Bearerx {}", app.token),
    ] {
        assert_eq!(get(refused).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401_and_change_nothing() {
    let app = spawn_app().await;
    let body = json!({"tool_name": "x", "parameters": {}});
    let no_token = app
        .http
        .post(app.url("/v1/approvals"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, error) = read(no_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&error, "unauthorized");
    let (status, _) = app
        .post_as("so_not-a-real-token", "/v1/approvals", &body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let basic = app
        .http
        .post(app.url("/v1/approvals"))
        .header("authorization", format!("Basic {}", app.token))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    app.store
        .token_revoke("agent", signoff::clock::Clock::now(&app.clock))
        .await
        .unwrap();
    let (status, _) = app.post("/v1/approvals", &body).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token no longer works"
    );
    assert_eq!(
        app.store
            .health(signoff::clock::Clock::now(&app.clock))
            .await
            .unwrap()
            .pending,
        0
    );
}

#[tokio::test]
async fn bad_bodies_get_clear_errors_and_change_nothing() {
    let app = spawn_app().await;
    // The app's token was created (and audited) before.
    let (head, _) = app.store.audit_head().await.unwrap();
    let malformed = [r#"{"tool_name": "x", "parameters": {"#, "not json"];
    let long_name = format!(
        r#"{{"tool_name": "{}", "parameters": {{}}}}"#,
        "t".repeat(201)
    );
    let wrong_shape = [
        r#"{"tool_name": "x", "parameters": [1, 2]}"#,
        r#"{"tool_name": "x", "parameters": "rm -rf"}"#,
        r#"{"tool_name": "  ", "parameters": {}}"#,
        r#"{"parameters": {}}"#,
        r#"{"tool_name": "x"}"#,
        r#"{"tool_name": 7, "parameters": {}}"#,
        r#"{"tool_name": "x", "parameters": {}, "risk_tier": "extreme"}"#,
        r#"{"tool_name": "x", "parameters": {}, "expires_in": 0}"#,
        r#"{"tool_name": "x", "parameters": {}, "expires_in": -5}"#,
        r#"{"tool_name": "x", "parameters": {}, "callback_url": "ftp://x"}"#,
        long_name.as_str(),
    ];
    let cases = malformed
        .iter()
        .map(|body| (body, StatusCode::BAD_REQUEST, "bad_request"))
        .chain(
            wrong_shape
                .iter()
                .map(|body| (body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable")),
        );
    for (body, expected, code) in cases {
        let (status, error) = app.post_raw("/v1/approvals", body.to_string()).await;
        assert_eq!(status, expected, "{body} -> {error}");
        assert_error(&error, code);
    }
    let rejected = json!({"tool_name": "x", "parameters": {}, "risk_tier": "extreme"});
    let (_, error) = app.post("/v1/approvals", &rejected).await;
    assert!(
        error["detail"].as_str().unwrap().contains("risk_tier"),
        "the detail names the field"
    );
    let now = signoff::clock::Clock::now(&app.clock);
    assert_eq!(app.store.health(now).await.unwrap().pending, 0);
    assert_eq!(
        app.store.audit_head().await.unwrap().0,
        head,
        "nothing was recorded"
    );
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let app = spawn_app().await;
    let huge = format!(
        r#"{{"tool_name": "x", "parameters": {{"blob": "{}"}}}}"#,
        "a".repeat(1024 * 1024)
    );
    let (status, error) = app.post_raw("/v1/approvals", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&error, "payload_too_large");
    let just_under = format!(
        r#"{{"tool_name": "x", "parameters": {{"blob": "{}"}}}}"#,
        "a".repeat(1000 * 1000)
    );
    let (status, _) = app.post_raw("/v1/approvals", just_under).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/v1/approvals/{unknown}"),
        "/v1/approvals/not-a-uuid".to_string(),
    ] {
        let (status, error) = app.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error(&error, "not_found");
    }
    let (status, _) = app
        .post(
            &format!("/v1/approvals/{unknown}/execute"),
            &json!({"parameters": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(&format!("/v1/approvals/{unknown}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Found by fuzzing (tests/api/fuzz.rs): these were answered by axum in plain text, or
/// with no body at all.
#[tokio::test]
async fn odd_paths_methods_and_queries_are_refused_with_the_apis_json() {
    let app = spawn_app().await;
    let id = app.request("deploy_api", json!({"service": "a"})).await;
    for (path, status, code) in [
        (
            "/v1/approvals/".to_owned(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("/v1/nothing".to_owned(), StatusCode::NOT_FOUND, "not_found"),
        (
            "/v1/approvals/%FF".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            format!("/v1/approvals/{id}?wait=0&wait=1"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            format!("/v1/approvals/{id}?wait=%FF"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // A misspelt `wait` is refused, not read as no wait at all.
        (
            format!("/v1/approvals/{id}?wiat=30"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (got, error) = app.get(&path).await;
        assert_eq!(got, status, "{path}: {error}");
        assert_error(&error, code);
    }
    let (status, error) = app.post("/v1/approvals/%FF/cancel", &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_error(&error, "bad_request");
    let response = app
        .http
        .delete(app.url(&format!("/v1/approvals/{id}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    // RFC 9110: a 405 lists the methods the path has.
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, error) = read(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&error, "method_not_allowed");
    assert_eq!(allow.as_deref(), Some("GET,HEAD"), "the path's own methods");
    let (_, still) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(still["status"], "pending", "nothing changed");
}

/// `{"a": {"a": … 1}}`, `depth` objects deep.
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "a": inner }))
}

crate::on_both_backends!(
    the_deepest_parameters_the_api_takes_are_read_back_everywhere,
    numbers_in_another_form_than_the_store_gives_back_still_execute_and_repeat,
    text_with_the_nul_character_is_refused_by_both_stores_alike,
);

/// PostgreSQL can keep U+0000 nowhere: it is refused at the door, on both stores, as a
/// 422 that says why (not a 503 to retry for ever).
async fn text_with_the_nul_character_is_refused_by_both_stores_alike(db: crate::common::TestDb) {
    let app = spawn_on(db).await;
    for body in [
        r#"{"tool_name": "deploy_api", "parameters": {"a": "x\u0000y"}}"#,
        r#"{"tool_name": "deploy_api", "parameters": {"a\u0000": 1}}"#,
        r#"{"tool_name": "deploy_api", "parameters": {}, "summary": "\u0000"}"#,
    ] {
        let (status, refused) = app.post_raw("/v1/approvals", body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {refused}"
        );
        assert!(
            refused["detail"].as_str().unwrap().contains("NUL"),
            "{refused}"
        );
    }
    let opened = crate::common::raw_count(&app.db, "SELECT COUNT(*) FROM pending_approvals");
    assert_eq!(opened.await, 0, "nothing opened");
}

/// PostgreSQL's `jsonb` gives `1e16` back as `10000000000000000` and `-0.0` as `0.0`:
/// the same numbers. The call sent as it was still executes, and a retry with its
/// idempotency key is still the same call.
async fn numbers_in_another_form_than_the_store_gives_back_still_execute_and_repeat(
    db: crate::common::TestDb,
) {
    let app = spawn_on(db).await;
    let parameters = r#"{"amount": 1e16, "offset": -0.0, "rate": 1.50, "n": 100.0}"#;
    let ask = format!(
        r#"{{"tool_name": "get_balance", "parameters": {parameters}, "idempotency_key": "k-1"}}"#
    );
    let (status, created) = app.post_raw("/v1/approvals", ask.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "approved");
    let id = created["approval_id"].as_str().unwrap().to_owned();
    let (status, again) = app.post_raw("/v1/approvals", ask).await;
    assert_eq!(
        (status, &again["approval_id"]),
        (StatusCode::OK, &json!(id)),
        "{again}"
    );

    let execute = format!("/v1/approvals/{id}/execute");
    let other = r#"{"parameters": {"amount": 1e16, "offset": 0, "rate": 1.5, "n": 101}}"#;
    let (status, refused) = app.post_raw(&execute, other).await;
    assert_eq!(status, StatusCode::CONFLICT, "another n: {refused}");
    let (status, ran) = app
        .post_raw(&execute, format!(r#"{{"parameters": {parameters}}}"#))
        .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(ran["status"], "executed");
    assert_eq!(ran["parameters"]["amount"].as_f64(), Some(1e16));
}

/// Parameters as deep as the API takes them are stored and read back by every read:
/// the status get, the listing, and the scheduler's expiry (whose reads on SQLite wrap
/// each row in two more levels of JSON).
async fn the_deepest_parameters_the_api_takes_are_read_back_everywhere(db: crate::common::TestDb) {
    let app = spawn_on(db).await;
    let mut taken = None;
    for depth in (1..=200).rev() {
        let body = json!({"tool_name": "transfer", "parameters": nested(depth)});
        if app.post("/v1/approvals", &body).await.0.is_success() {
            taken = Some((depth, body));
            break;
        }
    }
    let (depth, body) = taken.expect("some depth is taken");
    assert!(depth >= 100, "only {depth} deep");
    let (status, answer) = app.post("/v1/approvals", &body).await;
    assert_eq!(status, StatusCode::OK, "a repeat: {answer}");
    let id = answer["approval_id"].as_str().unwrap().to_owned();
    let (status, read) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["parameters"], body["parameters"]);
    assert_eq!(app.store.list_all(None).await.unwrap().len(), 1);
    let scheduler = signoff::scheduler::Scheduler::new(app.store.clone());
    scheduler
        .run_once(signoff::clock::Clock::now(&app.clock) + chrono::Duration::hours(2))
        .await
        .expect("the expiry reads it");
    let (_, read) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(read["status"], "expired");
}

/// Every audit event of an approval carries its `server` (null outside MCP): the
/// request, the vote, the decision and the execution alike.
#[tokio::test]
async fn every_audit_event_of_an_approval_carries_its_server() {
    let app = spawn_app().await;
    let (status, created) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "transfer", "parameters": {"amount": 1}, "server": "bank"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["approval_id"].as_str().unwrap().to_owned();
    app.approve(&id, "U0ALICE").await;
    let path = format!("/v1/approvals/{id}/execute");
    let (status, _) = app.post(&path, &json!({"parameters": {"amount": 1}})).await;
    assert_eq!(status, StatusCode::OK);
    let outside = app.request("transfer", json!({"amount": 2})).await;

    let events = app.store.audit_page(0, 100).await.unwrap();
    let of = |id: &str| -> Vec<_> {
        events
            .iter()
            .filter(|e| e.approval_id.map(|a| a.to_string()).as_deref() == Some(id))
            .collect()
    };
    let kinds: Vec<&str> = of(&id).iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["requested", "vote", "approved", "executed"]);
    for event in of(&id) {
        assert_eq!(
            event.data["server"], "bank",
            "{}: {}",
            event.kind, event.data
        );
    }
    let outside = of(&outside);
    assert!(!outside.is_empty());
    for event in outside {
        assert_eq!(event.data["server"], Value::Null, "{}", event.kind);
        assert!(
            event.data.get("server").is_some(),
            "{}: says null",
            event.kind
        );
    }
}

/// Well-formed JSON that cannot be kept is 422, as an inexact number is, not the 400
/// of malformed JSON: a number beyond a 64-bit float, nesting past 127 levels.
#[tokio::test]
async fn a_number_beyond_a_float_or_nesting_too_deep_is_422() {
    let app = spawn_app().await;
    // The body, its parameters and 126 arrays: 128 levels.
    let deep = format!("{}1{}", "[".repeat(126), "]".repeat(126));
    let cases = [
        (r#"{"n": 1e400}"#.to_owned(), "beyond ±1.8e308"),
        (r#"{"n": [-1e400]}"#.to_owned(), "beyond ±1.8e308"),
        (
            format!(r#"{{"n": {deep}}}"#),
            "nested deeper than 127 levels",
        ),
    ];
    for (parameters, why) in cases {
        let body = format!(r#"{{"tool_name": "get_user", "parameters": {parameters}}}"#);
        for path in ["/v1/approvals", "/v1/policy/tools"] {
            let (status, error) = app.post_raw(path, body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {error}");
            assert_error(&error, "unprocessable");
            let detail = error["detail"].as_str().unwrap();
            assert!(detail.contains(why), "{path}: {detail}");
        }
    }
    // Parameters of 101 levels (their object and 100 arrays) are refused, whatever
    // the body's depth allows: what signoff writes around them (an audit export's
    // line, a callback) would be past what serde_json reads. 100 are kept.
    let levels = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let body = |n: usize| {
        let deep = levels(n);
        format!(r#"{{"tool_name": "get_user", "parameters": {{"n": {deep}}}}}"#)
    };
    let (status, error) = app.post_raw("/v1/approvals", body(100)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("nested deeper than 100 levels"), "{detail}");
    assert!(app.store.list_all(None).await.unwrap().is_empty());
    let (status, created) = app.post_raw("/v1/approvals", body(99)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(app.store.list_all(None).await.unwrap().len(), 1);
}
