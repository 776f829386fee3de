//! The one way the tests and the benches run the `signoff` binary: [`command`] (a one-shot command, or
//! `serve`) and [`Server`], a real `signoff serve` on a free port, for tests that need
//! the process itself (several replicas, a kill, its log, a signal).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `signoff serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub address: String,
    /// Files it was started with (a policy), kept as long as it runs.
    _files: Option<tempfile::TempDir>,
}

/// `signoff ARGS` against `database_url`, logging only errors unless `RUST_LOG` is set
/// on the command, with no policy file from the environment. On PostgreSQL every
/// process of a test run signs with one key file ([`postgres_key_file`]); on SQLite
/// the key is the default one beside the database.
pub fn command(args: &[&str], database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signoff"));
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "error")
        .env_remove("SIGNOFF_POLICY")
        .env_remove("SIGNOFF_SIGNING_KEY_FILE");
    if database_url.starts_with("postgres") {
        command.env("SIGNOFF_SIGNING_KEY_FILE", postgres_key_file());
    }
    command
}

/// The signing key file of this test process's servers on PostgreSQL.
pub fn postgres_key_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    let (_dir, file) = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("signing.key");
        signoff::signing::Signer::create(&file).expect("key written");
        (dir, file)
    });
    file
}

/// A free port on 127.0.0.1, as `HOST:PORT`.
pub fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Runs a one-shot `signoff` command against `database_url` and returns its stdout.
pub fn signoff(args: &[&str], database_url: &str) -> String {
    let output = command(args, database_url).output().expect("signoff runs");
    assert!(
        output.status.success(),
        "signoff {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Server {
    /// Starts `signoff serve` on a free port with `env`, and waits until it answers.
    pub fn start(database_url: &str, env: &[(&str, &str)]) -> Server {
        Self::start_logging(database_url, env, Stdio::inherit())
    }

    /// Starts `signoff serve` posting to the fake Slack at `slack_url` (a bot token and
    /// a signing secret set), with the policy `policy` (TOML) and `env` besides.
    pub fn start_with_slack(
        database_url: &str,
        slack_url: &str,
        policy: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, policy).expect("policy written");
        let mut all = vec![
            ("SIGNOFF_POLICY", file.to_str().expect("a UTF-8 path")),
            ("SLACK_BOT_TOKEN", "xoxb-test"),
            ("SLACK_SIGNING_SECRET", "secret"),
            ("SLACK_API_URL", slack_url),
        ];
        all.extend_from_slice(env);
        let mut server = Self::start(database_url, &all);
        server._files = Some(dir);
        server
    }

    /// Asks for an approval: `POST /v1/approvals` with `body`, as `token`.
    pub async fn ask(&self, token: &str, body: &serde_json::Value) -> reqwest::Response {
        http()
            .post(format!("{}/v1/approvals", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("signoff answers")
    }

    /// Like [`Server::start`], its log (stderr) going to `log`.
    pub fn start_logging(
        database_url: &str,
        env: &[(&str, &str)],
        log: impl Into<Stdio>,
    ) -> Server {
        let mut command = command(&["serve"], database_url);
        command
            .env(
                "RUST_LOG",
                std::env::var("SIGNOFF_TEST_SERVER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(command, Duration::from_secs(30)).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts `command` (a `signoff serve` from [`command`], set up as the caller
    /// wants) on a free port, and waits up to `limit` until `/healthz` answers.
    pub fn spawn(mut command: Command, limit: Duration) -> Result<Server, String> {
        let listen = free_address();
        command
            .args(["--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start signoff serve: {error}"))?;
        let mut server = Server {
            child,
            address: format!("http://{listen}"),
            _files: None,
        };
        server.wait_until_healthy(&listen, limit)?;
        Ok(server)
    }

    /// Waits until `GET /healthz` answers 200, or the process exits, or `limit` passes.
    fn wait_until_healthy(&mut self, listen: &str, limit: Duration) -> Result<(), String> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("signoff serve exited during start-up: {status}"));
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(listen) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let asked = stream.write_all(
                    b"GET /healthz HTTP/1.1\r\nHost: signoff\r\nConnection: close\r\n\r\n",
                );
                let mut answer = String::new();
                if asked.is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.1 200")
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "signoff serve did not answer /healthz on {listen} within {limit:?}"
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flushing; what a crash or an OOM kill does.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to `limit` for `check` to hold, polling; for effects of other processes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// One series of the `/metrics` of the server at `base` (e.g.
/// `signoff_long_polls_waiting`, or one with its labels), 0 when absent.
pub async fn metric(base: &str, series: &str) -> f64 {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Waits until `series` of the server at `base` reads `value` (a state of the server
/// the test cannot otherwise see, such as a long-poll parked), polling; panics after
/// 10 s.
pub async fn until_metric(base: &str, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(base, series).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now}, not {value}, after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client for the tests' plain-HTTP servers, to set up further. signoff compiles one
/// rustls provider (ring) and reqwest none of its own (`rustls-no-provider`), so every
/// client names its TLS config; this one trusts no certificate: plain HTTP needs none.
pub fn http_builder() -> reqwest::ClientBuilder {
    let tls = signoff::tls::without_roots().expect("a TLS config without roots");
    reqwest::Client::builder().tls_backend_preconfigured(tls)
}

/// A client for the tests' plain-HTTP servers (see [`http_builder`]).
pub fn http() -> reqwest::Client {
    http_builder().build().expect("a plain-HTTP client builds")
}
