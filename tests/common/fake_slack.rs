//! A fake Slack Web API on 127.0.0.1:0, for the tests and the benches alike: records
//! every call and answers like Slack,
//! or with the failure a test queues for a method (429 + Retry-After, `ok:false`, HTTP
//! 500, a hang, or a late answer). Read methods come as GET with a query string, the others as POST
//! with a JSON body (or a form); both are recorded with their arguments as JSON. It
//! keeps the messages posted to each channel for `conversations.history`, and answers
//! `apps.connections.open` with the URL of a fake Socket Mode server
//! (`fake_socket.rs`) once given one.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
    RateLimited {
        retry_after_secs: u64,
    },
    NotOk(&'static str),
    ServerError,
    Hang,
    /// chat.postMessage: the message is posted (it is in the channel's history), but
    /// the answer never comes, as when Slack took it and the connection died.
    PostThenHang,
    /// HTTP 200 with a body that is no JSON, as from a proxy's error page.
    NotJson,
    /// Answers as usual, after this long (a `chat.update` is applied only then, as
    /// when Slack gets to it late).
    Slow(Duration),
}

/// A message in a channel, as conversations.history shows it. Its `ts` counts calls
/// (see `answer`), so `oldest` is compared with the wall-clock time it was posted.
#[derive(Debug, Clone)]
struct Posted {
    channel: String,
    ts: String,
    body: Value,
    at_unix: f64,
}

impl Posted {
    /// As a history shows it: its metadata only with `include_all_metadata=true`.
    fn as_message(&self, metadata: bool) -> Value {
        let mut message = json!({"type": "message", "ts": self.ts, "text": self.body["text"]});
        if metadata && self.body.get("metadata").is_some() {
            message["metadata"] = self.body["metadata"].clone();
        }
        message
    }
}

/// A page of a history's `messages`: `limit` from `offset` on, the next offset as the
/// cursor.
fn page(messages: &[Value], offset: usize, limit: usize) -> Value {
    let page: Vec<Value> = messages.iter().skip(offset).take(limit).cloned().collect();
    let next = if offset + limit < messages.len() {
        (offset + limit).to_string()
    } else {
        String::new()
    };
    json!({
        "ok": true,
        "messages": page,
        "has_more": !next.is_empty(),
        "response_metadata": {"next_cursor": next},
    })
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// The `chat.update` calls Slack applied, in the order it applied them (a call
    /// left hanging never is).
    updates: Vec<Call>,
    failures: HashMap<String, VecDeque<Failure>>,
    groups: HashMap<String, Vec<String>>,
    posted: Vec<Posted>,
    /// Replies in threads, for `conversations.replies`: their body's `thread_ts`
    /// names the message they reply to.
    replies: Vec<Posted>,
    next_ts: u64,
    socket_url: Option<String>,
    /// How long every answer takes.
    delay: Duration,
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
            .route("/api/{method}", get(answer_query).post(answer_body))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// The next call to `method` fails this way.
    /// Forgets the failures still queued for `method`.
    pub fn clear_failures(&self, method: &str) {
        self.lock().failures.remove(method);
    }

    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.lock()
            .failures
            .entry(method.into())
            .or_default()
            .push_back(failure);
    }

    /// Every later answer takes `delay`, as a slow Slack's do.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// `apps.connections.open` answers with this WebSocket URL.
    pub fn set_socket_url(&self, url: &str) {
        self.lock().socket_url = Some(url.into());
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

    /// How many calls each method got so far.
    pub fn call_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for call in &self.lock().calls {
            *counts.entry(call.method.clone()).or_default() += 1;
        }
        counts
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// How many `chat.postMessage` calls there were, and how many approvals they named
    /// (by their message metadata): equal when no approval was posted twice.
    pub fn posts_and_approvals(&self) -> (usize, usize) {
        let posts = self.calls_to("chat.postMessage");
        let approvals: std::collections::HashSet<String> = posts
            .iter()
            .map(|call| call.body["metadata"]["event_payload"]["approval_id"].to_string())
            .collect();
        (posts.len(), approvals.len())
    }

    /// The `channel` of each call to `method`, in order.
    pub fn channels_of(&self, method: &str) -> Vec<String> {
        self.calls_to(method)
            .into_iter()
            .map(|c| c.body["channel"].as_str().unwrap_or_default().to_owned())
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

async fn answer_query(
    State(fake): State<FakeSlack>,
    Path(method): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    answer(fake, method, headers, json!(query)).await
}

async fn answer_body(
    State(fake): State<FakeSlack>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        json!(form)
    });
    answer(fake, method, headers, body).await
}

