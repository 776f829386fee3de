//! Whatever arrives signed on `/slack/interactions` and `/slack/commands`, the real app
//! answers it (200, or 400 for a body it cannot read) and never fails or hangs; it
//! keeps serving after. Payloads are generated structure-aware (the fields signoff
//! reads, with odd values) and as raw text. `SIGNOFF_FUZZ_CASES` runs more (a long run).

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use signoff::clock::Clock;

fn cases() -> u32 {
    std::env::var("SIGNOFF_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(96)
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "[UCDS][A-Z0-9]{0,10}".prop_map(Value::from),
        "(approve|deny|edit):[0-9a-f-]{0,36}".prop_map(Value::from),
        Just(json!({})),
        Just(json!([])),
    ]
}

/// An interaction payload with the fields signoff reads, any of them odd or missing.
fn payload() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("block_actions"),
            Just("view_submission"),
            Just("shortcut"),
            Just("")
        ],
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
    )
        .prop_map(|(kind, user, channel, action, value, ts, metadata)| {
            json!({
                "type": kind,
                "user": {"id": user},
                "channel": {"id": channel},
                "container": {"channel_id": channel, "message_ts": ts},
                "actions": [{"action_id": action, "value": value}],
                "message": {"ts": ts, "metadata": {"event_type": "signoff_approval_posted",
                    "event_payload": {"approval_id": value, "kind": metadata, "version": 0}}},
                "view": {"callback_id": action, "private_metadata": metadata,
                    "state": {"values": {"b": {"a": {"value": value}}}}},
                "trigger_id": "1.2.3",
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_signed_interaction_or_command_is_answered_and_the_app_keeps_serving() {
    let app = spawn_app().await;
    // Something real to aim at: a pending approval with its message posted.
    app.request("restart_db", json!({"db": "prod"})).await;
    app.run_jobs().await;
    let handle = tokio::runtime::Handle::current();
    let app = std::sync::Arc::new(app);
    let fuzzed = app.clone();
    tokio::task::spawn_blocking(move || {
        let app = fuzzed;
        let answered = |status: StatusCode, what: &str| {
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{what}: {status}"
            );
        };
        let mut runner = TestRunner::new(Config::with_cases(cases()));
        runner
            .run(&payload(), |payload| {
                let (status, _) = handle
                    .block_on(tokio::time::timeout(
                        Duration::from_secs(10),
                        app.interact(&payload),
                    ))
                    .expect("answered in time");
                answered(status, &payload.to_string());
                Ok(())
            })
            .unwrap();
        let mut runner = TestRunner::new(Config::with_cases(cases()));
        runner
            .run(&("\\PC{0,200}", "\\PC{0,40}"), |(raw, command)| {
                let now = app.clock.now().timestamp();
                let body = format!("payload={}", urlencode(&raw));
                let (status, _) =
                    handle.block_on(app.post_signed("/slack/interactions", &body, SECRET, now));
                answered(status, &raw);
                let (status, _) = handle.block_on(app.command("U0ALICE", &command));
                answered(status, &command);
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
    let (status, _) = app.interact(&json!({"type": "block_actions"})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "still serving, still strict"
    );
}

fn urlencode(raw: &str) -> String {
    serde_urlencoded::to_string([("x", raw)]).unwrap()[2..].to_owned()
}
