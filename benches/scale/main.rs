//! Scale bench for signoff: the scheduler and the server's memory with a large store.
//!
//! The target (per backend): with 1,000,000 pending approvals in the store, one
//! scheduler pass that finds 1,000 due jobs takes < 50 ms, and `signoff serve` stays
//! under 64 MiB of resident memory. The due jobs are expiries: an approval's expiry
//! timer is its own `expires_at`, the one timer every pending approval has.
//!
//! Per backend (SQLite in a temp dir; PostgreSQL in a fresh `signoff_bench_<random>`
//! database, dropped at the end even when the bench fails):
//!
//! 1. **load** — `Store::connect` (migrations), then `--pending` pending approvals,
//!    written straight into the table with set-based SQL in one transaction (SQLite: a
//!    recursive CTE; PostgreSQL: `generate_series`, then `VACUUM ANALYZE` as autovacuum
//!    would do on a table this size). They expire one second apart, 30 days ahead,
//!    either in the order they were created (`--order creation`: every request took
//!    its rule's `expires_after`, the common case) or in random order (`--order
//!    random`: the approvals that fall due together are scattered over the table and
//!    its indexes, the worst case); by default the bench runs both, each on a fresh
//!    database (see [`data::Order`]).
//! 2. **memory** — (on the first load of each backend) the real `signoff serve` binary
//!    on that database: VmRSS at start,
//!    then after a few `GET /health/approvals` and 1,000 `GET /v1/approvals/{id}` over
//!    random loaded ids (8 clients), and VmHWM (the peak). It runs before the passes so
//!    the store holds exactly `--pending` pending approvals, and is stopped before
//!    them (its own scheduler would otherwise expire the due approvals).
//! 3. **passes** — as the running scheduler does, each pass's clock is moved on to the
//!    next `--due` expiries, and `Scheduler::new(store).run_once(now)` is timed; it must
//!    fire exactly `--due` timers, after which every approval expiring by `now` is
//!    expired. One warm-up pass first (reported, not counted: the store's fresh
//!    connections prepare their statements), then `--passes` timed ones. Then, for
//!    information: one pass right after the bench's own connection committed a write,
//!    as another program writing to the database would (on SQLite this drops the
//!    writer's page cache), and one that times the pass's two writes apart to show
//!    where its time goes: `Store::fire_due` (the timers) and `Store::claim_jobs`
//!    (deliveries; none here).
//!
//! Run:
//!
//! ```text
//! SIGNOFF_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench --bench scale -- [--backend sqlite|postgres|both] \
//!   [--order creation|random|both] [--pending 1000000] [--due 1000] [--passes 5]
//! ```
//!
//! Without `SIGNOFF_BENCH_POSTGRES_URL` (an admin URL) PostgreSQL is skipped. The end
//! of the output is a Markdown table for the README, after the raw numbers.

mod data;
#[path = "../support/format.rs"]
mod format;
mod memory;
// The fresh-database helper is the load driver's: one copy for both benches.
#[path = "../load/postgres.rs"]
mod postgres;
#[path = "../support/process.rs"]
mod process;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};

use signoff::scheduler::{BATCH, Scheduler};
use signoff::store::Store;

use data::{Db, Loaded, Order};
use report::{Report, Step, count, markdown_table, median, ms, secs, us};

const POSTGRES_ENV: &str = "SIGNOFF_BENCH_POSTGRES_URL";
const PASS_TARGET: Duration = Duration::from_millis(50);
const RSS_TARGET_KB: u64 = 64 * 1024;
/// The figures the targets are stated for.
const TARGET_PENDING: usize = 1_000_000;
const TARGET_DUE: usize = 1_000;
/// Passes beyond the timed ones: the warm-up, the one after a foreign write, and the
/// diagnostic one.
const EXTRA_PASSES: usize = 3;

#[derive(Debug, Parser)]
#[command(about = "signoff scale bench: scheduler pass time and server memory with a large store")]
struct Args {
    /// Which store to benchmark.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// How expiry order relates to creation order (default: both, one after the other).
    #[arg(long, value_enum)]
    order: Option<Order>,
    /// Pending approvals loaded into the store.
    #[arg(long, default_value_t = TARGET_PENDING)]
    pending: usize,
    /// Approvals that fall due before each pass (at most the scheduler's batch).
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

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pending: usize,
    due: usize,
    passes: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.passes > 0, "--passes must be at least 1");
    ensure!(
        args.due > 0 && args.due as i64 <= BATCH,
        "--due must be between 1 and the scheduler's batch ({BATCH})"
    );
    let needed = args.due * (args.passes + EXTRA_PASSES);
    ensure!(
        args.pending >= needed,
        "--pending must be at least --due × (--passes + {EXTRA_PASSES}) = {needed}"
    );
    let settings = Settings {
        pending: args.pending,
        due: args.due,
        passes: args.passes,
    };
    println!(
        "signoff scale bench: {} pending, {} due per pass, {} passes, {} CPUs",
        count(settings.pending),
        count(settings.due),
        settings.passes,
        report::cpus()
    );
    let orders = match args.order {
        Some(order) => vec![order],
        None => vec![Order::Creation, Order::Random],
    };
    let mut reports = Vec::new();
    if args.backend != BackendChoice::Postgres {
        for (i, &order) in orders.iter().enumerate() {
            let dir = tempfile::tempdir().context("create a temp dir for the SQLite database")?;
            let url = format!("sqlite://{}", dir.path().join("scale.db").display());
            reports.push(bench_backend("SQLite", url, settings, order, i == 0).await?);
        }
    }
    if args.backend != BackendChoice::Sqlite {
        match std::env::var(POSTGRES_ENV) {
            Ok(admin) => {
                for (i, &order) in orders.iter().enumerate() {
                    reports.push(
                        postgres::with_fresh_database(&admin, move |url| {
                            bench_backend("PostgreSQL", url, settings, order, i == 0)
                        })
                        .await?,
                    );
                }
            }
            Err(_) => println!(
                "\nskipping PostgreSQL: set {POSTGRES_ENV} to an admin URL such as \
                 postgres://postgres@127.0.0.1:5432/postgres"
            ),
        }
    }
    println!("\n{}", markdown_table(&reports));
    Ok(())
}

