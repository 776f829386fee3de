//! `/mcp`: signoff's own MCP endpoint, driven by rmcp's streamable HTTP client. The
//! three tools do what the API does, answer with its JSON as structured content and a
//! line for the model, and refuse (`isError`) whatever the API refuses.

use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, Implementation};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use signoff::approval::{Decider, Event};
use signoff::clock::Clock;

use crate::common::app::{self, Options};
use crate::common::{self, TestDb};
use crate::helpers::*;

crate::on_both_backends!(an_agent_asks_waits_and_spends_an_approval_through_the_mcp_tools);

type Client = RunningService<RoleClient, ClientConfig>;

async fn connect(app: &TestApp, token: &str) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(app.url("/mcp")).auth_header(token);
    ClientConfig::new(Default::default(), Implementation::new("test-agent", "1.0"))
        .serve(StreamableHttpClientTransport::with_client(
            crate::common::http(),
            config,
        ))
        .await
        .expect("the MCP client connects")
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .expect("the call is answered")
}

/// The line for the model, which comes first; the JSON follows it as text too, for
/// clients that read only `content` (MCP: structured content SHOULD also be text).
fn text(result: &CallToolResult) -> String {
    assert_eq!(
        result.content.len(),
        2,
        "one line for the model, then the JSON: {result:?}"
    );
    let json = &result.content[1].as_text().expect("the JSON as text").text;
    let json: Value = serde_json::from_str(json).expect("the second block is JSON");
    assert_eq!(Some(&json), result.structured_content.as_ref());
    result.content[0].as_text().expect("text").text.clone()
}

fn structured(result: &CallToolResult) -> &Value {
    result
        .structured_content
        .as_ref()
        .expect("structured content")
}

fn refused(result: &CallToolResult, code: &str) -> String {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    assert_error(structured(result), code);
    text(result)
}

async fn an_agent_asks_waits_and_spends_an_approval_through_the_mcp_tools(db: TestDb) {
    let app = spawn_on(db).await;
    let client = connect(&app, &app.token).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "request_approval",
            "check_approval_status",
            "execute_approved"
        ]
    );
    // request_approval advertises every field POST /v1/approvals takes, as its
    // OpenAPI document lists them: execute_if_approved too.
    let schema = &tools[0].input_schema;
    let properties = schema["properties"].as_object().expect("properties");
    assert_eq!(
        properties["execute_if_approved"]["type"], "boolean",
        "{schema:?}"
    );
    let (status, doc) = app.get("/openapi.json").await;
    assert!(status.is_success(), "{status}: {doc}");
    let fields = doc["components"]["schemas"]["CreateRequest"]["properties"]
        .as_object()
        .expect("the CreateRequest schema's properties");
    assert_eq!(
        properties.keys().collect::<std::collections::BTreeSet<_>>(),
        fields.keys().collect::<std::collections::BTreeSet<_>>()
    );

    let params = json!({"service": "api", "environment": "prod"});
    let asked = call(
        &client,
        "request_approval",
        json!({"tool_name": "deploy_api", "parameters": params, "server": "ci"}),
    )
    .await;
    assert_eq!(asked.is_error, Some(false), "{asked:?}");
    let view = structured(&asked);
    assert_eq!(
        (view["status"].as_str(), view["server"].as_str()),
        (Some("pending"), Some("ci"))
    );
    assert_eq!(
        view["check_status_with"],
        format!(
            "GET /v1/approvals/{}",
            view["approval_id"].as_str().unwrap()
        )
    );
    let id = view["approval_id"].as_str().unwrap().to_owned();
    let line = text(&asked);
    assert!(
        line.contains("waiting") && line.contains("check_approval_status"),
        "{line}"
    );
    // No Slack here: the route's channel is where nobody is asked.
    assert!(!line.contains("Slack"), "{line}");

    // Not approved yet: nothing can be spent.
    let early = call(
        &client,
        "execute_approved",
        json!({"approval_id": id, "parameters": params}),
    )
    .await;
    assert!(refused(&early, "conflict").contains("pending"));

    wait_for_the_decision(&app, &id).await;
    spend_only_the_approved_call(&client, &id, &params).await;
    client.cancel().await.unwrap();
}

/// With Slack, a pending request's line names the channel it is posted to.
#[tokio::test]
async fn a_pending_request_names_its_slack_channel_when_slack_is_set_up() {
    let app = spawn_with_slack().await;
    let client = connect(&app, &app.token).await;
    let params = json!({"service": "api", "environment": "prod"});
    let asked = call(
        &client,
        "request_approval",
        json!({"tool_name": "deploy_api", "parameters": params}),
    )
    .await;
    let line = text(&asked);
    assert!(line.contains("in Slack channel C0APPROVALS"), "{line}");
    client.cancel().await.unwrap();
}

