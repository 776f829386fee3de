//! `execute_if_approved`: an approved answer to `POST /v1/approvals` is spent in the
//! same write, so an auto-approved call costs one request (what `signoff proxy` does).
//! It is the single-use gate as `POST …/execute` is, on both stores.

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{Decider, Event};
use signoff::clock::Clock;

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(
    an_auto_approved_call_is_spent_as_it_is_answered_and_only_once,
    a_pending_answer_is_not_spent_but_a_repeat_after_the_approval_is,
    an_edited_approval_is_spent_with_the_edited_parameters,
    refused_and_denied_calls_are_never_spent,
    a_keyed_retry_after_the_spend_says_it_was_spent_before,
);

fn ask(tool: &str, parameters: Value) -> Value {
    json!({"tool_name": tool, "parameters": parameters, "execute_if_approved": true})
}

/// The audit kinds recorded for `id`, in order.
async fn audit_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let entries = app.store.audit_page(0, 1_000).await.unwrap();
    entries
        .into_iter()
        .filter(|entry| entry.approval_id.map(|a| a.to_string()).as_deref() == Some(id))
        .map(|entry| entry.kind)
        .collect()
}

async fn an_auto_approved_call_is_spent_as_it_is_answered_and_only_once(db: TestDb) {
    let app = spawn_on(db).await;
    let (status, spent) = app
        .post("/v1/approvals", &ask("get_user", json!({"user_id": 5})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{spent}");
    assert_eq!(spent["status"], "executed");
    assert_eq!(spent["parameters"], json!({"user_id": 5}));
    assert_eq!(spent["spent_by_this_request"], true, "{spent}");
    assert!(
        spent["next_action"]
            .as_str()
            .unwrap()
            .starts_with("run the action now"),
        "{spent}"
    );
    let id = spent["approval_id"].as_str().unwrap().to_owned();
    let kinds = audit_kinds(&app, &id).await;
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("executed"),
        "the spend is audited with the request: {kinds:?}"
    );

    let (status, again) = app
        .post(
            &format!("/v1/approvals/{id}/execute"),
            &json!({"parameters": {"user_id": 5}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "spent already: {again}");
    assert_eq!(again["status"], "executed");

    // The same call again is a new call: an executed approval is never joined.
    let (status, next) = app
        .post("/v1/approvals", &ask("get_user", json!({"user_id": 5})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{next}");
    assert_eq!(next["status"], "executed");
    assert_ne!(next["approval_id"], spent["approval_id"]);

    // Without the flag the answer is approved, as before, and left to execute.
    let (_, plain) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "get_user", "parameters": {"user_id": 6}}),
        )
        .await;
    assert_eq!(plain["status"], "approved");
    assert!(plain.get("spent_by_this_request").is_none(), "{plain}");
}

/// A retry with the same idempotency key after the spend answers the approval as it
/// is, `executed`, and says that an earlier request spent it: the caller ran it then
/// and must not run it again.
async fn a_keyed_retry_after_the_spend_says_it_was_spent_before(db: TestDb) {
    let app = spawn_on(db).await;
    let mut call = ask("get_user", json!({"user_id": 7}));
    call["idempotency_key"] = json!("run-7");
    let (status, first) = app.post("/v1/approvals", &call).await;
    assert_eq!(
        (status, &first["spent_by_this_request"]),
        (StatusCode::CREATED, &json!(true)),
        "{first}"
    );
    let (status, retry) = app.post("/v1/approvals", &call).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(retry["approval_id"], first["approval_id"]);
    assert_eq!(retry["status"], "executed");
    assert_eq!(retry["spent_by_this_request"], false, "{retry}");
    assert_eq!(
        retry["next_action"], "nothing: the action was already executed",
        "{retry}"
    );
    let id = first["approval_id"].as_str().unwrap();
    let kinds = audit_kinds(&app, id).await;
    assert_eq!(
        kinds.iter().filter(|kind| *kind == "executed").count(),
        1,
        "{kinds:?}"
    );
}

async fn a_pending_answer_is_not_spent_but_a_repeat_after_the_approval_is(db: TestDb) {
    let app = spawn_on(db).await;
    let call = ask("delete_repo", json!({"repo": "x"}));
    let (status, pending) = app.post("/v1/approvals", &call).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(pending["status"], "pending");
    let id = pending["approval_id"].as_str().unwrap().to_owned();

    let (status, joined) = app.post("/v1/approvals", &call).await;
    assert_eq!(status, StatusCode::OK, "a repeat joins the open request");
    assert_eq!(joined["approval_id"], id.as_str());
    assert_eq!(joined["status"], "pending", "nothing to spend yet");

    app.approve(&id, "U1").await;
    let (status, spent) = app.post("/v1/approvals", &call).await;
    assert_eq!(status, StatusCode::OK, "{spent}");
    assert_eq!(
        spent["approval_id"],
        id.as_str(),
        "the approved request, joined"
    );
    assert_eq!(spent["status"], "executed");
    assert_eq!(spent["spent_by_this_request"], true, "the join spent it");

    let (_, shown) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(shown["status"], "executed");
    let (status, fresh) = app.post("/v1/approvals", &call).await;
    assert_eq!(status, StatusCode::CREATED, "spent: the next one is new");
    assert_eq!(fresh["status"], "pending");
    assert_ne!(fresh["approval_id"], id.as_str());
}

async fn an_edited_approval_is_spent_with_the_edited_parameters(db: TestDb) {
    let app = spawn_on(db).await;
    let call = ask("transfer", json!({"amount": 900, "to": "acct-1"}));
    let (_, pending) = app.post("/v1/approvals", &call).await;
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let edit = Event::EditApprove {
        by: Decider::approver("U1"),
        parameters: json!({"amount": 90, "to": "acct-1"}),
        parameters_shown: None,
    };
    app.store
        .apply(id.parse().unwrap(), edit, app.clock.now())
        .await
        .unwrap();

    let (status, spent) = app.post("/v1/approvals", &call).await;
    assert_eq!(status, StatusCode::OK, "{spent}");
    assert_eq!(spent["status"], "executed");
    assert_eq!(
        spent["parameters"],
        json!({"amount": 90, "to": "acct-1"}),
        "the caller runs what the approver approved"
    );
    assert_eq!(
        spent["original_parameters"],
        json!({"amount": 900, "to": "acct-1"})
    );
}

async fn refused_and_denied_calls_are_never_spent(db: TestDb) {
    let app = spawn_on(db).await;
    let (status, denied) = app
        .post(
            "/v1/approvals",
            &ask("drop_table", json!({"table": "users"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(denied["status"], "denied");
    let id = denied["approval_id"].as_str().unwrap().to_owned();
    assert!(!audit_kinds(&app, &id).await.contains(&"executed".into()));

    let mut bad = ask("get_user", json!({"user_id": 7}));
    bad["execute_if_approved"] = json!("yes");
    let (status, error) = app.post("/v1/approvals", &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_error(&error, "unprocessable");
}
