//! The callbacks' slots: the scheduler's callbacks loop (see `Scheduler::run`) runs
//! at most [`CALLBACK_SLOTS`] callbacks at a time, each in its own task, through the
//! same per-job path as a pass (`Outbox::run`: a time limit below half the lease, a
//! report fenced by the claim, retry and backoff). It claims only as many due
//! callbacks as it has free slots and starts each at once, so it never puts one back:
//! a backlog of receivers that never answer costs one claim and one report per
//! attempt, and no callback holds up a Slack delivery.
//!
//! The slots are shared fairly across requesters (API tokens): a slot that frees goes
//! to the earliest callback due of the requester holding the fewest slots, so a
//! backlog of one requester's callbacks to receivers that never answer delays
//! another's by one attempt (15 s) and a second at most, not by the whole backlog. Reading the
//! callbacks due in turns across requesters sorts all of them, so while one requester
//! alone has callbacks due the loop reads them so once a second ([`IN_TURNS_EVERY`]),
//! and the earliest due (an index's first rows) in between.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::{Id, JoinSet};

use super::{CALLBACK_SLOTS, Outbox};
use crate::clock::Clock;
use crate::jobs::{Due, DueJob, Job};
use crate::store::StoreError;

/// Callbacks due read in turns across requesters, for the slots to choose from: the
/// first of this many requesters' are among them.
const IN_TURNS_READ: i64 = 64;
/// How often the callbacks due are read in turns across requesters while the last
/// such read found one requester alone with callbacks due.
const IN_TURNS_EVERY: Duration = Duration::from_secs(1);

/// The callbacks under way, [`CALLBACK_SLOTS`] at most.
pub struct CallbackSlots {
    outbox: Outbox,
    /// How long the claims lease the callbacks for.
    lease: Duration,
    /// Read when a callback starts and ends (see `Claimed::clock`); `now` throughout
    /// without it.
    clock: Option<Arc<dyn Clock>>,
    running: JoinSet<Result<(), StoreError>>,
    /// The requester of each callback under way, by its task.
    requesters: HashMap<Id, Option<String>>,
    /// When the callbacks due were last read in turns, and whether more than one
    /// requester had some.
    in_turns: Option<(tokio::time::Instant, bool)>,
}

impl CallbackSlots {
    pub fn new(outbox: Outbox, lease: Duration, clock: Option<Arc<dyn Clock>>) -> Self {
        Self {
            outbox,
            lease,
            clock,
            running: JoinSet::new(),
            requesters: HashMap::new(),
            in_turns: None,
        }
    }

    /// How to read the callbacks due now ([`Due::CallbacksInTurns`], else
    /// [`Due::Callbacks`]: see the module's doc), and how many at most.
    pub fn read(&self) -> (Due, i64) {
        match self.in_turns {
            Some((at, false)) if at.elapsed() < IN_TURNS_EVERY => {
                (Due::Callbacks, self.free() as i64)
            }
            _ => (Due::CallbacksInTurns, IN_TURNS_READ),
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

    /// Of `due` (callbacks due as [`CallbackSlots::read`] said to read them), those to
    /// start in the free slots: one at a time, the earliest of the requester holding
    /// the fewest slots (those picked counted; among equals, the one met first).
    pub fn pick(&mut self, due: Vec<DueJob>, read: Due) -> Vec<DueJob> {
        let mut queues: Vec<(Option<String>, usize, VecDeque<DueJob>)> = Vec::new();
        for job in due {
            let requester = requester(&job).map(str::to_owned);
            match queues.iter_mut().find(|(r, ..)| *r == requester) {
                Some((.., queue)) => queue.push_back(job),
                None => {
                    let held = self.held_by(requester.as_deref());
                    queues.push((requester, held, VecDeque::from([job])));
                }
            }
        }
        if read == Due::CallbacksInTurns {
            self.in_turns = Some((tokio::time::Instant::now(), queues.len() > 1));
        }
        let mut picked = Vec::new();
        while picked.len() < self.free() {
            let next = queues
                .iter_mut()
                .filter(|(.., queue)| !queue.is_empty())
                .min_by_key(|(_, held, _)| *held);
            let Some((_, held, queue)) = next else { break };
            picked.extend(queue.pop_front());
            *held += 1;
        }
        picked
    }

    /// The slots `requester`'s callbacks hold.
    fn held_by(&self, requester: Option<&str>) -> usize {
        self.requesters
            .values()
            .filter(|r| r.as_deref() == requester)
            .count()
    }

    /// Starts `jobs`, callbacks just claimed at `now` ([`CallbackSlots::free`] of
    /// them at most), each in its own task.
    pub fn start(&mut self, jobs: Vec<DueJob>, now: DateTime<Utc>) {
        debug_assert!(jobs.len() <= self.free(), "more callbacks than free slots");
        for job in jobs {
            debug_assert!(matches!(job.job, Job::Callback { .. }), "not a callback");
            let requester = requester(&job).map(str::to_owned);
            let run = self
                .outbox
                .clone()
                .run(job, now, self.lease, self.clock.clone());
            let task = self.running.spawn(run);
            self.requesters.insert(task.id(), requester);
        }
    }

    /// Waits until a callback under way ends, and logs what went wrong with it, if
    /// anything: false at once when none is under way. A report that fails leaves its
    /// callback to wait out its lease. Cancel-safe (a `select!` branch).
    pub async fn ended(&mut self) -> bool {
        let ended = self.running.join_next_with_id().await;
        if let Some(task) = ended.as_ref().map(|ended| match ended {
            Ok((task, _)) => *task,
            Err(panicked) => panicked.id(),
        }) {
            self.requesters.remove(&task);
        }
        match ended {
            None => false,
            Some(Ok((_, Ok(())))) => true,
            Some(Ok((_, Err(error)))) => {
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

/// Who asked for a callback (`None` for a row written before it was recorded).
fn requester(job: &DueJob) -> Option<&str> {
    match &job.job {
        Job::Callback { requester, .. } => requester.as_deref(),
        _ => None,
    }
}
