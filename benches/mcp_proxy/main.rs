//! What `signoff proxy` costs, against the app in this process (the real router on
//! 127.0.0.1, `tests/common/app.rs`) and the fixture MCP server
//! (`examples/mcp_fixture.rs`), both driven by rmcp's client over stdio:
//!
//! 1. **added latency** — an auto-approved call through the proxy against the same
//!    call straight to the fixture, interleaved in one run: 1,000 each, p50/p99; and
//!    the proxy's request to signoff made straight, to show what share is signoff's.
//! 2. **decision to result** — a held call, approved (the vote applied to the store as
//!    a click does); time until its result reaches the client: 200 calls, p50/p99.
//! 3. **1,000 held calls** in one proxy: its RSS and CPU while they wait, then every
//!    one approved and answered with its own arguments.
//!
//! Run: `cargo bench --bench mcp_proxy`.
// Parts of the shared test support go unused here.
#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../support/format.rs"]
mod format;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use serde_json::json;
use signoff::approval::{Decider, Decision, Event};
use signoff::clock::Clock;

use common::app::{self, App, Options};
use format::percentile;

const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "4h"
# One proxy holds a thousand calls: no limit on waiting requests.
max_pending = 0

[tiers]
low = "auto_approve"
medium = "require_approval"

[[rules]]
tools = ["echo"]
tier = "low"
"#;

type Client = RunningService<RoleClient, ()>;

fn fixture() -> Result<std::path::PathBuf> {
    let mut build =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && !matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR") {
            build.env_remove(key.as_ref());
        }
    }
    let status = build
        .args(["build", "--quiet", "--release", "--example", "mcp_fixture"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?;
    ensure!(status.success(), "the fixture does not build");
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("deps")?
        .parent()
        .context("profile")?
        .join("examples/mcp_fixture"))
}

/// An rmcp client on `command`'s stdio, and the process (killed when dropped).
async fn connect(mut command: tokio::process::Command) -> Result<(Client, tokio::process::Child)> {
    let mut process = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = process.stdin.take().context("no stdin")?;
    let stdout = process.stdout.take().context("no stdout")?;
    Ok((().serve((stdout, stdin)).await?, process))
}

fn call(tool: &str, arguments: serde_json::Value) -> CallToolRequestParams {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = arguments.as_object().cloned();
    params
}

async fn timed(
    client: &Client,
    params: CallToolRequestParams,
) -> Result<(Duration, CallToolResult)> {
    let start = Instant::now();
    let result = client.call_tool(params).await?;
    Ok((start.elapsed(), result))
}

fn line(what: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{what:<32} p50 {:>8.3} ms  p99 {:>8.3} ms  ({} calls)",
        ms(p50),
        ms(p99),
        samples.len()
    );
    (p50, p99)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The request the proxy makes for an auto-approved call, made straight: the part of
/// the added latency that is signoff's (HTTP, policy, one durable commit).
async fn create_straight(app: &App, n: usize) -> Result<Duration> {
    let body = json!({
        "tool_name": "echo",
        "parameters": {"n": n, "straight": true},
        "server": "mcp_fixture",
        "annotations": {},
        "requested_by": "bench",
        "execute_if_approved": true,
    });
    let start = Instant::now();
    let response = app
        .http
        .post(format!("{}/v1/approvals", app.address))
        .bearer_auth(&app.token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await?;
    let elapsed = start.elapsed();
    ensure!(
        status.is_success() && answer["status"] == "executed",
        "create refused: {status} {answer}"
    );
    Ok(elapsed)
}

async fn added_latency(app: &App, direct: &Client, proxied: &Client) -> Result<()> {
    let (mut straight, mut through, mut creates) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..1_050 {
        let (a, _) = timed(direct, call("echo", json!({"n": n}))).await?;
        let (b, result) = timed(proxied, call("echo", json!({"n": n}))).await?;
        ensure!(
            result.is_error != Some(true),
            "proxied call refused: {result:?}"
        );
        let c = create_straight(app, n).await?;
        if n >= 50 {
            straight.push(a);
            through.push(b);
            creates.push(c);
        }
    }
    let (d50, d99) = line("echo, straight to the fixture", straight);
    let (p50, p99) = line("echo, through the proxy", through);
    let (c50, _) = line("signoff's create, straight", creates);
    println!(
        "added by the proxy: p50 {:.3} ms (target <= 1), p99 {:.3} ms (target <= 3)",
        ms(p50.saturating_sub(d50)),
        ms(p99.saturating_sub(d99))
    );
    println!(
        "of the added p50: signoff's create {:.3} ms, the rest (the proxy's hop, its HTTP client) {:.3} ms",
        ms(c50),
        ms(p50.saturating_sub(d50).saturating_sub(c50))
    );
    Ok(())
}

async fn pending_ids(app: &App) -> Result<Vec<String>> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await?;
    Ok(
        sqlx::query_scalar("SELECT id FROM pending_approvals WHERE status = 'pending'")
            .fetch_all(&mut conn)
            .await?,
    )
}

