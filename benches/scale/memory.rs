//! The real `signoff serve` on the loaded database: its resident memory at start and
//! after it answered health checks and gets over random approvals.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::data::{Db, Loaded};
use crate::process::{Memory, Server, create_token, http_client};
use crate::report::{count, mib, ms, percentile};

pub const HEALTH_CALLS: usize = 5;
pub const GETS: usize = 1_000;
pub const GET_CLIENTS: usize = 8;
/// A request's time limit (`/health/approvals` counts a million rows).
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct MemoryReport {
    pub at_start: Memory,
    pub after: Memory,
    /// `pending_count` from `/health/approvals`.
    pub pending: i64,
    /// Slowest `/health/approvals` answer.
    pub health_max: Duration,
    pub get_p50: Duration,
    pub get_p99: Duration,
}

impl MemoryReport {
    pub fn worst_kb(&self) -> u64 {
        self.after
            .peak_kb
            .max(self.after.rss_kb)
            .max(self.at_start.rss_kb)
    }
}

/// Starts the server on `url` (which holds `pending` pending approvals), reads its
/// memory, drives it, reads its memory again, and stops it.
pub async fn measure(
    backend: &str,
    url: &str,
    db: &mut Db,
    loaded: &Loaded,
    pending: usize,
) -> Result<MemoryReport> {
    let ranks: Vec<usize> = rand::seq::index::sample(&mut rand::rng(), pending, GETS.min(pending))
        .into_iter()
        .map(|index| index + 1)
        .collect();
    let ids = db.pending_ids(loaded, &ranks).await?;

    let token = create_token(url).await?;
    let server = Server::start(url, None, None).await?;
    let at_start = server.memory()?;
    let http = http_client(HTTP_TIMEOUT);
    let base = server.base_url();

    let (pending_count, health_max) = health_calls(&http, &base).await?;
    ensure!(
        pending_count == pending as i64,
        "/health/approvals counts {pending_count} pending, expected {pending}"
    );

    let mut latencies = random_gets(ids, &base, &token).await?;
    latencies.sort();
    let after = server.memory()?;
    drop(server);

    let report = MemoryReport {
        at_start,
        after,
        pending: pending_count,
        health_max,
        get_p50: percentile(&latencies, 0.50),
        get_p99: percentile(&latencies, 0.99),
    };
    println!(
        "[{backend}] server with {} pending: {HEALTH_CALLS} × /health/approvals (slowest {}), \
         {} × GET /v1/approvals/{{id}} from {GET_CLIENTS} clients (p50 {}, p99 {})",
        count(pending_count.max(0) as usize),
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

/// [`HEALTH_CALLS`] × `/health/approvals`: the pending count, and the slowest answer.
async fn health_calls(http: &reqwest::Client, base: &str) -> Result<(i64, Duration)> {
    #[derive(Deserialize)]
    struct Health {
        pending_count: i64,
    }
    let mut pending_count = 0;
    let mut health_max = Duration::ZERO;
    for _ in 0..HEALTH_CALLS {
        let started = Instant::now();
        let answer = http
            .get(format!("{base}/health/approvals"))
            .send()
            .await
            .context("GET /health/approvals")?;
        // 503 (degraded) still carries the counts.
        pending_count = answer.json::<Health>().await?.pending_count;
        health_max = health_max.max(started.elapsed());
    }
    Ok((pending_count, health_max))
}

/// `GET /v1/approvals/{id}` of every id, from [`GET_CLIENTS`] clients: the latencies.
async fn random_gets(ids: Vec<String>, base: &str, token: &str) -> Result<Vec<Duration>> {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..GET_CLIENTS {
        let (ids, next, base, token) =
            (ids.clone(), next.clone(), base.to_owned(), token.to_owned());
        clients.spawn(async move {
            let http = http_client(HTTP_TIMEOUT);
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
    Ok(latencies)
}
