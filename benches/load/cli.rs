//! Command-line arguments and the run settings resolved from them.

use std::time::Duration;

use anyhow::{Result, ensure};
use clap::{Parser, ValueEnum};

use crate::report::RSS_TARGET_PENDING;

#[derive(Debug, Parser)]
#[command(about = "signoff load driver: throughput, latency and memory over HTTP")]
pub struct Args {
    /// Which store to benchmark.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// Concurrent clients (tokio tasks, one keep-alive connection each).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Length of each timed phase [default: 10, or 2 with --quick].
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Pending approvals in the store for the memory measurement [default: 100000, or
    /// 2000 with --quick].
    #[arg(long)]
    pub pending: Option<usize>,
    /// Run only these steps [default: all].
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// Short runs, to smoke-test the driver.
    #[arg(long)]
    pub quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    /// Steps 1–5: create, get, execute, long-poll wake, memory.
    Core,
    /// Step 6: signed Slack clicks.
    Clicks,
}

/// The resolved run settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub clients: usize,
    pub phase: Duration,
    pub pending: usize,
    pub wake_trials: usize,
    /// Run steps 1–5.
    pub core: bool,
    /// Run step 6.
    pub clicks: bool,
}

impl Settings {
    pub fn from_args(args: &Args) -> Result<Settings> {
        ensure!(args.clients > 0, "--clients must be at least 1");
        let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 10 });
        ensure!(seconds > 0, "--seconds must be at least 1");
        Ok(Settings {
            clients: args.clients,
            phase: Duration::from_secs(seconds),
            pending: args.pending.unwrap_or(if args.quick {
                2_000
            } else {
                RSS_TARGET_PENDING
            }),
            wake_trials: if args.quick { 50 } else { 200 },
            core: args.only.is_none_or(|only| only == Only::Core),
            clicks: args.only.is_none_or(|only| only == Only::Clicks),
        })
    }
}
