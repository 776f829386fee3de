//! Socket Mode's click path beside the HTTP one, measured in one run against one
//! `signoff serve` (the real binary, SQLite in a temp dir, durable commits) that has
//! both: a signing secret for `POST /slack/interactions`, and `SLACK_APP_TOKEN` with
//! `SLACK_API_URL` pointed at a fake Slack in this process, whose
//! `apps.connections.open` hands out a fake Socket Mode server (also in this process,
//! `tests/common/fake_socket.rs`).
//!
//! Every click is an Approve by its own user on its own pending approval, carrying the
//! message metadata signoff attaches (a number in `event_payload`), as Slack sends it:
//! over HTTP a signed form, over the socket an `interactive` envelope. Four phases,
//! each on fresh approvals:
//!
//! 1. **HTTP, closed loop**: `--clients` tasks, each sending its next click when the
//!    last one was answered: clicks/s, and request → 200 p50/p99.
//! 2. **Socket, closed loop**: the same number of envelopes outstanding at once, each
//!    replaced when acked: clicks/s, and envelope → ack p50/p99.
//! 3. **HTTP, paced** at `--rate` clicks/s for `--seconds`, sent on schedule whatever
//!    the answers (latency counted from the scheduled time).
//! 4. **Socket, paced** the same way: the ack p99 here is the target (< 100 ms at
//!    1,000 clicks/s).
//!
//! Then every clicked approval must read `approved`. Run:
//!
//! ```text
//! cargo bench --bench socket_mode -- [--clicks 10000] [--clients 32] [--rate 1000] [--seconds 10]
//! ```

mod drive;
#[path = "../../tests/common/fake_slack.rs"]
mod fake_slack;
#[path = "../../tests/common/fake_socket.rs"]
mod fake_socket;
// Shared with the other benches, which use more of them.
#[allow(dead_code)]
#[path = "../support/format.rs"]
mod format;
#[allow(dead_code)]
#[path = "../support/process.rs"]
mod server;
#[path = "../../tests/common/slack.rs"]
mod slack;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::drive::{Clicker, Stats, closed_loop, paced};
use crate::fake_slack::FakeSlack;
use crate::fake_socket::FakeSocket;
use crate::format::{count, verdict};
use crate::server::{Server, SlackEnv, create_named_token};

const SIGNING_SECRET: &str = "bench-signing-secret-0123456789";
pub const CHANNEL: &str = "C0BENCH";
/// Anyone may approve; one approval decides. Each phase's approvals are one requester's
/// (a token of its own), so a phase has at most `max_pending`'s ceiling of clicks.
const POLICY: &str =
    "[defaults]\nchannel = \"C0BENCH\"\nexpires_after = \"1h\"\nmax_pending = 10000\n";
/// The most clicks one phase can have: `max_pending`'s ceiling.
const MOST_PER_PHASE: usize = 10_000;
/// The Socket Mode ack target at the paced rate.
const PACED_P99_TARGET: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Parser)]
struct Args {
    /// Clicks in each closed-loop phase.
    #[arg(long, default_value_t = 10_000)]
    clicks: usize,
    /// Clicks outstanding at once in the closed-loop phases.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Clicks per second in the paced phases.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Length of each paced phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let paced_count = (args.rate * args.seconds as f64) as usize;
    ensure!(
        args.clicks <= MOST_PER_PHASE && paced_count <= MOST_PER_PHASE,
        "at most {MOST_PER_PHASE} clicks per phase (max_pending's ceiling)"
    );
    println!(
        "signoff Socket Mode bench: {} clicks closed-loop ({} at once), then {} clicks/s for {} s, over HTTP and over the socket; {} CPUs shared by driver and server",
        count(args.clicks),
        args.clients,
        args.rate,
        args.seconds,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let dir = tempfile::tempdir().context("create a temp dir")?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).context("write the policy")?;
    let fake = FakeSlack::start().await;
    let socket = FakeSocket::start().await;
    fake.set_socket_url(&socket.url);
    let tokens = [
        create_named_token(&url, "bench-http").await?,
        create_named_token(&url, "bench-socket").await?,
        create_named_token(&url, "bench-http-paced").await?,
        create_named_token(&url, "bench-socket-paced").await?,
    ];
    let slack = SlackEnv {
        bot_token: "xoxb-bench",
        signing_secret: SIGNING_SECRET,
        api_url: &fake.url,
        app_token: Some("xapp-1-A0BENCH-bench"),
    };
    let server = Server::start(&url, Some(&policy), Some(slack)).await?;
    let base = server.base_url();
    let conn = socket.accept().await;
    conn.hello();
    let http = server::http_client(Duration::from_secs(30));
    wait_connected(&http, &base).await?;