/// `check_approval_status` with a long wait parks (as a long-poll) until the (two)
/// approvals commit, and answers the moment they do, saying what to do next.
async fn wait_for_the_decision(app: &TestApp, id: &str) {
    let waiting = {
        let id = id.to_owned();
        let client = connect(app, &app.token).await;
        tokio::spawn(async move {
            let result = call(
                &client,
                "check_approval_status",
                json!({"approval_id": id, "wait": 30}),
            )
            .await;
            client.cancel().await.unwrap();
            result
        })
    };
    // Parked before the decision: the answer below is the wake-up, not a first read.
    app.until_metric("signoff_long_polls_waiting", 1.0).await;
    assert!(
        !waiting.is_finished(),
        "the wait answered before a decision"
    );
    app.approve(id, "U0ALICE").await;
    app.approve(id, "U0BOB").await;
    let decided = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends with the decision")
        .unwrap();
    assert_eq!(structured(&decided)["status"], "approved");
    let line = text(&decided);
    assert!(line.contains("execute_approved"), "{line}");
}

/// `execute_approved` refuses other parameters or another tool, spends the approved
/// call once, and refuses it after.
async fn spend_only_the_approved_call(client: &Client, id: &str, params: &Value) {
    let other = json!({"service": "api", "environment": "staging"});
    let wrong = call(
        client,
        "execute_approved",
        json!({"approval_id": id, "parameters": other}),
    )
    .await;
    assert!(refused(&wrong, "conflict").contains("differ"));
    let wrong_tool = call(
        client,
        "execute_approved",
        json!({"approval_id": id, "parameters": params, "tool_name": "deploy_web"}),
    )
    .await;
    refused(&wrong_tool, "conflict");

    let spent = call(
        client,
        "execute_approved",
        json!({"approval_id": id, "parameters": params, "tool_name": "deploy_api"}),
    )
    .await;
    assert_eq!(spent.is_error, Some(false), "{spent:?}");
    assert_eq!(structured(&spent)["status"], "executed");
    assert_eq!(&structured(&spent)["parameters"], params);
    let again = call(
        client,
        "execute_approved",
        json!({"approval_id": id, "parameters": params}),
    )
    .await;
    assert!(refused(&again, "conflict").contains("already executed"));
}

