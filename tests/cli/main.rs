//! The `signoff` binary: commands, exit codes and one-line errors.

mod audit;
#[path = "../common/mod.rs"]
mod common;
mod docs;
mod keys;
mod operate;
mod pacing;
mod proxy;
mod readme;
mod secrets;
mod socket_mode;
mod tls;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs a one-shot command with every warning shown (its own must not clutter its
/// output), except sqlx's slow-statement log: on SQLite a command beside a running
/// server waits for the server's write lock, which on a loaded machine can take over
/// sqlx's one second (`BEGIN IMMEDIATE` waited 1.1 s once in CI).
fn signoff(args: &[&str], database_url: &str) -> Output {
    common::server::command(args, database_url)
        .env("RUST_LOG", "warn,sqlx::query=error")
        .output()
        .expect("signoff runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failure is one `error: …` line, a non-zero exit and never a panic.
fn assert_one_line_error(output: &Output, contains: &str) {
    assert!(!output.status.success(), "expected failure, got {output:?}");
    let err = stderr(output);
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {err}");
    assert!(
        lines[0].contains(contains),
        "{:?} should mention {contains:?}",
        lines[0]
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// What clap refuses (a setting from the environment, a missing argument, an unknown
/// command) is one line too, with clap's exit code 2.
#[test]
fn a_refused_command_line_or_setting_is_one_line() {
    let db = common::sqlite();
    let bad_listen = common::server::command(&["serve"], &db.url)
        .env("SIGNOFF_LISTEN", "foo")
        .output()
        .unwrap();
    assert_one_line_error(
        &bad_listen,
        "error: invalid value 'foo' for '--listen <LISTEN>'",
    );
    let missing = signoff(&["decide"], &db.url);
    assert_one_line_error(
        &missing,
        "error: the following required arguments were not provided: --as <NAME> <ID> <DECISION> (see --help)",
    );
    assert_one_line_error(
        &signoff(&["frob"], &db.url),
        "unrecognized subcommand 'frob'",
    );
    // clap's tips stay.
    assert_one_line_error(
        &signoff(&["lst"], &db.url),
        "error: unrecognized subcommand 'lst'; tip: a similar subcommand exists: 'list' (see --help)",
    );
    for output in [&bad_listen, &missing] {
        assert_eq!(output.status.code(), Some(2));
    }
    let help = signoff(&["decide", "--help"], &db.url);
    assert!(help.status.success() && stdout(&help).contains("Usage: signoff decide"));
}

/// A setting refused for its value exits 2 before anything runs, as clap's refusals do,
/// whether clap or signoff refuses it; a file a setting names that cannot be read exits
/// 1, as other failures do.
#[test]
fn a_setting_refused_before_the_command_runs_exits_2() {
    let db = common::sqlite();
    let listen = common::server::free_address();
    let serve = ["serve", "--listen", listen.as_str()];
    // The command, its environment, what the error says, the exit code.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, i32);
    let cases: [Case; 9] = [
        (&["serve"], &[("SIGNOFF_LISTEN", "foo")], "--listen", 2),
        (
            &serve,
            &[("SIGNOFF_DELIVERY_LEASE", "1ms")],
            "SIGNOFF_DELIVERY_LEASE",
            2,
        ),
        (
            &serve,
            &[("SIGNOFF_POLICY", "")],
            "SIGNOFF_POLICY (--policy) is empty",
            2,
        ),
        (
            &serve,
            &[("SIGNOFF_PUBLIC_URL", "signoff.example.com")],
            "SIGNOFF_PUBLIC_URL must be an http(s) URL",
            2,
        ),
        (&["manifest"], &[], "set SIGNOFF_PUBLIC_URL", 2),
        (
            &["manifest"],
            &[("SIGNOFF_PUBLIC_URL", "https://signoff.example.com?team=a")],
            "SIGNOFF_PUBLIC_URL must be an http(s) URL",
            2,
        ),
        (
            &["token", "list"],
            &[("SIGNOFF_LOG_FORMAT", "xml")],
            "SIGNOFF_LOG_FORMAT",
            2,
        ),
        (
            &["token", "list"],
            &[("DATABASE_URL_FILE", "/nonexistent/database")],
            "set DATABASE_URL or DATABASE_URL_FILE, not both",
            2,
        ),
        (
            &["token", "list"],
            &[("SLACK_BOT_TOKEN_FILE", "/nonexistent/token")],
            "SLACK_BOT_TOKEN_FILE: cannot read /nonexistent/token",
            1,
        ),
    ];
    for (args, env, says, code) in cases {
        // A server that is not refused would run on: it is stopped, and the test fails.
        let child = common::server::command(args, &db.url)
            .env_remove("SIGNOFF_PUBLIC_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = exited_within(child, Duration::from_secs(20));
        assert_one_line_error(&output, says);
        assert_eq!(output.status.code(), Some(code), "{args:?} {env:?}");
    }
}

/// `token create` may start a database, but a name it refuses starts none: the name is
/// checked before connecting, so a typo leaves no new SQLite file behind.
#[test]
fn a_refused_token_name_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signoff.db");
    let url = format!("sqlite://{}", file.display());
    assert_one_line_error(
        &signoff(&["token", "create", "bad name"], &url),
        "invalid token name",
    );
    assert!(!file.exists(), "{} was created", file.display());
}

#[test]
fn tokens_are_created_once_listed_and_revoked() {
    let db = common::sqlite();
    let created = signoff(&["token", "create", "billing-mcp"], &db.url);
    assert!(created.status.success(), "{}", stderr(&created));
    let token = stdout(&created).trim().to_owned();
    assert!(token.starts_with("so_") && token.len() > 40, "{token}");

    assert_one_line_error(
        &signoff(&["token", "create", "billing-mcp"], &db.url),
        "token rotate billing-mcp",
    );
    assert_one_line_error(
        &signoff(&["token", "create", "bad name"], &db.url),
        "invalid token name",
    );

    let list = stdout(&signoff(&["token", "list"], &db.url));
    assert!(
        list.contains("billing-mcp") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&token), "the secret is never shown again");

    // The flag works after the subcommand too, and wins over the environment.
    let flagged = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(["token", "list", "--database-url", &db.url])
        .env("DATABASE_URL", "sqlite:///nonexistent-dir/other.db")
        .output()
        .unwrap();
    assert!(
        stdout(&flagged).contains("billing-mcp"),
        "{}",
        stderr(&flagged)
    );
    assert!(
        signoff(&["token", "revoke", "billing-mcp"], &db.url)
            .status
            .success()
    );
    assert!(stdout(&signoff(&["token", "list"], &db.url)).contains("revoked"));
    assert_one_line_error(
        &signoff(&["token", "revoke", "billing-mcp"], &db.url),
        "no active token",
    );
    // A revoked name may be used again, for the same requester, and is said to be.
    let again = signoff(&["token", "create", "billing-mcp"], &db.url);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("names a revoked token: the new one takes over its approvals"),
        "{}",
        stderr(&again)
    );
    let fresh = signoff(&["token", "create", "other-agent"], &db.url);
    assert!(!stderr(&fresh).contains("revoked"), "{}", stderr(&fresh));
}

/// Who may ask is in the audit log: each token created, rotated and revoked (by name;
/// never its secret), and a refused change records nothing.
#[tokio::test]
async fn token_changes_are_in_the_audit_log() {
    let db = common::sqlite();
    for args in [
        ["token", "create", "billing-mcp"],
        ["token", "create", "billing-mcp"],
        ["token", "rotate", "billing-mcp"],
        ["token", "revoke", "billing-mcp"],
        ["token", "revoke", "billing-mcp"],
    ] {
        signoff(&args, &db.url);
    }
    let store = signoff::store::Store::connect(&db.url).await.unwrap();
    let events = store.audit_page(0, 100).await.unwrap();
    let kinds: Vec<(&str, &serde_json::Value)> = events
        .iter()
        .map(|event| (event.kind.as_str(), &event.data))
        .collect();
    let named = serde_json::json!({"token": "billing-mcp"});
    assert_eq!(
        kinds,
        [
            ("token_created", &named),
            ("token_rotated", &named),
            ("token_revoked", &named),
        ]
    );
    let verified = signoff(&["audit", "verify"], &db.url);
    assert!(verified.status.success(), "{}", stderr(&verified));
}

/// Which token name a secret authenticates as now, as the server would look it up.
async fn who(db: &common::TestDb, token: &str) -> Option<String> {
    let store = signoff::store::Store::connect(&db.url).await.unwrap();
    store
        .token_lookup(&signoff::tokens::hash(token))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_token_is_rotated_or_replaced_and_keeps_its_name() {
    let db = common::sqlite();
    let first = stdout(&signoff(&["token", "create", "billing-mcp"], &db.url));
    let first = first.trim();
    let rotated = signoff(&["token", "rotate", "billing-mcp"], &db.url);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let second = stdout(&rotated).trim().to_owned();
    assert_ne!(second, first);
    assert_eq!(who(&db, first).await, None, "the old secret stops working");
    assert_eq!(who(&db, &second).await.as_deref(), Some("billing-mcp"));

    assert!(
        signoff(&["token", "revoke", "billing-mcp"], &db.url)
            .status
            .success()
    );
    assert_eq!(who(&db, &second).await, None);
    assert_one_line_error(
        &signoff(&["token", "rotate", "billing-mcp"], &db.url),
        "no active token",
    );
    // The name of a revoked token can be used again: same identity, new secret.
    let again = signoff(&["token", "create", "billing-mcp"], &db.url);
    assert!(again.status.success(), "{}", stderr(&again));
    let third = stdout(&again).trim().to_owned();
    assert_eq!(who(&db, &third).await.as_deref(), Some("billing-mcp"));
    assert_eq!(
        who(&db, &second).await,
        None,
        "the revoked secret stays revoked"
    );
    let list = stdout(&signoff(&["token", "list"], &db.url));
    assert!(
        list.contains("billing-mcp") && list.contains("active"),
        "{list}"
    );
}

#[tokio::test]
async fn what_a_caller_sends_cannot_forge_a_log_line_or_colour_the_terminal() {
    let db = common::sqlite();
    let token = stdout(&signoff(&["token", "create", "agent"], &db.url));
    let token = token.trim();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = common::server::Server::start_logging(
        &db.url,
        &[("RUST_LOG", "signoff=debug,tower_http=debug")],
        log,
    );
    let http = crate::common::http();
    let evil = "agent\nERROR forged: approved by security \u{1b}[31mred\u{1b}[0m\r\u{2028}x";
    for body in [
        serde_json::json!({"tool_name": "transfer", "parameters": {"n": 1}, "requested_by": evil,
                           "summary": evil, "idempotency_key": "k-1"}),
        serde_json::json!({"tool_name": evil, "parameters": {}}),
        serde_json::json!({"tool_name": "transfer", "parameters": {"n": 2}, "server": evil}),
    ] {
        server.ask(token, &body).await;
    }
    http.get(format!(
        "{}/v1/approvals/x%0AERROR%20forged",
        server.address
    ))
    .bearer_auth(token)
    .send()
    .await
    .unwrap();
    // A field of its own in a caller's text; an id long enough to fill every line.
    let fields = serde_json::json!({"tool_name": "transfer", "parameters": {"n": 3},
                                    "requested_by": "x status=approved"});
    server.ask(token, &fields).await;
    let long_id = "r".repeat(5000);
    http.get(format!("{}/healthz", server.address))
        .header("x-request-id", &long_id)
        .send()
        .await
        .unwrap();
    drop(server);
    let log = std::fs::read(&log_path).unwrap();
    assert!(!log.contains(&0x1b), "no escape byte reaches the terminal");
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("approval requested"), "{log}");
    assert!(
        log.contains("forged"),
        "the value is logged, escaped: {log}"
    );
    assert!(
        log.contains(r#"requested_by="x status=approved""#),
        "a caller's text is quoted: {log}"
    );
    assert!(log.contains(&long_id[..64]), "{log}");
    assert!(!log.contains(&long_id[..65]), "a caller's id is cut");
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with("ERROR forged"),
            "forged line: {line}"
        );
        assert!(
            !line.contains('\r') && !line.contains('\u{2028}'),
            "{line:?}"
        );
    }
}

#[test]
fn policy_check_shows_how_calls_classify() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[tiers]\nhigh = \"deny\"\n\n[[rules]]\ntools = [\"search_*\"]\ntier = \"low\"\n\n[[rules]]\ntools = [\"send_email\"]\nwhen = \"size(params.recipients) > 100\"\ntier = \"high\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let many: Vec<String> = (0..101).map(|i| format!("\"u{i}@x.com\"")).collect();
    let call = format!("send_email={{\"recipients\": [{}]}}", many.join(","));
    let output = signoff(
        &[
            "policy",
            "check",
            path,
            "--call",
            &call,
            "--call",
            "deploy_api",
        ],
        "sqlite://unused.db",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(
        report.contains("search_example") && report.contains("auto_approve"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("send_email") && l.contains("tier=high") && l.contains("deny")),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("deploy_api") && l.contains("tier=medium")),
        "{report}"
    );
    assert!(report.contains("is valid"));
}

