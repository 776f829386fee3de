//! `/mcp` through real HTTP: arbitrary bodies and JSON-RPC messages built from odd
//! parts (another `jsonrpc`, no id or a huge one, params that are not an object,
//! unknown methods, tool calls with odd arguments). Each answer is a JSON-RPC message
//! (or an empty 202 for a notification) or a 4xx; never a 5xx, never a hang; a refusal
//! changes nothing; and `tools/list` still answers afterwards.
//! `SIGNOFF_FUZZ_CASES` or `SIGNOFF_FUZZ_SECONDS` run longer (see `common::fuzz`).

use std::time::Duration;

use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::fuzz;
use crate::fuzz::{Splice, change, mutate, odd_value, raw_token, splice, spliced};
use crate::helpers::*;

/// Cases per target in a plain `cargo test`.
const SHORT: u32 = 64;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

/// The app and an approval that is already decided (a wait on it answers at once).
struct Target {
    app: TestApp,
    approved: String,
}

async fn target() -> Target {
    let app = spawn_app().await;
    let approved = app.request("get_user", json!({"id": 5})).await;
    Target { app, approved }
}

/// A JSON-RPC message's part: absent, an odd value, or raw text.
fn part(usual: &'static str) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(Some(usual.to_owned())),
        1 => Just(None),
        1 => odd_value().prop_map(|v| Some(v.to_string())),
        1 => raw_token().prop_map(Some),
    ]
}

fn method() -> impl Strategy<Value = Option<String>> {
    let known = prop::sample::select(vec![
        "tools/call",
        "tools/list",
        "initialize",
        "ping",
        "notifications/initialized",
        "notifications/cancelled",
        "resources/list",
        "prompts/get",
        "tasks/get",
        "logging/setLevel",
    ]);
    prop_oneof![
        6 => known.prop_map(|m| Some(json!(m).to_string())),
        1 => Just(None),
        1 => "\\PC{0,12}".prop_map(|m| Some(json!(m).to_string())),
        1 => odd_value().prop_map(|v| Some(v.to_string())),
    ]
}

/// Arguments of each tool, valid, then changed field by field.
fn arguments(approved: &str) -> impl Strategy<Value = String> {
    let unknown = "0b0d3c2e-3f0a-4c1b-9a3e-7d2f5c1e8a90";
    let bases = vec![
        json!({"tool_name": "get_user", "parameters": {"id": 5}, "server": "db"}),
        json!({"tool_name": "deploy_api", "parameters": {"service": "x"}}),
        json!({"approval_id": approved, "wait": 0}),
        json!({"approval_id": unknown, "wait": 0.5}),
        json!({"approval_id": approved, "parameters": {"id": 5}, "tool_name": "get_user"}),
    ];
    (
        prop::sample::select(bases),
        prop::collection::vec(change(), 0..3),
    )
        .prop_map(|(base, changes)| {
            String::from_utf8(mutate(&base, &changes, &Splice::None)).expect("text")
        })
}