#[tokio::test]
async fn outcomes_at_once_are_said_in_the_line_for_the_model() {
    let app = spawn_app().await;
    let client = connect(&app, &app.token).await;
    let auto = call(
        &client,
        "request_approval",
        json!({"tool_name": "get_user", "parameters": {"id": 5}}),
    )
    .await;
    assert_eq!(structured(&auto)["status"], "approved");
    assert!(text(&auto).contains("execute_approved"));
    let spent = call(
        &client,
        "request_approval",
        json!({"tool_name": "get_user", "parameters": {"id": 6}, "execute_if_approved": true}),
    )
    .await;
    assert_eq!(structured(&spent)["spent_by_this_request"], true);
    let line = text(&spent);
    assert!(
        line.contains("this request executed it: run the call now"),
        "{line}"
    );
    let denied = call(
        &client,
        "request_approval",
        json!({"tool_name": "drop_table", "parameters": {}}),
    )
    .await;
    assert_eq!(
        denied.is_error,
        Some(false),
        "a denial is an answer, not a refusal"
    );
    assert_eq!(structured(&denied)["status"], "denied");
    let line = text(&denied);
    assert!(
        line.contains("denied by policy") && line.contains("Do not run"),
        "{line}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_arguments_are_refused_as_the_api_refuses_them_and_create_nothing() {
    let app = spawn_app().await;
    let client = connect(&app, &app.token).await;
    let before = app.store.audit_head().await.unwrap();
    for (tool, args, code) in [
        (
            "request_approval",
            json!({"tool_name": "x y", "parameters": {}}),
            "unprocessable",
        ),
        (
            "request_approval",
            json!({"tool_name": "deploy_api", "parameters": [1]}),
            "unprocessable",
        ),
        (
            "request_approval",
            json!({"parameters": {}}),
            "unprocessable",
        ),
        ("check_approval_status", json!({}), "unprocessable"),
        (
            "check_approval_status",
            json!({"approval_id": "nope"}),
            "not_found",
        ),
        (
            "check_approval_status",
            json!({"approval_id": uuid(), "wait": -1}),
            "unprocessable",
        ),
        (
            "execute_approved",
            json!({"approval_id": uuid()}),
            "unprocessable",
        ),
        (
            "execute_approved",
            json!({"approval_id": uuid(), "parameters": {}}),
            "not_found",
        ),
        (
            // A misspelt tool_name would otherwise skip the tool check.
            "execute_approved",
            json!({"approval_id": uuid(), "parameters": {}, "tool": "drop_users"}),
            "unprocessable",
        ),
    ] {
        let result = call(&client, tool, args.clone()).await;
        let line = refused(&result, code);
        assert!(line.starts_with("Refused: "), "{tool} {args}: {line}");
    }
    assert_eq!(
        app.store.audit_head().await.unwrap(),
        before,
        "nothing happened"
    );
    client.cancel().await.unwrap();
}

/// After *Edit & approve* the line says the parameters to run are an approver's, and
/// the JSON after it carries them, for clients that read no structured content.
#[tokio::test]
async fn after_an_edit_the_line_says_so_and_the_text_carries_the_edited_parameters() {
    let app = spawn_app().await;
    let client = connect(&app, &app.token).await;
    let asked = call(
        &client,
        "request_approval",
        json!({"tool_name": "transfer", "parameters": {"amount": 900}}),
    )
    .await;
    let id = structured(&asked)["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let edit = Event::EditApprove {
        by: Decider::approver("U0ALICE"),
        parameters: json!({"amount": 90}),
        parameters_shown: None,
    };
    app.store
        .apply(id.parse().unwrap(), edit, app.clock.now())
        .await
        .unwrap();
    let checked = call(&client, "check_approval_status", json!({"approval_id": id})).await;
    let line = text(&checked);
    assert!(
        line.contains("approved") && line.contains("an approver edited them"),
        "{line}"
    );
    let json: Value = serde_json::from_str(&checked.content[1].as_text().unwrap().text).unwrap();
    assert_eq!(
        (&json["parameters"], &json["original_parameters"]),
        (&json!({"amount": 90}), &json!({"amount": 900}))
    );
    let spent = call(
        &client,
        "execute_approved",
        json!({"approval_id": id, "parameters": {"amount": 90}}),
    )
    .await;
    assert!(
        text(&spent).contains("an approver edited them"),
        "{spent:?}"
    );

    let plain = call(
        &client,
        "request_approval",
        json!({"tool_name": "get_user", "parameters": {"id": 5}}),
    )
    .await;
    assert!(!text(&plain).contains("edited"), "{plain:?}");
    client.cancel().await.unwrap();
}

/// A tool this server does not have is a protocol error (MCP: "Unknown tool",
/// invalid params), not a refused call.
#[tokio::test]
async fn an_unknown_tool_is_a_protocol_error() {
    let app = spawn_app().await;
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"request_aproval","arguments":{}}}"#;
    let response = post(&app, Some(&app.token), &[], body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, answer) = read(response).await;
    assert_eq!(
        (answer["id"].as_i64(), answer["error"]["code"].as_i64()),
        (Some(9), Some(-32602)),
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Unknown tool: \"request_aproval\"")
            && message.contains("request_approval"),
        "{message}"
    );
    assert!(answer.get("result").is_none(), "{answer}");
}

fn uuid() -> String {
    "0b0d3c2e-3f0a-4c1b-9a3e-7d2f5c1e8a90".into()
}

#[tokio::test]
async fn another_tokens_approval_is_not_found_through_mcp_either() {
    let app = spawn_app().await;
    let id = app.request("deploy_api", json!({"service": "a"})).await;
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let client = connect(&app, &other).await;
    for (tool, args) in [
        ("check_approval_status", json!({"approval_id": id})),
        (
            "execute_approved",
            json!({"approval_id": id, "parameters": {"service": "a"}}),
        ),
    ] {
        refused(&call(&client, tool, args).await, "not_found");
    }
    client.cancel().await.unwrap();
}

