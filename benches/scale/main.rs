//! Scale bench for signoff: the scheduler and the server's memory with a large store.
//!
//! The target (per backend): with 1,000,000 pending approvals in the store, one
//! scheduler pass that finds 1,000 due jobs takes < 50 ms, and `signoff serve` stays
//! under 64 MiB of resident memory.
//!
//! Per backend (SQLite in a temp dir; PostgreSQL in a fresh `signoff_scale_<random>`
//! database, dropped at the end even when the bench fails):
//!
//! 1. **load** — `Store::connect` (migrations), then `--pending` pending approvals and
//!    one `expire` job each, written straight into the tables with set-based SQL in one
//!    transaction (SQLite: a recursive CTE; PostgreSQL: `generate_series`, then
//!    `VACUUM ANALYZE` as autovacuum would do on a table this size). Row `n` has
//!    parameters `{"i": n}`, `params_sha256` = `n` zero-padded to 64 digits, token
//!    `bench`, and expires `n` seconds after a point 30 days ahead, so nothing is due.
//! 2. **memory** — the real `signoff serve` binary on that database: VmRSS at start,
//!    then after a few `GET /health/approvals` and 1,000 `GET /v1/approvals/{id}` over
//!    random loaded ids (8 clients), and VmHWM (the peak). It runs before the passes so
//!    the store holds exactly `--pending` pending approvals, and is stopped before
//!    them (its own scheduler would otherwise take the due jobs).
//! 3. **passes** — after one warm-up pass (reported, not counted: the store's fresh
//!    connections prepare their statements), `--passes` times: a fresh random set of
//!    `--due` pending approvals (and their expire jobs) is made due one second before
//!    `now`, then `Scheduler::new(store).run_once(now)` is timed; it must fire exactly `--due`
//!    timers and leave exactly those approvals `expired`. One more pass, untimed as a
//!    whole, times its two writes apart to show where a pass's time goes:
//!    `Store::fire_due` (the timers) and `Store::claim_jobs` (deliveries; none here).
//!
//! Run:
//!
//! ```text
//! SIGNOFF_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench --bench scale -- [--backend sqlite|postgres|both] [--pending 1000000] \
//!   [--due 1000] [--passes 5]
//! ```
//!
//! Without `SIGNOFF_BENCH_POSTGRES_URL` (an admin URL) PostgreSQL is skipped. The end
//! of the output is a Markdown table for the README, after the raw numbers.

// The fresh-database helper is the load driver's: one copy for both benches.
#[path = "load/postgres.rs"]
mod postgres;
#[path = "support/process.rs"]
mod process;

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use reqwest::StatusCode;
use serde::Deserialize;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;

use signoff::audit::format_time;
use signoff::scheduler::{BATCH, Scheduler};
use signoff::store::Store;

use process::{Memory, Server, create_token};

const POSTGRES_ENV: &str = "SIGNOFF_BENCH_POSTGRES_URL";
const PASS_TARGET: Duration = Duration::from_millis(50);
const RSS_TARGET_KB: u64 = 64 * 1024;
/// The figures the targets are stated for.
const TARGET_PENDING: usize = 1_000_000;
const TARGET_DUE: usize = 1_000;
/// The loaded approvals' tool (unknown to the built-in policy, so `medium`).
const TOOL: &str = "delete_customer_records";
/// What signoff writes for a request no policy rule routes anywhere.
const ROUTING: &str = r#"{"channel":null,"approvers":[],"rule":null,"remind_after_secs":null,"remind_every_secs":null,"escalate_after_secs":null,"escalation_channel":null}"#;
/// Loaded approvals expire from this far ahead on, one second apart.
const EXPIRES_AFTER_SECS: i64 = 30 * 86_400;
const HEALTH_CALLS: usize = 5;
const GETS: usize = 1_000;
const GET_CLIENTS: usize = 8;

