//! `signoff proxy` with arbitrary lines and odd JSON-RPC messages on its stdin, in front
//! of the fixture server: it stays up, every line it writes is JSON-RPC, `tools/list`
//! answers after each input, and nothing reaches the upstream as a tool call that the
//! gate did not approve (every call the fixture ran is an executed approval of that
//! tool with those arguments). `SIGNOFF_FUZZ_CASES` or `SIGNOFF_FUZZ_SECONDS` run
//! longer (see `common::fuzz`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use crate::common::fuzz;
use crate::helpers::*;

/// Cases per target in a plain `cargo test`.
const SHORT: u32 = 48;

/// The proxy with raw lines on its stdio, and the ids of its `tools/list` probes.
struct Raw {
    child: Mutex<tokio::process::Child>,
    stdin: Mutex<tokio::process::ChildStdin>,
    lines: Mutex<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
    probe: AtomicI64,
}

impl Raw {
    async fn start(h: &Harness) -> Raw {
        let fixture = fixture();
        let flags = ["--hold", "200ms"];
        let mut child = h
            .proxy_command(&flags, &[fixture.to_str().unwrap()])
            .spawn()
            .unwrap();
        let raw = Raw {
            stdin: Mutex::new(child.stdin.take().unwrap()),
            lines: Mutex::new(BufReader::new(child.stdout.take().unwrap()).lines()),
            child: Mutex::new(child),
            probe: AtomicI64::new(1_000_000),
        };
        raw.send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "1"}}})
            .to_string()
            .as_bytes(),
        )
        .await;
        raw.answer(json!(1)).await.expect("initialized");
        raw.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        raw
    }

    async fn send(&self, line: &[u8]) {
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(line).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Reads until the answer to `id`; every line on the way must be JSON-RPC.
    async fn answer(&self, id: Value) -> Result<Value, String> {
        let mut lines = self.lines.lock().await;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .map_err(|_| format!("no answer to {id} in time"))?
                .map_err(|error| error.to_string())?
                .ok_or("the proxy closed its stdout")?;
            let message: Value = serde_json::from_str(&line)
                .map_err(|error| format!("not JSON ({error}): {line}"))?;
            check_json_rpc(&message)?;
            if message["id"] == id && message.get("method").is_none() {
                return Ok(message);
            }
        }
    }

    /// A `tools/list` still answers, with the fixture's tools.
    async fn probe(&self) -> Result<(), String> {
        let id = self.probe.fetch_add(1, Ordering::SeqCst);
        let list = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
        self.send(list.to_string().as_bytes()).await;
        let answer = self.answer(json!(id)).await?;
        let tools = answer["result"]["tools"].as_array().cloned();
        let listed = tools.is_some_and(|tools| tools.iter().any(|t| t["name"] == "echo"));
        if !listed {
            return Err(format!("tools/list answered {answer}"));
        }
        match self.child.lock().await.try_wait() {
            Ok(None) => Ok(()),
            other => Err(format!("the proxy exited: {other:?}")),
        }
    }
}

/// A response, error, request or notification as JSON-RPC 2.0 has them.
fn check_json_rpc(message: &Value) -> Result<(), String> {
    let ok = message["jsonrpc"] == "2.0"
        && match (
            message.get("result"),
            message.get("error"),
            message.get("method"),
        ) {
            (Some(_), None, None) => message.get("id").is_some(),
            // MCP 2026-07-28: an error leaves the id out when it could not be read.
            (None, Some(error), None) => error["code"].is_i64() && error["message"].is_string(),
            (None, None, Some(method)) => method.is_string(),
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!("not JSON-RPC: {message}"))
    }
}

/// Values of any type, for any field.
fn odd() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(json!("2.0")),
        Just(json!("echo")),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_/]{1,10}", inner, 0..3).prop_map(|m| json!(m)),
        ]
    })
}

/// A tool call's params: one of the fixture's tools (but those that crash, wait for the
/// client's model or run long) or another, with odd arguments, `_meta` or `task`.
fn call_params() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "echo",
            "fail",
            "delete_things",
            "drop_table",
            "chatty",
            "nope"
        ])
        .prop_map(Value::from),
        odd(),
    ];
    let arguments = prop_oneof![
        3 => prop::collection::btree_map("[a-z]{1,6}", odd(), 0..4).prop_map(|m| Some(json!(m))),
        1 => Just(None),
        1 => odd().prop_map(Some),
    ];
    let extra = prop_oneof![
        3 => Just(None),
        1 => odd().prop_map(|token| Some(("_meta", json!({"progressToken": token})))),
        1 => odd().prop_map(|v| Some(("_meta", v))),
        1 => odd().prop_map(|v| Some(("task", v))),
    ];
    (name, arguments, extra).prop_map(|(name, arguments, extra)| {
        let mut params = json!({"name": name});
        if let Some(arguments) = arguments {
            params["arguments"] = arguments;
        }
        if let Some((key, value)) = extra {
            params[key] = value;
        }
        params
    })
}

