//! The README's client examples, run as written (Python with `requests`, TypeScript
//! with Node's `fetch` through `tsx`) against a real `signoff serve`: one call the
//! policy approves at once, one that waits for a person.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::fake_slack::FakeSlack;
use crate::common::server::{Server, eventually};
use crate::common::slack::{click_on_message, signed};
use crate::common::{self};
use crate::{signoff, stdout};

const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"

[[rules]]
tools = ["delete_customer_records"]
when = "size(params.customer_ids) == 1"
tier = "low"

[[rules]]
tools = ["send_email"]
when = "size(params.recipients) == 1"
tier = "low"
"#;

/// The first fenced block in the README of `language` that contains `marker`.
fn readme_block(language: &str, marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let fence = format!("```{language}\n");
    readme
        .split(&fence)
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("no ```{language} block with {marker} in README.md"))
        .to_owned()
}

/// A program the tests need, if `works` says it can do its part; else `None`
/// (skipped) — unless `SIGNOFF_REQUIRE_TEST_DEPS` is set (as `.ci/run` does), when
/// that is a failure.
fn tool(what: &str, program: PathBuf, works: &[&str]) -> Option<PathBuf> {
    let ok = Command::new(&program)
        .args(works)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if ok {
        return Some(program);
    }
    if std::env::var_os("SIGNOFF_REQUIRE_TEST_DEPS").is_some() {
        panic!(
            "{what} is required (SIGNOFF_REQUIRE_TEST_DEPS) but {} cannot run it",
            program.display()
        );
    }
    eprintln!("skipped: {what} is not installed ({})", program.display());
    None
}

/// `SIGNOFF_TEST_PYTHON` (the virtual environment `.ci/run` makes from
/// `tests/python/requirements.txt`), else `python3`.
fn python() -> Option<PathBuf> {
    let program = std::env::var_os("SIGNOFF_TEST_PYTHON")
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    tool("Python with requests", program, &["-c", "import requests"])
}

fn tsx() -> Option<PathBuf> {
    let program = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/node_modules/.bin/tsx"
    ));
    tool("tsx (npm ci in tests/node)", program, &["--version"])
}

const SECRET: &str = "readme-secret";

struct Running {
    server: Server,
    token: String,
    slack: FakeSlack,
    _db: common::TestDb,
    _dir: tempfile::TempDir,
}

/// `signoff serve` with Slack (a fake Web API), so that a person can approve.
async fn start() -> Running {
    let db = common::sqlite();
    let token = stdout(&signoff(&["token", "create", "billing-mcp"], &db.url))
        .trim()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("signoff.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let slack = FakeSlack::start().await;
    let env = [
        ("SIGNOFF_POLICY", policy.to_str().unwrap()),
        ("SLACK_BOT_TOKEN", "xoxb-readme"),
        ("SLACK_SIGNING_SECRET", SECRET),
        ("SLACK_API_URL", slack.url.as_str()),
    ];
    let server = Server::start(&db.url, &env);
    Running {
        server,
        token,
        slack,
        _db: db,
        _dir: dir,
    }
}

fn client(program: &Path, file: &Path, args: &[&str], running: &Running) -> Child {
    Command::new(program)
        .arg(file)
        .args(args)
        .env("SIGNOFF_URL", &running.server.address)
        .env("SIGNOFF_TOKEN", &running.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts")
}

/// Clicks Approve, as a person would, on the request the client's call posted.
async fn approve_when_asked(running: &Running) {
    let posted = || running.slack.calls_to("chat.postMessage");
    assert!(
        eventually(Duration::from_secs(10), || !posted().is_empty()).await,
        "the client never asked"
    );
    let id = posted()[0].body["metadata"]["event_payload"]["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = running.slack.posted_for(&id).unwrap();
    let click = click_on_message(&id, "U0ALICE", "approve", &message);
    let (body, timestamp, signature) = signed(SECRET, &click);
    let clicked = reqwest::Client::new()
        .post(format!("{}/slack/interactions", running.server.address))
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(clicked.status(), 200);
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_client_runs_approved_calls_at_once_and_after_a_decision() {
    let Some(python) = python() else { return };
    let running = start().await;
    let script = running._dir.path().join("client.py");
    let harness = "\nimport json, sys\n\ndef really_delete(customer_ids):\n    return 'deleted ' + ','.join(customer_ids)\n\nprint(json.dumps(delete_customer_records(sys.argv[1:])))\n";
    std::fs::write(
        &script,
        readme_block("python", "def delete_customer_records") + harness,
    )
    .unwrap();

    let at_once = output(client(&python, &script, &["c1"], &running));
    assert_eq!(
        at_once, "\"deleted c1\"",
        "auto-approved: run with the approved parameters"
    );
    let waiting = client(&python, &script, &["c1", "c2"], &running);
    approve_when_asked(&running).await;
    assert_eq!(output(waiting), "\"deleted c1,c2\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_typescript_client_runs_approved_calls_at_once_and_after_a_decision() {
    let Some(tsx) = tsx() else { return };
    let running = start().await;
    let script = running._dir.path().join("client.ts");
    let harness = "\nfunction reallySend(recipients: string[], body: string): string {\n  return `sent ${body} to ${recipients.join(\",\")}`;\n}\n\nsendBulkEmail(process.argv.slice(2), \"hi\").then((r) => console.log(JSON.stringify(r)));\n";
    std::fs::write(&script, readme_block("ts", "sendBulkEmail") + harness).unwrap();

    let at_once = output(client(&tsx, &script, &["a@x.com"], &running));
    assert_eq!(at_once, "\"sent hi to a@x.com\"");
    let waiting = client(&tsx, &script, &["a@x.com", "b@x.com"], &running);
    approve_when_asked(&running).await;
    assert_eq!(output(waiting), "\"sent hi to a@x.com,b@x.com\"");
}
