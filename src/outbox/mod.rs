//! Delivery of outbox jobs: Slack messages ([`slack`]) and decision callbacks
//! ([`callback`]). Each job ends in an [`Outcome`] the store records — delivered,
//! retry later (exponential backoff, or Slack's `Retry-After`), deferred (pacing), or
//! dead (an error retrying cannot fix; counted in `/health/approvals` as undelivered).
//!
//! Messages are rendered when they are sent, from the approval as it is then, and the
//! store remembers which version each message shows; a change that lands while a
//! message is in flight schedules one more update (see `store::writer::report`).

pub mod callback;

mod batch;
mod pacing;
mod remind;
mod slack;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::approval::{Approval, Status};
use crate::egress;
use crate::jobs::{DueJob, Job, MessageKind, Outcome, Paced};
use crate::signing::Signer;
use crate::slack::approvers::Approvers;
use crate::slack::blocks;
use crate::slack::client::{SlackClient, SlackError};
use crate::store::{Store, StoreError, WithMessages};

/// Failed attempts before a job is given up (about two hours of backoff).
pub const MAX_ATTEMPTS: i32 = 14;
/// Longest wait between two attempts.
const MAX_BACKOFF_SECS: i64 = 600;
/// Deliveries run at most this many at a time.
const CONCURRENCY: usize = 8;

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

    /// Delivers claimed jobs (a few at a time; posts have their channel's slot
    /// already, see [`Outbox::pace`]) and records each outcome. A job starts only
    /// before `start_by` (the scheduler sets it halfway through the jobs' lease, so
    /// that a job started is recorded before another replica may claim it again), and
    /// only until `stop` turns true: the jobs not started go back to the queue, due at
    /// `now`, and the call returns, once the ones under way are recorded, how many
    /// went back.
    pub async fn deliver_all(
        &self,
        jobs: Vec<DueJob>,
        now: DateTime<Utc>,
        start_by: tokio::time::Instant,
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<usize, StoreError> {
        let stopping = || stop.is_some_and(|stop| *stop.borrow());
        let mut running = tokio::task::JoinSet::<Result<(), StoreError>>::new();
        let mut queue = jobs.into_iter();
        let mut put_back = 0;
        loop {
            let late = tokio::time::Instant::now() >= start_by;
            if late || stopping() {
                let unstarted: Vec<DueJob> = queue.by_ref().collect();
                if !unstarted.is_empty() {
                    put_back += unstarted.len();
                    if late {
                        tracing::warn!(
                            count = unstarted.len(),
                            "deliveries not started within half their lease go back to the queue"
                        );
                    } else {
                        tracing::info!(
                            count = unstarted.len(),
                            "shutting down: deliveries not started go back to the queue"
                        );
                    }
                    let back = unstarted.iter().map(|job| (job, now)).collect();
                    self.store.defer_jobs(back).await?;
                }
            }
            while running.len() < CONCURRENCY {
                let Some(job) = queue.next() else { break };
                let outbox = self.clone();
                running.spawn(async move {
                    let outcome = outbox.deliver(&job, now).await;
                    let posted = match &outcome {
                        Outcome::Delivered { posted, .. } => posted.clone(),
                        _ => Vec::new(),
                    };
                    let (id, lease) = (job.id, job.lease_until);
                    if !outbox.store.report(job, outcome, now).await? {
                        tracing::warn!(
                            job = id,
                            ?lease,
                            "delivery report fenced out: the job's lease ran out and another \
                             holder claimed or finished it; recorded what was sent, nothing more"
                        );
                    }
                    // A batch's message is posted once for all its items.
                    let mut seen = std::collections::HashSet::new();
                    for message in posted.iter().filter(|m| m.kind != MessageKind::Dm) {
                        if seen.insert((&message.channel, &message.ts)) {
                            outbox.after_post(message).await;
                        }
                    }
                    Ok(())
                });
            }
            match running.join_next().await {
                Some(Ok(reported)) => reported?,
                Some(Err(panicked)) => tracing::error!(%panicked, "delivery task failed"),
                None => return Ok(put_back),
            }
        }
    }

    async fn after_post(&self, posted: &crate::jobs::PostedMessage) {
        if let (Some(client), Some(approvers)) = (&self.slack, &self.approvers) {
            let slack = slack::Deliverer {
                client,
                approvers,
                store: &self.store,
            };
            slack.after_post(posted).await;
        }
    }

    /// Runs one job; never fails, it answers with the outcome to record. A post has its
    /// channel's slot already (see [`Outbox::pace`]).
    #[tracing::instrument(skip_all, fields(job = job.id, kind = job.job.kind(), approval_id = %job.approval_id))]
    async fn deliver(&self, job: &DueJob, now: DateTime<Utc>) -> Outcome {
        let WithMessages {
            approval,
            messages,
            batch,
        } = match self.read(job).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Outcome::Dead {
                    error: "the approval no longer exists".into(),
                };
            }
            Err(error) => return retry(job, now, None, error.to_string()),
        };
        if let Job::Callback { status } = job.job {
            return self.callback(job, &approval, status, now).await;
        }
        let (Some(client), Some(approvers)) = (&self.slack, &self.approvers) else {
            // Planned while Slack was configured; this process has no token.
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
            Job::SlackRemind {} => slack.remind(job, &approval, now).await,
            Job::SlackEscalationNote { channel } => {
                slack
                    .escalation_note(channel.as_str(), &approval, now)
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

    async fn callback(
        &self,
        job: &DueJob,
        approval: &Approval,
        status: Status,
        now: DateTime<Utc>,
    ) -> Outcome {
        let Some(url) = approval.callback_url.as_deref() else {
            return Outcome::Dead {
                error: "no callback_url".into(),
            };
        };
        let target = egress::checked_addresses(url, &self.allow, self.resolver.as_ref()).await;
        match target {
            Ok((target, addresses)) => self.http.pin(&target.host, addresses),
            Err(egress::Refusal::Never(error)) => {
                tracing::warn!(%error, "callback refused");
                return Outcome::Dead { error };
            }
            Err(egress::Refusal::NotNow(error)) => return retry(job, now, None, error),
        }
        let body = callback::body(approval, status.as_str(), now);
        let id = callback::message_id(approval.id, status);
        let signed = callback::sign(&self.signer, id, now.timestamp(), &body);
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
        };
    }
    let retry_after = match &error {
        SlackError::RateLimited { retry_after } => *retry_after,
        _ => None,
    };
    retry(job, now, retry_after, error.to_string())
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
        };
    }
    let backoff = chrono::Duration::seconds(1_i64 << (job.attempts - 1).clamp(0, 20))
        .min(chrono::Duration::seconds(MAX_BACKOFF_SECS));
    // Never less than the backoff, so that a run of rate limits backs off like any
    // failure (not 14 tries in 15 s and dead), and never past the backoff's cap: a
    // huge Retry-After would park the job for years, or overflow the time.
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

    fn retried_after(attempts: i32, retry_after: Option<Duration>) -> chrono::Duration {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        let job = DueJob {
            id: 1,
            approval_id: crate::approval::ApprovalId(uuid::Uuid::nil()),
            job: Job::SlackUpdate {},
            attempts,
            lease_until: None,
        };
        match retry(&job, now, retry_after, "rate limited".into()) {
            Outcome::Retry { at, .. } => at - now,
            _ => panic!("retried"),
        }
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
