//! One scheduler pass's deliveries (every kind but callbacks, which the callbacks
//! loop runs, see `slots`): the claimed jobs run a few at a time, each within a time
//! limit below half its lease, and each outcome is reported, fenced by the claim (see
//! `store::ops::report`). A job starts only in the first half of the lease and ends
//! within the limit, so it is recorded before its lease runs out and another replica
//! may claim it again. A callback runs through the same per-job path
//! ([`Outbox::run`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{CONCURRENCY, Outbox, remind, retry};
use crate::clock::Clock;
use crate::jobs::{DueJob, Job, MessageKind, Outcome};
use crate::store::StoreError;

/// The deliveries a scheduler pass claimed, and when and for how long.
pub struct Claimed<'a> {
    pub jobs: Vec<DueJob>,
    /// The pass's time: the lease runs from it, and each job runs at it, or, with a
    /// `clock`, at the clock's time when it starts, if later.
    pub now: DateTime<Utc>,
    /// When the pass began (before its claim), in real time.
    pub began: Instant,
    /// How long the claim leased the jobs for.
    pub lease: Duration,
    /// Turns true when the process shuts down: no job starts after it.
    pub stop: Option<&'a watch::Receiver<bool>>,
    /// Read when a job starts, so that one that waited for its turn (up to half the
    /// lease) runs at its own time; read again when it ends, so that its retry waits
    /// from then (a call that took long does not eat Slack's `Retry-After`). Without
    /// it, `now` throughout.
    pub clock: Option<Arc<dyn Clock>>,
}

/// How long one job may run: below half its lease, since it starts in the first half
/// and must be recorded before the lease ends. A reminder's DMs and an approval's
/// message updates stop a little earlier ([`soft_limit`]), to report what was sent.
fn job_limit(lease: Duration) -> Duration {
    lease * 2 / 5
}

/// When a job that sends many messages stops waiting for them.
fn soft_limit(lease: Duration) -> Duration {
    job_limit(lease) * 9 / 10
}