#[test]
fn policy_check_classifies_a_call_to_a_named_mcp_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[tiers]\nhigh = \"deny\"\n\n[[rules]]\ntools = [\"delete_*\"]\nservers = [\"github*\"]\nwhen = \"params.repo.startsWith('prod/')\"\ntier = \"high\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let output = signoff(
        &[
            "policy",
            "check",
            path,
            "--call",
            r#"github-enterprise/delete_repo={"repo": "prod/api"}"#,
            "--call",
            r#"gitlab/delete_repo={"repo": "prod/api"}"#,
            "--call",
            r#"delete_repo={"repo": "prod/api"}"#,
        ],
        "sqlite://unused.db",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    let line = |label: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no line for {label}: {report}"))
            .to_owned()
    };
    assert!(
        line("github-enterprise/delete_repo").contains("tier=high action=deny rule=rules[0]"),
        "{report}"
    );
    for other in ["gitlab/delete_repo", "delete_repo"] {
        assert!(line(other).contains("rule=none"), "{report}");
    }
    // The rule's own sample call names a server its globs match; without a `repo`
    // its condition cannot be evaluated, so the call takes the rule, at its tier, denied.
    assert!(
        line("githubexample/delete_example").contains("tier=high action=deny rule=rules[0]"),
        "{report}"
    );

    let refused = signoff(
        &["policy", "check", path, "--call", "git hub/delete_repo"],
        "sqlite://unused.db",
    );
    assert_one_line_error(&refused, "server name");
}

