//! Output: per-phase statistics (throughput, nearest-rank percentiles), the targets, and
//! the Markdown table for the README.

use std::fmt::Write as _;
use std::time::Duration;

pub use crate::format::{count, mib, percentile, verdict};

use crate::cli::Settings;
use crate::clicks::ClicksReport;
use crate::client::LONG_POLL_WAIT_SECS;
use crate::cpu::cpus;
use crate::memory::MemoryReport;
use crate::wake::WakeStats;

const CREATE_TARGET_SQLITE: f64 = 5_000.0;
const CREATE_TARGET_POSTGRES: f64 = 3_000.0;
const GET_P99_TARGET: Duration = Duration::from_millis(5);
const WAKE_TARGET: Duration = Duration::from_millis(10);
const RSS_TARGET_KB: u64 = 64 * 1024;
pub const RSS_TARGET_PENDING: usize = 100_000;
pub const CLICKS_RATE_TARGET: f64 = 2_000.0;
const CLICKS_P99_TARGET: Duration = Duration::from_millis(20);

/// Every measurement for one backend; a step left out by `--only` is `None`.
pub struct Report {
    pub backend: &'static str,
    pub core: Option<CoreReport>,
    pub clicks: Option<ClicksReport>,
}

/// Steps 1–5.
pub struct CoreReport {
    pub create: Stats,
    pub get: Stats,
    pub execute: Stats,
    pub memory: MemoryReport,
    pub wake_one: WakeStats,
    pub wake_many: WakeStats,
}

/// Throughput and latency of one phase.
pub struct Stats {
    pub requests: usize,
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
    pub failures: usize,
    pub first_failure: Option<String>,
}

impl Stats {
    pub fn new(
        mut latencies: Vec<Duration>,
        elapsed: Duration,
        failures: usize,
        first_failure: Option<String>,
    ) -> Stats {
        latencies.sort_unstable();
        Stats {
            requests: latencies.len(),
            elapsed,
            latencies,
            failures,
            first_failure,
        }
    }

    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn p(&self, quantile: f64) -> Duration {
        percentile(&self.latencies, quantile)
    }

    pub fn print(&self, backend: &str, what: &str) {
        println!(
            "[{backend}] {what}: {} ok in {:.2} s = {:.0}/s; latency p50 {} p90 {} p99 {} max {}; {} failed",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(self.p(0.50)),
            ms(self.p(0.90)),
            ms(self.p(0.99)),
            ms(self.p(1.0)),
            self.failures,
        );
        if let Some(failure) = &self.first_failure {
            println!("[{backend}] {what}: first failure: {failure}");
        }
    }
}

/// The README table: one row per measurement per backend.
pub fn markdown_table(reports: &[Report], settings: Settings) -> String {
    let mut out = String::from("| what | how measured | result |\n|---|---|---|\n");
    for report in reports {
        for (what, how, result) in rows(report, settings) {
            let _ = writeln!(out, "| {what} | {how} | {result} |");
        }
    }
    let _ = write!(
        out,
        "\nClient and server ran on the same {}-CPU machine, over 127.0.0.1.",
        cpus()
    );
    out
}

fn rows(report: &Report, settings: Settings) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    if let Some(core) = &report.core {
        rows.extend(core_rows(report.backend, core, settings));
    }
    if let Some(clicks) = &report.clicks {
        rows.push(clicks_row(report.backend, clicks));
    }
    rows
}