#[derive(Debug, Parser)]
#[command(about = "signoff scale bench: scheduler pass time and server memory with a large store")]
struct Args {
    /// Which store to benchmark.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// Pending approvals loaded into the store.
    #[arg(long, default_value_t = TARGET_PENDING)]
    pending: usize,
    /// Approvals made due before each pass (at most the scheduler's batch).
    #[arg(long, default_value_t = TARGET_DUE)]
    due: usize,
    /// Timed scheduler passes.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.passes > 0, "--passes must be at least 1");
    ensure!(
        args.due > 0 && args.due as i64 <= BATCH,
        "--due must be between 1 and the scheduler's batch ({BATCH})"
    );
    // Every pass, the warm-up and the diagnostic one, needs its own fresh set of due
    // approvals.
    let needed = args.due * (args.passes + 2);
    ensure!(
        args.pending >= needed,
        "--pending must be at least --due × (--passes + 2) = {needed}"
    );
    println!(
        "signoff scale bench: {} pending, {} due per pass, {} passes, {} CPUs",
        count(args.pending),
        count(args.due),
        args.passes,
        cpus()
    );
    let mut reports = Vec::new();
    if args.backend != BackendChoice::Postgres {
        reports.push(bench_sqlite(&args).await?);
    }
    if args.backend != BackendChoice::Sqlite {
        match std::env::var(POSTGRES_ENV) {
            Ok(admin) => reports.push(bench_postgres(&admin, &args).await?),
            Err(_) => println!(
                "\nskipping PostgreSQL: set {POSTGRES_ENV} to an admin URL such as \
                 postgres://postgres@127.0.0.1:5432/postgres"
            ),
        }
    }
    println!("\n{}", markdown_table(&reports));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Backends

#[derive(Debug, Clone, Copy)]
struct Settings {
    pending: usize,
    due: usize,
    passes: usize,
}

impl From<&Args> for Settings {
    fn from(args: &Args) -> Self {
        Settings {
            pending: args.pending,
            due: args.due,
            passes: args.passes,
        }
    }
}

async fn bench_sqlite(args: &Args) -> Result<Report> {
    let dir = tempfile::tempdir().context("create a temp dir for the SQLite database")?;
    let url = format!("sqlite://{}", dir.path().join("scale.db").display());
    bench_backend("SQLite", url, Settings::from(args)).await
}

/// Runs the bench in a fresh database and drops it afterwards, even if the bench fails
/// or panics.
async fn bench_postgres(admin: &str, args: &Args) -> Result<Report> {
    let settings = Settings::from(args);
    postgres::with_fresh_database(admin, move |url| bench_backend("PostgreSQL", url, settings))
        .await
}

/// Every measurement for one backend.
struct Report {
    backend: &'static str,
    settings: Settings,
    load: LoadReport,
    memory: MemoryReport,
    /// Sorted.
    passes: Vec<Duration>,
    claim: Step,
    fire: Step,
}

async fn bench_backend(backend: &'static str, url: String, settings: Settings) -> Result<Report> {
    println!("\n== {backend} ==");
    let store = Store::connect(&url)
        .await
        .context("open the store (Store::connect)")?;
    let mut db = Db::connect(&url).await?;

    let load = db.load(settings.pending).await?;
    println!(
        "[{backend}] load: {} approvals + {} expire jobs in {} ({})",
        count(settings.pending),
        count(settings.pending),
        secs(load.total),
        load.detail
    );

    let memory = measure_memory(backend, &url, &mut db, settings).await?;

    // One fresh set of due approvals per pass, plus one for the warm-up pass and one
    // for the diagnostic pass.
    let mut rows: Vec<usize> = rand::seq::index::sample(
        &mut rand::rng(),
        settings.pending,
        settings.due * (settings.passes + 2),
    )
    .into_iter()
    .map(|index| index + 1)
    .collect();
    let mut passes = Vec::with_capacity(settings.passes);
    // Pass 0 warms up: the store's connections prepare each statement the first time
    // they run it, which a running scheduler (a pass every second) did long ago.
    for pass in 0..=settings.passes {
        let set: Vec<usize> = rows.drain(..settings.due).collect();
        let (ids, now) = make_due(&mut db, &set, settings.due).await?;
        let started = Instant::now();
        let fired = Scheduler::new(store.clone())
            .run_once(now)
            .await
            .context("Scheduler::run_once")?;
        let took = started.elapsed();
        ensure!(
            fired == settings.due,
            "pass {pass}: run_once fired {fired} jobs, expected {}",
            settings.due
        );
        check_expired(&mut db, &ids, pass).await?;
        if pass == 0 {
            println!(
                "[{backend}] pass 0 (warm-up, not counted): run_once fired {} timers in {}",
                count(fired),
                ms(took)
            );
            continue;
        }
        println!(
            "[{backend}] pass {pass}: run_once fired {} timers in {}",
            count(fired),
            ms(took)
        );
        passes.push(took);
    }

    let (ids, now) = make_due(&mut db, &rows, settings.due).await?;
    let (started, before) = (Instant::now(), Usage::now()?);
    let fired = store.fire_due(now, BATCH).await.context("fire_due")?;
    let fire = Step::since(started, before)?;
    ensure!(
        fired == settings.due,
        "diagnostic pass: fired {fired} timers, expected {}",
        settings.due
    );
    let (started, before) = (Instant::now(), Usage::now()?);
    let claimed = store.claim_jobs(now, BATCH).await.context("claim_jobs")?;
    let claim = Step::since(started, before)?;
    ensure!(
        claimed.is_empty(),
        "diagnostic pass: claimed {} deliveries, expected none",
        claimed.len()
    );
    check_expired(&mut db, &ids, settings.passes + 1).await?;
    println!(
        "[{backend}] diagnostic pass: fire_due {} ({} per timer) + claim_jobs {}",
        ms(fire.wall),
        us(fire.wall / settings.due as u32),
        ms(claim.wall)
    );
    println!("[{backend}]   fire_due:   {}", fire.describe());
    println!("[{backend}]   claim_jobs: {}", claim.describe());

    passes.sort();
    println!(
        "[{backend}] run_once over {} passes: min {}, median {}, max {}",
        passes.len(),
        ms(passes[0]),
        ms(median(&passes)),
        ms(passes[passes.len() - 1])
    );
    db.close().await;
    Ok(Report {
        backend,
        settings,
        load,
        memory,
        passes,
        claim,
        fire,
    })
}

/// Picks the approvals with row numbers `rows`, makes them and their expire jobs due a
/// second before the `now` it returns, and returns their ids.
async fn make_due(
    db: &mut Db,
    rows: &[usize],
    due: usize,
) -> Result<(Vec<uuid::Uuid>, DateTime<Utc>)> {
    let ids = db.pending_ids(rows).await?;
    ensure!(
        ids.len() == due,
        "found {} pending approvals for {due} row numbers",
        ids.len()
    );
    let now = Utc::now();
    db.make_due(&ids, now - chrono::Duration::seconds(1))
        .await?;
    Ok((ids, now))
}

async fn check_expired(db: &mut Db, ids: &[uuid::Uuid], pass: usize) -> Result<()> {
    let expired = db.count_expired(ids).await?;
    ensure!(
        expired == ids.len() as i64,
        "pass {pass}: {expired} of the {} due approvals are expired afterwards",
        ids.len()
    );
    Ok(())
}

fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    }
}