    let mut ids = Vec::new();
    for (token, n) in tokens
        .iter()
        .zip([args.clicks, args.clicks, paced_count, paced_count])
    {
        ids.push(create_pending(&http, &base, token, n).await?);
    }
    let [http_ids, socket_ids, http_paced_ids, socket_paced_ids] = &ids[..] else {
        unreachable!("four phases")
    };
    let over_http = Clicker::http(http.clone(), base.clone(), SIGNING_SECRET);
    let over_socket = Clicker::socket(conn);
    let phases = [
        (
            "HTTP, closed loop",
            closed_loop(&over_http, http_ids, args.clients).await,
        ),
        (
            "socket, closed loop",
            closed_loop(&over_socket, socket_ids, args.clients).await,
        ),
        (
            "HTTP, paced",
            paced(&over_http, http_paced_ids, args.rate).await,
        ),
        (
            "socket, paced",
            paced(&over_socket, socket_paced_ids, args.rate).await,
        ),
    ];
    for (what, stats) in &phases {
        stats.print(what);
    }
    let mut approved = 0;
    for (token, ids) in tokens.iter().zip(&ids) {
        approved += count_approved(&http, &base, token, ids).await?;
    }
    let clicked: usize = ids.iter().map(Vec::len).sum();
    println!(
        "{} of {} clicked approvals read approved",
        count(approved),
        count(clicked)
    );
    drop(server);
    println!("\n{}", table(&phases, args));
    Ok(())
}

/// Waits (up to 10 s) for `/health/approvals` to report the socket connected.
async fn wait_connected(http: &reqwest::Client, base: &str) -> Result<()> {
    for _ in 0..1000 {
        let health: Value = http
            .get(format!("{base}/health/approvals"))
            .send()
            .await?
            .json()
            .await?;
        if health["socket_mode"] == "connected" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the server's socket never connected")
}

/// `n` pending approvals (32 requests at a time): their ids.
async fn create_pending(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    n: usize,
) -> Result<Vec<String>> {
    let batch = rand::random::<u64>();
    let ids: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let answer: Value = http
                .post(format!("{base}/v1/approvals"))
                .bearer_auth(token)
                .json(&json!({"tool_name": "delete_customer_records",
                              "parameters": {"batch": batch, "i": i}}))
                .send()
                .await?
                .json()
                .await?;
            ensure!(answer["status"] == "pending", "not pending: {answer}");
            Ok(answer["approval_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        })
        .buffered(32)
        .try_collect()
        .await?;
    println!("created {} pending approvals", count(ids.len()));
    Ok(ids)
}

/// How many of `ids` read `approved`.
async fn count_approved(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    ids: &[String],
) -> Result<usize> {
    let statuses: Vec<bool> = futures_util::stream::iter(ids)
        .map(|id| async move {
            let answer: Value = http
                .get(format!("{base}/v1/approvals/{id}"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(answer["status"] == "approved")
        })
        .buffered(32)
        .try_collect()
        .await?;
    Ok(statuses.into_iter().filter(|approved| *approved).count())
}

/// The Markdown table for docs/performance.md.
fn table(phases: &[(&str, Stats)], args: Args) -> String {
    let mut out = String::from(
        "| click path | load | clicks/s | ack p50 | ack p99 | max | failed |\n|---|---|---|---|---|---|---|\n",
    );
    for (what, stats) in phases {
        let load = if what.ends_with("closed loop") {
            format!("{} at once", args.clients)
        } else {
            format!("paced {}/s", args.rate)
        };
        out.push_str(&format!(
            "| {what} | {load} | {:.0} | {} | {} | {} | {} |\n",
            stats.rate(),
            drive::ms(stats.p(0.50)),
            drive::ms(stats.p(0.99)),
            drive::ms(stats.p(1.0)),
            stats.failures,
        ));
    }
    if let Some((_, socket)) = phases.iter().find(|(what, _)| *what == "socket, paced") {
        let met = socket.p(0.99) < PACED_P99_TARGET && socket.failures == 0;
        out.push_str(&format!(
            "\nSocket Mode ack p99 at a paced {}/s: {} (target < 100 ms): {}\n",
            args.rate,
            drive::ms(socket.p(0.99)),
            verdict(met)
        ));
    }
    out
}