async fn answer(fake: FakeSlack, method: String, headers: HeaderMap, body: Value) -> Response {
    let channel = body["channel"].as_str().unwrap_or("C0UNKNOWN").to_owned();
    let (failure, ts, delay) = {
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
            inner.delay,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
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
        Some(Failure::NotJson) => {
            let page = "<html><body>Service temporarily unavailable</body></html>";
            return ([("content-type", "text/html")], page).into_response();
        }
        Some(failure @ (Failure::Hang | Failure::PostThenHang)) => {
            if matches!(failure, Failure::PostThenHang) {
                fake.keep_post(&channel, &ts, &body);
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(Failure::Slow(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    if method == "chat.update" {
        fake.apply_update(&body);
    }
    let reply = match method.as_str() {
        "chat.postMessage" => {
            fake.keep_post(&channel, &ts, &body);
            json!({"ok": true, "channel": channel, "ts": ts})
        }
        "conversations.history" => fake.history(&channel, &body),
        "conversations.replies" => fake.replies(&channel, &body),
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
        "apps.connections.open" => match fake.lock().socket_url.clone() {
            Some(url) => json!({"ok": true, "url": url}),
            None => json!({"ok": false, "error": "socket_mode_not_enabled"}),
        },
        "auth.test" => {
            json!({"ok": true, "user": "signoff", "team": "Test Team", "user_id": "U0SIGNOFF"})
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    axum::Json(reply).into_response()
}

impl FakeSlack {
    /// A `chat.update` is applied: the message shows its body from now on.
    fn apply_update(&self, body: &Value) {
        self.lock().updates.push(Call {
            method: "chat.update".into(),
            body: body.clone(),
            authorization: None,
        });
    }

    /// A top-level message joins the channel's history; a reply, its thread.
    fn keep_post(&self, channel: &str, ts: &str, body: &Value) {
        let posted = Posted {
            channel: channel.into(),
            ts: ts.into(),
            body: body.clone(),
            at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64(),
        };
        let mut inner = self.lock();
        if body.get("thread_ts").is_none() {
            inner.posted.push(posted);
        } else {
            inner.replies.push(posted);
        }
    }

    /// conversations.replies: the replies in the thread of the message `ts` in
    /// `channel`, oldest first (Slack puts the parent first; no search here needs it),
    /// `limit` a page (the cursor is the offset), metadata only with
    /// `include_all_metadata=true`.
    fn replies(&self, channel: &str, args: &Value) -> Value {
        let number = |name: &str| -> Option<usize> { args[name].as_str()?.parse().ok() };
        let (limit, offset) = (
            number("limit").unwrap_or(1000),
            number("cursor").unwrap_or(0),
        );
        let metadata = args["include_all_metadata"] == "true";
        let inner = self.lock();
        let messages: Vec<Value> = inner
            .replies
            .iter()
            .filter(|p| p.channel == channel && p.body["thread_ts"] == args["ts"])
            .map(|p| {
                let mut message = p.as_message(metadata);
                message["thread_ts"] = p.body["thread_ts"].clone();
                message
            })
            .collect();
        page(&messages, offset, limit)
    }

    /// conversations.history: newest first, from `oldest` on, `limit` a page (the
    /// cursor is the offset), metadata only with `include_all_metadata=true`.
    fn history(&self, channel: &str, args: &Value) -> Value {
        let number = |name: &str| -> Option<f64> { args[name].as_str()?.parse().ok() };
        let oldest = number("oldest").unwrap_or(0.0);
        let limit = number("limit").unwrap_or(100.0) as usize;
        let offset = number("cursor").unwrap_or(0.0) as usize;
        let metadata = args["include_all_metadata"] == "true";
        let inner = self.lock();
        let messages: Vec<Value> = inner
            .posted
            .iter()
            .rev()
            .filter(|p| p.channel == channel && p.at_unix >= oldest)
            .map(|p| p.as_message(metadata))
            .collect();
        page(&messages, offset, limit)
    }

    /// `count` messages from other people posted to `channel` now, for history pages.
    pub fn chatter(&self, channel: &str, count: usize) {
        for _ in 0..count {
            // A ts of its own kind: the calls' ts stay their call numbers.
            let ts = format!("1600000000.{:06}", self.lock().posted.len());
            self.keep_post(channel, &ts, &json!({"text": "unrelated chatter"}));
        }
    }

    /// The bodies of the messages Slack took in `channel` so far, in order (not the
    /// calls it refused).
    pub fn posted_in(&self, channel: &str) -> Vec<Value> {
        let inner = self.lock();
        let posted = inner.posted.iter().filter(|p| p.channel == channel);
        posted.map(|p| p.body.clone()).collect()
    }

    /// The bodies of the DMs posted so far (this fake's DM channels start with `D`).
    pub fn dm_posts(&self) -> Vec<Value> {
        self.calls_to("chat.postMessage")
            .into_iter()
            .filter(|c| {
                c.body["channel"]
                    .as_str()
                    .is_some_and(|ch| ch.starts_with('D'))
            })
            .map(|c| c.body)
            .collect()
    }

    /// The channel message signoff posted for `approval_id` (its `main` post, found by
    /// the message metadata every post carries): channel, ts and that metadata, for a
    /// click on it.
    pub fn posted_for(&self, approval_id: &str) -> Option<super::slack::SlackMessage> {
        let inner = self.lock();
        inner
            .posted
            .iter()
            .find(|p| {
                let payload = &p.body["metadata"]["event_payload"];
                payload["approval_id"] == approval_id && payload["kind"] == "main"
            })
            .map(|p| super::slack::SlackMessage {
                channel: p.channel.clone(),
                ts: p.ts.clone(),
                metadata: p.body["metadata"].clone(),
            })
    }

    /// The message at `channel`/`ts` as it stands: its post's body, or the body of the
    /// last `chat.update` Slack applied to it.
    pub fn shown(&self, channel: &str, ts: &str) -> Option<Value> {
        let inner = self.lock();
        let updated = inner
            .updates
            .iter()
            .rev()
            .find(|c| c.body["channel"] == channel && c.body["ts"] == ts);
        let posted = || {
            let post = inner
                .posted
                .iter()
                .find(|p| p.channel == channel && p.ts == ts);
            post.map(|p| p.body.clone())
        };
        updated.map(|c| c.body.clone()).or_else(posted)
    }

    /// The ts the fake answered the `n`-th chat.postMessage with (counting from 0).
    pub fn post_ts(&self, n: usize) -> String {
        let inner = self.lock();
        let index = inner
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.method == "chat.postMessage")
            .nth(n)
            .map(|(i, _)| i)
            .expect("no such post");
        format!("1700000000.{:06}", index + 1)
    }
}
