//! The proxy under test: the app (`common::app`, with a fake Slack) as the signoff it
//! asks, `signoff proxy` as a process in front of the fixture server
//! (`examples/mcp_fixture.rs`) or any command, an rmcp client on its stdio that
//! records what the proxy tells it, and the person in Slack who decides.
// Sampling and logging are deprecated by SEP-2577; the tests still relay them.
#![allow(deprecated)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rmcp::model::*;
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::{ClientHandler, ErrorData as McpError, ServiceExt};
use serde_json::{Value, json};
use signoff::clock::Clock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::app::{self, App, Options, SLACK_SECRET};
use crate::common::slack::{click_on_message, interaction_body, sign};
use crate::common::{self};

/// The policy the proxy tests run under.
pub const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "1h"

[tiers]
low = "auto_approve"
medium = "require_approval"
high = "deny"

[[rules]]
tools = ["echo", "slow", "fail", "crash", "ask_model", "ask_user", "ask_twice", "roots", "chatty", "add_tool",
         "extra", "read_graph", "touch", "shout", "harden", "environment", "parent", "end_streams"]
tier = "low"

# `flip` while the upstream lists it read-only; else it is unknown to the policy: medium.
[[rules]]
tools = ["flip"]
when = "has(annotations.readOnlyHint) && annotations.readOnlyHint"
tier = "low"

[[rules]]
tools = ["drop_*"]
tier = "high"

[[rules]]
tools = ["delete_things", "migrate"]
tier = "medium"
channel = "C0DEPLOYS"
"#;

/// The fixture server's binary, built once per test run (`cargo build --example`).
pub fn fixture() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            // The variables cargo sets for a test would make this build look different
            // from the test run's own (and rebuild half the dependencies each time).
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                let ours = key.starts_with("CARGO_")
                    && !matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR");
                if ours || key == "LD_LIBRARY_PATH" || key == "OUT_DIR" {
                    build.env_remove(key.as_ref());
                }
            }
            let status = build
                .args(["build", "--quiet", "--example", "mcp_fixture"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the fixture builds");
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("examples/mcp_fixture")
        })
        .clone()
}

/// What the client was told, in order (progress, logs, list changes), as JSON.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Value>>>,
    /// Declares the tasks extension.
    pub tasks: bool,
}

impl Recorder {
    fn push(&self, event: Value) {
        self.events.lock().unwrap().push(event);
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::builder()
            .enable_sampling()
            .enable_elicitation()
            .enable_roots()
            .build();
        if self.tasks {
            capabilities
                .extensions
                .get_or_insert_with(Default::default)
                .insert(TASKS_EXTENSION_ID.to_owned(), Default::default());
        }
        let mut config =
            ClientConfig::new(capabilities, Implementation::new("test-agent", "1.0.0"));
        config.protocol_version = ProtocolVersion::V_2025_11_25;
        config
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        self.push(json!({"sampling": serde_json::to_value(&params).unwrap()}));
        Ok(serde_json::from_value(json!({
            "role": "assistant", "model": "test-model",
            "content": {"type": "text", "text": "hello from the model"},
        }))
        .unwrap())
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        self.push(json!({"elicitation": serde_json::to_value(&params).unwrap()}));
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"env": "staging"})))
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, McpError> {
        self.push(json!({"roots": true}));
        Ok(serde_json::from_value(
            json!({"roots": [{"uri": "file:///work/project", "name": "project"}]}),
        )
        .unwrap())
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.push(
            json!({"progress": params.message, "token": params.progress_token,
                         "value": params.progress, "total": params.total}),
        );
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.push(json!({"log": params.data}));
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.push(json!({"updated": params.uri}));
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.push(json!({"tool_list_changed": true}));
    }
}

pub type Client = RunningService<RoleClient, Recorder>;

/// The app, its Slack, and where the fixture logs its calls.
pub struct Harness {
    pub app: App,
    pub dir: tempfile::TempDir,
}

