//! Delivery of outbox jobs: Slack messages ([`slack`]) and decision callbacks
//! ([`callback`]). Each job ends in an [`Outcome`] the store records — delivered,
//! retry later (exponential backoff, or Slack's `Retry-After`), deferred (pacing), or
//! dead (an error retrying cannot fix; counted in `/health/approvals` as undelivered).
//!
//! Messages are rendered when they are sent, from the approval as it is then, and the
//! store remembers which version each message shows; a change that lands while a
//! message is in flight schedules one more update (see `store::ops::report`), and an
//! update reads the approval again once sent, to show it again if it changed (see
//! [`update`]). The Slack jobs of one scheduler pass run in [`pass`], each within a
//! time limit below half its lease; callbacks run apart, in the scheduler's callbacks
//! loop, through the same per-job path ([`slots`]).

pub mod callback;

mod batch;
mod pacing;
mod pass;
mod remind;
mod slack;
mod slots;
mod update;

pub use pass::Claimed;
pub use slots::CallbackSlots;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::approval::{Approval, Status};
use crate::clock::Clock;
use crate::egress;
use crate::jobs::{DueJob, Job, MessageKind, Outcome, Paced};
use crate::signing::Signer;
use crate::slack::approvers::Approvers;
use crate::slack::blocks;
use crate::slack::client::{SlackClient, SlackError};
use crate::store::{Store, StoreError, WithMessages};

/// Attempts before a job is given up: the waits after the first 20 failures, 1 s,
/// 2 s … 512 s (17 min) then ten times [`MAX_BACKOFF_SECS`], add up to 1 h 57 min,
/// the "about two hours" docs/callbacks.md promises (see [`backoff`]).
pub const MAX_ATTEMPTS: i32 = 21;
/// Longest wait between two attempts.
const MAX_BACKOFF_SECS: i64 = 600;
/// A pass's deliveries (every kind but callbacks) run at most this many at a time.
const CONCURRENCY: usize = 8;
/// Callbacks run at most this many at a time, in the scheduler's callbacks loop
/// ([`CallbackSlots`]), apart from the passes: a flood of callbacks to receivers that
/// never answer (each waits out its time limit) holds up no Slack delivery, and costs
/// one claim per attempt.
pub const CALLBACK_SLOTS: usize = 4;
/// The Slack calls one job makes at once at most: a reminder's DMs, an approval's
/// message updates.
const FAN_OUT: usize = 4;

/// Delivers outbox jobs; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    slack: Option<SlackClient>,
    approvers: Option<Approvers>,
    http: callback::Poster,
    /// Signs callbacks.
    signer: Signer,
    /// Internal hosts and ranges callbacks may reach (`[callbacks] allow`).
    allow: Arc<egress::Allow>,
    resolver: Arc<dyn egress::Resolver>,
    /// When each channel last got a chat.postMessage from this process.
    last_post: Arc<Mutex<HashMap<String, pacing::Pacing>>>,
    /// At most one post per channel per this long (zero: no pacing).
    post_interval: chrono::Duration,
}

impl Outbox {
    /// An outbox for callbacks (signed by `signer`), and for Slack when a client is
    /// given.
    pub fn new(store: Store, slack: Option<SlackClient>, signer: Signer) -> Result<Self, String> {
        Ok(Self {
            store,
            approvers: slack.clone().map(Approvers::new),
            slack,
            http: callback::Poster::new()?,
            signer,
            allow: Arc::default(),
            resolver: Arc::new(egress::SystemResolver),
            last_post: Arc::default(),
            post_interval: pacing::POST_INTERVAL,
        })
    }

    /// Whether it can deliver to Slack (it was given a client).
    pub fn has_slack(&self) -> bool {
        self.slack.is_some()
    }

    /// Posts to a channel at most once per `interval` instead of once a second; zero
    /// turns pacing off (for Slack fakes and load tests; Slack itself asks for 1 s).
    pub fn with_post_interval(mut self, interval: std::time::Duration) -> Self {
        self.post_interval = chrono::Duration::from_std(interval).unwrap_or(pacing::POST_INTERVAL);
        self
    }