async fn approve(app: &App, id: &str) -> Result<()> {
    let event = Event::Vote {
        by: Decider::approver("U0ALICE"),
        decision: Decision::Approve,
        reason: None,
        parameters_shown: None,
    };
    app.store
        .apply(
            id.parse().map_err(|_| anyhow::anyhow!("bad id {id}"))?,
            event,
            app.clock.now(),
        )
        .await?;
    Ok(())
}

/// Waits until `count` approvals are pending; their ids.
async fn until_pending(app: &App, count: usize) -> Result<Vec<String>> {
    for _ in 0..6_000 {
        let ids = pending_ids(app).await?;
        if ids.len() >= count {
            return Ok(ids);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("{count} approvals never became pending")
}

async fn decision_to_result(app: &App, proxied: &Client) -> Result<()> {
    let mut samples = Vec::new();
    for n in 0..200 {
        let peer = proxied.peer().clone();
        let held =
            tokio::spawn(
                async move { peer.call_tool(call("delete_things", json!({"d": n}))).await },
            );
        let id = until_pending(app, 1).await?.remove(0);
        // The proxy is in its long-poll once the approval exists; give it a moment.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let start = Instant::now();
        approve(app, &id).await?;
        let result = held.await??;
        samples.push(start.elapsed());
        ensure!(
            result.is_error != Some(true),
            "approved call refused: {result:?}"
        );
    }
    line("decision -> result", samples);
    Ok(())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `RssAnon`, `RssFile`).
fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| field.to_owned())
}

fn rss_kb(pid: u32) -> Result<u64> {
    status_kb(pid, "VmRSS")
}

async fn thousand_held(app: &App, proxied: &Client, pid: u32) -> Result<()> {
    let (before, before_anon) = (rss_kb(pid)?, status_kb(pid, "RssAnon")?);
    let mut held = Vec::new();
    for n in 0..1_000 {
        let peer = proxied.peer().clone();
        held.push(tokio::spawn(async move {
            (
                n,
                peer.call_tool(call("delete_things", json!({"h": n}))).await,
            )
        }));
    }
    let ids = until_pending(app, 1_000).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ticks, rss) = (cpu_ticks(pid)?, rss_kb(pid)?);
    let (anon, file) = (status_kb(pid, "RssAnon")?, status_kb(pid, "RssFile")?);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = cpu_ticks(pid)? - ticks;
    println!(
        "1,000 held calls: proxy RSS {:.1} MiB (idle before: {:.1} MiB; target < 40), CPU while waiting {} ticks in 5 s",
        rss as f64 / 1024.0,
        before as f64 / 1024.0,
        idle
    );
    // File pages (the executable's code, OpenSSL) are shared by every proxy on the
    // machine, and how many are mapped depends on the page cache (fault-around);
    // anonymous memory is what each proxy has of its own.
    println!(
        "  of which anonymous {:.1} MiB (idle before: {:.1}), file pages {:.1} MiB",
        anon as f64 / 1024.0,
        before_anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    for id in &ids {
        approve(app, id).await?;
    }
    for task in held {
        let (n, result) = task.await?;
        let text = result?.content[0]
            .as_text()
            .map(|t| t.text.clone())
            .unwrap_or_default();
        ensure!(
            text == format!(r#"delete_things ran with {{"h":{n}}}"#),
            "call {n} answered {text:?}"
        );
    }
    println!("1,000 held calls: all approved and answered with their own arguments");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let fixture = fixture()?;
    let app = app::spawn(common::sqlite(), Options::new(POLICY)).await;
    let (direct, _fixture) = connect(tokio::process::Command::new(&fixture)).await?;
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_signoff"));
    proxy
        .args(["proxy", "--url", &app.address, "--hold", "10m", "--"])
        .arg(&fixture)
        .env("SIGNOFF_TOKEN", &app.token)
        .env("RUST_LOG", "error");
    let (proxied, proxy) = connect(proxy).await?;
    let pid = proxy.id().context("no pid")?;
    added_latency(&app, &direct, &proxied).await?;
    decision_to_result(&app, &proxied).await?;
    thousand_held(&app, &proxied, pid).await?;
    Ok(())
}