/// `params` of a message: a tool call's (a known tool or not, odd arguments, odd
/// `_meta`), or anything.
fn params(approved: &str) -> impl Strategy<Value = Option<String>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "request_approval",
            "check_approval_status",
            "execute_approved",
        ])
        .prop_map(|n| json!(n).to_string()),
        "\\PC{0,10}".prop_map(|n| json!(n).to_string()),
        odd_value().prop_map(|v| v.to_string()),
    ];
    let arguments = prop_oneof![
        4 => arguments(approved).prop_map(Some),
        1 => Just(None),
        1 => odd_value().prop_map(|v| Some(v.to_string())),
        1 => raw_token().prop_map(Some),
    ];
    let meta = prop_oneof![
        3 => Just(None),
        1 => odd_value().prop_map(|v| Some(json!({"progressToken": v}).to_string())),
        1 => odd_value().prop_map(|v| Some(v.to_string())),
    ];
    let call = (name, arguments, meta).prop_map(|(name, arguments, meta)| {
        let mut fields = vec![format!(r#""name":{name}"#)];
        fields.extend(arguments.map(|a| format!(r#""arguments":{a}"#)));
        fields.extend(meta.map(|m| format!(r#""_meta":{m}"#)));
        Some(format!("{{{}}}", fields.join(",")))
    });
    prop_oneof![
        3 => call,
        1 => Just(None),
        1 => Just(Some("{}".to_owned())),
        1 => odd_value().prop_map(|v| Some(v.to_string())),
        1 => raw_token().prop_map(Some),
    ]
}

/// A whole message as text: its parts joined, then spliced.
fn message(approved: &str) -> impl Strategy<Value = Vec<u8>> {
    (
        part(r#""2.0""#),
        part("7"),
        method(),
        params(approved),
        splice(),
    )
        .prop_map(|(jsonrpc, id, method, params, splice)| {
            let fields: Vec<String> = [
                ("jsonrpc", jsonrpc),
                ("id", id),
                ("method", method),
                ("params", params),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| format!(r#""{key}":{value}"#)))
            .collect();
            spliced(format!("{{{}}}", fields.join(",")).into_bytes(), &splice)
        })
}

/// Whether `message` is a JSON-RPC response or error (`answer`), or a notification or
/// request from the server.
fn json_rpc(message: &Value) -> Result<bool, String> {
    let ok = message["jsonrpc"] == "2.0"
        && match (message.get("result"), message.get("error")) {
            (Some(result), None) => result.is_object() && message.get("id").is_some(),
            // MCP 2026-07-28: an error leaves the id out when it could not be read.
            (None, Some(error)) => error["code"].is_i64() && error["message"].is_string(),
            (None, None) => message["method"].is_string(),
            (Some(_), Some(_)) => false,
        };
    if ok {
        Ok(message.get("method").is_none())
    } else {
        Err(format!("not JSON-RPC: {message}"))
    }
}

/// Whether an answer refused the call: a JSON-RPC error or an `isError` result.
fn refused(message: &Value) -> bool {
    message.get("error").is_some() || message["result"]["isError"] == true
}

impl Target {
    async fn post(&self, body: Vec<u8>) -> (StatusCode, String, String) {
        let sent = self
            .app
            .http
            .post(self.app.url("/mcp"))
            .bearer_auth(&self.app.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body)
            .send();
        let answer = async {
            let response = sent.await.expect("request sent");
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .map_or(String::new(), |v| v.to_str().unwrap_or("?").to_owned());
            (status, kind, response.text().await.expect("body"))
        };
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("answered in time")
    }

    /// Posts `body` and checks the answer; a refusal must have changed nothing.
    async fn check(&self, body: Vec<u8>) -> Result<(), TestCaseError> {
        let before = self.app.store.audit_head().await.unwrap();
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (status, kind, text) = self.post(body).await;
        let at = format!("{status} {kind} {text:?} for {shown:?}");
        prop_assert!(status.is_success() || status.is_client_error(), "{}", at);
        let messages: Vec<Value> = if kind.starts_with("text/event-stream") {
            let data = text.lines().filter_map(|line| line.strip_prefix("data:"));
            let data: Vec<&str> = data.map(str::trim).filter(|d| !d.is_empty()).collect();
            data.iter()
                .map(|d| serde_json::from_str(d))
                .collect::<Result<_, _>>()
        } else if text.is_empty() {
            Ok(Vec::new())
        } else {
            serde_json::from_str(&text).map(|message| vec![message])
        }
        .map_err(|error| TestCaseError::fail(format!("{error}: {at}")))?;
        let mut refusal = status.is_client_error();
        if status == StatusCode::ACCEPTED {
            prop_assert!(messages.is_empty(), "{}", at);
        } else if status.is_success() {
            let answers: Vec<bool> = messages
                .iter()
                .map(json_rpc)
                .collect::<Result<_, _>>()
                .map_err(|error| TestCaseError::fail(format!("{error}: {at}")))?;
            prop_assert_eq!(answers.iter().filter(|a| **a).count(), 1, "{}", at);
            refusal = messages.iter().any(refused);
        } else if let Some(message) = messages.first() {
            // Refused before rmcp (the API's error) or by it (JSON-RPC).
            let api = message["error"].is_string() && message["detail"].is_string();
            prop_assert!(api || json_rpc(message).is_ok(), "{}", at);
        } else {
            prop_assert!(!text.is_empty(), "a refusal says why: {}", at);
        }
        if refusal {
            let after = self.app.store.audit_head().await.unwrap();
            prop_assert_eq!(after, before, "a refusal changed nothing: {}", at);
        }
        Ok(())
    }

    async fn still_lists_its_tools(&self) {
        let (status, _, text) = self.post(LIST.as_bytes().to_vec()).await;
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["result"]["tools"].as_array().map(Vec::len), Some(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bodies_on_mcp_are_answered_without_a_server_error() {
    let t = target().await;
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "[\\[\\]{}\":,0-9a-z./ ]{0,64}".prop_map(String::into_bytes),
    ];
    fuzz::run_async(SHORT, &bodies, |body| t.check(body));
    t.still_lists_its_tools().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_json_rpc_messages_on_mcp_get_protocol_errors_and_change_nothing() {
    let t = target().await;
    let messages = message(&t.approved);
    fuzz::run_async(SHORT, &messages, |body| t.check(body));
    t.still_lists_its_tools().await;
}