/// A message with each part usual, odd or missing; ids start below the probes'.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        4 => Just(Some(json!("tools/call"))),
        2 => prop::sample::select(vec![
            "tools/list", "initialize", "ping", "resources/read", "prompts/get",
            "notifications/cancelled", "notifications/progress", "tasks/get", "tasks/cancel",
            "tasks/result", "completion/complete", "logging/setLevel", "no/such",
        ])
        .prop_map(|m| Some(json!(m))),
        1 => Just(None),
        1 => odd().prop_map(Some),
    ];
    let params = prop_oneof![
        4 => call_params().prop_map(Some),
        1 => Just(None),
        1 => odd().prop_map(Some),
    ];
    let usual_or_odd = |usual: Value| {
        prop_oneof![
            4 => Just(Some(usual)),
            1 => Just(None),
            1 => odd().prop_map(Some),
        ]
    };
    (
        usual_or_odd(json!("2.0")),
        usual_or_odd(json!(7)),
        method,
        params,
    )
        .prop_map(|(jsonrpc, id, method, params)| {
            let mut message = serde_json::Map::new();
            for (key, value) in [
                ("jsonrpc", jsonrpc),
                ("id", id),
                ("method", method),
                ("params", params),
            ] {
                if let Some(value) = value {
                    message.insert(key.to_owned(), value);
                }
            }
            Value::Object(message).to_string().into_bytes()
        })
}

/// Any line: text, JSON-looking text or bytes (no newline: one line is one input).
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "\\PC{0,120}".prop_map(String::into_bytes),
        "[\\[\\]{}\":,0-9a-z./ ]{0,64}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..120),
    ]
}

/// Every call the fixture ran is an executed approval of that tool with those
/// arguments, each approval spent once.
async fn only_approved_calls_ran(h: &Harness) {
    let rows: Vec<(String, String)> = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&h.app.db.url)
            .await
            .unwrap();
        sqlx::query_as(
            "SELECT tool_name, parameters FROM pending_approvals WHERE status = 'executed'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
    };
    let mut executed: Vec<Value> = rows
        .into_iter()
        .map(|(tool, params)| json!({"tool": tool, "arguments": serde_json::from_str::<Value>(&params).unwrap()}))
        .collect();
    let ran = h.ran();
    eprintln!(
        "fuzz: the upstream ran {} calls, each an executed approval",
        ran.len()
    );
    for ran in ran {
        let spent = executed.iter().position(|e| *e == ran);
        let spent = spent.unwrap_or_else(|| panic!("{ran} ran without an approval"));
        executed.swap_remove(spent);
    }
}

async fn fuzz_the_proxy<S: Strategy<Value = Vec<u8>>>(inputs: S) {
    let h = harness().await;
    let raw = Raw::start(&h).await;
    fuzz::run_async(SHORT, &inputs, |line| {
        let raw = &raw;
        async move {
            raw.send(&line).await;
            raw.probe().await.map_err(TestCaseError::fail)
        }
    });
    // A well-formed call still runs, through the gate.
    let call = json!({"jsonrpc": "2.0", "id": "last", "method": "tools/call",
        "params": {"name": "echo", "arguments": {"after": "fuzzing"}}});
    raw.send(call.to_string().as_bytes()).await;
    let answer = raw.answer(json!("last")).await.unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"], r#"echo ran with {"after":"fuzzing"}"#,
        "{answer}"
    );
    let last = json!({"tool": "echo", "arguments": {"after": "fuzzing"}});
    assert!(h.ran().contains(&last));
    only_approved_calls_ran(&h).await;
    let _ = raw.child.lock().await.start_kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_lines_on_the_proxys_stdin_leave_it_serving() {
    fuzz_the_proxy(line()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_json_rpc_messages_to_the_proxy_get_json_rpc_answers_and_run_only_approved_calls() {
    fuzz_the_proxy(message()).await;
}
