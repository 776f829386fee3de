//! What the scale bench measured, and how it prints it: raw lines as it goes, and at
//! the end a Markdown table for the README.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use crate::format::{count, mib, percentile, verdict};

use crate::data::Order;
use crate::memory::{GET_CLIENTS, GETS, HEALTH_CALLS, MemoryReport};
use crate::{PASS_TARGET, RSS_TARGET_KB, Settings, TARGET_DUE, TARGET_PENDING};

/// Every measurement for one backend.
pub struct Report {
    pub backend: &'static str,
    pub order: Order,
    pub settings: Settings,
    pub load_took: Duration,
    pub load_detail: String,
    /// Measured on each backend's first load only.
    pub memory: Option<MemoryReport>,
    /// The timed passes, sorted.
    pub passes: Vec<Duration>,
    /// The pass right after another connection's write.
    pub cold: Duration,
    pub fire: Step,
    pub claim: Step,
}

/// One timed step of the diagnostic pass: wall time, and what this process used.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub wall: Duration,
    usage: Usage,
}

impl Step {
    pub fn start() -> Result<(Instant, Usage)> {
        Ok((Instant::now(), Usage::now()?))
    }

    pub fn since((started, before): (Instant, Usage)) -> Result<Step> {
        let wall = started.elapsed();
        Ok(Step {
            wall,
            usage: Usage::now()?.minus(before),
        })
    }

    pub fn describe(&self) -> String {
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
pub struct Usage {
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

pub fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    }
}

/// The README table: one row per measurement per backend.
pub fn markdown_table(reports: &[Report]) -> String {
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
    let order = report.order.describe();
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
    let mut rows = vec![
        (
            format!("scheduler pass, {due} due of {pending} pending, {order} ({b})"),
            format!(
                "`Scheduler::run_once` as the running scheduler calls it: the clock moves on \
                 to the next {due} expiries; {} passes after one warm-up pass, min / median / max",
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
            format!("scheduler pass after another program's write, {order} ({b})"),
            "one more pass, right after the bench's own connection committed a write (on \
             SQLite that drops the writer's page cache)"
                .to_owned(),
            format!("{} (information)", ms(report.cold)),
        ),
        (
            format!("where a pass's time goes, {order} ({b})"),
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
    ];
    if let Some(memory) = &report.memory {
        rows.push(memory_row(memory, b));
    }
    rows.push((
        format!("bulk load, {pending} pending, {order} ({b})"),
        report.load_detail.clone(),
        format!("{} (information)", secs(report.load_took)),
    ));
    rows
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

pub fn us(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

pub fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// The server-memory row.
fn memory_row(memory: &MemoryReport, b: &str) -> (String, String, String) {
    let memory_caveat = if (memory.pending.max(0) as usize) < TARGET_PENDING {
        format!(" (target is for {} pending)", count(TARGET_PENDING))
    } else {
        String::new()
    };
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
    )
}