impl Outbox {
    /// Delivers claimed jobs ([`CONCURRENCY`] at a time; posts have their channel's
    /// slot already, see [`Outbox::pace`]) and records each outcome. A job starts only in the first half
    /// of the lease, and only until `stop` turns true or a report fails: the jobs not
    /// started go back to the queue, due at `now`. Returns, once the ones under way are
    /// recorded, how many went back, or the first error (every job under way is still
    /// awaited and recorded first: none is cut off mid-call).
    pub async fn deliver_all(&self, claimed: Claimed<'_>) -> Result<usize, StoreError> {
        let Claimed {
            jobs,
            now,
            began,
            lease,
            stop,
            clock,
        } = claimed;
        let start_by = began + lease / 2;
        let stopping = || stop.is_some_and(|stop| *stop.borrow());
        let mut running = tokio::task::JoinSet::<Result<(), StoreError>>::new();
        let mut waiting = VecDeque::from(jobs);
        let (mut put_back, mut failed) = (0, None);
        loop {
            let late = Instant::now() >= start_by;
            if late || stopping() || failed.is_some() {
                let unstarted: Vec<DueJob> = waiting.drain(..).collect();
                put_back += unstarted.len();
                if let Err(error) = self.put_back(&unstarted, now, late).await {
                    failed.get_or_insert(error);
                }
            }
            while running.len() < CONCURRENCY {
                let Some(job) = waiting.pop_front() else {
                    break;
                };
                running.spawn(self.clone().run(job, now, lease, clock.clone()));
            }
            match running.join_next().await {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => {
                    tracing::warn!(%error, "a delivery could not be recorded: it waits out its lease; no more start in this pass");
                    failed.get_or_insert(error);
                }
                Some(Err(panicked)) => tracing::error!(%panicked, "delivery task failed"),
                None => break,
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(put_back),
        }
    }

    /// Puts claimed jobs that were not started back in the queue, due at `now`.
    async fn put_back(
        &self,
        unstarted: &[DueJob],
        now: DateTime<Utc>,
        late: bool,
    ) -> Result<(), StoreError> {
        if unstarted.is_empty() {
            return Ok(());
        }
        let count = unstarted.len();
        if late {
            tracing::warn!(
                count,
                "deliveries not started within half their lease go back to the queue"
            );
        } else {
            tracing::info!(count, "deliveries not started go back to the queue");
        }
        let back = unstarted.iter().map(|job| (job, now)).collect();
        self.store.defer_jobs(back).await.inspect_err(|error| {
            tracing::warn!(%error, count, "deliveries not started could not go back: they wait out their lease");
        })
    }

    /// Runs one claimed job within its time limit, at its start time (see
    /// [`Claimed::clock`]), records its outcome (fenced by the claim), then fetches the
    /// permalinks of the channel messages it posted. A pass's jobs and the callbacks
    /// loop's ([`super::CallbackSlots`]) alike.
    #[tracing::instrument(skip_all, fields(job = job.id, kind = job.job.kind(), approval_id = %job.approval_id))]
    pub(super) async fn run(
        self,
        job: DueJob,
        now: DateTime<Utc>,
        lease: Duration,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<(), StoreError> {
        let began = Instant::now();
        // A job may wait for its turn up to half its lease after its pass's `now`.
        let now = clock.as_ref().map_or(now, |clock| clock.now().max(now));
        let limit = job_limit(lease);
        let deadline = began + soft_limit(lease);
        let delivered = self.deliver(&job, now, deadline, clock.as_deref());
        let outcome = match tokio::time::timeout_at(began + limit, delivered).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(?limit, "delivery out of time: retried");
                retry(&job, now, None, format!("out of time after {limit:?}"))
            }
        };
        let outcome = self.given_up_then_next(&job, outcome, now).await;
        let outcome = match clock {
            Some(clock) => waited_from(outcome, now, clock.now()),
            None => outcome,
        };
        let posted = match &outcome {
            Outcome::Delivered { posted, .. } => posted.clone(),
            _ => Vec::new(),
        };
        let lease_until = job.lease_until;
        if !self.store.report(job, outcome, now).await? {
            tracing::warn!(
                ?lease_until,
                "delivery report fenced out: the job's lease ran out and another replica \
                 claimed or finished it; the messages it posted are recorded, nothing else"
            );
        }
        // A batch's message is posted once for all its items; a link is best effort,
        // within what is left of the job's time.
        let mut seen = std::collections::HashSet::new();
        for message in posted.iter().filter(|m| m.kind != MessageKind::Dm) {
            if seen.insert((&message.channel, &message.ts)) {
                let linked = self.after_post(message);
                if tokio::time::timeout_at(began + limit, linked)
                    .await
                    .is_err()
                {
                    tracing::debug!("no time left for the message's permalink");
                    break;
                }
            }
        }
        Ok(())
    }
}

impl Outbox {
    /// `outcome` of `job`; given up with nothing planned next (Slack refusing for good,
    /// too many attempts, out of time, the approval not readable, no Slack on this
    /// replica), a reminder (or the job that ends its round) plans the next reminder all
    /// the same (`remind::given_up_then`), from the approval as it is now: the chain
    /// ends only at the decision or the expiry.
    async fn given_up_then_next(
        &self,
        job: &DueJob,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Outcome {
        let reminds = matches!(
            job.job,
            Job::SlackRemind { .. } | Job::SlackRemindLookup { .. }
        );
        if !reminds || !matches!(outcome, Outcome::Dead { next: None, .. }) {
            return outcome;
        }
        match self.store.get(job.approval_id).await {
            Ok(Some(approval)) => {
                let next = remind::next_reminder(job, &approval, now);
                remind::given_up_then(outcome, next)
            }
            Ok(None) => outcome,
            Err(error) => {
                tracing::warn!(%error, "reminder given up; the next one could not be planned");
                outcome
            }
        }
    }
}

/// A retry of an attempt that began at `now` and ended at `ended` waits from `ended`:
/// its time moves on by the attempt's length. So does the update that follows one
/// Slack took only in part (see `update::partly`), the rest of the attempt, due
/// after Slack's `Retry-After`: the wait counts from Slack's answer.
fn waited_from(outcome: Outcome, now: DateTime<Utc>, ended: DateTime<Utc>) -> Outcome {
    if ended <= now {
        return outcome;
    }
    let took = ended - now;
    match outcome {
        Outcome::Retry { at, error } => Outcome::Retry {
            at: at + took,
            error,
        },
        Outcome::Delivered {
            posted,
            rendered,
            version,
            next: Some(mut rest),
        } if rest.job == Job::SlackUpdate {} => {
            rest.due_at += took;
            Outcome::Delivered {
                posted,
                rendered,
                version,
                next: Some(rest),
            }
        }
        other => other,
    }
}
