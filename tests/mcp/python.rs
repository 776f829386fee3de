//! The official Python SDK (`mcp` from PyPI, tests/python/requirements.txt) as the
//! client: a second implementation checks the proxy's wire format.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

/// `tests/python/mcp_client.py` (the official Python SDK) driving the proxy around the
/// fixture server; it prints one JSON line per step.
struct PythonClient {
    _process: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl PythonClient {
    fn start(h: &Harness, python: std::path::PathBuf) -> Self {
        Self::run(h, python, "mcp_client.py")
    }

    /// `tests/python/SCRIPT` with the proxy's command line.
    fn run(h: &Harness, python: std::path::PathBuf, script: &str) -> Self {
        let fixture = fixture();
        let proxy = h.proxy_command(&[], &[fixture.to_str().unwrap()]);
        let std = proxy.as_std();
        let mut command = tokio::process::Command::new(python);
        command
            .arg(format!(
                "{}/tests/python/{script}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(std.get_program())
            .args(std.get_args())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // The script starts the proxy in its own environment: the proxy's (its token,
        // and FIXTURE_LOG for the fixture behind it).
        for (name, value) in std.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut process = command.spawn().unwrap();
        let lines = BufReader::new(process.stdout.take().unwrap()).lines();
        PythonClient {
            _process: process,
            lines,
        }
    }

    /// The client's next step, as it printed it.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

#[tokio::test]
async fn the_official_python_sdk_drives_the_proxy_through_approve_deny_and_edit() {
    let Some(python) = crate::common::deps::python("mcp") else {
        return;
    };
    let h = harness().await;
    let mut client = PythonClient::start(&h, python);
    let mut next = async || client.next().await;
    let tools = next().await;
    assert!(
        tools["names"].as_array().unwrap().contains(&json!("echo"))
            && !tools["names"]
                .as_array()
                .unwrap()
                .contains(&json!("drop_table")),
        "{tools}"
    );
    assert_eq!(next().await["tool"], "echo");
    let echoed = next().await;
    assert_eq!(echoed["texts"], json!([r#"echo ran with {"a":1}"#]));

    assert_eq!(next().await["arguments"], json!({"ids": [1]}));
    let id = h.posted(1).await;
    h.approve(&id, "U0ALICE").await;
    let approved = next().await;
    assert_eq!(
        (approved["is_error"].clone(), approved["texts"].clone()),
        (
            json!(false),
            json!([r#"delete_things ran with {"ids":[1]}"#])
        )
    );

    assert_eq!(next().await["arguments"], json!({"ids": [2]}));
    let id = h.posted(2).await;
    h.submit(&id, "U0BOB", "deny_reason", "wrong ids").await;
    let denied = next().await;
    assert_eq!(
        denied["texts"],
        json!(["Denied by U0BOB: wrong ids. The call was not run."])
    );
    assert_eq!(denied["is_error"], true);

    assert_eq!(next().await["arguments"], json!({"ids": [3]}));
    let id = h.posted(3).await;
    h.submit(&id, "U0ALICE", "edit_approve", r#"{"ids": [30]}"#)
        .await;
    let edited = next().await;
    assert_eq!(
        edited["texts"][1], r#"delete_things ran with {"ids":[30]}"#,
        "{edited}"
    );
    let ran: Vec<Value> = h
        .ran()
        .into_iter()
        .map(|call| call["arguments"].clone())
        .collect();
    assert_eq!(
        ran,
        [json!({"a": 1}), json!({"ids": [1]}), json!({"ids": [30]})]
    );
}

/// The SDK on 2026-07-28 answers the upstream's sampling, elicitation and roots requests
/// through the proxy's input_required rounds; each call is approved once and runs once.
#[tokio::test]
async fn the_official_python_sdk_on_2026_07_28_answers_the_upstreams_requests_in_rounds() {
    let Some(python) = crate::common::deps::python("mcp") else {
        return;
    };
    let h = harness().await;
    let mut client = PythonClient::run(&h, python, "mcp_rounds.py");
    for (tool, expected) in [
        ("ask_model", "python answers 'Say hello'"),
        ("ask_user", "python-qa"),
        ("roots", "file:///python/project"),
    ] {
        let answer = client.next().await;
        assert_eq!(answer["tool"], tool, "{answer}");
        assert_eq!(answer["is_error"], false, "{answer}");
        let text = answer["texts"][0].as_str().unwrap_or_default();
        assert!(text.contains(expected), "{answer}");
    }
    for tool in ["ask_model", "ask_user", "roots"] {
        let runs = h.ran().iter().filter(|call| call["tool"] == tool).count();
        assert_eq!(runs, 1, "{tool}");
        let asked = format!(
            "SELECT COUNT(*) FROM pending_approvals WHERE tool_name = '{tool}' \
             AND status = 'executed' AND requested_by = 'python-modern'"
        );
        assert_eq!(
            crate::common::raw_count(&h.app.db, &asked).await,
            1,
            "{tool}"
        );
    }
}
