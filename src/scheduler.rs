//! Timers that live in the database, in three loops: one fires the timers due at
//! `now` inside the store ([`Scheduler::fire_timers`]: expiries, whose `expires_at` is
//! the timer, in one transaction and with no lease; the nudges that came due; audit
//! checkpoints), one claims the due deliveries, reminders and escalations among them
//! (jobs, with a lease) for the outbox in passes, and one runs the due callbacks, a
//! few at a time, each as soon as a slot is free ([`CallbackSlots`]). So a slow Slack
//! never delays an expiry or a checkpoint, and a receiver that never answers never
//! delays a Slack delivery. Tests call [`Scheduler::run_once`], all in turn, with the
//! time they want instead of sleeping.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};

use crate::approval::ApprovalId;
use crate::clock::Clock;
use crate::jobs::Due;
#[cfg(doc)]
use crate::outbox::CALLBACK_SLOTS;
use crate::outbox::{CallbackSlots, Claimed, Outbox};
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
    /// Shared-table rows this process could not read (inserted before the checks on
    /// direct inserts): left out of the intake's reads, so that they do not stay
    /// first in its line and keep the rows after them out.
    passed_over: Arc<Mutex<HashSet<ApprovalId>>>,
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
            passed_over: Arc::default(),
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
            passed_over: Arc::default(),
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
        // Up to INTAKE_BATCH readable rows, oldest first: a page with rows that cannot
        // be read is followed by the next.
        let mut seen: Vec<ApprovalId> = Vec::new();
        while adopting.len() < INTAKE_BATCH as usize {
            let mut skip = seen.clone();
            skip.extend(
                self.passed_over
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter(),
            );
            let wanted = INTAKE_BATCH - adopting.len() as i64;
            let page = self.store.unclassified(wanted, &skip).await?;
            let last = page.len() < wanted as usize;
            for id in page {
                seen.push(id);
                let Some(row) = self.readable(id).await else {
                    continue;
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
            if last {
                break;
            }
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

    /// The shared-table row `id`, if it can be read. One that cannot (inserted before
    /// the checks on direct inserts) is passed over, and left out of this process's
    /// intake from then on; one that failed for another reason is tried next pass.
    async fn readable(&self, id: ApprovalId) -> Option<crate::approval::Approval> {
        match self.store.get(id).await {
            Ok(Some(row)) => Some(row),
            // Gone since the intake's read: it will not be back.
            Ok(None) => {
                self.pass_over(id);
                None
            }
            Err(error) => {
                let unreadable = matches!(
                    &error,
                    StoreError::Invalid(_)
                        | StoreError::Database(
                            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)
                        )
                );
                if unreadable {
                    tracing::warn!(%id, %error, "a row of pending_approvals cannot be read: passed over from now on");
                    self.pass_over(id);
                } else {
                    tracing::warn!(%id, %error, "a row of pending_approvals could not be read: tried next pass");
                }
                None
            }
        }
    }

    fn pass_over(&self, id: ApprovalId) {
        let mut passed_over = self.passed_over.lock().unwrap_or_else(|e| e.into_inner());
        passed_over.insert(id);
    }

    /// Runs every job due at `now` (up to [`BATCH`] timers and [`BATCH`] deliveries, and
    /// the callbacks): timers inside the store ([`Scheduler::fire_timers`]), then
    /// deliveries and callbacks through the outbox, waiting for them. Returns how many
    /// jobs it fired or claimed.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let fired = self.fire_timers(now).await?;
        Ok(fired + self.deliver_once(now).await?)
    }

    /// One pass of the deliveries alone, as their loops run apart from the timers'
    /// (so an approval may be past its expiry and not yet marked): claims the jobs due
    /// at `now` and runs them, the callbacks beside the others as their loop runs them
    /// ([`CALLBACK_SLOTS`] at a time, each claimed as a slot frees), until none is due
    /// at `now` or under way. Returns how many were claimed.
    pub async fn deliver_once(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let (deliveries, callbacks) =
            tokio::join!(self.deliver_due(now, None), self.drain_callbacks(now));
        Ok(deliveries?.claimed + callbacks?)
    }

    /// Fires the timers due at `now`, inside the store and without waiting on any
    /// delivery: takes in rows other programs inserted, expires approvals, plans the
    /// nudges that came due, and signs an audit checkpoint when one is due. Returns
    /// how many timers fired.
    pub async fn fire_timers(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        // Expiries and deliveries go on whatever becomes of other programs' rows.
        if let Err(error) = self.intake(now).await {
            tracing::warn!(%error, "could not take in rows inserted into pending_approvals");
        }
        let fired = self.store.fire_due(now, BATCH).await?;
        self.store.checkpoint(now).await?;
        Ok(fired)
    }

    /// Claims the deliveries (every kind but callbacks) due at `now` and runs them
    /// through the outbox, each within its time limit (see `outbox::pass`); a retry
    /// counts its wait from when the attempt ended on `clock` (from `now` without one).
    async fn deliver_due(
        &self,
        now: DateTime<Utc>,
        clock: Option<&Arc<dyn Clock>>,
    ) -> Result<Deliveries, StoreError> {
        // Every kind but callbacks is Slack's: a process whose outbox has no Slack
        // client claims none, leaving them to a replica with Slack (or to this one,
        // restarted with its bot token), where claiming them spent their attempts on
        // "Slack is not configured" until they were given up.
        if self
            .outbox
            .as_ref()
            .is_some_and(|outbox| !outbox.has_slack())
        {
            return Ok(Deliveries::default());
        }
        // The claimed jobs are leased until `now` + the lease: each starts within the
        // first half, so that it is recorded before another replica can claim it.
        let began = tokio::time::Instant::now();
        // Read on a reader, paced, then claimed in one write per job: a post that
        // waits for its channel's slot is moved to it, not leased and put back.
        let due = self.store.due_jobs(now, BATCH, Due::Deliveries).await?;
        let mut pass = Deliveries {
            claimed: due.len(),
            put_back: 0,
        };
        let jobs = self
            .store
            .claim_due(due, now, self.lease, |jobs| match &self.outbox {
                Some(outbox) => outbox.pace(jobs, now),
                None => (jobs, Vec::new()),
            })
            .await?;
        if jobs.is_empty() {
            return Ok(pass);
        }
        match &self.outbox {
            Some(outbox) => {
                let claimed = Claimed {
                    jobs,
                    now,
                    began,
                    lease: self.lease,
                    stop: self.stop.as_ref(),
                    clock: clock.cloned(),
                };
                pass.put_back = outbox.deliver_all(claimed).await?;
            }
            // Nothing here can deliver them: leave them to their lease running out
            // (another replica, or this one after a restart with Slack configured).
            None => tracing::warn!(
                count = jobs.len(),
                "delivery jobs claimed without a Slack client"
            ),
        }
        Ok(pass)
    }

    /// Runs until `shutdown` turns true, in three loops, so that a slow delivery never
    /// holds up a timer nor a slow callback a delivery: the timers'
    /// ([`Scheduler::fire_timers`]) every `every` and whenever a row is inserted into
    /// the shared table, and the deliveries' and the callbacks' after each of them.
    /// Errors are logged and the next pass tries again: a database hiccup must not
    /// stop the timers for good. On shutdown the deliveries and callbacks under way
    /// finish (each within its time limit) and are recorded; those claimed but not
    /// started go back to the queue, due at once for another replica or the next
    /// start, so a backlog does not hold the process up.
    pub async fn run(
        mut self,
        clock: Arc<dyn Clock>,
        every: Duration,
        shutdown: watch::Receiver<bool>,
    ) {
        self.stop = Some(shutdown.clone());
        let ticked = Ticked::default();
        let timers = tokio::spawn(self.clone().run_timers(
            clock.clone(),
            every,
            shutdown.clone(),
            ticked.clone(),
        ));
        let callbacks = tokio::spawn(self.clone().run_callbacks(
            clock.clone(),
            shutdown.clone(),
            ticked.callbacks,
        ));
        self.run_deliveries(clock, shutdown, ticked.deliveries)
            .await;
        if let Err(panicked) = timers.await {
            tracing::error!(%panicked, "the timers' loop failed");
        }
        if let Err(panicked) = callbacks.await {
            tracing::error!(%panicked, "the callbacks' loop failed");
        }
    }

    /// The timers' loop: a pass every `every`, or at once when a row is inserted into
    /// the shared table, each followed by a wake-up of the deliveries' loop and of the
    /// callbacks'.
    async fn run_timers(
        self,
        clock: Arc<dyn Clock>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
        ticked: Ticked,
    ) {
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
                let fired = self.fire_timers(clock.now()).await;
                // The deliveries and the callbacks look for due jobs after each pass,
                // whatever it did.
                ticked.deliveries.notify_one();
                ticked.callbacks.notify_one();
                match fired {
                    // A full batch means more may be due right now.
                    Ok(fired) if fired as i64 >= BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "timer pass failed; retrying next tick");
                        break;
                    }
                }
            }
        }
    }

    /// The deliveries' loop: a pass whenever the timers' loop ran one (a wake-up that
    /// comes while a pass runs starts the next right after it), and again at once
    /// while a pass finds a full batch or hands jobs back.
    async fn run_deliveries(
        &self,
        clock: Arc<dyn Clock>,
        mut shutdown: watch::Receiver<bool>,
        ticked: Arc<Notify>,
    ) {
        while !*shutdown.borrow() {
            tokio::select! {
                _ = ticked.notified() => {}
                _ = shutdown.changed() => break,
            }
            while !*shutdown.borrow() {
                match self.deliver_due(clock.now(), Some(&clock)).await {
                    Ok(pass) if pass.is_full() => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "delivery pass failed; retrying next tick");
                        break;
                    }
                }
            }
        }
    }

    /// The callbacks' loop: whenever the timers' loop ran a pass or one of its
    /// callbacks ended, it claims as many due callbacks as it has free slots
    /// ([`CALLBACK_SLOTS`]) and starts each at once in its own task, so that none is
    /// claimed and put back: a backlog of receivers that never answer costs one claim
    /// and one report per attempt. Errors are logged, and the next wake-up tries
    /// again. On shutdown it starts no more and waits for the callbacks under way,
    /// recorded. Without an outbox the callbacks stay queued.
    async fn run_callbacks(
        self,
        clock: Arc<dyn Clock>,
        mut shutdown: watch::Receiver<bool>,
        ticked: Arc<Notify>,
    ) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        let mut slots = CallbackSlots::new(outbox, self.lease, Some(clock.clone()));
        while !*shutdown.borrow() {
            if let Err(error) = self.start_callbacks(&mut slots, clock.now()).await {
                tracing::warn!(%error, "could not start the due callbacks; retrying at the next wake-up");
            }
            tokio::select! {
                _ = ticked.notified() => {}
                _ = slots.ended(), if !slots.is_idle() => {}
                _ = shutdown.changed() => break,
            }
        }
        slots.finish().await;
    }

    /// Runs the callbacks due at `now` as their loop does, until none is due at `now`
    /// or under way (a retry is due later); returns how many were claimed. After a
    /// read or a claim fails it starts no more, and answers the error once those under
    /// way are recorded.
    async fn drain_callbacks(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let Some(outbox) = self.outbox.clone() else {
            return Ok(0);
        };
        let mut slots = CallbackSlots::new(outbox, self.lease, None);
        let (mut claimed, mut failed) = (0, None);
        loop {
            if failed.is_none() {
                match self.start_callbacks(&mut slots, now).await {
                    Ok(started) => claimed += started,
                    Err(error) => failed = Some(error),
                }
            }
            if !slots.ended().await {
                break;
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(claimed),
        }
    }

    /// Reads the callbacks due at `now` (as `CallbackSlots::read` says), claims as
    /// many as `slots` has free, shared fairly across requesters
    /// (`CallbackSlots::pick`; no pacing), and starts them; returns how many started. Once the process shuts down it starts none: those claimed
    /// meanwhile go back to the queue, due at once.
    async fn start_callbacks(
        &self,
        slots: &mut CallbackSlots,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let free = slots.free();
        if free == 0 || self.stopping() {
            return Ok(0);
        }
        let (read, limit) = slots.read();
        let mut due = self.store.due_jobs(now, limit, read).await?;
        due.jobs = slots.pick(due.jobs, read);
        let jobs = self
            .store
            .claim_due(due, now, self.lease, |jobs| (jobs, Vec::new()))
            .await?;
        if self.stopping() {
            let back = jobs.iter().map(|job| (job, now)).collect();
            self.store.defer_jobs(back).await?;
            return Ok(0);
        }
        let started = jobs.len();
        slots.start(jobs, now);
        Ok(started)
    }

    /// Whether the process is shutting down ([`Scheduler::run`]'s `shutdown`).
    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|stop| *stop.borrow())
    }
}

/// The wake-ups the timers' loop gives after each pass, one for each loop it wakes.
#[derive(Clone, Default)]
struct Ticked {
    deliveries: Arc<Notify>,
    callbacks: Arc<Notify>,
}

/// What one pass of deliveries did.
#[derive(Default)]
struct Deliveries {
    /// Deliveries found due (claimed to run now, or moved to their turn).
    claimed: usize,
    /// Claimed deliveries not started in time, due again at once.
    put_back: usize,
}

impl Deliveries {
    /// More may be due right now: run another pass at once.
    fn is_full(&self) -> bool {
        self.claimed as i64 == BATCH || self.put_back > 0
    }
}