    /// Lets callbacks reach the internal hosts and ranges `allow` opens.
    pub fn with_allow(mut self, allow: egress::Allow) -> Self {
        self.allow = Arc::new(allow);
        self
    }

    /// Resolves callback hosts with `resolver` (tests inject one).
    pub fn with_resolver(mut self, resolver: Arc<dyn egress::Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Splits jobs due at `now` into those to deliver now and the posts that wait for
    /// their channel's next slot (job id, until): the scheduler claims both at once
    /// (`Store::claim_due`), so a waiting post is written once, not leased and put
    /// back. See [`pacing`].
    pub fn pace(&self, jobs: Vec<DueJob>, now: DateTime<Utc>) -> Paced {
        if self.slack.is_some() {
            pacing::pace_posts(&self.last_post, jobs, now, self.post_interval)
        } else {
            (jobs, Vec::new())
        }
    }

    /// After a post is recorded: its permalink (see `slack::Deliverer::after_post`).
    async fn after_post(&self, posted: &crate::jobs::PostedMessage) {
        if let (Some(client), Some(approvers)) = (&self.slack, &self.approvers) {
            let slack = slack::Deliverer {
                client,
                approvers,
                store: &self.store,
                deadline: Instant::now(),
            };
            slack.after_post(posted).await;
        }
    }

    /// Runs one job; never fails, it answers with the outcome to record. A post has its
    /// channel's slot already (see [`Outbox::pace`]). A job that sends many messages
    /// (a reminder's DMs, an approval's updates) stops waiting for them at `deadline`
    /// and answers with what was sent by then. A callback is signed at `clock`'s time
    /// (if later than `now`) once its host is resolved, right before it is sent.
    async fn deliver(
        &self,
        job: &DueJob,
        now: DateTime<Utc>,
        deadline: Instant,
        clock: Option<&dyn Clock>,
    ) -> Outcome {
        let WithMessages {
            approval,
            messages,
            batch,
        } = match self.read(job).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Outcome::Dead {
                    error: "the approval no longer exists".into(),
                    next: None,
                };
            }
            Err(error) => return retry(job, now, None, error.to_string()),
        };
        if let Job::Callback { status, .. } = job.job {
            return self.callback(job, &approval, status, now, clock).await;
        }
        let (Some(client), Some(approvers)) = (&self.slack, &self.approvers) else {
            // Planned while Slack was configured; this process has no token. The
            // scheduler claims no Slack job here (`Scheduler::deliver_due`): only a
            // caller that hands one over reaches this.
            return retry(
                job,
                now,
                None,
                "Slack is not configured on this server".into(),
            );
        };
        let slack = slack::Deliverer {
            client,
            approvers,
            store: &self.store,
            deadline,
        };
        let result = match &job.job {
            Job::SlackPost {
                channel,
                kind: MessageKind::Main,
                batch: true,
                ..
            } => {
                slack
                    .post_batch(job, channel.as_str(), &approval, now)
                    .await
            }
            Job::SlackPost { channel, kind, .. } => {
                slack
                    .post(job, (channel.as_str(), *kind), &approval, now)
                    .await
            }
            Job::SlackThrottled {
                channel,
                requester,
                waiting,
                limit,
            } => {
                let notice = (channel.as_str(), requester.as_str(), (*waiting, *limit));
                slack.throttle_notice(job, notice, &approval).await
            }
            Job::SlackUpdate {} => slack.update(&approval, &messages, &batch, now).await,
            Job::SlackRemind { .. } => slack.remind(job, &approval, now).await,
            Job::SlackRemindLookup { .. } => slack.find_reminders(job, &approval, now).await,
            Job::SlackEscalationNote { channel, .. } => {
                slack
                    .escalation_note(job, channel.as_str(), &approval, now)
                    .await
            }
            Job::Callback { .. } => unreachable!("callbacks return above"),
        };
        result.unwrap_or_else(|error| failed(job, now, error))
    }

    /// The approval `job` is for. A message update reads its messages and batch in the
    /// same statement; any other job reads the approval alone (no messages, no batch).
    async fn read(&self, job: &DueJob) -> Result<Option<WithMessages>, StoreError> {
        if matches!(job.job, Job::SlackUpdate {}) {
            return self.store.get_with_messages(job.approval_id).await;
        }
        let approval = self.store.get(job.approval_id).await?;
        Ok(approval.map(|approval| WithMessages {
            approval,
            messages: Vec::new(),
            batch: Vec::new(),
        }))
    }

    /// Sends `job`'s callback announcing `status`; signed at `clock`'s time, read once
    /// the host is resolved (DNS may take seconds), so that the receiver, which refuses
    /// timestamps more than 5 minutes off, sees the time it was sent.
    async fn callback(
        &self,
        job: &DueJob,
        approval: &Approval,
        status: Status,
        now: DateTime<Utc>,
        clock: Option<&dyn Clock>,
    ) -> Outcome {
        let Some(url) = approval.callback_url.as_deref() else {
            return Outcome::Dead {
                error: "no callback_url".into(),
                next: None,
            };
        };
        let checked = egress::checked_addresses(url, &self.allow, self.resolver.as_ref());
        // The system's resolver has no time limit of its own that signoff chooses.
        let target = tokio::time::timeout(callback::DNS_TIMEOUT, checked)
            .await
            .unwrap_or_else(|_| {
                let host = callback::shown(url);
                let limit = callback::DNS_TIMEOUT;
                Err(egress::Refusal::NotNow(format!(
                    "callback to {host}: no DNS answer within {limit:?}"
                )))
            });
        match target {
            Ok((target, addresses)) => self.http.pin(&target.host, addresses),
            Err(egress::Refusal::Never(error)) => {
                tracing::warn!(%error, "callback refused");
                return Outcome::Dead { error, next: None };
            }
            Err(egress::Refusal::NotNow(error)) => return retry(job, now, None, error),
        }
        let sent = clock.map_or(now, |clock| clock.now().max(now));
        let body = callback::body(approval, url, status.as_str(), sent);
        let id = callback::message_id(approval.id, status);
        let signed = callback::sign(&self.signer, id, sent.timestamp(), &body);
        match self.http.post(url, &signed, &body).await {
            Ok(()) => Outcome::Delivered {
                posted: Vec::new(),
                rendered: Vec::new(),
                version: approval.version,
                next: None,
            },
            Err(error) => {
                let url = callback::shown(url);
                retry(job, now, None, format!("callback to {url}: {error}"))
            }
        }
    }
}

