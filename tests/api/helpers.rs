//! `spawn_app()`: the real router on 127.0.0.1:0, a store on a test database, a manual
//! clock and an API token, plus a small JSON client.

use std::sync::Arc;

use chrono::TimeZone;
use reqwest::StatusCode;
use serde_json::Value;
use signoff::clock::{Clock, ManualClock};
use signoff::http::{self, AppState};
use signoff::policy::Policy;
use signoff::store::Store;

use crate::common::{self, TestDb};

/// The policy the API tests run under.
pub const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "1h"

[tiers]
low = "auto_approve"
medium = "require_approval"
high = "deny"

[[rules]]
tools = ["search_*", "get_*"]
tier = "low"

[[rules]]
tools = ["drop_*"]
tier = "high"

[[rules]]
tools = ["deploy_*"]
tier = "medium"
required_approvals = 2
summary = "Deploy {service} to {environment}"
"#;

pub struct TestApp {
    pub address: String,
    pub token: String,
    pub store: Store,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub db: TestDb,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_on(common::sqlite()).await
}

pub async fn spawn_on(db: TestDb) -> TestApp {
    spawn_limited(db, signoff::http::Limits::default()).await
}

/// The app with other connection limits.
pub async fn spawn_limited(db: TestDb, limits: signoff::http::Limits) -> TestApp {
    let store = Store::connect(&db.url).await.expect("store opens");
    let clock = ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .unwrap(),
    );
    let token = new_token(&store, &clock, "agent").await;
    let policy = Policy::from_toml_str(POLICY).expect("test policy");
    let state = AppState::new(store.clone(), policy, Arc::new(clock.clone())).with_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::run(listener, state, async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        token,
        store,
        clock,
        http: reqwest::Client::new(),
        db,
        _shutdown: stop,
    }
}

pub async fn new_token(store: &Store, clock: &ManualClock, name: &str) -> String {
    let token = signoff::tokens::generate();
    assert!(
        store
            .token_insert(name, &signoff::tokens::hash(&token), clock.now())
            .await
            .unwrap()
    );
    token
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// POST a JSON body with the app's token.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_as(&self.token, path, body).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    /// POST raw bytes with the app's token.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    /// Creates an approval and returns its id.
    pub async fn request(&self, tool: &str, parameters: Value) -> String {
        let (status, body) = self
            .post(
                "/v1/approvals",
                &serde_json::json!({"tool_name": tool, "parameters": parameters}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["approval_id"].as_str().unwrap().to_owned()
    }

    /// An approver clicks Approve (Slack's path into the store, without Slack).
    pub async fn approve(&self, id: &str, user: &str) {
        let event = signoff::approval::Event::Vote {
            by: signoff::approval::Decider::approver(user),
            decision: signoff::approval::Decision::Approve,
            reason: None,
        };
        self.store
            .apply(id.parse().unwrap(), event, self.clock.now())
            .await
            .unwrap();
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Every error is JSON with `error` and `detail`.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}
