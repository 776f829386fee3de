//! Timers that live in the database: a loop around [`Scheduler::run_once`], which
//! expires the approvals due at `now` inside the store (their `expires_at` is the
//! timer; one transaction, no lease) and claims the due deliveries, reminders and
//! escalations among them (jobs, with a lease) for the outbox. Tests call `run_once`
//! with the time they want instead of sleeping.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::outbox::Outbox;
use crate::policy::{Call, Policy};
use crate::store::{Store, StoreError};

/// Expiries fired, and deliveries claimed, per pass at most; a backlog drains over
/// consecutive passes.
pub const BATCH: i64 = 1000;
/// Shared-table rows classified per pass at most.
const INTAKE_BATCH: i64 = 100;

#[derive(Clone)]
pub struct Scheduler {
    store: Store,
    outbox: Option<Outbox>,
    /// Classifies rows inserted straight into the shared table; without it they wait.
    policy: Option<Arc<Policy>>,
    /// How long a claimed delivery is this process's; a crashed holder's deliveries
    /// run again after it. A claimed delivery starts in the lease's first half or goes
    /// back to the queue.
    lease: Duration,
    /// Turns true when the process shuts down (set by [`Scheduler::run`]): no pass
    /// starts and no claimed delivery is started after it.
    stop: Option<watch::Receiver<bool>>,
}

impl Scheduler {
    /// A scheduler that fires timers only (deliveries stay queued).
    pub fn new(store: Store) -> Self {
        Self {
            store,
            outbox: None,
            policy: None,
            lease: crate::jobs::LEASE,
            stop: None,
        }
    }

    /// A scheduler that also delivers through `outbox`.
    pub fn with_outbox(store: Store, outbox: Outbox) -> Self {
        Self {
            store,
            outbox: Some(outbox),
            policy: None,
            lease: crate::jobs::LEASE,
            stop: None,
        }
    }

    /// Leases claimed deliveries for `lease` instead of [`crate::jobs::LEASE`].
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Also classifies rows inserted straight into the shared table.
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Classifies pending rows that another program inserted into the shared table;
    /// returns how many this pass adopted.
    pub async fn intake(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let Some(policy) = &self.policy else {
            return Ok(0);
        };
        let mut adopting = tokio::task::JoinSet::new();
        for id in self.store.unclassified(INTAKE_BATCH).await? {
            // A row that cannot be read (one inserted before the checks on direct
            // inserts) is passed over, not the pass stopped for every other row.
            let row = match self.store.get(id).await {
                Ok(Some(row)) => row,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%id, %error, "a row of pending_approvals cannot be read: passed over");
                    continue;
                }
            };
            let call = Call {
                tool: &row.tool_name,
                server: row.server.as_deref(),
                params: &row.parameters,
                annotations: None,
            };
            let class = policy.classify_call(&call, Some(row.risk_tier));
            let store = self.store.clone();
            adopting.spawn(async move { store.adopt(id, class, now).await });
        }
        let mut adopted = 0;
        while let Some(result) = adopting.join_next().await {
            match result {
                Ok(Ok(_)) => adopted += 1,
                Ok(Err(error)) => tracing::warn!(%error, "could not classify a shared-table row"),
                Err(panicked) => tracing::error!(%panicked, "intake task failed"),
            }
        }
        Ok(adopted)
    }

    /// Runs every job due at `now` (up to [`BATCH`] timers and [`BATCH`] deliveries):
    /// timers inside the store, deliveries through the outbox. Returns how many jobs
    /// it fired or claimed.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let pass = self.pass(now).await?;
        Ok(pass.fired + pass.claimed)
    }

    async fn pass(&self, now: DateTime<Utc>) -> Result<Pass, StoreError> {
        // The claimed jobs are leased until `now` + the lease: each starts within the
        // first half, so that it is recorded before another replica can claim it.
        let start_by = tokio::time::Instant::now() + self.lease / 2;
        // Expiries and deliveries go on whatever becomes of other programs' rows.
        if let Err(error) = self.intake(now).await {
            tracing::warn!(%error, "could not take in rows inserted into pending_approvals");
        }
        let fired = self.store.fire_due(now, BATCH).await?;
        self.store.checkpoint(now).await?;
        // Read on a reader, paced, then claimed in one write per job: a post that
        // waits for its channel's slot is moved to it, not leased and put back.
        let due = self.store.due_jobs(now, BATCH).await?;
        let mut pass = Pass {
            fired,
            claimed: due.len(),
            put_back: 0,
        };
        let deliveries = self
            .store
            .claim_due(due, now, self.lease, |jobs| match &self.outbox {
                Some(outbox) => outbox.pace(jobs, now),
                None => (jobs, Vec::new()),
            })
            .await?;
        if !deliveries.is_empty() {
            match &self.outbox {
                Some(outbox) => {
                    pass.put_back = outbox
                        .deliver_all(deliveries, now, start_by, self.stop.as_ref())
                        .await?;
                }
                // Nothing here can deliver them: leave them to their lease running out
                // (another replica, or this one after a restart with Slack configured).
                None => tracing::warn!(
                    count = deliveries.len(),
                    "delivery jobs claimed without a Slack client"
                ),
            }
        }
        Ok(pass)
    }

    /// Runs a pass every `every` until `shutdown` turns true. Errors are logged and the
    /// next pass tries again: a database hiccup must not stop the timers for good.
    /// On shutdown the deliveries under way finish and are recorded; those claimed but
    /// not started go back to the queue, due at once for another replica or the next
    /// start, so a backlog does not hold the process up.
    pub async fn run(
        mut self,
        clock: Arc<dyn Clock>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.stop = Some(shutdown.clone());
        let wakeup = self.store.wakeup();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wakeup.notified() => {}
                _ = shutdown.changed() => break,
            }
            while !*shutdown.borrow() {
                match self.pass(clock.now()).await {
                    // A full batch means more may be due right now.
                    Ok(pass) if pass.is_full() => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "scheduler pass failed; retrying next tick");
                        break;
                    }
                }
            }
        }
    }
}

/// What one pass did.
struct Pass {
    /// Timers fired.
    fired: usize,
    /// Deliveries found due (claimed to run now, or moved to their turn).
    claimed: usize,
    /// Claimed deliveries not started in time, due again at once.
    put_back: usize,
}

impl Pass {
    /// More may be due right now: run another pass at once.
    fn is_full(&self) -> bool {
        self.fired as i64 >= BATCH || self.claimed as i64 == BATCH || self.put_back > 0
    }
}
