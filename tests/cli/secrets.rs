//! Secrets handed over as files (`SLACK_BOT_TOKEN_FILE`, `SLACK_SIGNING_SECRET_FILE`,
//! `DATABASE_URL_FILE`, …) reach the server, and no secret or API token ever shows in
//! its log, even at debug level.

use std::process::Stdio;
use std::time::Duration;

use crate::common;
use crate::common::fake_slack::FakeSlack;
use crate::common::server::{Server, command, signoff};
use crate::common::slack::sign;

const BOT_TOKEN: &str = "xoxb-from-a-file-5150";
const SIGNING_SECRET: &str = "signing-secret-from-a-file-8086";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_files_and_never_reach_the_log() {
    let db = common::sqlite();
    let api_token = signoff(&["token", "create", "agent"], &db.url);
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let bot_file = file("bot", &format!("{BOT_TOKEN}\n"));
    let secret_file = file("secret", SIGNING_SECRET);
    let database_file = file("database", &format!("{}\n", db.url));
    let log_path = dir.path().join("serve.log");

    let mut serve = command(&["serve"], &db.url);
    serve
        .env_remove("DATABASE_URL")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_SIGNING_SECRET")
        .env("DATABASE_URL_FILE", &database_file)
        .env("SLACK_BOT_TOKEN_FILE", &bot_file)
        .env("SLACK_SIGNING_SECRET_FILE", &secret_file)
        .env("SLACK_API_URL", &slack.url)
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let server = Server::spawn(serve, Duration::from_secs(30)).unwrap();

    // The bot token from its file is the one Slack was called with.
    let calls = slack.calls();
    assert!(!calls.is_empty(), "signoff checked its token with Slack");
    let bearer = format!("Bearer {BOT_TOKEN}");
    assert!(
        calls
            .iter()
            .all(|call| call.authorization.as_deref() == Some(bearer.as_str()))
    );

    // The signing secret from its file is the one requests are checked against, and the
    // database from its file holds the token created before.
    let http = crate::common::http();
    let body = "command=%2Fapprovals&text=help&user_id=U0ALICE&channel_id=C0APPROVALS";
    let now = chrono::Utc::now().timestamp();
    let slash = |secret: &str| {
        http.post(format!("{}/slack/commands", server.address))
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", sign(secret, now, body))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(slash(SIGNING_SECRET).await.unwrap().status(), 200);
    assert_eq!(slash("another-secret").await.unwrap().status(), 401);
    let body = serde_json::json!({"tool_name": "get_user", "parameters": {"id": 1}});
    assert_eq!(server.ask(&api_token, &body).await.status(), 201);
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("signoff serving"),
        "the log was written: {log}"
    );
    for secret in [BOT_TOKEN, SIGNING_SECRET, api_token.as_str()] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}

#[test]
fn a_secret_given_twice_or_from_a_missing_file_is_a_one_line_error() {
    let db = common::sqlite();
    let both = command(&["token", "list"], &db.url)
        .env("DATABASE_URL_FILE", "/nonexistent/database")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let missing = command(&["token", "list"], &db.url)
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL_FILE", "/nonexistent/database")
        .output()
        .unwrap();
    for (output, says) in [
        (both, "set DATABASE_URL or DATABASE_URL_FILE, not both"),
        (
            missing,
            "DATABASE_URL_FILE: cannot read /nonexistent/database",
        ),
    ] {
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
