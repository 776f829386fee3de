//! The server under test as the benches run it: `signoff token create`, and
//! `signoff serve` as a child process on a free port of 127.0.0.1, with its memory read
//! from `/proc`. Shared by `benches/load` and `benches/scale` (each includes this file
//! with `#[path]`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// How long `signoff serve` may take to answer `/healthz` (a large database migrates
/// and opens first).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `signoff token create bench`: the token it prints.
pub async fn create_token(url: &str) -> Result<String> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(["token", "create", "bench"])
        // `--database-url` belongs to `token`, before `create`; the env var works anywhere.
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .await
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
}

/// The `signoff serve` child process; killed when dropped (also on panic).
pub struct Server {
    child: Child,
    port: u16,
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
        let port = free_port()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_signoff"));
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", url])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match policy {
            Some(policy) => command.arg("--policy").arg(policy),
            None => command.env_remove("SIGNOFF_POLICY"),
        };
        match slack {
            Some(slack) => command
                .env("SLACK_BOT_TOKEN", slack.bot_token)
                .env("SLACK_SIGNING_SECRET", slack.signing_secret)
                .env("SLACK_API_URL", slack.api_url),
            // Keep the run on 127.0.0.1 whatever the caller's environment holds.
            None => command
                .env_remove("SLACK_BOT_TOKEN")
                .env_remove("SLACK_SIGNING_SECRET")
                .env_remove("SLACK_API_URL"),
        };
        let child = command.spawn().context("start `signoff serve`")?;
        let mut server = Server {
            child,
            port,
            _dir: dir,
        };
        server.wait_until_healthy().await?;
        Ok(server)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_until_healthy(&mut self) -> Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .context("build an HTTP client")?;
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("poll the server process")? {
                bail!("`signoff serve` exited during start-up: {status}");
            }
            if let Ok(answer) = client.get(&url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "`signoff serve` did not answer {url} within {} s",
            START_TIMEOUT.as_secs()
        )
    }

    pub fn memory(&self) -> Result<Memory> {
        Memory::of(self.child.id())
    }

    #[allow(dead_code)] // the load bench meters its CPU; the scale bench does not
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr().context("read the bound port")?.port())
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
