//! Whatever arrives signed on `/slack/interactions` and `/slack/commands`, the real app
//! answers it (200, or 400 for a body it cannot read) and never fails or hangs; it
//! keeps serving after; the same payloads as Socket Mode envelopes, and raw frames, are
//! each acked once or counted as unreadable, and the socket stays up. Payloads are
//! generated structure-aware (the fields signoff reads, with odd values) and as raw
//! text. `SIGNOFF_FUZZ_CASES` or
//! `SIGNOFF_FUZZ_SECONDS` run longer (see `common::fuzz`).

use std::time::Duration;

use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::fuzz;
use crate::helpers::*;
use signoff::clock::Clock;

/// Cases per target in a plain `cargo test`.
const SHORT: u32 = 96;

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

/// The app with something real to aim at: a pending approval with its message posted.
async fn app_with_a_posted_request() -> TestApp {
    let app = spawn_app().await;
    app.request("restart_db", json!({"db": "prod"})).await;
    app.run_jobs().await;
    app
}

fn answered(status: StatusCode, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
        "{what}: {status}"
    );
    Ok(())
}

async fn still_serving_and_strict(app: &TestApp) {
    let (status, _) = app.interact(&json!({"type": "block_actions"})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "still serving, still strict"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_signed_interaction_payload_is_answered_and_the_app_keeps_serving() {
    let app = app_with_a_posted_request().await;
    fuzz::run_async(SHORT, &payload(), |payload| {
        let app = &app;
        async move {
            let (status, _) = tokio::time::timeout(Duration::from_secs(10), app.interact(&payload))
                .await
                .expect("answered in time");
            answered(status, &payload.to_string())
        }
    });
    still_serving_and_strict(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_signed_raw_interaction_or_command_text_is_answered_and_the_app_keeps_serving() {
    let app = app_with_a_posted_request().await;
    fuzz::run_async(SHORT, &("\\PC{0,200}", "\\PC{0,40}"), |(raw, command)| {
        let app = &app;
        async move {
            let in_time = Duration::from_secs(10);
            let now = app.clock.now().timestamp();
            let body = format!("payload={}", urlencode(&raw));
            let sent = app.post_signed("/slack/interactions", &body, SECRET, now);
            let (status, _) = tokio::time::timeout(in_time, sent)
                .await
                .expect("answered in time");
            answered(status, &raw)?;
            let sent = app.command("U0ALICE", &command);
            let (status, _) = tokio::time::timeout(in_time, sent)
                .await
                .expect("answered in time");
            answered(status, &command)
        }
    });
    still_serving_and_strict(&app).await;
}

fn urlencode(raw: &str) -> String {
    serde_urlencoded::to_string([("x", raw)]).unwrap()[2..].to_owned()
}

/// The socket's envelopes and unreadable frames counted so far: (all, acked).
async fn socket_counts(app: &TestApp) -> (f64, f64) {
    let text = app.metrics().await;
    let series = |prefix: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    };
    let envelopes = series("signoff_socket_mode_envelopes_total{");
    let unparsed = series("signoff_socket_mode_unparsed_total{");
    let acked = envelopes
        .iter()
        .filter(|(name, _)| name.contains("outcome=\"acked\""))
        .map(|(_, n)| n)
        .sum();
    let all = envelopes.iter().chain(&unparsed).map(|(_, n)| n).sum();
    (all, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_frame_on_the_socket_is_acked_once_or_counted_and_the_socket_stays_up() {
    let (app, conn) = crate::socket::connected(crate::common::sqlite()).await;
    app.request("restart_db", json!({"db": "prod"})).await;
    app.run_jobs().await;
    let conn = tokio::sync::Mutex::new(conn);
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let kinds = prop_oneof![
        Just("interactive"),
        Just("slash_commands"),
        Just("events_api"),
        Just("raw")
    ];
    fuzz::run_async(
        SHORT,
        &(kinds, payload(), "\\PC{0,80}"),
        |(kind, payload, raw)| {
            let (app, conn, sent) = (&app, &conn, &sent);
            async move {
                let id = format!(
                    "f-{}",
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let mut conn = conn.lock().await;
                let before = socket_counts(app).await;
                match kind {
                    "raw" => conn.send_text(&raw),
                    _ => conn.send(&crate::common::fake_socket::envelope(
                        &id, kind, &payload, true,
                    )),
                }
                let mut after = before;
                for _ in 0..500 {
                    after = socket_counts(app).await;
                    if after.0 > before.0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                prop_assert_eq!(after.0, before.0 + 1.0, "{} {}: counted once", kind, id);
                if after.1 > before.1 {
                    let ack = conn.next_frame(Duration::from_secs(3)).await;
                    prop_assert_eq!(ack.map(|ack| ack["envelope_id"].clone()), Some(json!(id)));
                }
                prop_assert_eq!(
                    conn.next_frame(Duration::from_millis(20)).await,
                    None,
                    "nothing else"
                );
                Ok(())
            }
        },
    );
    let socket = crate::socket::fake_socket(&app);
    assert_eq!(
        socket.log(),
        [crate::common::fake_socket::Happened::Opened(1)],
        "the socket stayed up"
    );
    assert_eq!(health(&app).await.1["socket_mode"], "connected");
}
