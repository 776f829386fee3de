//! `spawn_app()`: the app (`common::app`) under the API tests' policy, and a small
//! JSON client for it.

use reqwest::StatusCode;
use serde_json::Value;
use signoff::clock::Clock;

pub use crate::common::app::new_token;
use crate::common::app::{self, App, Options};
use crate::common::{self, TestDb};

/// The policy the API tests run under.
pub const POLICY: &str = r#"
[callbacks]
# The tests' receivers (tests/common/receiver.rs), which resolve to 127.0.0.1.
allow = ["hooks.test"]

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

/// The app (see `common::app`) with the API tests' policy, and their client.
pub struct TestApp {
    app: App,
}

impl std::ops::Deref for TestApp {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

impl From<App> for TestApp {
    fn from(app: App) -> Self {
        TestApp { app }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_on(common::sqlite()).await
}

pub async fn spawn_on(db: TestDb) -> TestApp {
    spawn_limited(db, signoff::http::Limits::default()).await
}

/// The app with a fake Slack.
pub async fn spawn_with_slack() -> TestApp {
    let app = app::spawn(common::sqlite(), Options::new(POLICY).with_slack()).await;
    TestApp { app }
}

/// The app with other connection limits.
pub async fn spawn_limited(db: TestDb, limits: signoff::http::Limits) -> TestApp {
    let app = app::spawn(db, Options::new(POLICY).with_limits(limits)).await;
    TestApp { app }
}

impl TestApp {
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
            parameters_shown: None,
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