#[test]
fn invalid_policies_and_config_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[defaults]\nexpires_after = \"4 fortnights\"\n").unwrap();
    let broken = broken.to_str().unwrap();
    assert_one_line_error(
        &signoff(&["policy", "check", broken], "sqlite://unused.db"),
        "expires_after",
    );
    let unreachable = dir.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        "[defaults]\nrequired_approvals = 2\n\n[[rules]]\ntools = [\"deploy_*\"]\ntier = \"medium\"\napprovers = [\"U0ALICE\"]\n",
    )
    .unwrap();
    assert_one_line_error(
        &signoff(
            &["policy", "check", unreachable.to_str().unwrap()],
            "sqlite://unused.db",
        ),
        "rules[0].required_approvals: 2 (from defaults) is more than the 1 distinct approvers",
    );
    let never = dir.path().join("never.toml");
    std::fs::write(
        &never,
        "[defaults]\nchannel = \"C0APPROVALS\"\n\n[[rules]]\ntools = [\"deploy_*\"]\ntier = \"medium\"\nremind_every = \"1h\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &signoff(
            &["policy", "check", never.to_str().unwrap()],
            "sqlite://unused.db",
        ),
        "rules[0].remind_every: is set without remind_after",
    );
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "[[rules]]\ntools = [\"a\"\ntier = \"low\"\n").unwrap();
    assert_one_line_error(
        &signoff(
            &["policy", "check", syntax.to_str().unwrap()],
            "sqlite://unused.db",
        ),
        "line",
    );
    // A misspelt function would fail on every call: refused, naming the rule.
    let misspelt = dir.path().join("misspelt.toml");
    std::fs::write(
        &misspelt,
        "[[rules]]\ntools = [\"deploy_*\"]\nwhen = \"params.env.startWith('prod')\"\ntier = \"high\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &signoff(
            &["policy", "check", misspelt.to_str().unwrap()],
            "sqlite://unused.db",
        ),
        "rules[0].when: unknown function `startWith`",
    );
    assert_one_line_error(
        &signoff(
            &["policy", "check", "/nonexistent/policy.toml"],
            "sqlite://unused.db",
        ),
        "/nonexistent/policy.toml",
    );

    let db = common::sqlite();
    assert_one_line_error(
        &signoff(&["serve", "--policy", broken], &db.url),
        "expires_after",
    );
    assert_one_line_error(
        &signoff(&["serve", "--policy", "/nonexistent/p.toml"], &db.url),
        "/nonexistent/p.toml",
    );
    assert_one_line_error(
        &signoff(&["migrate"], "mysql://localhost/x"),
        "unsupported database URL",
    );
    assert_one_line_error(
        &signoff(&["migrate"], "sqlite:///nonexistent-dir/x/signoff.db"),
        "cannot open database",
    );
    assert_one_line_error(
        &signoff(&["migrate"], "postgres://nobody:secret@127.0.0.1:1/x"),
        "cannot open database",
    );
    let refused = signoff(&["migrate"], "postgres://nobody:secret@127.0.0.1:1/x");
    assert!(
        !stderr(&refused).contains("secret"),
        "passwords are not printed"
    );
    let bad_listen = signoff(&["serve", "--listen", "not-an-address"], &db.url);
    assert!(!bad_listen.status.success());
    assert!(
        stderr(&bad_listen).contains("invalid listen address"),
        "{}",
        stderr(&bad_listen)
    );
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let db = common::sqlite();
    let listen = common::server::free_address();
    let mut child = common::server::command(&["serve", "--listen", &listen], &db.url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if let Ok(mut stream) = std::net::TcpStream::connect(&listen) {
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            up = answer.starts_with("HTTP/1.1 200");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Deliver SIGTERM as a process supervisor would.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut logs = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(up, "serve answered /healthz; logs: {logs}");
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}; logs: {logs}"
    );
    assert!(
        logs.contains("signoff serving") && logs.contains("sqlite"),
        "logs say where and which store: {logs}"
    );
    assert!(logs.contains("shutting down"), "{logs}");
}

