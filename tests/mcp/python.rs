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
        let fixture = fixture();
        let proxy = h.proxy_command(&[], &[fixture.to_str().unwrap()]);
        let std = proxy.as_std();
        let mut command = tokio::process::Command::new(python);
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/mcp_client.py"
            ))
            .arg(std.get_program())
            .args(std.get_args())
            .env("FIXTURE_LOG", h.log_path())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
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
