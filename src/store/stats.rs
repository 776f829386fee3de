//! Where the single writer's time goes, for `/metrics`: how long an operation waits in
//! the writer's queue before its batch begins, how long a batch's transaction takes and
//! its `COMMIT` alone (PostgreSQL's durable flush; SQLite's write of the WAL), on
//! SQLite how long a committed batch's answers then wait for the WAL's sync beside the
//! writer, and how many operations share a batch. A request that writes (a create, a
//! click) spends its store time in exactly these stages, so they tell queueing from
//! work from fsync under load.
//!
//! The histograms are shared: the metrics registry holds clones of the writer's, and a
//! clone counts into the same buckets.

use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The writer's histograms (cheap to clone; clones share their counts).
#[derive(Clone)]
pub struct WriterStats {
    queue_wait: Histogram,
    batch: Histogram,
    commit: Histogram,
    held: Histogram,
    operations: Histogram,
}

/// 50 µs to about 6.5 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            queue_wait: seconds(),
            batch: seconds(),
            commit: seconds(),
            held: seconds(),
            // 1 to 128, the largest batch.
            operations: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
        }
    }
}

impl WriterStats {
    /// Adds the writer's histograms to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "writer_queue_wait_seconds",
            "Time a write operation waited in the single writer's queue before its batch began",
            self.queue_wait.clone(),
        );
        registry.register(
            "writer_batch_seconds",
            "A write batch, from BEGIN to the end of COMMIT (a failed batch: with its operations' retries one by one)",
            self.batch.clone(),
        );
        registry.register(
            "writer_commit_seconds",
            "A write batch's COMMIT alone (PostgreSQL: the durable flush; SQLite: the WAL written, synced beside the writer)",
            self.commit.clone(),
        );
        registry.register(
            "writer_held_seconds",
            "SQLite: how long a committed batch's answers waited for the WAL's sync to disk",
            self.held.clone(),
        );
        registry.register(
            "writer_batch_operations",
            "Write operations per batch (one transaction)",
            self.operations.clone(),
        );
    }

    /// A batch begins at `began` with operations queued at `queued`.
    pub(crate) fn began(&self, queued: impl Iterator<Item = Instant>, began: Instant) {
        let mut operations = 0u32;
        for at in queued {
            operations += 1;
            self.queue_wait
                .observe(began.saturating_duration_since(at).as_secs_f64());
        }
        self.operations.observe(f64::from(operations));
    }

    /// A batch took `took`, its commit included (and, when it failed, its operations'
    /// retries one by one).
    pub(crate) fn batch(&self, took: Duration) {
        self.batch.observe(took.as_secs_f64());
    }

    /// A batch's `COMMIT` took `took`.
    pub(crate) fn commit(&self, took: Duration) {
        self.commit.observe(took.as_secs_f64());
    }

    /// A committed batch's answers waited `took` for the sync that made it durable.
    pub(crate) fn held(&self, took: Duration) {
        self.held.observe(took.as_secs_f64());
    }
}