/// A stop sent while `serve` is still starting ends it at once: here its database
/// takes the connection and never answers, and nothing else would ever end the wait.
#[test]
fn serve_stops_on_sigterm_while_its_database_never_answers() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let database = format!(
        "postgres://signoff@{}/signoff",
        silent.local_addr().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let generated = signoff(
        &["key", "generate", key.to_str().unwrap()],
        "sqlite://unused.db",
    );
    assert!(generated.status.success(), "{}", stderr(&generated));
    let listen = common::server::free_address();
    let child = common::server::command(&["serve", "--listen", &listen], &database)
        .env("SIGNOFF_SIGNING_KEY_FILE", &key)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it connects, the start waits on the database (its stop handlers were
    // installed before): the connection is taken, and never answered.
    silent.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let _connection = loop {
        match silent.accept() {
            Ok((connection, _)) => break connection,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("serve never reached its database: {error}"),
        }
    };
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = exited_within(child, Duration::from_secs(10));
    assert!(output.status.success(), "{output:?}");
    assert!(
        stderr(&output).contains("stopped before it was serving"),
        "{}",
        stderr(&output)
    );
    drop(silent);
}

#[test]
fn manifest_prints_the_slack_app_with_the_public_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .arg("manifest")
        .env("SIGNOFF_PUBLIC_URL", "https://signoff.example.com")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = stdout(&output);
    assert!(manifest.contains("https://signoff.example.com/slack/interactions"));
    assert!(manifest.contains("/approvals"));
    let missing = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .arg("manifest")
        .env_remove("SIGNOFF_PUBLIC_URL")
        .output()
        .unwrap();
    assert_one_line_error(&missing, "SIGNOFF_PUBLIC_URL");
}

