//! `spawn_app()` with Slack: the app (`common::app`) talking to a [`FakeSlack`], and
//! helpers that send requests signed as Slack signs them.

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::Approval;
use signoff::clock::Clock;
use signoff::jobs::PostedMessage;
use signoff::policy::Policy;

use crate::common::app::{self, App, Options};
use crate::common::fake_slack::FakeSlack;
pub use crate::common::slack::{click_payload, interaction_body, sign};
use crate::common::{self, TestDb};

pub const SECRET: &str = app::SLACK_SECRET;
pub const REQUESTER: &str = "U0REQUESTER";

pub const POLICY: &str = r#"
[callbacks]
# The tests' receivers (tests/common/receiver.rs), which resolve to 127.0.0.1.
allow = ["hooks.test"]

[defaults]
channel = "C0APPROVALS"
expires_after = "1h"

[[rules]]
tools = ["deploy_*"]
tier = "medium"
required_approvals = 2
channel = "C0DEPLOYS"
approvers = ["U0ALICE", "U0BOB", "S0SRE"]
summary = "Deploy {service} to {environment}"

[[rules]]
tools = ["search_*"]
tier = "low"

[[rules]]
tools = ["remind_*"]
tier = "medium"
approvers = ["U0ALICE", "U0BOB", "S0SRE"]
required_approvals = 2
remind_after = "30m"
remind_every = "1h"
expires_after = "4h"

[[rules]]
tools = ["nudge_*"]
tier = "medium"
remind_after = "30m"

[[rules]]
tools = ["escalate_*"]
tier = "medium"
escalate_after = "2h"
escalation_channel = "C0MANAGERS"
expires_after = "4h"
"#;

/// The app (see `common::app`) with Slack, under the Slack tests' policy, and the
/// requests Slack sends it.
pub struct TestApp {
    app: App,
    /// The fake Slack Web API the app talks to.
    pub slack: FakeSlack,
}

impl TestApp {
    /// Shuts the server down as SIGTERM does, and waits until it has returned.
    pub async fn stop(self) {
        self.app.stop().await;
    }
}

impl std::ops::Deref for TestApp {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_on(common::sqlite()).await
}

pub async fn spawn_on(db: TestDb) -> TestApp {
    spawn_with(db, Options::new(POLICY).with_slack()).await
}

/// With Socket Mode beside the HTTP endpoints, against a fake Socket Mode server
/// (`app.socket`).
pub async fn spawn_socket_on(db: TestDb) -> TestApp {
    spawn_with(db, Options::new(POLICY).with_socket_mode()).await
}

/// With Slack, under another `policy`.
pub async fn spawn_policy(db: TestDb, policy: &str) -> TestApp {
    spawn_with(db, Options::new(policy).with_slack()).await
}

pub async fn spawn_with(db: TestDb, options: Options<'_>) -> TestApp {
    let app = app::spawn(db, options).await;
    let slack = app.slack.clone().expect("started with Slack");
    TestApp { app, slack }
}

/// Asks through the API with `token`: `POST /v1/approvals` and its answer.
pub async fn ask_as(app: &App, token: &str, tool: &str, parameters: Value) -> (StatusCode, Value) {
    ask_body(
        app,
        token,
        &json!({ "tool_name": tool, "parameters": parameters }),
    )
    .await
}

