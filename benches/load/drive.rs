//! Driving load: `--clients` tasks, each on its own connection, running one operation
//! after another until a phase's time or count bound is reached.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::Settings;
use crate::client::Api;
use crate::report::Stats;

/// Upper bound for phases bounded by count (pre-filling, auto-approved set-up).
const SETUP_LIMIT: Duration = Duration::from_secs(600);

/// How one phase is bounded: it stops at `duration` or after `count` requests.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub clients: usize,
    pub duration: Duration,
    pub count: usize,
}

impl Load {
    pub fn timed(settings: Settings) -> Load {
        Load {
            clients: settings.clients,
            duration: settings.phase,
            count: usize::MAX,
        }
    }

    pub fn counted(settings: Settings, count: usize) -> Load {
        Load {
            clients: settings.clients,
            duration: SETUP_LIMIT,
            count,
        }
    }
}

/// What a phase did: the successful requests' outputs (by request index) and latencies.
pub struct Phase<T> {
    pub stats: Stats,
    pub outputs: Vec<(usize, T)>,
}

impl<T> Phase<T> {
    pub fn rate(&self) -> f64 {
        self.stats.rate()
    }
}

/// Per-worker results, merged at the end.
struct Worker<T> {
    latencies: Vec<Duration>,
    outputs: Vec<(usize, T)>,
    failures: usize,
    first_failure: Option<String>,
}

/// Runs `op(connection, i)` for i = 0, 1, … from `load.clients` tasks at once, each on
/// its own connection, until the time or count bound is reached.
pub async fn drive<T, F, Fut>(api: &Api, load: Load, op: F) -> Phase<T>
where
    T: Send + 'static,
    F: Fn(Api, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    // Each connection pool before the clock starts: building a reqwest client loads the
    // system's CA certificates (tens of milliseconds of CPU with native-tls), which
    // inside the phase took the first second of a 5 s phase from the server.
    let apis: Vec<Api> = (0..load.clients).map(|_| api.reconnect()).collect();
    let started = Instant::now();
    let deadline = started + load.duration;
    let workers: Vec<_> = apis
        .into_iter()
        .map(|api| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut worker = Worker {
                    latencies: Vec::new(),
                    outputs: Vec::new(),
                    failures: 0,
                    first_failure: None,
                };
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= load.count {
                        break;
                    }
                    let sent = Instant::now();
                    match op(api.clone(), i).await {
                        Ok(output) => {
                            worker.latencies.push(sent.elapsed());
                            worker.outputs.push((i, output));
                        }
                        Err(error) => {
                            worker.failures += 1;
                            worker.first_failure.get_or_insert(format!("{error:#}"));
                        }
                    }
                }
                worker
            })
        })
        .collect();
    let mut merged = Worker {
        latencies: Vec::new(),
        outputs: Vec::new(),
        failures: 0,
        first_failure: None,
    };
    for worker in workers {
        let worker = worker.await.expect("a load worker panicked");
        merged.latencies.extend(worker.latencies);
        merged.outputs.extend(worker.outputs);
        merged.failures += worker.failures;
        merged.first_failure = merged.first_failure.or(worker.first_failure);
    }
    merged.outputs.sort_unstable_by_key(|(i, _)| *i);
    Phase {
        stats: Stats::new(
            merged.latencies,
            started.elapsed(),
            merged.failures,
            merged.first_failure,
        ),
        outputs: merged.outputs,
    }
}
