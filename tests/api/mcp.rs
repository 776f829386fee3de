//! What the API offers MCP callers (the `signoff proxy` and agents): the server a tool
//! belongs to, repeats that join an approval until it has run, and the tools a policy
//! denies outright.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(
    the_server_is_part_of_the_request_and_shown_with_it,
    a_repeat_joins_the_approval_until_it_has_run,
);

async fn the_server_is_part_of_the_request_and_shown_with_it(db: TestDb) {
    let app = spawn_on(db).await;
    let call = |server: &str| {
        json!({"tool_name": "create_issue", "parameters": {"title": "x"}, "server": server,
               "annotations": {"destructiveHint": false}})
    };
    let (status, on_github) = app.post("/v1/approvals", &call("github")).await;
    assert_eq!(status, StatusCode::CREATED, "{on_github}");
    assert_eq!(on_github["server"], "github");
    let (status, on_gitlab) = app.post("/v1/approvals", &call("gitlab")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "one tool on two servers is two requests"
    );
    assert_ne!(on_github["approval_id"], on_gitlab["approval_id"]);
    let (status, again) = app.post("/v1/approvals", &call("github")).await;
    assert_eq!(
        (status, &again["approval_id"]),
        (StatusCode::OK, &on_github["approval_id"])
    );
    let (_, plain) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "create_issue", "parameters": {"title": "x"}}),
        )
        .await;
    assert_eq!(plain["server"], json!(null));
    assert_ne!(plain["approval_id"], on_github["approval_id"]);

    for (field, value) in [
        ("server", json!("git hub")),
        ("server", json!("a/b")),
        ("annotations", json!([1])),
    ] {
        let mut body = call("github");
        body[field] = value;
        let (status, error) = app.post("/v1/approvals", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
    }
}

async fn a_repeat_joins_the_approval_until_it_has_run(db: TestDb) {
    let app = spawn_on(db).await;
    let body = json!({"tool_name": "transfer", "parameters": {"amount": 5}, "server": "bank"});
    let (status, first) = app.post("/v1/approvals", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = first["approval_id"].as_str().unwrap().to_owned();
    app.approve(&id, "U1").await;
    // The client's call timed out while it waited; it calls again after the decision.
    let (status, joined) = app.post("/v1/approvals", &body).await;
    assert_eq!(
        (status, joined["approval_id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    assert_eq!(joined["status"], "approved");
    let execute = format!("/v1/approvals/{id}/execute");
    let run = json!({"parameters": {"amount": 5}, "tool_name": "transfer"});
    assert_eq!(app.post(&execute, &run).await.0, StatusCode::OK);
    let (status, again) = app.post(&execute, &run).await;
    assert_eq!(status, StatusCode::CONFLICT, "runs once: {again}");
    // Once it has run, the same call is a new request.
    let (status, fresh) = app.post("/v1/approvals", &body).await;
    assert_eq!(
        (status, fresh["status"].as_str()),
        (StatusCode::CREATED, Some("pending"))
    );
    assert_ne!(fresh["approval_id"].as_str(), Some(id.as_str()));
}

#[tokio::test]
async fn the_policy_names_the_tools_it_denies_outright() {
    let app = spawn_app().await;
    let (status, answer) = app
        .post(
            "/v1/policy/tools",
            &json!({"server": "db", "tools": [
                {"name": "drop_table", "annotations": {"destructiveHint": true}},
                {"name": "get_row"},
                {"name": "deploy_x"},
                {"name": "bad name"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let denied: Vec<&str> = answer["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert_eq!(denied, ["drop_table", "bad name"]);
    let reason = answer["denied"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("rules[1] (tools drop_*)"), "{reason}");
    let (status, _) = app
        .post_as("so_wrong", "/v1/policy/tools", &json!({"tools": []}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post("/v1/policy/tools", &json!({"server": "a b", "tools": []}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A misspelt `server` is refused: read as no server, rules naming one would not
    // match, and a tool they deny would be listed as allowed.
    let (status, error) = app
        .post(
            "/v1/policy/tools",
            &json!({"servr": "db", "tools": [{"name": "drop_table"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["detail"].as_str().unwrap().contains("servr"),
        "{error}"
    );
}