/// A `SIGNOFF_PUBLIC_URL` that is no http(s) URL stops `serve` with one line, checked
/// as `manifest` checks it: `/mcp` would otherwise refuse every remote call (403, its
/// `Host` not allowed) with nothing logged.
#[test]
fn serve_refuses_a_public_url_that_is_no_url() {
    let db = common::sqlite();
    for url in [
        "signoff.example.com",
        "https://",
        "https://sign off.example.com",
        "https://signoff.example.com?team=a",
        "https://user:secret@signoff.example.com",
    ] {
        let listen = common::server::free_address();
        let child = common::server::command(&["serve", "--listen", &listen], &db.url)
            .env("SIGNOFF_PUBLIC_URL", url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = exited_within(child, Duration::from_secs(20));
        assert_one_line_error(&output, "SIGNOFF_PUBLIC_URL must be an http(s) URL");
    }
}

/// A setting left empty, as compose and container files leave them, counts as unset
/// (a global one used to fail every command, naming the flag, not the variable),
/// except where its default would run the server on other rules or another database;
/// the database URL's password never shows in `--help`.
#[test]
fn an_empty_setting_counts_as_unset_and_help_shows_no_database_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "[[rules]]\ntools = [\"search_*\"]\ntier = \"low\"\n").unwrap();
    let path = file.to_str().unwrap();
    let checked = common::server::command(
        &["policy", "check", path, "--call", "search_docs"],
        "sqlite://unused.db",
    )
    .env("SIGNOFF_SIGNING_KEY_FILE", "")
    .env("SIGNOFF_POLICY", "")
    .env("SIGNOFF_LISTEN", "")
    .output()
    .unwrap();
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(
        stdout(&checked).contains("search_docs"),
        "{}",
        stdout(&checked)
    );

    // But not the policy, nor the database's file when no URL is given: the default
    // would run a server meant for its rules, or for PostgreSQL, on another.
    let listen = common::server::free_address();
    let serve = common::server::command(&["serve", "--listen", &listen], "sqlite://unused.db")
        .env("SIGNOFF_POLICY", "")
        .output()
        .unwrap();
    assert_one_line_error(&serve, "SIGNOFF_POLICY (--policy) is empty");
    let file_left_blank = |args: &[&str]| {
        common::server::command(args, "sqlite://unused.db")
            .env_remove("DATABASE_URL")
            .env("DATABASE_URL_FILE", "")
            .output()
            .unwrap()
    };
    let listed = file_left_blank(&["token", "list"]);
    assert_one_line_error(
        &listed,
        "the database URL is empty (DATABASE_URL, or the file",
    );
    // Nothing else is held up: help, or a URL given on the command line.
    assert!(file_left_blank(&["--help"]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("given.db").display());
    let migrated = file_left_blank(&["migrate", "--database-url", &url]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));

    for args in [&["serve", "--help"][..], &["list", "--help"], &["--help"]] {
        let help = signoff(args, "postgres://signoff:hunter2@127.0.0.1:1/x");
        assert!(help.status.success(), "{}", stderr(&help));
        assert!(!stdout(&help).contains("hunter2"), "{}", stdout(&help));
    }
}