pub async fn harness() -> Harness {
    let app = app::spawn(common::sqlite(), Options::new(POLICY).with_slack()).await;
    Harness {
        app,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// A running proxy and the rmcp client on its stdio.
pub struct Proxy {
    pub client: Client,
    pub recorder: Recorder,
    pub child: tokio::process::Child,
}

impl Proxy {
    /// Calls `tool` with `arguments`, which must be answered with an error result;
    /// its texts.
    pub async fn refused(&self, tool: &str, arguments: Value) -> Vec<String> {
        let result = self.client.call_tool(call(tool, arguments)).await.unwrap();
        assert_eq!(result.is_error, Some(true), "{:?}", texts(&result));
        texts(&result)
    }
}

impl Harness {
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("calls.jsonl")
    }

    /// Every tool call the fixture ran, in order (whole lines only: the fixture may
    /// be writing the next one).
    pub fn ran(&self) -> Vec<Value> {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let whole = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
        whole
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// `signoff proxy FLAGS -- UPSTREAM`, as a process with piped stdio; its token in
    /// `SIGNOFF_TOKEN` unless FLAGS give `--token`.
    pub fn proxy_command(&self, flags: &[&str], upstream: &[&str]) -> tokio::process::Command {
        let signoff = Path::new(env!("CARGO_BIN_EXE_signoff"));
        self.proxy_command_of(signoff, flags, upstream)
    }

    /// [`Harness::proxy_command`], running the `signoff` binary at `signoff`.
    pub fn proxy_command_of(
        &self,
        signoff: &Path,
        flags: &[&str],
        upstream: &[&str],
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(signoff);
        command.arg("proxy");
        for (flag, default) in [
            ("--url", self.app.address.as_str()),
            ("--progress-every", "200ms"),
        ] {
            if !flags.contains(&flag) {
                command.args([flag, default]);
            }
        }
        command.args(flags);
        if !upstream.is_empty() {
            command.arg("--").args(upstream);
        }
        command
            .env("FIXTURE_LOG", self.log_path())
            .env_remove("SIGNOFF_URL")
            .env_remove("SIGNOFF_TOKEN_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if flags.contains(&"--token") {
            command.env_remove("SIGNOFF_TOKEN");
        } else {
            command.env("SIGNOFF_TOKEN", &self.app.token);
        }
        command
    }

    /// The proxy in front of the fixture, with an rmcp client connected.
    pub async fn proxy(&self, flags: &[&str]) -> Proxy {
        let fixture = fixture();
        self.proxy_for(flags, &[fixture.to_str().unwrap()]).await
    }

    pub async fn proxy_for(&self, flags: &[&str], upstream: &[&str]) -> Proxy {
        self.proxy_with(self.proxy_command(flags, upstream)).await
    }

    /// The proxy started by `command`, with an rmcp client connected.
    pub async fn proxy_with(&self, command: tokio::process::Command) -> Proxy {
        self.proxy_as(command, Recorder::default()).await
    }

    /// The proxy started by `command`, with `recorder`'s client connected.
    pub async fn proxy_as(
        &self,
        mut command: tokio::process::Command,
        recorder: Recorder,
    ) -> Proxy {
        let mut child = command.spawn().expect("proxy starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let client = recorder
            .clone()
            .serve((stdout, stdin))
            .await
            .expect("handshake");
        Proxy {
            client,
            recorder,
            child,
        }
    }

    /// Runs the scheduler until the approval's message is in Slack; its id.
    pub async fn posted(&self, count: usize) -> String {
        let slack = self.app.slack.as_ref().unwrap();
        for _ in 0..500 {
            self.app.run_jobs().await;
            let posts = slack.calls_to("chat.postMessage");
            if posts.len() >= count {
                let id = &posts[count - 1].body["metadata"]["event_payload"]["approval_id"];
                return id.as_str().unwrap().to_owned();
            }
            // Posts to one channel are paced (one a second, on the app's clock).
            self.app.clock.advance(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no request was posted to Slack");
    }

    async fn interact(&self, payload: &Value) {
        // Signed at the app's (manual) time, which is what it checks the timestamp against.
        let body = interaction_body(payload);
        let timestamp = self.app.clock.now().timestamp();
        let signature = sign(SLACK_SECRET, timestamp, &body);
        let answer = self
            .app
            .http
            .post(self.app.url("/slack/interactions"))
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }

    /// `user` clicks Approve on the approval's message.
    pub async fn approve(&self, id: &str, user: &str) {
        let message = self.app.slack.as_ref().unwrap().posted_for(id).unwrap();
        self.interact(&click_on_message(id, user, "approve", &message))
            .await;
    }

    /// `user` submits the deny modal (`deny_reason`, with `value` as the reason) or the
    /// edit modal (`edit_approve`, with `value` as the edited parameters).
    pub async fn submit(&self, id: &str, user: &str, callback: &str, value: &str) {
        let message = self.app.slack.as_ref().unwrap().posted_for(id).unwrap();
        let input = if callback == "deny_reason" {
            "reason"
        } else {
            "parameters"
        };
        let metadata = json!({"approval_id": id, "channel": message.channel, "ts": message.ts});
        let payload = json!({
            "type": "view_submission",
            "team": {"id": "T0TEAM"},
            "user": {"id": user, "username": user.to_lowercase()},
            "view": {
                "id": "V0MODAL", "callback_id": callback,
                "private_metadata": metadata.to_string(),
                "state": {"values": {input: {input: {"type": "plain_text_input", "value": value}}}}
            }
        });
        self.interact(&payload).await;
    }

    /// The approval's status in the store.
    pub async fn status(&self, id: &str) -> String {
        let approval = self
            .app
            .store
            .get(id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        approval.status.to_string()
    }

    /// The status of approval `id` once it is `wanted`, or as it is after 5 s of
    /// looking (for the caller's assertion to show).
    pub async fn status_becomes(&self, id: &str, wanted: &str) -> String {
        let mut status = String::new();
        for _ in 0..250 {
            status = self.status(id).await;
            if status == wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        status
    }

    /// How many approvals are pending.
    pub async fn pending(&self) -> i64 {
        common::raw_count(
            &self.app.db,
            "SELECT COUNT(*) FROM pending_approvals WHERE status = 'pending'",
        )
        .await
    }

    /// Moves the app's clock past every expiry and runs the expiry job.
    pub async fn expire_all(&self) {
        self.app.clock.advance(Duration::from_secs(2 * 3600));
        self.app.run_jobs().await;
    }
}

/// Call parameters for `tool` with `arguments` (a JSON object).
pub fn call(tool: &str, arguments: Value) -> CallToolRequestParams {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = arguments.as_object().cloned();
    params
}

/// A result's text blocks.
pub fn texts(result: &CallToolResult) -> Vec<String> {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect()
}

/// Waits up to 10 s for `check`.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// How the proxy process exited (it must, within 15 s).
pub async fn exit_of(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the proxy exits")
        .unwrap()
}

/// Everything the exited proxy wrote to its stderr.
pub async fn stderr_of(child: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    stderr
}

/// The proxy with raw JSON-RPC lines on its stdio.
pub struct Raw {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    pub lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Raw {
    pub async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The answer to request `id` (notifications in between are skipped).
    pub async fn answer(&mut self, id: i64) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("an answer in time")
                .unwrap()
                .expect("the proxy is still there");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == id {
                return message;
            }
        }
    }
}

pub async fn raw(h: &Harness) -> Raw {
    raw_with(h, &[]).await
}

/// The proxy with `flags` in front of the fixture, with raw lines on its stdio.
pub async fn raw_with(h: &Harness, flags: &[&str]) -> Raw {
    let fixture = fixture();
    raw_from(h.proxy_command(flags, &[fixture.to_str().unwrap()]))
}

/// The proxy started by `command`, with raw lines on its stdio.
pub fn raw_from(mut command: tokio::process::Command) -> Raw {
    let mut child = command.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Raw {
        child,
        stdin,
        lines,
    }
}

/// A request line as a 2026-07-28 client sends it: no `initialize`, its protocol
/// version, name and capabilities in every request's `_meta`.
pub fn modern_request(id: i64, method: &str, mut params: Value) -> String {
    params["_meta"] = modern_meta();
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "modern-agent", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// How many times the upstream ran `tool`.
pub fn runs_of(h: &Harness, tool: &str) -> usize {
    h.ran().iter().filter(|call| call["tool"] == tool).count()
}

/// `flip` runs at once while the upstream lists it read-only; once `harden` made it
/// destructive and said that its tool list changed (which reached the client), the
/// next call is classified by the new annotations: held until a person approves.
pub async fn a_hardened_tool_is_held(h: &Harness, proxy: &Proxy) {
    let flipped = proxy.client.call_tool(call("flip", json!({"n": 1}))).await;
    assert_eq!(flipped.unwrap().is_error, Some(false));
    assert_eq!(runs_of(h, "flip"), 1, "read-only: auto-approved");
    proxy
        .client
        .call_tool(call("harden", json!({})))
        .await
        .unwrap();
    let changed = || (proxy.recorder.events().iter()).any(|e| e["tool_list_changed"] == true);
    assert!(eventually(changed).await, "{:?}", proxy.recorder.events());

    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move { peer.call_tool(call("flip", json!({"n": 2}))).await });
    let id = h.posted(1).await;
    let approval = h.app.store.get(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(approval.tool_name, "flip");
    assert_eq!(runs_of(h, "flip"), 1, "destructive: held");
    h.approve(&id, "U0ALICE").await;
    assert_eq!(held.await.unwrap().unwrap().is_error, Some(false));
    assert_eq!(runs_of(h, "flip"), 2);
}
