//! A fake Slack Web API on 127.0.0.1:0: records every call and answers like Slack,
#![allow(dead_code)]
//! or with the failure a test queues for a method (429 + Retry-After, `ok:false`, HTTP
//! 500, or a hang).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub authorization: Option<String>,
}

/// What to answer instead of success, once.
#[derive(Debug, Clone)]
pub enum Failure {
    RateLimited { retry_after_secs: u64 },
    NotOk(&'static str),
    ServerError,
    Hang,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<Failure>>,
    groups: HashMap<String, Vec<String>>,
    next_ts: u64,
}

#[derive(Clone, Default)]
pub struct FakeSlack {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeSlack {
            url: format!("http://{}/api", listener.local_addr().unwrap()),
            ..FakeSlack::default()
        };
        let app = Router::new()
            .route("/api/{method}", post(answer))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// The next call to `method` fails this way.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.lock()
            .failures
            .entry(method.into())
            .or_default()
            .push_back(failure);
    }

    pub fn set_group(&self, group: &str, members: &[&str]) {
        self.lock().groups.insert(
            group.into(),
            members.iter().map(|m| m.to_string()).collect(),
        );
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Waits (up to 10 s) until `method` was called `count` times; for calls made in
    /// the background (modals, ephemeral replies).
    pub async fn wait_for(&self, method: &str, count: usize) -> Vec<Call> {
        for _ in 0..1000 {
            let calls = self.calls_to(method);
            if calls.len() >= count {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{method} was not called {count} times; calls: {:#?}",
            self.calls()
        );
    }
}

async fn answer(
    State(fake): State<FakeSlack>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        json!(form)
    });
    let (failure, ts) = {
        let mut inner = fake.lock();
        inner.calls.push(Call {
            method: method.clone(),
            body: body.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        inner.next_ts += 1;
        let ts = format!("1700000000.{:06}", inner.next_ts);
        (
            inner
                .failures
                .get_mut(&method)
                .and_then(VecDeque::pop_front),
            ts,
        )
    };
    match failure {
        Some(Failure::RateLimited { retry_after_secs }) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("retry-after", retry_after_secs.to_string()),
                    ("content-type", "application/json".into()),
                ],
                json!({"ok": false, "error": "ratelimited"}).to_string(),
            )
                .into_response();
        }
        Some(Failure::NotOk(code)) => {
            return axum::Json(json!({"ok": false, "error": code})).into_response();
        }
        Some(Failure::ServerError) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some(Failure::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        None => {}
    }
    let channel = body["channel"].as_str().unwrap_or("C0UNKNOWN").to_owned();
    let reply = match method.as_str() {
        "chat.postMessage" => json!({"ok": true, "channel": channel, "ts": ts}),
        "chat.update" => json!({"ok": true, "channel": channel, "ts": body["ts"]}),
        "chat.getPermalink" => json!({"ok": true, "permalink": format!(
            "https://example.slack.com/archives/{channel}/p{}", body["message_ts"].as_str().unwrap_or("").replace('.', ""))}),
        "chat.postEphemeral" => json!({"ok": true, "message_ts": ts}),
        "views.open" => json!({"ok": true, "view": {"id": "V0MODAL"}}),
        "conversations.open" => {
            json!({"ok": true, "channel": {"id": format!("D{}", body["users"].as_str().unwrap_or("X"))}})
        }
        "usergroups.users.list" => {
            let group = body["usergroup"].as_str().unwrap_or_default();
            let members = fake.lock().groups.get(group).cloned().unwrap_or_default();
            json!({"ok": true, "users": members})
        }
        "auth.test" => {
            json!({"ok": true, "user": "signoff", "team": "Test Team", "user_id": "U0SIGNOFF"})
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    axum::Json(reply).into_response()
}
