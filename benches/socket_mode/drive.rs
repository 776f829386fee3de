//! The two ways to click (a signed HTTP request, an envelope on the socket), and the
//! two ways to drive them (closed loop, paced), with their latencies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::fake_socket::{Conn, envelope};
use crate::format::percentile;
use crate::slack::{SlackMessage, click_on_message, signed_post};

/// How long a click may take before it counts as failed (Slack's limit).
const ACK_LIMIT: Duration = Duration::from_secs(3);

/// One way to deliver an Approve click; cheap to clone.
#[derive(Clone)]
pub enum Clicker {
    Http {
        http: reqwest::Client,
        base: Arc<str>,
        secret: &'static str,
    },
    Socket(Arc<Socket>),
}

/// The fake Socket Mode server's connection to signoff, and the clicks waiting for
/// their acks.
pub struct Socket {
    conn: Conn,
    waiting: Mutex<HashMap<String, oneshot::Sender<(Instant, Value)>>>,
}

impl Clicker {
    pub fn http(http: reqwest::Client, base: String, secret: &'static str) -> Clicker {
        Clicker::Http {
            http,
            base: base.into(),
            secret,
        }
    }

    /// Clicks over `conn`; a task reads its acks and hands each to its click.
    pub fn socket(mut conn: Conn) -> Clicker {
        let mut incoming = conn.take_incoming();
        let socket = Arc::new(Socket {
            conn,
            waiting: Mutex::default(),
        });
        let reader = socket.clone();
        tokio::spawn(async move {
            while let Some(text) = incoming.recv().await {
                let at = Instant::now();
                let frame: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                let id = frame["envelope_id"].as_str().unwrap_or_default().to_owned();
                let waiter = reader.waiting.lock().unwrap().remove(&id);
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send((at, frame));
                    }
                    None => println!("unexpected frame from signoff: {frame}"),
                }
            }
        });
        Clicker::Socket(socket)
    }

    /// Approve on approval `id` by user `U0BENCH<i>`: when its answer (200, or a bare
    /// ack) arrived.
    async fn click(&self, id: &str, i: usize) -> Result<Instant> {
        let message = SlackMessage::signoffs(id, crate::CHANNEL);
        let payload = click_on_message(id, &format!("U0BENCH{i}"), "approve", &message);
        match self {
            Clicker::Http { http, base, secret } => {
                let answer = signed_post(http, base, secret, &payload).send().await?;
                let status = answer.status();
                answer.bytes().await?;
                ensure!(status == 200, "click answered {status}");
                Ok(Instant::now())
            }
            Clicker::Socket(socket) => {
                let envelope_id = format!("bench-{i}-{id}");
                let (waiter, acked) = oneshot::channel();
                socket
                    .waiting
                    .lock()
                    .unwrap()
                    .insert(envelope_id.clone(), waiter);
                socket
                    .conn
                    .send(&envelope(&envelope_id, "interactive", &payload, false));
                let (at, ack) = tokio::time::timeout(ACK_LIMIT, acked)
                    .await
                    .map_err(|_| anyhow!("no ack within {ACK_LIMIT:?}"))??;
                ensure!(ack == json!({ "envelope_id": envelope_id }), "ack {ack}");
                Ok(at)
            }
        }
    }
}

/// Latencies and counts of one phase.
pub struct Stats {
    /// Sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
    pub failures: usize,
    first_failure: Option<String>,
}

impl Stats {
    fn new(results: Vec<Result<Duration>>, elapsed: Duration) -> Stats {
        let mut latencies = Vec::new();
        let (mut failures, mut first_failure) = (0, None);
        for result in results {
            match result {
                Ok(latency) => latencies.push(latency),
                Err(error) => {
                    failures += 1;
                    first_failure.get_or_insert(format!("{error:#}"));
                }
            }
        }
        latencies.sort_unstable();
        Stats {
            latencies,
            elapsed,
            failures,
            first_failure,
        }
    }

    /// Answered clicks per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn p(&self, quantile: f64) -> Duration {
        percentile(&self.latencies, quantile)
    }

    pub fn print(&self, what: &str) {
        println!(
            "{what}: {} answered in {:.2} s = {:.0}/s; p50 {} p90 {} p99 {} max {}; {} failed",
            self.latencies.len(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(self.p(0.50)),
            ms(self.p(0.90)),
            ms(self.p(0.99)),
            ms(self.p(1.0)),
            self.failures
        );
        if let Some(failure) = &self.first_failure {
            println!("{what}: first failure: {failure}");
        }
    }
}

pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// `clients` clicks outstanding at once, each followed by the next when answered.
pub async fn closed_loop(clicker: &Clicker, ids: &[String], clients: usize) -> Stats {
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (clicker, ids, next) = (clicker.clone(), ids.clone(), next.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let sent = Instant::now();
                    results.push(clicker.click(id, i).await.map(|at| at - sent));
                }
                results
            })
        })
        .collect();
    let mut results = Vec::new();
    for worker in workers {
        results.extend(worker.await.expect("a click worker panicked"));
    }
    Stats::new(results, started.elapsed())
}

/// One click every 1/`rate` s on schedule, whatever the answers; each latency counts
/// from its scheduled time (a late sender shows, never hides).
pub async fn paced(clicker: &Clicker, ids: &[String], rate: f64) -> Stats {
    let started = tokio::time::Instant::now();
    let mut clicks = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (clicker, id) = (clicker.clone(), id.clone());
        let due = due.into_std();
        clicks.spawn(async move { clicker.click(&id, i).await.map(|at| at - due) });
    }
    let results = clicks.join_all().await;
    Stats::new(results, started.elapsed())
}