/// `count` scheduler passes, each when the next batch falls due, after one that warms
/// up: the store's connections prepare each statement the first time they run it,
/// which a running scheduler (a pass every second) did long ago.
async fn timed_passes(
    backend: &str,
    store: &Store,
    db: &mut Db,
    clock: &mut Clock<'_>,
    count: usize,
) -> Result<Vec<Duration>> {
    let mut passes = Vec::with_capacity(count);
    for pass in 0..=count {
        let took = clock.timed_pass(store, db).await?;
        let what = if pass == 0 {
            "pass 0 (warm-up, not counted)".to_owned()
        } else {
            passes.push(took);
            format!("pass {pass}")
        };
        println!("[{backend}] {what}: {}", ms(took));
    }
    Ok(passes)
}

/// One more pass with its two steps timed apart: firing the due timers, then claiming
/// deliveries (none are due).
async fn diagnostic_pass(
    backend: &str,
    store: &Store,
    db: &mut Db,
    clock: &mut Clock<'_>,
    due: usize,
) -> Result<(Step, Step)> {
    let now = clock.next_pass();
    let started = Step::start()?;
    let fired = store.fire_due(now, BATCH).await.context("fire_due")?;
    let fire = Step::since(started)?;
    let started = Step::start()?;
    let claimed = store
        .claim_jobs(now, BATCH, signoff::jobs::LEASE)
        .await
        .context("claim_jobs")?;
    let claim = Step::since(started)?;
    ensure!(
        claimed.is_empty(),
        "diagnostic pass: claimed {} deliveries, expected none",
        claimed.len()
    );
    clock.check(db, fired, now).await?;
    println!(
        "[{backend}] diagnostic pass: fire_due {} ({} per timer) + claim_jobs {}",
        ms(fire.wall),
        us(fire.wall / due as u32),
        ms(claim.wall)
    );
    println!("[{backend}]   fire_due:   {}", fire.describe());
    println!("[{backend}]   claim_jobs: {}", claim.describe());
    Ok((fire, claim))
}

async fn bench_backend(
    backend: &'static str,
    url: String,
    settings: Settings,
    order: Order,
    with_memory: bool,
) -> Result<Report> {
    println!("\n== {backend}, {} ==", order.describe());
    let store = Store::connect(&url)
        .await
        .context("open the store (Store::connect)")?;
    let mut db = Db::connect(&url).await?;

    let loaded = db.load(settings.pending, order).await?;
    println!(
        "[{backend}] load: {} approvals in {} ({})",
        count(settings.pending),
        secs(loaded.took),
        loaded.detail
    );

    let memory = if with_memory {
        Some(memory::measure(backend, &url, &mut db, &loaded, settings.pending).await?)
    } else {
        None
    };

    let mut clock = Clock {
        loaded: &loaded,
        pending: settings.pending,
        due: settings.due,
        passes: 0,
    };
    let mut passes = timed_passes(backend, &store, &mut db, &mut clock, settings.passes).await?;
    db.foreign_write().await?;
    let cold = clock.timed_pass(&store, &mut db).await?;
    println!(
        "[{backend}] pass after another connection's write: {}",
        ms(cold)
    );
    let (fire, claim) = diagnostic_pass(backend, &store, &mut db, &mut clock, settings.due).await?;

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
        order,
        settings,
        load_took: loaded.took,
        load_detail: loaded.detail,
        memory,
        passes,
        cold,
        fire,
        claim,
    })
}

/// The passes' clock: each pass runs just after the next `due` approvals expired.
struct Clock<'a> {
    loaded: &'a Loaded,
    pending: usize,
    due: usize,
    /// Passes run so far.
    passes: usize,
}

impl Clock<'_> {
    /// Runs the next pass as the running scheduler would, checks it, and answers how
    /// long `run_once` took.
    async fn timed_pass(&mut self, store: &Store, db: &mut Db) -> Result<Duration> {
        let now = self.next_pass();
        let started = Instant::now();
        let fired = Scheduler::new(store.clone())
            .run_once(now)
            .await
            .context("Scheduler::run_once")?;
        let took = started.elapsed();
        self.check(db, fired, now).await?;
        Ok(took)
    }

    /// The `now` of the next pass: half a second after its last expiry, well before
    /// the one after.
    fn next_pass(&mut self) -> DateTime<Utc> {
        self.passes += 1;
        self.loaded.expiry(self.passes * self.due) + chrono::Duration::milliseconds(500)
    }

    /// The pass that ran at `now` expired every approval due by then and nothing else.
    async fn check(&self, db: &mut Db, fired: usize, now: DateTime<Utc>) -> Result<()> {
        let pass = self.passes;
        ensure!(
            fired == self.due,
            "pass {pass}: fired {fired} timers, expected {}",
            self.due
        );
        let (pending, overdue) = db.pending_counts(now).await?;
        let expected = (self.pending - pass * self.due) as i64;
        ensure!(
            pending == expected && overdue == 0,
            "pass {pass}: {pending} approvals still pending, {overdue} of them overdue, \
             expected {expected} and 0"
        );
        Ok(())
    }
}
