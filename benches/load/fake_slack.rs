//! A minimal fake Slack Web API on 127.0.0.1:0, served by this process: answers every
//! `POST /api/{method}` (and `GET`, as read methods come) with success and counts the
//! calls per method. (tests/slack/fake.rs
//! is the full one, with recorded bodies and injected failures.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::{Value, json};

type Calls = Arc<Mutex<BTreeMap<String, usize>>>;

/// The running fake; stops when dropped.
pub struct FakeSlack {
    api_url: String,
    calls: Calls,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSlack {
    pub async fn start() -> Result<FakeSlack> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the fake Slack to 127.0.0.1:0")?;
        let api_url = format!("http://{}/api", listener.local_addr()?);
        let calls = Calls::default();
        let app = Router::new()
            .route("/api/{method}", get(answer_read).post(answer))
            .with_state(calls.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("the fake Slack stopped: {error}");
            }
        });
        Ok(FakeSlack {
            api_url,
            calls,
            task,
        })
    }

    /// For `SLACK_API_URL`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Calls so far, per method.
    pub fn calls(&self) -> BTreeMap<String, usize> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A read method (`chat.getPermalink`, …): its arguments are in the query string.
async fn answer_read(state: State<Calls>, method: Path<String>) -> axum::Json<Value> {
    answer(state, method, Bytes::new()).await
}

/// The body is read (so the connection stays reusable) but not looked at.
async fn answer(
    State(calls): State<Calls>,
    Path(method): Path<String>,
    _body: Bytes,
) -> axum::Json<Value> {
    let reply = match method.as_str() {
        "chat.postMessage" | "chat.update" => {
            json!({"ok": true, "ts": "1.000001", "channel": "C1"})
        }
        "chat.getPermalink" => json!({"ok": true, "permalink": "https://x"}),
        "auth.test" => json!({"ok": true, "user": "bench", "team": "bench"}),
        _ => json!({"ok": true}),
    };
    *calls
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(method)
        .or_default() += 1;
    axum::Json(reply)
}
