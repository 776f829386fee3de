//! Load driver for signoff: throughput, latency and memory over real HTTP on 127.0.0.1.
//!
//! What it measures, per backend (SQLite in a temp dir, and PostgreSQL in a fresh
//! `signoff_bench_<random>` database that is dropped at the end):
//!
//! 1. **create** — `POST /v1/approvals` with unique parameters (no dedup, all pending):
//!    requests/s, p50, p99, and where the server's time went (its `/metrics` before and
//!    after: writer queue wait, batch, commit; `stages.rs`).
//! 2. **get** — `GET /v1/approvals/{id}` over random ids from step 1.
//! 3. **execute** — `POST /v1/approvals/{id}/execute` once per auto-approved approval
//!    (tool `bench_auto_*`, tier `low`); every answer must be 200 and a second execute
//!    of one id must be 409.
//! 4. **long-poll wake** — time from `Store::apply` (a vote) returning to the waiting
//!    `GET /v1/approvals/{id}?wait=30` answering; one waiter at a time, then with
//!    `--clients` waiters at once. The HTTP API has no vote endpoint, so this step runs
//!    the server in this process.
//! 5. **memory** — the server's VmRSS at start, with `--pending` pending approvals, and
//!    after a burst of gets over them.
//! 6. **signed clicks** — `POST /slack/interactions` with a signed `block_actions`
//!    Approve click, once per pending approval, against a server connected to a fake
//!    Slack Web API that this process serves; ack latency and clicks/s, then every
//!    clicked approval must read `approved`. Runs in its own fresh database.
//!
//! Steps 1–3, 5 and 6 drive the real `signoff serve` binary as a child process, with
//! `--clients` tokio tasks, each with its own keep-alive connection. Every phase is
//! bounded in time (`--seconds`) and in count. The end of the output is a Markdown
//! table for the README, after the raw numbers.
//!
//! Run:
//!
//! ```text
//! SIGNOFF_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench --bench load -- [--backend sqlite|postgres|both] [--clients 32] \
//!   [--seconds 10] [--pending 100000] [--only core|clicks] [--quick]
//! ```
//!
//! `--quick` is a smoke test (2 s phases, 2,000 pending). Without
//! `SIGNOFF_BENCH_POSTGRES_URL` (an admin URL) PostgreSQL is skipped. `--only core` runs
//! steps 1–5, `--only clicks` step 6.

mod cli;
mod clicks;
mod client;
mod cpu;
mod drive;
#[path = "../../tests/common/fake_slack.rs"]
mod fake_slack;
#[path = "../support/format.rs"]
mod format;
mod memory;
mod phases;
mod postgres;
mod report;
#[path = "../support/process.rs"]
mod server;
#[path = "../../tests/common/slack.rs"]
mod slack;
mod stages;
mod wake;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::{Args, BackendChoice, Settings};
use crate::clicks::ClicksReport;
use crate::client::Api;
use crate::cpu::{CpuMeter, cpus};
use crate::report::{CoreReport, Report, count, markdown_table};
use crate::server::{Server, create_token};
use crate::stages::Snapshot;

const POSTGRES_ENV: &str = "SIGNOFF_BENCH_POSTGRES_URL";
/// One token opens tens of thousands of pending requests: no `max_pending`.
const BENCH_POLICY: &str =
    "[defaults]\nmax_pending = 0\n\n[[rules]]\ntools = [\"bench_auto_*\"]\ntier = \"low\"\n";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let settings = Settings::from_args(&args)?;
    println!(
        "signoff load bench: {} clients, {} s phases, {} pending, {} CPUs shared by client and server",
        settings.clients,
        settings.phase.as_secs(),
        count(settings.pending),
        cpus(),
    );
    let mut reports = Vec::new();
    if args.backend != BackendChoice::Postgres {
        reports.push(bench(Backend::Sqlite, settings).await?);
    }
    if args.backend != BackendChoice::Sqlite {
        match std::env::var(POSTGRES_ENV) {
            Ok(admin) => reports.push(bench(Backend::Postgres(admin), settings).await?),
            Err(_) => println!(
                "\nskipping PostgreSQL: set {POSTGRES_ENV} to an admin URL such as \
                 postgres://postgres@127.0.0.1:5432/postgres"
            ),
        }
    }
    println!("\n{}", markdown_table(&reports, settings));
    Ok(())
}

/// Where a bench's fresh database lives.
enum Backend {
    /// A file in a temp dir.
    Sqlite,
    /// A new database next to the one this admin URL names.
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    /// Runs `run(url)` in a database of its own, removed afterwards (also on failure or
    /// panic).
    async fn fresh<T, Fut>(&self, run: impl FnOnce(String) -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Backend::Sqlite => {
                let dir =
                    tempfile::tempdir().context("create a temp dir for the SQLite database")?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                run(url).await
            }
            Backend::Postgres(admin) => postgres::with_fresh_database(admin, run).await,
        }
    }
}

/// Every selected step for one backend: steps 1–5 in one database, the clicks in another
/// (so the clicks server does not start with the memory step's backlog).
async fn bench(backend: Backend, settings: Settings) -> Result<Report> {
    let name = backend.name();
    println!("\n== {name} ==");
    let core = if settings.core {
        Some(
            backend
                .fresh(move |url| bench_core(name, url, settings))
                .await?,
        )
    } else {
        None
    };
    let clicks: Option<ClicksReport> = if settings.clicks {
        Some(
            backend
                .fresh(move |url| clicks::measure(name, url, settings))
                .await?,
        )
    } else {
        None
    };
    Ok(Report {
        backend: name,
        core,
        clicks,
    })
}

/// Steps 1–5.
async fn bench_core(backend: &'static str, url: String, settings: Settings) -> Result<CoreReport> {
    let workdir = tempfile::tempdir().context("create a temp dir for the policy")?;
    let policy = workdir.path().join("bench-policy.toml");
    std::fs::write(&policy, BENCH_POLICY).context("write the bench policy")?;
    let token = create_token(&url).await?;
    let server = Server::start(&url, Some(&policy), None).await?;
    let api = Api::new(backend, server.base_url(), token);
    let at_start = server.memory()?;

    let cpu = CpuMeter::start(&server)?;
    let stages = Snapshot::scrape(&api.http, &api.base, "/v1/approvals").await?;
    let (create, mut pending_ids) = phases::measure_create(&api, settings).await?;
    cpu.print(backend, "create")?;
    Snapshot::scrape(&api.http, &api.base, "/v1/approvals")
        .await?
        .print_since(&stages, backend, "create");
    let cpu = CpuMeter::start(&server)?;
    let get = phases::measure_get(&api, Arc::new(pending_ids.clone()), settings).await?;
    cpu.print(backend, "get")?;
    let execute = phases::measure_execute(&api, settings, create.rate(), &server).await?;
    let memory =
        memory::measure_memory(&api, &server, &mut pending_ids, at_start, settings).await?;
    drop(server);

    let (wake_one, wake_many) = wake::measure_long_poll(backend, &url, settings).await?;
    Ok(CoreReport {
        create: create.stats,
        get,
        execute,
        memory,
        wake_one,
        wake_many,
    })
}
