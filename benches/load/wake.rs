//! Step 4: long-poll wake latency, with the server in this process so that the bench can
//! vote through `Store::apply` and time the waiting `GET …?wait=N` answer against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use signoff::approval::{ApprovalId, Decision, Event};
use signoff::clock::{Clock, SystemClock};
use signoff::http::AppState;
use signoff::policy::Policy;
use signoff::store::Store;

use crate::cli::Settings;
use crate::client::{Api, LONG_POLL_WAIT_SECS, PENDING_TOOL, parameters};
use crate::report::{ms, percentile};

/// How long a long-poll is left waiting before the decision.
const LONG_POLL_SETTLE: Duration = Duration::from_millis(20);

/// Wake latencies, sorted, and how often the response beat `apply`'s return.
pub struct WakeStats {
    pub waiters: usize,
    pub latencies: Vec<Duration>,
    pub early: usize,
}

/// Serves the store in this process (so the bench can vote with `Store::apply`) and
/// measures wake-ups with one waiter at a time, then with `settings.clients` at once.
pub async fn measure_long_poll(
    backend: &'static str,
    url: &str,
    settings: Settings,
) -> Result<(WakeStats, WakeStats)> {
    let store = Store::connect(url)
        .await
        .context("open the store in-process")?;
    let token = signoff::tokens::generate();
    store
        .token_insert(
            "bench-long-poll",
            &signoff::tokens::hash(&token),
            SystemClock.now(),
        )
        .await
        .context("insert the long-poll token")?;
    // The built-in policy, less the default `max_pending`: the waiters are one token's.
    let policy = Policy::from_toml_str("[defaults]\nmax_pending = 0\n")?;
    let state = AppState::new(store.clone(), policy, Arc::new(SystemClock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind 127.0.0.1:0")?;
    let api = Api::new(backend, format!("http://{}", listener.local_addr()?), token);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(signoff::http::run(listener, state, async move {
        let _ = stopped.await;
    }));

    let one = wake_trials(&api, &store, 1, settings.wake_trials).await?;
    let many = wake_trials(&api, &store, settings.clients, settings.wake_trials).await?;

    let _ = stop.send(());
    server
        .await
        .context("the in-process server panicked")?
        .context("the in-process server failed")?;
    Ok((one, many))
}

/// `total` wake-ups from `waiters` tasks at once.
async fn wake_trials(api: &Api, store: &Store, waiters: usize, total: usize) -> Result<WakeStats> {
    let batch = rand::random::<u64>();
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..waiters)
        .map(|_| {
            let (api, store, next) = (api.reconnect(), store.clone(), next.clone());
            tokio::spawn(async move {
                let mut wakes = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, anyhow::Error>(wakes);
                    }
                    wakes.push(one_wake(&api, &store, batch, i).await?);
                }
            })
        })
        .collect();
    let mut wakes = Vec::with_capacity(total);
    for task in tasks {
        wakes.extend(task.await.expect("a long-poll task panicked")?);
    }
    let early = wakes.iter().filter(|wake| wake.is_none()).count();
    let mut latencies: Vec<Duration> = wakes.into_iter().map(Option::unwrap_or_default).collect();
    latencies.sort_unstable();
    let stats = WakeStats {
        waiters,
        latencies,
        early,
    };
    println!(
        "[{}] long-poll wake, {waiters} waiting: {} trials; p50 {} p90 {} p99 {} max {}; {} answered before apply returned",
        api.label,
        stats.latencies.len(),
        ms(percentile(&stats.latencies, 0.50)),
        ms(percentile(&stats.latencies, 0.90)),
        ms(percentile(&stats.latencies, 0.99)),
        ms(percentile(&stats.latencies, 1.0)),
        stats.early,
    );
    Ok(stats)
}

/// One trial: create a pending approval, long-poll it, approve it once the poll is
/// waiting. The time from `apply` returning (T0) to the answer (T1), or `None` when the
/// answer came first.
async fn one_wake(api: &Api, store: &Store, batch: u64, i: usize) -> Result<Option<Duration>> {
    let id = api
        .create(PENDING_TOOL, parameters(batch, i), "pending")
        .await?;
    let approval: ApprovalId = id.parse().context("approval_id is not a UUID")?;
    let poll = {
        let api = api.clone();
        tokio::spawn(async move {
            let status = api.wait(&id, LONG_POLL_WAIT_SECS).await;
            (status, Instant::now())
        })
    };
    tokio::time::sleep(LONG_POLL_SETTLE).await;
    let vote = Event::Vote {
        by: signoff::approval::Decider::approver("U0BENCH"),
        decision: Decision::Approve,
        reason: None,
        parameters_shown: None,
    };
    store
        .apply(approval, vote, SystemClock.now())
        .await
        .context("approve")?;
    let committed = Instant::now();
    let (status, answered) = poll.await.expect("the long-poll task panicked");
    let status = status?;
    ensure!(
        status == "approved",
        "long-poll answered {status:?}, expected approved"
    );
    Ok(answered.checked_duration_since(committed))
}