/// The hidden delivery settings out of their bounds stop `serve` with one line naming
/// the setting: a lease of zero would have the deliveries claim and put back their
/// jobs forever, one of thousands of years overflow the lease's time, and a post
/// interval of hours hold every channel's posts back. A `SLACK_API_URL` that is no
/// http(s) URL started a server whose every call to Slack failed as if Slack were down.
#[test]
fn serve_refuses_delivery_settings_out_of_bounds_and_a_slack_api_url_that_is_no_url() {
    let db = common::sqlite();
    for (name, value) in [
        ("SIGNOFF_DELIVERY_LEASE", "0s"),
        ("SIGNOFF_DELIVERY_LEASE", "1s"),
        ("SIGNOFF_DELIVERY_LEASE", "5000years"),
        ("SIGNOFF_DELIVERY_LEASE", "soon"),
        ("SIGNOFF_SLACK_POST_INTERVAL", "2h"),
        ("SLACK_API_URL", "slack.com/api"),
        ("SLACK_API_URL", "htps://slack.com/api"),
        ("SLACK_API_URL", "file:///tmp/slack"),
    ] {
        let listen = common::server::free_address();
        let child = common::server::command(&["serve", "--listen", &listen], &db.url)
            .env(name, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = exited_within(child, Duration::from_secs(10));
        assert_one_line_error(&output, &format!("{name} must be"));
    }
}

/// A RUST_LOG that cannot be read is said, and the default filter used.
#[test]
fn an_unreadable_rust_log_is_said_and_the_default_used() {
    let db = common::sqlite();
    let output = common::server::command(&["token", "create", "agent"], &db.url)
        .env("RUST_LOG", "signoff=loud")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("RUST_LOG cannot be read"),
        "{}",
        stderr(&output)
    );
}

/// The output of `child`, which must exit within `limit` (else it is killed).
fn exited_within(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "still running after {limit:?}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Spaces around `SIGNOFF_PUBLIC_URL` are no reason to refuse its host; its origin is
/// its default port's (a browser's `Origin` without the port), not any port's, and
/// rmcp has no port-less origin to warn about.
#[tokio::test]
async fn serve_takes_the_public_url_with_spaces_around_and_its_default_port() {
    let db = common::sqlite();
    let token = stdout(&signoff(&["token", "create", "agent"], &db.url));
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let server = common::server::Server::start_logging(
        &db.url,
        &[
            ("SIGNOFF_PUBLIC_URL", "https://signoff.example.com "),
            ("RUST_LOG", "warn"),
        ],
        std::fs::File::create(&log_path).unwrap(),
    );
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
    for (origin, status) in [
        ("https://signoff.example.com", 200),
        ("https://signoff.example.com:8443", 403),
    ] {
        let response = common::http()
            .post(format!("{}/mcp", server.address))
            .bearer_auth(token.trim())
            .header("host", "signoff.example.com")
            .header("origin", origin)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(list)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{origin}");
    }
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("without a port"), "{log}");
}