/// Runs `tasks` at most [`FAN_OUT`] at a time, started in order, until `deadline`:
/// the answers that came by then (in the order they came), and how many did not.
async fn fan_out<T>(
    tasks: impl IntoIterator<Item = impl Future<Output = T>>,
    deadline: Instant,
) -> (Vec<T>, usize) {
    let tasks: Vec<_> = tasks.into_iter().collect();
    let total = tasks.len();
    let mut running = futures_util::stream::iter(tasks).buffer_unordered(FAN_OUT);
    let mut answers = Vec::with_capacity(total);
    while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, running.next()).await {
        answers.push(answer);
    }
    let unanswered = total - answers.len();
    (answers, unanswered)
}

/// The message for the approval as it stands: buttons while pending, the outcome after.
pub fn render(approval: &Approval, now: DateTime<Utc>) -> Value {
    if approval.status == Status::Pending {
        blocks::approval_message(approval, now)
    } else {
        blocks::decided_message(approval)
    }
}

/// A Slack delivery that failed: dead when retrying cannot help, else retried after
/// the backoff or Slack's `Retry-After`.
fn failed(job: &DueJob, now: DateTime<Utc>, error: SlackError) -> Outcome {
    if error.is_permanent() {
        tracing::error!(%error, "delivery failed for good");
        return Outcome::Dead {
            error: error.to_string(),
            next: None,
        };
    }
    retry(job, now, error.retry_after(), error.to_string())
}

