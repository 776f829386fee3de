//! Waiting for the decision, executing once, expiry and cancelling.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use signoff::clock::Clock;
use signoff::scheduler::Scheduler;

use crate::common;
use crate::helpers::*;

#[tokio::test]
async fn a_waiting_long_poll_answers_when_the_decision_commits() {
    let app = spawn_app().await;
    let id = app.request("delete_repo", json!({"repo": "x"})).await;
    let poll = {
        let (http, url, token) = (
            app.http.clone(),
            app.url(&format!("/v1/approvals/{id}?wait=60")),
            app.token.clone(),
        );
        tokio::spawn(
            async move { read(http.get(url).bearer_auth(token).send().await.unwrap()).await },
        )
    };
    // Decided once the poll is parked (a decision before it started waiting is seen
    // too, but would not test the wake-up).
    app.until_metric("signoff_long_polls_waiting", 1.0).await;
    assert!(
        !poll.is_finished(),
        "a pending approval keeps the long-poll waiting"
    );
    app.approve(&id, "U1").await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the long-poll answered well before its 60 s wait")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decided_by"], "U1");
    assert_eq!(body["votes"][0]["user"], "U1");
}

#[tokio::test]
async fn a_long_poll_times_out_with_the_pending_state() {
    let app = spawn_app().await;
    let id = app.request("delete_repo", json!({"repo": "y"})).await;
    let (status, body) = app.get(&format!("/v1/approvals/{id}?wait=0.2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "pending");
    let (status, error) = app.get(&format!("/v1/approvals/{id}?wait=soon")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&error, "bad_request");
    let (status, _) = app.get(&format!("/v1/approvals/{id}?wait=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Each long-poll waits on one of the server's connections: a token has at most
/// `Limits::waits_per_token` waiting at once (past it, 429 at once), so that it cannot
/// take them all. Another token's waits, and reads that do not wait or find the
/// approval decided, are not held back; a decision that ends the waits makes room.
#[tokio::test]
async fn a_token_has_at_most_waits_per_token_long_polls_waiting_at_once() {
    let limits = signoff::http::Limits {
        waits_per_token: 2,
        ..signoff::http::Limits::default()
    };
    let app = spawn_limited(common::sqlite(), limits).await;
    let id = app.request("delete_repo", json!({"repo": "x"})).await;
    let wait = |token: &str, seconds: u32| {
        let url = app.url(&format!("/v1/approvals/{id}?wait={seconds}"));
        let request = app.http.get(url).bearer_auth(token);
        async move { read(request.send().await.unwrap()).await }
    };
    let first = tokio::spawn(wait(&app.token, 60));
    let second = tokio::spawn(wait(&app.token, 60));
    app.until_metric("signoff_long_polls_waiting", 2.0).await;
    let (status, error) = tokio::time::timeout(Duration::from_secs(5), wait(&app.token, 60))
        .await
        .expect("refused at once");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{error}");
    assert_error(&error, "too_many_waits");
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("agent has 2 requests waiting"), "{detail}");
    let (status, body) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(status, StatusCode::OK, "a read that does not wait: {body}");
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let theirs = json!({"tool_name": "delete_repo", "parameters": {"repo": "y"}});
    let (status, created) = app.post_as(&other, "/v1/approvals", &theirs).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let mine = created["approval_id"].as_str().unwrap();
    let url = app.url(&format!("/v1/approvals/{mine}?wait=0.2"));
    let answer = app.http.get(url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "another token waits");

    app.approve(&id, "U1").await;
    for poll in [first, second] {
        let (status, body) = poll.await.unwrap();
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &json!("approved"))
        );
    }
    let (status, body) = wait(&app.token, 60).await;
    assert_eq!(status, StatusCode::OK, "decided: answered at once, {body}");
    let next = app.request("delete_repo", json!({"repo": "z"})).await;
    let url = app.url(&format!("/v1/approvals/{next}?wait=0.2"));
    let answer = app
        .http
        .get(url)
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "the ended waits made room");
}

#[tokio::test]
async fn execute_is_single_use_and_only_for_the_approved_parameters() {
    let app = spawn_app().await;
    let id = app
        .request("transfer", json!({"amount": 100, "to": "acct-1"}))
        .await;
    let execute = format!("/v1/approvals/{id}/execute");

    let (status, error) = app
        .post(
            &execute,
            &json!({"parameters": {"amount": 100, "to": "acct-1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "pending cannot run");
    assert_eq!(error["status"], "pending");
    assert_error(&error, "conflict");

    app.approve(&id, "U1").await;
    let (status, error) = app
        .post(
            &execute,
            &json!({"parameters": {"amount": 100000, "to": "acct-1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["status"], "approved", "nothing changed");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("parameters differ")
    );

    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let (status, error) = app
        .post_as(
            &other,
            &execute,
            &json!({"parameters": {"amount": 100, "to": "acct-1"}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another token's approval is not found, as for reads: {error}"
    );
    assert_error(&error, "not_found");

    let (status, error) = app.post_raw(&execute, r#"{"parameters": "#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    let (status, done) = app
        .post(
            &execute,
            &json!({"parameters": {"to": "acct-1", "amount": 100}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "executed");
    assert_eq!(done["parameters"], json!({"amount": 100, "to": "acct-1"}));

    let (status, again) = app
        .post(
            &execute,
            &json!({"parameters": {"amount": 100, "to": "acct-1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "execute twice");
    assert_eq!(again["status"], "executed");
}

#[tokio::test]
async fn nothing_runs_after_expiry() {
    let app = spawn_app().await;
    let (_, body) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "restart", "parameters": {"host": "db1"}, "expires_in": 30}),
        )
        .await;
    let id = body["approval_id"].as_str().unwrap().to_owned();
    app.approve(&id, "U1").await;
    app.clock.advance(Duration::from_secs(31));
    let (status, error) = app
        .post(
            &format!("/v1/approvals/{id}/execute"),
            &json!({"parameters": {"host": "db1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "approved but past expiry");
    assert!(error["detail"].as_str().unwrap().contains("expired"));
    assert_eq!(error["status"], "expired", "{error}");
    // Before the scheduler's pass records it, a read already says so.
    let (_, seen) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(seen["status"], "expired", "{seen}");
    assert!(seen["next_action"].as_str().unwrap().contains("do not run"));
    assert_eq!(
        seen["decided_by"], "U1",
        "an expired approval keeps its decider"
    );
    Scheduler::new(app.store.clone())
        .run_once(signoff::clock::Clock::now(&app.clock))
        .await
        .unwrap();
    let (_, full) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(full["status"], "expired");
    assert!(full["next_action"].as_str().unwrap().contains("do not run"));
}

#[tokio::test]
async fn a_pending_request_past_its_expiry_reads_as_expired_at_once_even_when_waited_on() {
    let app = spawn_app().await;
    let ask = json!({"tool_name": "restart", "parameters": {"host": "db2"}, "expires_in": 30,
                     "idempotency_key": "restart-db2"});
    let (_, body) = app.post("/v1/approvals", &ask).await;
    let id = body["approval_id"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::from_secs(31));
    // Asked again with its key, it is answered as a read is.
    let (_, again) = app.post("/v1/approvals", &ask).await;
    assert_eq!(
        (again["approval_id"].as_str(), again["status"].as_str()),
        (Some(id.as_str()), Some("expired")),
        "{again}"
    );
    assert_eq!(
        again["decision_at"], again["expires_at"],
        "decided by nobody, at its expiry"
    );
    // No scheduler pass has run: the row still says pending.
    let stored = app.store.get(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.status, signoff::approval::Status::Pending);
    let (_, seen) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(seen["status"], "expired", "{seen}");
    assert_eq!(seen["permalink"], serde_json::Value::Null);
    let started = std::time::Instant::now();
    let (_, waited) = app.get(&format!("/v1/approvals/{id}?wait=30")).await;
    assert_eq!(waited["status"], "expired", "{waited}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a wait on an expired request answers at once, not after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_requester_cancels_a_pending_request_once() {
    let app = spawn_app().await;
    let id = app.request("rotate_keys", json!({"scope": "all"})).await;
    let cancel = format!("/v1/approvals/{id}/cancel");
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let (status, _) = app.post_as(&other, &cancel, &json!({})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "only the requester's token cancels; to others it does not exist"
    );
    let (status, body) = app.post(&cancel, &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "cancelled");
    let (status, error) = app.post(&cancel, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["status"], "cancelled");
}

#[tokio::test]
async fn the_api_works_the_same_on_postgres() {
    let Some(db) = common::postgres("api_on_postgres").await else {
        return;
    };
    let app = spawn_on(db).await;
    let id = app.request("transfer", json!({"amount": 1})).await;
    app.approve(&id, "U1").await;
    let (status, done) = app
        .post(
            &format!("/v1/approvals/{id}/execute"),
            &json!({"parameters": {"amount": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (status, _) = app
        .post(
            &format!("/v1/approvals/{id}/execute"),
            &json!({"parameters": {"amount": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

crate::on_both_backends!(
    a_long_poll_reads_the_approval_again_at_its_deadline,
    execute_past_the_expiry_is_refused_as_expired_whatever_else_is_wrong,
    the_executed_event_hashes_the_approved_parameters_however_the_caller_wrote_them,
);

/// A decision whose notice never came (here written straight into the table as a
/// replica's writer, with no notice) is still what a long-poll answers at its deadline: the last word is a
/// read, not the pending state it began with.
async fn a_long_poll_reads_the_approval_again_at_its_deadline(db: common::TestDb) {
    let app = spawn_on(db).await;
    let id = app.request("delete_repo", json!({"repo": "z"})).await;
    let poll = {
        let (http, url, token) = (
            app.http.clone(),
            app.url(&format!("/v1/approvals/{id}?wait=1")),
            app.token.clone(),
        );
        tokio::spawn(
            async move { read(http.get(url).bearer_auth(token).send().await.unwrap()).await },
        )
    };
    // Written behind its back once it is parked (written before, its first read would
    // already answer denied).
    app.until_metric("signoff_long_polls_waiting", 1.0).await;
    let unannounced = format!(
        "UPDATE pending_approvals SET status = 'denied', decided_by = 'U9', \
         version = version + 1 WHERE id = '{id}'"
    );
    // As a replica's writer could (another program may not decide: migration 0020).
    let as_writer = (app.db.backend == "postgres").then(|| app.db.as_signoff_writer());
    let db = as_writer.as_ref().unwrap_or(&app.db);
    assert_eq!(common::raw_execute(db, &unannounced).await, Ok(1));
    let (status, body) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "denied", "{body}");
}

/// A request past its `expires_at` that the scheduler has not swept yet is refused as
/// expired (what a read says), before its status or another tool is looked at.
async fn execute_past_the_expiry_is_refused_as_expired_whatever_else_is_wrong(db: common::TestDb) {
    let app = spawn_on(db).await;
    let pending = app.request("delete_repo", json!({"repo": "p"})).await;
    let approved = app.request("delete_repo", json!({"repo": "a"})).await;
    app.approve(&approved, "U1").await;
    // The policy's expires_after is 1h; no scheduler pass runs.
    app.clock.advance(Duration::from_secs(3601));
    let cases = [
        (
            &pending,
            json!({"parameters": {"repo": "p"}, "tool_name": "delete_repo"}),
        ),
        (
            &approved,
            json!({"parameters": {"repo": "a"}, "tool_name": "drop_repo"}),
        ),
        (&approved, json!({"parameters": {"repo": "other"}})),
    ];
    for (id, body) in cases {
        let (status, error) = app
            .post(&format!("/v1/approvals/{id}/execute"), &body)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}: {error}");
        assert_eq!(error["status"], "expired", "{body}: {error}");
        assert_eq!(error["detail"], "this request expired", "{body}: {error}");
        let (_, seen) = app.get(&format!("/v1/approvals/{id}")).await;
        assert_eq!(seen["status"], "expired", "as a read says");
    }
}

/// An execute whose parameters write the approved numbers otherwise (`1e2` for `100`,
/// `1e16` as PostgreSQL's jsonb gives back its digits) runs, and the audit log's
/// `executed` event names the same parameters' hash as its `approved` event, the
/// numbers hashed by their value, however the approval came about (a vote, the
/// policy at once, an edit): the log alone shows that what ran is what was approved.
async fn the_executed_event_hashes_the_approved_parameters_however_the_caller_wrote_them(
    db: common::TestDb,
) {
    let app = spawn_on(db).await;
    let (status, created) = app
        .post_raw(
            "/v1/approvals",
            r#"{"tool_name": "transfer", "parameters": {"amount": 100, "cap": 1e16}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["approval_id"].as_str().unwrap().to_owned();
    app.approve(&id, "U1").await;
    let (status, done) = app
        .post_raw(
            &format!("/v1/approvals/{id}/execute"),
            r#"{"parameters": {"cap": 1e16, "amount": 1e2}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    // Approved as it was asked (auto-approved), and approved by an edit: the approved
    // parameters are hashed as they were parsed, the executed ones as the store gave
    // them back (PostgreSQL writes `1e16` out in digits).
    let auto = r#"{"tool_name": "get_rate", "parameters": {"cap": 1e16}}"#;
    let (status, asked) = app.post_raw("/v1/approvals", auto).await;
    assert_eq!(asked["status"], "approved", "{status} {asked}");
    let auto = asked["approval_id"].as_str().unwrap().to_owned();
    let edited = app.request("transfer", json!({"cap": 1})).await;
    let edit = signoff::approval::Event::EditApprove {
        by: signoff::approval::Decider::approver("U1"),
        parameters: serde_json::from_str(r#"{"cap": 1e16}"#).unwrap(),
        parameters_shown: None,
    };
    let decided = app
        .store
        .apply(edited.parse().unwrap(), edit, app.clock.now());
    assert_eq!(decided.await.unwrap().status.as_str(), "approved");
    for other in [&auto, &edited] {
        let path = format!("/v1/approvals/{other}/execute");
        let (status, done) = app
            .post_raw(&path, r#"{"parameters": {"cap": 1e16}}"#)
            .await;
        assert_eq!(status, StatusCode::OK, "{done}");
    }
    let entries = app.store.audit_page(0, 1_000).await.unwrap();
    let hash_of = |id: &str, kind: &str| {
        let entry = entries
            .iter()
            .find(|e| e.kind == kind && e.approval_id.map(|a| a.to_string()).as_deref() == Some(id))
            .unwrap_or_else(|| panic!("a {kind} event of {id}"));
        entry.data["parameters_sha256"].as_str().unwrap().to_owned()
    };
    for (id, approved) in [
        (&id, "approved"),
        (&auto, "auto_approved"),
        (&edited, "approved"),
    ] {
        assert_eq!(hash_of(id, "executed"), hash_of(id, approved), "{id}");
    }
}
