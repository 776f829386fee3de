//! Where a write request's time goes inside the server, from its `/metrics` before and
//! after a phase: the server-side time of the phase's route, the single writer's queue
//! wait, its batch transaction and the `COMMIT` alone, and operations per batch. A
//! create or a click waits in the queue, then runs in one batch; the rest of its server
//! time is outside the writer (signature check, parsing, the response).

use anyhow::{Context, Result};

/// The sums and counts read from one `/metrics` answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    /// Server-side time of the route's requests: (sum in seconds, count).
    route: (f64, f64),
    queue_wait: (f64, f64),
    batch: (f64, f64),
    commit: (f64, f64),
    /// Operations per batch: (operations, batches).
    operations: (f64, f64),
}

impl Snapshot {
    /// Reads `/metrics` from `base`, with `route`'s request durations.
    pub async fn scrape(http: &reqwest::Client, base: &str, route: &str) -> Result<Snapshot> {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .context("GET /metrics")?
            .text()
            .await
            .context("read /metrics")?;
        let route_label = format!("{{route=\"{route}\"}}");
        let histogram = |name: &str, labels: &str| {
            (
                sample(&text, &format!("{name}_sum{labels}")),
                sample(&text, &format!("{name}_count{labels}")),
            )
        };
        Ok(Snapshot {
            route: histogram("signoff_http_request_duration_seconds", &route_label),
            queue_wait: histogram("signoff_writer_queue_wait_seconds", ""),
            batch: histogram("signoff_writer_batch_seconds", ""),
            commit: histogram("signoff_writer_commit_seconds", ""),
            operations: histogram("signoff_writer_batch_operations", ""),
        })
    }

    /// Prints the means over what happened between `before` and `self`.
    pub fn print_since(&self, before: &Snapshot, backend: &str, phase: &str) {
        let mean = |after: (f64, f64), before: (f64, f64)| {
            let count = after.1 - before.1;
            if count > 0.0 {
                (after.0 - before.0) / count
            } else {
                0.0
            }
        };
        let ms = |seconds: f64| seconds * 1000.0;
        let server = mean(self.route, before.route);
        let wait = mean(self.queue_wait, before.queue_wait);
        let batch = mean(self.batch, before.batch);
        let commit = mean(self.commit, before.commit);
        let per_batch = mean(self.operations, before.operations);
        println!(
            "[{backend}] {phase}, server-side stages (means): request {:.2} ms = writer queue wait {:.2} ms \
             + batch {:.2} ms (of which COMMIT {:.2} ms) + outside the writer {:.2} ms; \
             {:.1} operations per batch, {:.0} writes in all",
            ms(server),
            ms(wait),
            ms(batch),
            ms(commit),
            ms(server - wait - batch),
            per_batch,
            self.queue_wait.1 - before.queue_wait.1,
        );
    }
}

/// The value of the sample `name` (with its labels, if any), 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}
