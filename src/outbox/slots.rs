//! The callbacks' slots: the scheduler's callbacks loop (see `Scheduler::run`) runs
//! at most [`CALLBACK_SLOTS`] callbacks at a time, each in its own task, through the
//! same per-job path as a pass (`Outbox::run`: a time limit below half the lease, a
//! report fenced by the claim, retry and backoff). It claims only as many due
//! callbacks as it has free slots and starts each at once, so it never puts one back:
//! a backlog of receivers that never answer costs one claim and one report per
//! attempt, and no callback holds up a Slack delivery.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use super::{CALLBACK_SLOTS, Outbox};
use crate::clock::Clock;
use crate::jobs::{DueJob, Job};
use crate::store::StoreError;

/// The callbacks under way, [`CALLBACK_SLOTS`] at most.
pub struct CallbackSlots {
    outbox: Outbox,
    /// How long the claims lease the callbacks for.
    lease: Duration,
    /// Read when a callback starts and ends (see `Claimed::clock`); `now` throughout
    /// without it.
    clock: Option<Arc<dyn Clock>>,
    running: JoinSet<Result<(), StoreError>>,
}

impl CallbackSlots {
    pub fn new(outbox: Outbox, lease: Duration, clock: Option<Arc<dyn Clock>>) -> Self {
        Self {
            outbox,
            lease,
            clock,
            running: JoinSet::new(),
        }
    }

    /// How many more callbacks may start now.
    pub fn free(&self) -> usize {
        CALLBACK_SLOTS.saturating_sub(self.running.len())
    }

    /// Whether no callback is under way.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts `jobs`, callbacks just claimed at `now` ([`CallbackSlots::free`] of
    /// them at most), each in its own task.
    pub fn start(&mut self, jobs: Vec<DueJob>, now: DateTime<Utc>) {
        debug_assert!(jobs.len() <= self.free(), "more callbacks than free slots");
        for job in jobs {
            debug_assert!(matches!(job.job, Job::Callback { .. }), "not a callback");
            let run = self
                .outbox
                .clone()
                .run(job, now, self.lease, self.clock.clone());
            self.running.spawn(run);
        }
    }

    /// Waits until a callback under way ends, and logs what went wrong with it, if
    /// anything: false at once when none is under way. A report that fails leaves its
    /// callback to wait out its lease. Cancel-safe (a `select!` branch).
    pub async fn ended(&mut self) -> bool {
        match self.running.join_next().await {
            None => false,
            Some(Ok(Ok(()))) => true,
            Some(Ok(Err(error))) => {
                tracing::warn!(%error, "a callback could not be recorded: it waits out its lease");
                true
            }
            Some(Err(panicked)) => {
                tracing::error!(%panicked, "callback task failed");
                true
            }
        }
    }

    /// Waits for every callback under way to end and be recorded.
    pub async fn finish(mut self) {
        while self.ended().await {}
    }
}