/// One timed step of the diagnostic pass: wall time, and what this process used.
#[derive(Debug, Clone, Copy)]
struct Step {
    wall: Duration,
    usage: Usage,
}

impl Step {
    fn since(started: Instant, before: Usage) -> Result<Step> {
        let wall = started.elapsed();
        Ok(Step {
            wall,
            usage: Usage::now()?.minus(before),
        })
    }

    fn describe(&self) -> String {
        let u = self.usage;
        format!(
            "wall {}, CPU of this process {} (SQLite runs in it; PostgreSQL does not), \
             {} read and {} write syscalls, {:.1} MB written",
            ms(self.wall),
            ms(u.cpu),
            count(u.syscr as usize),
            count(u.syscw as usize),
            u.wchar as f64 / 1e6
        )
    }
}

/// This process's CPU time over all its threads (`/proc/self/task/*/schedstat`) and
/// I/O counters (`/proc/self/io`).
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: Duration,
    syscr: u64,
    syscw: u64,
    wchar: u64,
}

impl Usage {
    fn now() -> Result<Usage> {
        let mut cpu_ns = 0;
        for task in std::fs::read_dir("/proc/self/task").context("list /proc/self/task")? {
            // A thread may end between listing and reading.
            if let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) {
                cpu_ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        let io = std::fs::read_to_string("/proc/self/io").context("read /proc/self/io")?;
        let field = |name: &str| {
            io.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Usage {
            cpu: Duration::from_nanos(cpu_ns),
            syscr: field("syscr:"),
            syscw: field("syscw:"),
            wchar: field("wchar:"),
        })
    }

    fn minus(self, before: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(before.cpu),
            syscr: self.syscr.saturating_sub(before.syscr),
            syscw: self.syscw.saturating_sub(before.syscw),
            wchar: self.wchar.saturating_sub(before.wchar),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Direct SQL: bulk load and setting up due jobs (never timed as part of a pass)

/// A connection of the bench's own, beside the store's.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

struct LoadReport {
    total: Duration,
    detail: String,
}

/// `n` zero-padded to 64 digits: unique per row, shaped like a SHA-256 in hex.
fn row_hash(row: usize) -> String {
    format!("{row:064}")
}

const SQLITE_LOAD_APPROVALS: &str = "\
    WITH RECURSIVE n(i, h) AS ( \
        SELECT 1, lower(hex(randomblob(16))) \
        UNION ALL SELECT i + 1, lower(hex(randomblob(16))) FROM n WHERE i < $1) \
    INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, status, expires_at, \
        created_at, params_sha256, token_name, required_approvals, routing, version) \
    SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-' \
           || substr('89ab', unicode(substr(h, 17, 1)) % 4 + 1, 1) || substr(h, 18, 3) || '-' \
           || substr(h, 21, 12), \
        $2, json_object('i', i), 'medium', 'pending', \
        strftime('%Y-%m-%dT%H:%M:%S', $3 + i, 'unixepoch') || '.000000Z', \
        $4, printf('%064d', i), 'bench', 1, $5, 0 \
    FROM n";

const SQLITE_LOAD_JOBS: &str = "\
    INSERT INTO jobs (approval_id, kind, payload, due_at, state, attempts, created_at) \
    SELECT id, 'expire', '{}', expires_at, 'ready', 0, $1 FROM pending_approvals \
    WHERE status = 'pending' ORDER BY expires_at";

const POSTGRES_LOAD_APPROVALS: &str = "\
    INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, status, expires_at, \
        created_at, params_sha256, token_name, required_approvals, routing, version) \
    SELECT gen_random_uuid(), $2, jsonb_build_object('i', i), 'medium', 'pending', \
        $3 + i * interval '1 second', $4, lpad(i::text, 64, '0'), 'bench', 1, $5::jsonb, 0 \
    FROM generate_series(1, $1::bigint) AS i";

const POSTGRES_LOAD_JOBS: &str = "\
    INSERT INTO jobs (approval_id, kind, payload, due_at, state, attempts, created_at) \
    SELECT id, 'expire', '{}'::jsonb, expires_at, 'ready', 0, $1 FROM pending_approvals \
    WHERE status = 'pending' ORDER BY expires_at";

impl Db {
    async fn connect(url: &str) -> Result<Db> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("parse the SQLite URL")?
                .busy_timeout(Duration::from_secs(30))
                // A large page cache for the bulk load, on this connection only.
                .pragma("cache_size", "-262144");
            let conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .context("open the bench's SQLite connection")?;
            Ok(Db::Sqlite(conn))
        } else {
            let conn = sqlx::PgConnection::connect(url)
                .await
                .context("open the bench's PostgreSQL connection")?;
            Ok(Db::Postgres(conn))
        }
    }

    async fn close(self) {
        let _ = match self {
            Db::Sqlite(conn) => conn.close().await,
            Db::Postgres(conn) => conn.close().await,
        };
    }

    /// `pending` pending approvals, one expire job each, in one transaction.
    async fn load(&mut self, pending: usize) -> Result<LoadReport> {
        let now = Utc::now();
        let expires_base = now + chrono::Duration::seconds(EXPIRES_AFTER_SECS);
        let started = Instant::now();
        let detail = match self {
            Db::Sqlite(conn) => {
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                let t = Instant::now();
                let inserted = sqlx::query(SQLITE_LOAD_APPROVALS)
                    .bind(pending as i64)
                    .bind(TOOL)
                    .bind(expires_base.timestamp())
                    .bind(format_time(&now))
                    .bind(ROUTING)
                    .execute(&mut *conn)
                    .await
                    .context("bulk-insert approvals")?
                    .rows_affected();
                let approvals = t.elapsed();
                let t = Instant::now();
                let jobs = sqlx::query(SQLITE_LOAD_JOBS)
                    .bind(format_time(&now))
                    .execute(&mut *conn)
                    .await
                    .context("bulk-insert expire jobs")?
                    .rows_affected();
                let jobs_took = t.elapsed();
                let t = Instant::now();
                sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await
                    .context("checkpoint the WAL")?;
                let commit = t.elapsed();
                ensure!(
                    inserted == pending as u64 && jobs == pending as u64,
                    "loaded {inserted} approvals and {jobs} jobs, expected {pending} each"
                );
                format!(
                    "one transaction, recursive CTE: approvals {}, jobs {}, commit + WAL checkpoint {}",
                    secs(approvals),
                    secs(jobs_took),
                    secs(commit)
                )
            }
            Db::Postgres(conn) => {
                let mut tx = conn.begin().await?;
                let t = Instant::now();
                let inserted = sqlx::query(POSTGRES_LOAD_APPROVALS)
                    .bind(pending as i64)
                    .bind(TOOL)
                    .bind(expires_base)
                    .bind(now)
                    .bind(ROUTING)
                    .execute(&mut *tx)
                    .await
                    .context("bulk-insert approvals")?
                    .rows_affected();
                let approvals = t.elapsed();
                let t = Instant::now();
                let jobs = sqlx::query(POSTGRES_LOAD_JOBS)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .context("bulk-insert expire jobs")?
                    .rows_affected();
                let jobs_took = t.elapsed();
                let t = Instant::now();
                tx.commit().await?;
                let commit = t.elapsed();
                ensure!(
                    inserted == pending as u64 && jobs == pending as u64,
                    "loaded {inserted} approvals and {jobs} jobs, expected {pending} each"
                );
                // What autovacuum does to tables this size soon after such a load:
                // planner statistics and the visibility map.
                let t = Instant::now();
                sqlx::raw_sql("VACUUM (ANALYZE) pending_approvals, jobs")
                    .execute(&mut *conn)
                    .await
                    .context("VACUUM ANALYZE")?;
                let vacuum = t.elapsed();
                format!(
                    "one transaction, generate_series: approvals {}, jobs {}, commit {}; then VACUUM ANALYZE {}",
                    secs(approvals),
                    secs(jobs_took),
                    secs(commit),
                    secs(vacuum)
                )
            }
        };
        Ok(LoadReport {
            total: started.elapsed(),
            detail,
        })
    }

    /// The ids of the still-pending approvals with these row numbers.
    async fn pending_ids(&mut self, rows: &[usize]) -> Result<Vec<uuid::Uuid>> {
        let hashes: Vec<String> = rows.iter().map(|&row| row_hash(row)).collect();
        let ids = match self {
            Db::Sqlite(conn) => {
                let ids: Vec<String> = sqlx::query_scalar(
                    // Without statistics SQLite would scan (status, expires_at) instead.
                    "SELECT id FROM pending_approvals INDEXED BY pending_approvals_dedup \
                     WHERE token_name = 'bench' AND tool_name = $1 AND status = 'pending' \
                     AND params_sha256 IN (SELECT value FROM json_each($2))",
                )
                .bind(TOOL)
                .bind(serde_json::to_string(&hashes)?)
                .fetch_all(&mut *conn)
                .await?;
                ids.iter()
                    .map(|id| uuid::Uuid::parse_str(id).with_context(|| format!("bad id {id:?}")))
                    .collect::<Result<_>>()?
            }
            Db::Postgres(conn) => {
                sqlx::query_scalar(
                    "SELECT id FROM pending_approvals WHERE token_name = 'bench' \
                     AND tool_name = $1 AND status = 'pending' AND params_sha256 = ANY($2)",
                )
                .bind(TOOL)
                .bind(&hashes)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        Ok(ids)
    }

    /// Moves the approvals' expiry and their expire jobs' due time to `at`.
    async fn make_due(&mut self, ids: &[uuid::Uuid], at: DateTime<Utc>) -> Result<()> {
        match self {
            Db::Sqlite(conn) => {
                let ids = serde_json::to_string(
                    &ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                )?;
                let at = format_time(&at);
                let mut tx = conn.begin().await?;
                sqlx::query(
                    "UPDATE pending_approvals SET expires_at = $2 \
                     WHERE id IN (SELECT value FROM json_each($1))",
                )
                .bind(&ids)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE jobs SET due_at = $2 WHERE kind = 'expire' AND state = 'ready' \
                     AND approval_id IN (SELECT value FROM json_each($1))",
                )
                .bind(&ids)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Db::Postgres(conn) => {
                let mut tx = conn.begin().await?;
                sqlx::query("UPDATE pending_approvals SET expires_at = $2 WHERE id = ANY($1)")
                    .bind(ids)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE jobs SET due_at = $2 WHERE kind = 'expire' AND state = 'ready' \
                     AND approval_id = ANY($1)",
                )
                .bind(ids)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    async fn count_expired(&mut self, ids: &[uuid::Uuid]) -> Result<i64> {
        Ok(match self {
            Db::Sqlite(conn) => {
                let ids = serde_json::to_string(
                    &ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                )?;
                sqlx::query_scalar(
                    // `+status`: look the ids up by key, not every expired row.
                    "SELECT COUNT(*) FROM pending_approvals WHERE +status = 'expired' \
                     AND id IN (SELECT value FROM json_each($1))",
                )
                .bind(ids)
                .fetch_one(&mut *conn)
                .await?
            }
            Db::Postgres(conn) => sqlx::query_scalar(
                "SELECT COUNT(*) FROM pending_approvals WHERE status = 'expired' AND id = ANY($1)",
            )
            .bind(ids)
            .fetch_one(&mut *conn)
            .await?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Memory: the real server on the loaded database

struct MemoryReport {
    at_start: Memory,
    after: Memory,
    /// `pending_count` from `/health/approvals`.
    pending: i64,
    /// Slowest `/health/approvals` answer.
    health_max: Duration,
    get_p50: Duration,
    get_p99: Duration,
}

impl MemoryReport {
    fn worst_kb(&self) -> u64 {
        self.after
            .peak_kb
            .max(self.after.rss_kb)
            .max(self.at_start.rss_kb)
    }
}

async fn measure_memory(
    backend: &str,
    url: &str,
    db: &mut Db,
    settings: Settings,
) -> Result<MemoryReport> {
    let rows: Vec<usize> = rand::seq::index::sample(
        &mut rand::rng(),
        settings.pending,
        GETS.min(settings.pending),
    )
    .into_iter()
    .map(|index| index + 1)
    .collect();
    let ids = db.pending_ids(&rows).await?;
    ensure!(ids.len() == rows.len(), "could not find the ids to get");

    let token = create_token(url).await?;
    let server = Server::start(url, None, None).await?;
    let at_start = server.memory()?;
    let http = http_client();
    let base = server.base_url();

    let mut pending = 0;
    let mut health_max = Duration::ZERO;
    for _ in 0..HEALTH_CALLS {
        #[derive(Deserialize)]
        struct Health {
            pending_count: i64,
        }
        let started = Instant::now();
        let answer = http
            .get(format!("{base}/health/approvals"))
            .send()
            .await
            .context("GET /health/approvals")?;
        // 503 (degraded) still carries the counts.
        pending = answer.json::<Health>().await?.pending_count;
        health_max = health_max.max(started.elapsed());
    }
    ensure!(
        pending == settings.pending as i64,
        "/health/approvals counts {pending} pending, expected {}",
        settings.pending
    );

    let ids: Arc<Vec<String>> = Arc::new(ids.iter().map(|id| id.to_string()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..GET_CLIENTS {
        let (ids, next, base, token) = (ids.clone(), next.clone(), base.clone(), token.clone());
        clients.spawn(async move {
            let http = http_client();
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let started = Instant::now();
                let answer = http
                    .get(format!("{base}/v1/approvals/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                let status = answer.status();
                answer.bytes().await?;
                ensure!(
                    status == StatusCode::OK,
                    "GET /v1/approvals/{id} answered {status}"
                );
                latencies.push(started.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(ids.len());
    while let Some(done) = clients.join_next().await {
        latencies.extend(done.context("a GET client panicked")??);
    }
    latencies.sort();
    let after = server.memory()?;
    drop(server);

    let report = MemoryReport {
        at_start,
        after,
        pending,
        health_max,
        get_p50: percentile(&latencies, 0.50),
        get_p99: percentile(&latencies, 0.99),
    };
    println!(
        "[{backend}] server with {} pending: {HEALTH_CALLS} × /health/approvals (slowest {}), \
         {} × GET /v1/approvals/{{id}} from {GET_CLIENTS} clients (p50 {}, p99 {})",
        count(pending.max(0) as usize),
        ms(report.health_max),
        count(latencies.len()),
        ms(report.get_p50),
        ms(report.get_p99),
    );
    println!(
        "[{backend}] memory: VmRSS {} at start, {} after; VmHWM (peak) {}",
        mib(at_start.rss_kb),
        mib(after.rss_kb),
        mib(after.peak_kb),
    );
    Ok(report)
}

/// The `quantile` (0..=1) of sorted durations, nearest-rank; zero when empty.
fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a plain-HTTP reqwest client always builds")
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------------------------------
// Output

/// The README table: one row per measurement per backend.
fn markdown_table(reports: &[Report]) -> String {
    let mut out = String::from("| what | how measured | result |\n|---|---|---|\n");
    for report in reports {
        for (what, how, result) in rows(report) {
            let _ = writeln!(out, "| {what} | {how} | {result} |");
        }
    }
    let _ = write!(
        out,
        "\nMeasured with `cargo bench --bench scale` on a {}-CPU machine shared with other work.",
        cpus()
    );
    out
}

fn rows(report: &Report) -> Vec<(String, String, String)> {
    let b = report.backend;
    let s = report.settings;
    let pending = count(s.pending);
    let due = count(s.due);
    let caveat = if s.pending < TARGET_PENDING || s.due != TARGET_DUE {
        format!(
            " (target is for {} due of {} pending)",
            count(TARGET_DUE),
            count(TARGET_PENDING)
        )
    } else {
        String::new()
    };
    let passes = &report.passes;
    let slowest = passes[passes.len() - 1];
    let memory = &report.memory;
    let memory_caveat = if (memory.pending.max(0) as usize) < TARGET_PENDING {
        format!(" (target is for {} pending)", count(TARGET_PENDING))
    } else {
        String::new()
    };
    vec![
        (
            format!("scheduler pass, {due} due of {pending} pending ({b})"),
            format!(
                "`Scheduler::run_once`: fire {due} expire timers, each pass a fresh random set \
                 made due; {} passes after one warm-up pass, min / median / max",
                passes.len()
            ),
            format!(
                "{} / {} / {} — target < {}: {}{caveat}",
                ms(passes[0]),
                ms(median(passes)),
                ms(slowest),
                ms(PASS_TARGET),
                verdict(slowest < PASS_TARGET)
            ),
        ),
        (
            format!("where a pass's time goes ({b})"),
            "one more pass, `Store::fire_due` (timers) and `Store::claim_jobs` (deliveries, none \
             due) timed apart"
                .to_owned(),
            format!(
                "fire {} + claim {}; CPU of this process (all threads) {} + {} (information)",
                ms(report.fire.wall),
                ms(report.claim.wall),
                ms(report.fire.usage.cpu),
                ms(report.claim.usage.cpu)
            ),
        ),
        (
            format!(
                "server memory with {} pending ({b})",
                count(memory.pending.max(0) as usize)
            ),
            format!(
                "VmRSS of `signoff serve`: at start / after {HEALTH_CALLS} `GET /health/approvals` \
                 and {} `GET /v1/approvals/{{id}}` over random ids ({GET_CLIENTS} clients); VmHWM peak",
                count(GETS)
            ),
            format!(
                "{} / {} (peak {}) — target < {}: {}{memory_caveat}",
                mib(memory.at_start.rss_kb),
                mib(memory.after.rss_kb),
                mib(memory.after.peak_kb),
                mib(RSS_TARGET_KB),
                verdict(memory.worst_kb() < RSS_TARGET_KB)
            ),
        ),
        (
            format!("bulk load, {pending} pending + expire jobs ({b})"),
            report.load.detail.clone(),
            format!("{} (information)", secs(report.load.total)),
        ),
    ]
}

fn verdict(met: bool) -> &'static str {
    if met { "**MET**" } else { "**NOT MET**" }
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn us(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// `12345` as `12,345`.
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