/// Asks through the API with `token` and the whole request `body`: `POST
/// /v1/approvals` and its answer.
pub async fn ask_body(app: &App, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url("/v1/approvals"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// [`ask_body`]'s approval (opened or joined), as the store has it.
pub async fn asked(app: &App, token: &str, body: &Value) -> Approval {
    let (status, created) = ask_body(app, token, body).await;
    assert!(status.is_success(), "{status}: {created}");
    let id = created["approval_id"].as_str().unwrap().parse().unwrap();
    app.store.get(id).await.unwrap().unwrap()
}

impl TestApp {
    /// A `deploy_api` request of the api service to `environment` (two approvals of
    /// Alice, Bob or the S0SRE group), posted to #C0DEPLOYS.
    pub async fn posted_deploy(&self, environment: &str) -> Approval {
        let parameters = json!({"service": "api", "environment": environment});
        let deploy = self.request("deploy_api", parameters).await;
        self.run_jobs().await;
        deploy
    }

    /// Creates an approval through the store, as the API does, and returns it.
    pub async fn request(&self, tool: &str, parameters: Value) -> Approval {
        self.request_with_callback(tool, parameters, None).await
    }

    pub async fn request_with_callback(
        &self,
        tool: &str,
        parameters: Value,
        callback_url: Option<String>,
    ) -> Approval {
        let policy = Policy::from_toml_str(POLICY).unwrap();
        let request = {
            let mut request = signoff::approval::NewApproval::new(tool, parameters);
            request.requested_by = Some(REQUESTER.into());
            request.callback_url = callback_url;
            request.token_name = Some("agent".into());
            request
        };
        let class = policy.classify(tool, &request.parameters, None);
        self.store
            .create(request, class, self.clock.now())
            .await
            .unwrap()
            .approval
    }

    pub async fn approval(&self, approval: &Approval) -> Approval {
        self.store.get(approval.id).await.unwrap().unwrap()
    }

    /// POSTs a form body to a /slack endpoint, signed with `secret` at `timestamp`.
    pub async fn post_signed(
        &self,
        path: &str,
        body: &str,
        secret: &str,
        timestamp: i64,
    ) -> (StatusCode, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", sign(secret, timestamp, body))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Sends an interaction payload, correctly signed now.
    pub async fn interact(&self, payload: &Value) -> (StatusCode, String) {
        let body = interaction_body(payload);
        self.post_signed(
            "/slack/interactions",
            &body,
            SECRET,
            self.clock.now().timestamp(),
        )
        .await
    }

    /// The message of `kind` (main, escalation, dm) signoff posted for the approval.
    pub async fn message(&self, approval: &Approval, kind: &str) -> PostedMessage {
        self.store
            .messages(approval.id)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.kind.as_str() == kind)
            .unwrap_or_else(|| {
                panic!(
                    "no {kind} message posted for {}: run_jobs first",
                    approval.id
                )
            })
    }

    /// `user` clicks `action` (approve, deny, edit) on the approval's channel message;
    /// the button's value is the approval id alone (as on a message posted before
    /// Approve named its parameters; [`TestApp::click_shown`] sends what is shown).
    pub async fn click(
        &self,
        approval: &Approval,
        user: &str,
        action: &str,
    ) -> (StatusCode, String) {
        let message = self.message(approval, "main").await;
        self.click_on(approval, user, action, &message).await
    }

    /// `user` clicks `action` on one message posted for the approval.
    pub async fn click_on(
        &self,
        approval: &Approval,
        user: &str,
        action: &str,
        message: &PostedMessage,
    ) -> (StatusCode, String) {
        self.interact(&click_payload(
            &approval.id.to_string(),
            user,
            action,
            &message.channel,
            &message.ts,
        ))
        .await
    }

    /// `user` clicks `action` on the approval's main message as the fake Slack shows
    /// it now: the click carries the value of the button there, as Slack's does.
    pub async fn click_shown(
        &self,
        approval: &Approval,
        user: &str,
        action: &str,
    ) -> (StatusCode, String) {
        let message = self.message(approval, "main").await;
        let shown = self
            .slack
            .shown(&message.channel, &message.ts)
            .expect("the message is in the fake Slack");
        let block_id = format!("approval:{}", approval.id);
        let value = shown["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|block| block["block_id"] == block_id.as_str())
            .flat_map(|block| block["elements"].as_array().into_iter().flatten())
            .find(|button| button["action_id"] == action)
            .and_then(|button| button["value"].as_str())
            .unwrap_or_else(|| panic!("no {action} button shown: {shown}"))
            .to_owned();
        let mut payload = click_payload(
            &approval.id.to_string(),
            user,
            action,
            &message.channel,
            &message.ts,
        );
        payload["actions"][0]["value"] = value.into();
        self.interact(&payload).await
    }

    /// `user` submits a modal (`deny_reason` or `edit_approve`) with `value` in its input.
    pub async fn submit(
        &self,
        approval: &Approval,
        user: &str,
        callback: &str,
        value: &str,
    ) -> (StatusCode, String) {
        let clicked = self.message(approval, "main").await;
        let payload = submission(approval, user, callback, value, &clicked);
        self.interact(&payload).await
    }

    /// `/approvals TEXT` from `user`, typed in #C0APPROVALS.
    pub async fn command(&self, user: &str, text: &str) -> (StatusCode, Value) {
        self.command_in("C0APPROVALS", user, text).await
    }

    /// `/approvals TEXT` from `user`, typed in `channel`.
    pub async fn command_in(&self, channel: &str, user: &str, text: &str) -> (StatusCode, Value) {
        let body = serde_urlencoded::to_string(command_fields(channel, user, text)).unwrap();
        let (status, text) = self
            .post_signed(
                "/slack/commands",
                &body,
                SECRET,
                self.clock.now().timestamp(),
            )
            .await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Ephemeral replies sent to `user`, newest last.
    pub async fn ephemerals_to(&self, user: &str, count: usize) -> Vec<String> {
        self.slack
            .wait_for("chat.postEphemeral", count)
            .await
            .into_iter()
            .filter(|c| c.body["user"] == user)
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// A modal's submission (`deny_reason` or `edit_approve`) by `user`, with `value` in
/// its input, opened from the message `clicked`: the payload Slack sends.
pub fn submission(
    approval: &Approval,
    user: &str,
    callback: &str,
    value: &str,
    clicked: &PostedMessage,
) -> Value {
    let input = if callback == "deny_reason" {
        "reason"
    } else {
        "parameters"
    };
    let metadata =
        json!({"approval_id": approval.id, "channel": clicked.channel, "ts": clicked.ts});
    view_submission(user, callback, &metadata.to_string(), input, value)
}

/// The submission by `user` of the modal `callback` carrying `private_metadata`, with
/// `value` typed into its text input `input`.
pub fn view_submission(
    user: &str,
    callback: &str,
    private_metadata: &str,
    input: &str,
    value: &str,
) -> Value {
    json!({
        "type": "view_submission",
        "team": {"id": "T0TEAM"},
        "user": {"id": user, "username": user.to_lowercase()},
        "view": {
            "id": "V0MODAL",
            "callback_id": callback,
            "private_metadata": private_metadata,
            "state": {"values": {input: {input: {"type": "plain_text_input", "value": value}}}}
        }
    })
}

/// The fields of `/approvals TEXT` typed by `user` in `channel`, as Slack sends them
/// (a form over HTTP, a JSON object over Socket Mode).
pub fn command_fields<'a>(
    channel: &'a str,
    user: &'a str,
    text: &'a str,
) -> [(&'a str, &'a str); 8] {
    [
        ("token", "unused"),
        ("team_id", "T0TEAM"),
        ("channel_id", channel),
        ("user_id", user),
        ("command", "/approvals"),
        ("text", text),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0TEAM/1/x",
        ),
        ("trigger_id", "1.2.3"),
    ]
}

pub fn channel_of(approval: &Approval) -> String {
    approval
        .routing
        .channel
        .as_deref()
        .unwrap_or_default()
        .to_owned()
}

/// The action ids of a message's buttons, in order.
pub fn action_ids(message: &Value) -> Vec<String> {
    message["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["action_id"].as_str().map(str::to_owned))
        .collect()
}

/// `GET /health/approvals`.
pub async fn health(app: &TestApp) -> (StatusCode, Value) {
    let response = app
        .http
        .get(format!("{}/health/approvals", app.address))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// A policy whose requests all wait for people in one channel, with no `max_pending`:
/// for delivery backlogs ([`backlog`]).
pub const BACKLOG_POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "4h"
max_pending = 0
"#;

/// `n` requests opened straight in the store (as the API opens them), under
/// [`BACKLOG_POLICY`]: a backlog of posts to deliver.
pub async fn backlog(app: &TestApp, n: usize) {
    let policy = Policy::from_toml_str(BACKLOG_POLICY).unwrap();
    for n in 0..n {
        let mut request = signoff::approval::NewApproval::new("restart_db", json!({"n": n}));
        request.token_name = Some("agent".into());
        let class = policy.classify("restart_db", &request.parameters, None);
        app.store
            .create(request, class, app.clock.now())
            .await
            .unwrap();
    }
}

/// Another replica's scheduler on the app's database, posting unpaced (8 at a time
/// rather than a post a second per channel).
pub fn unpaced(app: &TestApp) -> signoff::scheduler::Scheduler {
    unpaced_on(app, app.store.clone())
}

/// [`unpaced`], with `store` (another one on the app's database).
pub fn unpaced_on(app: &TestApp, store: signoff::store::Store) -> signoff::scheduler::Scheduler {
    let client =
        signoff::slack::client::SlackClient::new("xoxb-test-token", &app.slack.url).unwrap();
    let outbox = signoff::outbox::Outbox::new(store.clone(), Some(client), app.signer.clone())
        .unwrap()
        .with_post_interval(std::time::Duration::ZERO);
    signoff::scheduler::Scheduler::with_outbox(store, outbox)
}