fn core_rows(b: &str, report: &CoreReport, settings: Settings) -> Vec<(String, String, String)> {
    let clients = settings.clients;
    let secs = settings.phase.as_secs();
    let create_target = if b == "SQLite" {
        CREATE_TARGET_SQLITE
    } else {
        CREATE_TARGET_POSTGRES
    };
    vec![
        (
            format!("create ({b})"),
            format!(
                "`POST /v1/approvals`, {clients} clients for {secs} s, unique parameters (all pending)"
            ),
            format!(
                "{} — target ≥ {}/s: {}",
                throughput(&report.create),
                count(create_target as usize),
                verdict(report.create.rate() >= create_target)
            ),
        ),
        (
            format!("get ({b})"),
            format!("`GET /v1/approvals/{{id}}`, {clients} clients for {secs} s, random ids"),
            format!(
                "{} — target p99 < {}: {}",
                throughput(&report.get),
                ms(GET_P99_TARGET),
                verdict(report.get.p(0.99) < GET_P99_TARGET)
            ),
        ),
        (
            format!("execute ({b})"),
            format!(
                "`POST /v1/approvals/{{id}}/execute` once per auto-approved id, {clients} clients, ≤ {secs} s"
            ),
            format!(
                "{}; all 200, a second execute is 409",
                throughput(&report.execute)
            ),
        ),
        wake_row(b, &report.wake_one),
        wake_row(b, &report.wake_many),
        memory_row(b, &report.memory, settings),
    ]
}

fn wake_row(backend: &str, wake: &WakeStats) -> (String, String, String) {
    let p99 = percentile(&wake.latencies, 0.99);
    (
        format!("long-poll wake, {} waiting ({backend})", wake.waiters),
        format!(
            "`GET …?wait={LONG_POLL_WAIT_SECS}` answer − `Store::apply` return, {} trials, in-process server",
            wake.latencies.len()
        ),
        format!(
            "p50 {}, p99 {}, max {} — target < {}: {}",
            ms(percentile(&wake.latencies, 0.50)),
            ms(p99),
            ms(percentile(&wake.latencies, 1.0)),
            ms(WAKE_TARGET),
            verdict(p99 < WAKE_TARGET)
        ),
    )
}

fn memory_row(
    backend: &str,
    memory: &MemoryReport,
    settings: Settings,
) -> (String, String, String) {
    let caveat = if (memory.pending.max(0) as usize) < RSS_TARGET_PENDING {
        format!(" (target is for {} pending)", count(RSS_TARGET_PENDING))
    } else {
        String::new()
    };
    (
        format!("server memory ({backend})"),
        format!(
            "VmRSS of `signoff serve`: at start / with {} pending / after {} s of gets over them",
            count(memory.pending.max(0) as usize),
            settings.phase.as_secs()
        ),
        format!(
            "{} / {} / {} (peak {}) — target < {}: {}{caveat}",
            mib(memory.at_start.rss_kb),
            mib(memory.filled.rss_kb),
            mib(memory.after_gets.rss_kb),
            mib(memory.after_gets.peak_kb),
            mib(RSS_TARGET_KB),
            verdict(memory.worst_kb() < RSS_TARGET_KB)
        ),
    )
}

fn clicks_row(backend: &str, clicks: &ClicksReport) -> (String, String, String) {
    let stats = &clicks.stats;
    let target = format!(
        "target p99 < {} and ≥ {}/s",
        ms(CLICKS_P99_TARGET),
        count(CLICKS_RATE_TARGET as usize)
    );
    let verdict = if backend == "SQLite" {
        let met = stats.p(0.99) < CLICKS_P99_TARGET && stats.rate() >= CLICKS_RATE_TARGET;
        format!("{target}: {}", verdict(met))
    } else {
        format!("for information ({target} is for SQLite)")
    };
    (
        format!("signed clicks ({backend})"),
        format!(
            "`POST /slack/interactions`, signed `block_actions` Approve, one click per pending \
             approval, {} clients for ≤ {} s; ack time; fake Slack Web API in the driver",
            clicks.clients, clicks.seconds
        ),
        format!(
            "{}; {} of {} checked approved — {verdict}",
            throughput(stats),
            count(clicks.approved),
            count(clicks.checked),
        ),
    )
}

pub fn throughput(stats: &Stats) -> String {
    format!(
        "{}/s, p50 {}, p99 {}",
        count(stats.rate() as usize),
        ms(stats.p(0.50)),
        ms(stats.p(0.99))
    )
}

pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
