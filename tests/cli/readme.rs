//! The client examples (docs/clients.md), run as written (Python with `requests`, TypeScript
//! with Node's `fetch` through `tsx`) against a real `signoff serve`: one call the
//! policy approves at once, one that waits for a person.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::fake_slack::FakeSlack;
use crate::common::server::{Server, eventually};
use crate::common::slack::{click_on_message, signed};
use crate::common::{self, deps};
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
    let clicked = crate::common::http()
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
    let Some(python) = deps::python("requests") else {
        return;
    };
    let running = start().await;
    let script = running._dir.path().join("client.py");
    let harness = "\nimport json, sys\n\ndef really_delete(customer_ids):\n    return 'deleted ' + ','.join(customer_ids)\n\nprint(json.dumps(delete_customer_records(sys.argv[1:])))\n";
    std::fs::write(
        &script,
        deps::doc_block("docs/clients.md", "python", "def delete_customer_records") + harness,
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
    let Some(tsx) = deps::tsx() else { return };
    let running = start().await;
    let script = running._dir.path().join("client.ts");
    let harness = "\nfunction reallySend(recipients: string[], body: string): string {\n  return `sent ${body} to ${recipients.join(\",\")}`;\n}\n\nsendBulkEmail(process.argv.slice(2), \"hi\").then((r) => console.log(JSON.stringify(r)));\n";
    std::fs::write(
        &script,
        deps::doc_block("docs/clients.md", "ts", "sendBulkEmail") + harness,
    )
    .unwrap();

    let at_once = output(client(&tsx, &script, &["a@x.com"], &running));
    assert_eq!(at_once, "\"sent hi to a@x.com\"");
    let waiting = client(&tsx, &script, &["a@x.com", "b@x.com"], &running);
    approve_when_asked(&running).await;
    assert_eq!(output(waiting), "\"sent hi to a@x.com,b@x.com\"");
}
