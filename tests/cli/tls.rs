//! `signoff serve` reaches Slack over TLS only through a certificate the system's roots
//! (here `SSL_CERT_FILE`) vouch for; else it says why and keeps serving.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::tls::{https_stand_in, material};

/// Starts `serve` against the HTTPS stand-in as the Slack Web API, with `roots` as
/// `SSL_CERT_FILE` (none: the system's), and returns its log once it serves or exits.
fn serve_against(slack: &str, roots: Option<&str>) -> String {
    let db = common::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let listen = common::server::free_address();
    let mut command = common::server::command(&["serve", "--listen", &listen], &db.url);
    command
        .env("RUST_LOG", "info")
        .env("SLACK_BOT_TOKEN", "xoxb-test")
        .env("SLACK_SIGNING_SECRET", "test-secret")
        .env("SLACK_API_URL", format!("{slack}/api"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    match roots {
        Some(file) => command.env("SSL_CERT_FILE", material(file)),
        None => command.env_remove("SSL_CERT_FILE"),
    };
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    let mut exited = false;
    while Instant::now() < deadline && !exited && !text.contains("signoff serving") {
        std::thread::sleep(Duration::from_millis(50));
        exited = child.try_wait().unwrap().is_some();
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let _ = child.kill();
    child.wait().unwrap();
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// A minimal container may have no root certificates at all: a Slack reached over
/// plain HTTP (a stand-in, or a proxy that holds the TLS) needs none, so requests are
/// still posted (callbacks to `https://` URLs fail, saying why, and are retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_root_certificates_still_posts_to_a_slack_on_plain_http() {
    use crate::common::fake_slack::FakeSlack;
    use crate::common::server::{Server, eventually, signoff};
    let db = common::sqlite();
    let token = signoff(&["token", "create", "agent"], &db.url);
    let slack = FakeSlack::start().await;
    let nowhere = material("no-such-roots");
    let nowhere = nowhere.to_str().unwrap();
    let server = Server::start_with_slack(
        &db.url,
        &slack.url,
        "[defaults]\nchannel = \"C0APPROVALS\"\n",
        &[("SSL_CERT_FILE", nowhere), ("SSL_CERT_DIR", nowhere)],
    );
    let body = serde_json::json!({"tool_name": "delete_records", "parameters": {"n": 1}});
    assert_eq!(server.ask(&token, &body).await.status(), 201);
    let posted = eventually(Duration::from_secs(8), || {
        !slack.calls_to("chat.postMessage").is_empty()
    })
    .await;
    assert!(posted, "Slack got {:?}", slack.call_counts());
}

#[test]
fn serve_reaches_an_https_slack_only_through_a_trusted_certificate() {
    let (slack, seen) = https_stand_in();

    let untrusted = serve_against(&slack, None);
    assert!(untrusted.contains("signoff serving"), "{untrusted}");
    assert!(
        untrusted.contains("Slack is not reachable yet") && untrusted.contains("UnknownIssuer"),
        "{untrusted}"
    );
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");

    // Through TLS, the stand-in's 401 is Slack refusing the token: serve stops.
    let trusted = serve_against(&slack, Some("ca.pem"));
    assert!(
        trusted.contains("SLACK_BOT_TOKEN was refused by Slack"),
        "{trusted}"
    );
    assert_eq!(*seen.lock().unwrap(), ["POST /api/auth.test HTTP/1.1"]);
}