/// One JSON-RPC message posted straight to `/mcp`.
async fn post(
    app: &TestApp,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

#[tokio::test]
async fn without_a_valid_token_mcp_answers_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    for token in [None, Some("not-a-token")] {
        let response = post(&app, token, &[], LIST).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (_, body) = read(response).await;
        assert_error(&body, "unauthorized");
    }
    let ok = post(&app, Some(&app.token), &[], LIST).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_and_the_public_one_is_served() {
    let app = app::spawn(
        common::sqlite(),
        Options::new(POLICY).with_public_url("https://signoff.example.com"),
    )
    .await;
    let app = TestApp::from(app);
    let token = Some(app.token.as_str());
    for headers in [
        [("host", "evil.example.net")],
        [("origin", "https://evil.example.net")],
        [("origin", "http://signoff.example.com")],
        // The public URL names no port: its origin is the default port's only.
        [("origin", "https://signoff.example.com:8443")],
    ] {
        let response = post(&app, token, &headers, LIST).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
    }
    for headers in [
        [("host", "signoff.example.com")],
        // As browsers send the default port's origin: without the port.
        [("origin", "https://signoff.example.com")],
        [("origin", "https://signoff.example.com:443")],
        [("origin", "http://localhost:3000")],
    ] {
        let response = post(&app, token, &headers, LIST).await;
        assert_eq!(response.status(), StatusCode::OK, "{headers:?}");
    }
}

/// Arguments that cannot be kept as sent (a number that would be rounded, a key
/// twice) are refused by the tool as the API refuses the same body (422), before
/// anything reads them; the envelope's own such problems stay a JSON-RPC error.
#[tokio::test]
async fn arguments_that_cannot_be_kept_exactly_are_refused_as_the_api_refuses_them() {
    let app = spawn_app().await;
    let token = Some(app.token.as_str());
    let before = app.store.audit_head().await.unwrap();
    for args in [
        r#"{"tool_name":"get_user","parameters":{"id":123456789012345678901234567890}}"#,
        r#"{"tool_name":"get_user","parameters":{"id":1,"id":2}}"#,
    ] {
        let (status, api) = app.post_raw("/v1/approvals", args.to_owned()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{api}");
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"request_approval","arguments":{args}}}}}"#
        );
        let response = post(&app, token, &[], &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (_, answer) = read(response).await;
        assert_eq!(answer["id"], 7, "{answer}");
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{answer}");
        assert_eq!(
            result["structuredContent"], api,
            "the API's error: {answer}"
        );
        assert_eq!(
            result["content"][0]["text"],
            format!("Refused: {}", api["detail"].as_str().unwrap())
        );
    }
    for body in [
        // A key twice in the envelope, and a number in its `_meta`.
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"request_approval","name":"x","arguments":{"tool_name":"get_user","parameters":{}}}}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"request_approval","arguments":{"tool_name":"get_user","parameters":{"id":1,"id":2}},"_meta":{"n":123456789012345678901234567890}}}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"ping","params":{"n":123456789012345678901234567890}}"#,
    ] {
        let response = post(&app, token, &[], body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let (_, answer) = read(response).await;
        assert_eq!(
            (answer["id"].as_i64(), answer["error"]["code"].as_i64()),
            (Some(7), Some(-32602)),
            "{answer}"
        );
    }
    let too_big = format!(
        r#"{{"jsonrpc":"2.0","id":8,"method":"ping","pad":"{}"}}"#,
        "x".repeat(1 << 21)
    );
    assert_eq!(
        post(&app, token, &[], &too_big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        app.store.audit_head().await.unwrap(),
        before,
        "nothing happened"
    );
}

/// Found by fuzzing (tests/api/mcp_fuzz.rs): rmcp answered these with a plain-text 415
/// ("Unsupported Media Type") although the content type was right.
#[tokio::test]
async fn a_body_that_is_no_json_rpc_message_gets_a_json_rpc_error() {
    let app = spawn_app().await;
    let token = Some(app.token.as_str());
    // An id that cannot be read is left out (MCP's RequestId is never null).
    for (body, id, code) in [
        ("", None, -32700),
        ("{\"jsonrpc\":\"2.0\",\"id\":7,", None, -32700),
        (r#"{"jsonrpc":"2.0","id":7}"#, Some(json!(7)), -32600),
        (
            r#"{"jsonrpc":"1.0","id":"a","method":"ping"}"#,
            Some(json!("a")),
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":{"x":1},"method":null}"#,
            None,
            -32600,
        ),
        ("[]", None, -32600),
    ] {
        let response = post(&app, token, &[], body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let (_, answer) = read(response).await;
        assert_eq!(
            (
                &answer["jsonrpc"],
                answer.get("id"),
                answer["error"]["code"].as_i64()
            ),
            (&json!("2.0"), id.as_ref(), Some(code)),
            "{body}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(post(&app, token, &[], LIST).await.status(), StatusCode::OK);
}
