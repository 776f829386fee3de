//! Socket Mode in the real binary: `SLACK_APP_TOKEN` (here from its file) connects
//! `signoff serve` to Slack's WebSocket with no public URL and no signing secret;
//! `signoff manifest --socket-mode`; and the configurations that cannot work are one
//! line each.

use std::time::Duration;

use serde_json::json;

use crate::common;
use crate::common::fake_slack::FakeSlack;
use crate::common::fake_socket::{FakeSocket, envelope};
use crate::common::server::{Server, command};
use crate::{assert_one_line_error, stderr, stdout};

const APP_TOKEN: &str = "xapp-1-A0APP-from-a-file-4242";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_an_app_token_answers_over_the_socket_without_a_signing_secret() {
    let db = common::sqlite();
    let slack = FakeSlack::start().await;
    let socket = FakeSocket::start().await;
    slack.set_socket_url(&socket.url);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("app-token");
    std::fs::write(&token_file, format!("{APP_TOKEN}\n")).unwrap();
    let log_path = dir.path().join("serve.log");
    let mut serve = command(&["serve"], &db.url);
    serve
        .env("SLACK_BOT_TOKEN", "xoxb-bot")
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("SLACK_APP_TOKEN")
        .env("SLACK_APP_TOKEN_FILE", &token_file)
        .env("SLACK_API_URL", &slack.url)
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let server = Server::spawn(serve, Duration::from_secs(30)).unwrap();

    let mut conn = socket.accept().await;
    conn.hello();
    let help = json!({"user_id": "U0ALICE", "channel_id": "C0APPROVALS", "command": "/approvals", "text": "help"});
    conn.send(&envelope("c-1", "slash_commands", &help, true));
    let ack = conn.ack_of("c-1").await;
    assert!(
        ack["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("/approvals"),
        "{ack}"
    );
    let opened = slack.calls_to("apps.connections.open");
    assert_eq!(
        opened[0].authorization.as_deref(),
        Some(format!("Bearer {APP_TOKEN}").as_str())
    );

    let http = crate::common::http();
    let health: serde_json::Value = http
        .get(format!("{}/health/approvals", server.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["socket_mode"], "connected", "{health}");
    let unsigned = http
        .post(format!("{}/slack/commands", server.address))
        .body("text=help")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 503, "no signing secret: /slack/* is off");
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("Socket Mode connected"), "{log}");
    assert!(!log.contains(APP_TOKEN), "the app token is in the log");
}

#[test]
fn manifest_for_socket_mode_needs_no_public_url() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(["manifest", "--socket-mode"])
        .env_remove("SIGNOFF_PUBLIC_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let manifest = stdout(&output);
    assert!(manifest.contains("socket_mode_enabled: true"), "{manifest}");
    assert!(!manifest.contains("url:"), "{manifest}");
}

#[test]
fn an_app_token_without_a_bot_token_or_of_the_wrong_kind_is_a_one_line_error() {
    let db = common::sqlite();
    let serve = |app_token: &str, bot_token: Option<&str>| {
        let mut serve = command(&["serve", "--listen", "127.0.0.1:0"], &db.url);
        serve
            .env("SLACK_APP_TOKEN", app_token)
            .env_remove("SLACK_BOT_TOKEN");
        if let Some(bot) = bot_token {
            serve.env("SLACK_BOT_TOKEN", bot);
        }
        serve.output().unwrap()
    };
    assert_one_line_error(
        &serve(APP_TOKEN, None),
        "SLACK_APP_TOKEN (Socket Mode) needs SLACK_BOT_TOKEN",
    );
    let wrong = serve("xoxb-a-bot-token", Some("xoxb-bot"));
    assert_one_line_error(&wrong, "SLACK_APP_TOKEN must be an app-level token (xapp-");
    assert!(
        !stderr(&wrong).contains("xoxb-a-bot-token"),
        "never the value"
    );
}
