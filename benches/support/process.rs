//! The server under test as the benches run it: `signoff token create`, and
//! `signoff serve` as a child process on a free port of 127.0.0.1 (started as the tests
//! start it), with its memory read from `/proc`. Shared by `benches/load`, `benches/scale`
//! and `benches/socket_mode` (each includes this file with `#[path]`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

#[path = "../../tests/common/server.rs"]
mod running;

/// A client for the server under test: plain HTTP (see `running::http_builder`), no
/// proxy, Nagle off, each request given up after `timeout`.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    running::http_builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
        .expect("a plain-HTTP reqwest client always builds")
}

/// How long `signoff serve` may take to answer `/healthz` (a large database migrates
/// and opens first).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `signoff token create bench`: the token it prints.
pub async fn create_token(url: &str) -> Result<String> {
    create_named_token(url, "bench").await
}

/// `signoff token create NAME`: the token it prints (a requester of its own, with its
/// own `max_pending`).
pub async fn create_named_token(url: &str, name: &str) -> Result<String> {
    let mut command = running::command(&["token", "create", name], url);
    command.env("RUST_LOG", "warn");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .context("run `signoff token create`")?
        .context("run `signoff token create`")?;
    ensure!(
        output.status.success(),
        "`signoff token create` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).context("token is not UTF-8")?;
    Ok(token.trim().to_owned())
}

/// The Slack settings to give the server; without them it runs with Slack off.
pub struct SlackEnv<'a> {
    pub bot_token: &'a str,
    pub signing_secret: &'a str,
    /// `SLACK_API_URL`: the base the Web API method names are appended to.
    pub api_url: &'a str,
    /// `SLACK_APP_TOKEN`: Socket Mode too.
    pub app_token: Option<&'a str>,
}

/// The `signoff serve` child process, started the tests' way (`tests/common/server.rs`);
/// killed when dropped (also on panic).
pub struct Server {
    inner: running::Server,
    /// The working directory, empty, so no `./signoff.toml` is picked up.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `signoff serve` on `url` with the built-in policy or `policy`, and Slack
    /// off or pointed at `slack`; answers once `/healthz` does.
    pub async fn start(
        url: &str,
        policy: Option<&Path>,
        slack: Option<SlackEnv<'_>>,
    ) -> Result<Server> {
        let dir = tempfile::tempdir().context("create a working dir for the server")?;
        let mut command = running::command(&["serve"], url);
        command
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit());
        if let Some(policy) = policy {
            command.arg("--policy").arg(policy);
        }
        match slack {
            Some(slack) => {
                match slack.app_token {
                    Some(token) => command.env("SLACK_APP_TOKEN", token),
                    None => command.env_remove("SLACK_APP_TOKEN"),
                };
                command
                    .env("SLACK_BOT_TOKEN", slack.bot_token)
                    .env("SLACK_SIGNING_SECRET", slack.signing_secret)
                    .env("SLACK_API_URL", slack.api_url)
            }
            // Keep the run on 127.0.0.1 whatever the caller's environment holds.
            None => command
                .env_remove("SLACK_BOT_TOKEN")
                .env_remove("SLACK_SIGNING_SECRET")
                .env_remove("SLACK_APP_TOKEN")
                .env_remove("SLACK_API_URL"),
        };
        let inner =
            tokio::task::spawn_blocking(move || running::Server::spawn(command, START_TIMEOUT))
                .await
                .context("start `signoff serve`")?
                .map_err(anyhow::Error::msg)?;
        Ok(Server { inner, _dir: dir })
    }

    pub fn base_url(&self) -> String {
        self.inner.address.clone()
    }

    pub fn memory(&self) -> Result<Memory> {
        Memory::of(self.inner.pid())
    }

    #[allow(dead_code)] // the load bench meters its CPU; the scale bench does not
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }
}

/// A process's resident memory from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kb: u64,
    pub peak_kb: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Memory {
            rss_kb: field("VmRSS:")?,
            peak_kb: field("VmHWM:")?,
        })
    }
}