/// When the rest of a job Slack refused in part is tried, as a job of its own: after
/// Slack's `Retry-After` (within the backoff's cap), else a second after `now` (the
/// attempt's start: the pass moves it on to its end, `pass::waited_from`).
fn after_refusal(now: DateTime<Utc>, refused: Option<&SlackError>) -> DateTime<Utc> {
    let cap = chrono::Duration::seconds(MAX_BACKOFF_SECS);
    let wait = match refused.and_then(SlackError::retry_after) {
        Some(after) => chrono::Duration::from_std(after).unwrap_or(cap).min(cap),
        None => chrono::Duration::zero(),
    };
    now + wait.max(chrono::Duration::seconds(1))
}

/// The wait after the failure of attempt `attempts` (counting it): 1 s, 2 s, 4 s …
/// up to [`MAX_BACKOFF_SECS`].
fn backoff(attempts: i32) -> chrono::Duration {
    chrono::Duration::seconds(1_i64 << (attempts - 1).clamp(0, 20))
        .min(chrono::Duration::seconds(MAX_BACKOFF_SECS))
}

/// Backoff: 1 s, 2 s, 4 s … up to 10 min, or Slack's Retry-After when it asks for
/// longer; dead after [`MAX_ATTEMPTS`].
fn retry(
    job: &DueJob,
    now: DateTime<Utc>,
    retry_after: Option<std::time::Duration>,
    error: String,
) -> Outcome {
    if job.attempts >= MAX_ATTEMPTS {
        return Outcome::Dead {
            error: format!("gave up after {} attempts: {error}", job.attempts),
            next: None,
        };
    }
    let backoff = backoff(job.attempts);
    // Never less than the backoff, so that a run of rate limits backs off like any
    // failure (not every try within seconds and dead), and never past the backoff's
    // cap: a huge Retry-After would park the job for years, or overflow the time.
    let cap = chrono::Duration::seconds(MAX_BACKOFF_SECS);
    let wait = retry_after
        .map(|after| chrono::Duration::from_std(after).unwrap_or(cap).min(cap))
        .map_or(backoff, |after| after.max(backoff));
    Outcome::Retry {
        at: now + wait,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    /// After the failure of attempt `attempts`: the wait before the next one, or
    /// `None` when the job is given up.
    fn wait_after(attempts: i32, retry_after: Option<Duration>) -> Option<chrono::Duration> {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        let job = DueJob {
            id: 1,
            approval_id: crate::approval::ApprovalId(uuid::Uuid::nil()),
            job: Job::SlackUpdate {},
            attempts,
            lease_until: None,
        };
        match retry(&job, now, retry_after, "rate limited".into()) {
            Outcome::Retry { at, .. } => Some(at - now),
            Outcome::Dead { .. } => None,
            _ => panic!("retried or dead"),
        }
    }

    fn retried_after(attempts: i32, retry_after: Option<Duration>) -> chrono::Duration {
        wait_after(attempts, retry_after).expect("retried")
    }

    #[test]
    fn a_failing_job_is_retried_for_about_two_hours_as_documented() {
        // docs/callbacks.md and docs/security.md: "about two hours" of retries.
        let mut total = chrono::Duration::zero();
        let mut attempts = 1;
        while let Some(wait) = wait_after(attempts, None) {
            total += wait;
            attempts += 1;
        }
        assert_eq!(attempts, MAX_ATTEMPTS, "given up at the last attempt");
        let minutes = total.num_minutes();
        assert!(
            (105..=135).contains(&minutes),
            "retried for {minutes} min, not about two hours"
        );
        assert_eq!(total, (1..MAX_ATTEMPTS).map(backoff).sum());
    }

    #[test]
    fn slacks_retry_after_is_kept_within_the_backoff_and_its_cap() {
        let secs = chrono::Duration::seconds;
        assert_eq!(
            retried_after(1, Some(Duration::from_secs(7))),
            secs(7),
            "as Slack asks"
        );
        assert_eq!(retried_after(1, None), secs(1));
        // A run of rate limits backs off like any failure.
        assert_eq!(retried_after(6, Some(Duration::from_secs(1))), secs(32));
        // However long Slack asks for, no more than the cap, and no overflow.
        assert_eq!(
            retried_after(1, Some(Duration::from_secs(86_400 * 365))),
            secs(600)
        );
        assert_eq!(retried_after(1, Some(Duration::MAX)), secs(600));
    }
}
