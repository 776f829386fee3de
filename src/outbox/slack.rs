//! Slack deliveries: post an approval's message (to its channel, or to the escalation
//! channel when it is due). Updates of the messages are [`super::update`]; reminders
//! [`super::remind`]; batches of look-alike requests [`super::batch`]; the pace of
//! posts per channel is [`super::pacing`].

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::render;
use crate::approval::{Approval, Status};
use crate::jobs::{DueJob, Job, MessageKind, NewJob, Outcome, PostedMessage};
use crate::slack::approvers::Approvers;
use crate::slack::blocks::{self, POST_EVENT, THREAD_NOTE_EVENT, THROTTLE_EVENT};
use crate::slack::client::{SlackClient, SlackError};
use crate::slack::text;
use crate::store::Store;

/// Pages of channel history (200 messages each) searched for an earlier post.
const HISTORY_PAGES: usize = 5;

pub(super) struct Deliverer<'a> {
    pub client: &'a SlackClient,
    pub approvers: &'a Approvers,
    pub store: &'a Store,
    /// When a job that sends many messages (a reminder's DMs, an approval's updates)
    /// stops waiting for them and reports what was sent.
    pub deadline: Instant,
}

pub(super) fn store_error(error: crate::store::StoreError) -> SlackError {
    SlackError::Transport(error.to_string())
}

pub(super) fn done(version: i64) -> Outcome {
    done_then(version, None)
}

/// Delivered with nothing posted or rendered, planning `next`.
pub(super) fn done_then(version: i64, next: Option<NewJob>) -> Outcome {
    Outcome::Delivered {
        posted: Vec::new(),
        rendered: Vec::new(),
        version,
        next,
    }
}

/// The note in the thread of the approval's channel message that follows the
/// escalation's post (`job`), while the approval waits: a job of its own, so that
/// Slack's rate limit delays it rather than loses it; none for an escalation found in
/// the history once the approval was decided.
pub(super) fn note_after_escalation(
    job: &DueJob,
    approval: &Approval,
    now: DateTime<Utc>,
) -> Option<NewJob> {
    match &job.job {
        Job::SlackPost { channel, .. } if approval.status == Status::Pending => Some(NewJob {
            approval_id: approval.id,
            job: Job::SlackEscalationNote {
                channel: channel.clone(),
                thread_in: approval.routing.channel.clone(),
            },
            due_at: now,
        }),
        _ => None,
    }
}

/// `matches`, for a message's payload that names `approval` as its own.
fn of(approval: &Approval, matches: impl Fn(&Value) -> bool) -> impl Fn(&Value) -> bool {
    let id = approval.id.to_string();
    move |payload: &Value| payload["approval_id"] == id.as_str() && matches(payload)
}

impl Deliverer<'_> {
    /// Posts the approval to the job's channel: the main post, or the escalation post
    /// (only while still pending, with a note in the main message's thread).
    pub async fn post(
        &self,
        job: &DueJob,
        (channel, kind): (&str, MessageKind),
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let escalation = kind == MessageKind::Escalation;
        // Posted already (a duplicate job, or a retry after the report was lost)?
        let messages = self
            .store
            .messages(approval.id)
            .await
            .map_err(store_error)?;
        if messages
            .iter()
            .any(|m| m.channel == channel && m.kind == kind)
        {
            return Ok(done(approval.version));
        }
        if escalation {
            let batch = self.batch_of(approval).await?;
            if batch.is_shared() {
                return self
                    .escalate_batch(job, (channel, batch), approval, now)
                    .await;
            }
        }
        // An earlier attempt may have posted and not lived to record it (a crash
        // after Slack took the message, or a call that timed out after it did): the
        // message is in the channel, found by the metadata every post carries.
        let found = self
            .posted_earlier(job, approval, channel, POST_EVENT, |payload| {
                payload["kind"] == kind.as_str()
            })
            .await?;
        let (channel, ts, version) = match found {
            // Rendered at the version it carries: the report brings it up to date
            // (an escalation found after the decision loses its buttons that way).
            Some((ts, version)) => (channel.to_owned(), ts, version),
            // An escalation is posted only while the approval waits for people: not
            // once decided, nor past its expiry before the timers have marked it.
            None if escalation && !approval.is_pending_at(now) => {
                return Ok(done(approval.version));
            }
            None => {
                let mut body = render(approval, now);
                body["channel"] = json!(channel);
                body["metadata"] = metadata(POST_EVENT, approval, ("kind", json!(kind)));
                let answer = self.client.call("chat.postMessage", &body).await?;
                let channel = answer["channel"].as_str().unwrap_or(channel);
                (
                    channel.to_owned(),
                    answer["ts"].as_str().unwrap_or_default().to_owned(),
                    approval.version,
                )
            }
        };
        // Nothing else happens before the message is recorded: the window between
        // Slack's answer and the record (which a crash leaves to the history lookup
        // above) holds no further calls (see `after_post` for the permalink).
        let next = match escalation {
            true => note_after_escalation(job, approval, now),
            false => None,
        };
        Ok(Outcome::Delivered {
            posted: vec![PostedMessage {
                approval_id: approval.id,
                channel,
                ts,
                kind,
                permalink: None,
                rendered_version: version,
            }],
            rendered: Vec::new(),
            version,
            next,
        })
    }

    /// Notes in the thread of the approval's channel message that it was escalated to
    /// `channel`. Refused for the rate limit, it is tried again after Slack's wait
    /// (surely not posted); any other failure is not repeated (perhaps posted, or never
    /// to be). Nothing once the approval is decided or expired: "no decision after…"
    /// would no longer be true.
    pub async fn escalation_note(
        &self,
        job: &DueJob,
        channel: &str,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        if !approval.is_pending_at(now) {
            return Ok(done(approval.version));
        }
        let messages = self
            .store
            .messages(approval.id)
            .await
            .map_err(store_error)?;
        if let Some(main) = messages.iter().find(|m| m.kind == MessageKind::Main) {
            let waited = (now - approval.created_at).num_seconds();
            let note = format!(
                ":arrow_up: Escalated to <#{channel}>: no decision after {}.",
                text::duration_short(waited)
            );
            let thread = (main.channel.as_str(), main.ts.as_str());
            match self.thread_note(job, approval, thread, &note).await {
                Ok(()) => {}
                Err(error @ SlackError::RateLimited { .. }) => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, channel = main.channel, "escalation note not posted")
                }
            }
        }
        Ok(done(approval.version))
    }

    /// Tells `channel` that `requester` is throttled (`max_pending`). The approval is
    /// the requester's newest waiting one, which the job belongs to; the notice is no
    /// message of that approval (nothing updates it), and a retry looks for an
    /// earlier attempt's notice first.
    pub async fn throttle_notice(
        &self,
        job: &DueJob,
        (channel, requester, (waiting, limit)): (&str, &str, (i64, u32)),
        approval: &Approval,
    ) -> Result<Outcome, SlackError> {
        let found = self
            .posted_earlier(job, approval, channel, THROTTLE_EVENT, |payload| {
                payload["requester"] == requester
            })
            .await?;
        if found.is_none() {
            let mut body = blocks::throttled_message(requester, waiting, limit);
            body["channel"] = json!(channel);
            body["metadata"] = metadata(THROTTLE_EVENT, approval, ("requester", json!(requester)));
            self.client.call("chat.postMessage", &body).await?;
        }
        Ok(done(approval.version))
    }

    /// After a post is recorded: fetch its permalink (for `/approvals` and reminders).
    /// Best effort: a failure only loses the link.
    pub async fn after_post(&self, posted: &PostedMessage) {
        if let Some(link) = self.permalink(&posted.channel, &posted.ts).await
            && let Err(error) = self
                .store
                .set_permalink(&posted.channel, &posted.ts, &link)
                .await
        {
            tracing::warn!(%error, "permalink not stored");
        }
    }

    /// On a retried `job` (a first attempt posted nothing before it): the `ts` of this
    /// approval's message in `channel` whose [`metadata`] is of `event` and `matches`
    /// (its payload) if an earlier attempt posted it, and the approval
    /// version it shows (from its metadata; -1 when it carries none), read from the
    /// channel's history since the approval was created (at most [`HISTORY_PAGES`]
    /// pages). A history signoff may not read (no `channels:history` /
    /// `groups:history` / `im:history` scope, a channel given by name) answers
    /// `None`, with a warning: the post then goes out again, at least once instead of
    /// exactly once. Any other failure is retried like the post itself.
    pub(super) async fn posted_earlier(
        &self,
        job: &DueJob,
        approval: &Approval,
        channel: &str,
        event: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(String, i64)>, SlackError> {
        if job.attempts <= 1 {
            return Ok(None);
        }
        self.look_for_earlier(approval, channel, event, matches)
            .await
    }

    /// [`Deliverer::posted_earlier`] on any attempt: the message an earlier attempt may
    /// have sent, `None` (with a warning) when the history cannot be read.
    pub(super) async fn look_for_earlier(
        &self,
        approval: &Approval,
        channel: &str,
        event: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(String, i64)>, SlackError> {
        let ours = of(approval, matches);
        self.look_in_history(approval, channel, event, ours).await
    }

    /// [`Deliverer::find_in_history`], `None` (with a warning) when the history cannot
    /// be read: the message is then posted again, at least once rather than exactly
    /// once.
    pub(super) async fn look_in_history(
        &self,
        approval: &Approval,
        channel: &str,
        event: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(String, i64)>, SlackError> {
        match self
            .find_in_history(approval, channel, event, matches)
            .await
        {
            Err(error) if error.is_permanent() => {
                tracing::warn!(
                    %error,
                    channel,
                    "cannot read the channel's history to look for an earlier post; \
                     posting again (grant channels:history, groups:history and \
                     im:history, and \
                     name channels by ID, for exactly-once posts)"
                );
                Ok(None)
            }
            found => found,
        }
    }

    /// The `ts` of this approval's message in `channel` whose [`metadata`] is of
    /// `event` and `matches` (its payload), and the approval version it shows (-1 when
    /// its metadata carries none), read from the channel's history since the approval
    /// was created (at most [`HISTORY_PAGES`] pages).
    pub(super) async fn find_posted(
        &self,
        approval: &Approval,
        channel: &str,
        event: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(String, i64)>, SlackError> {
        let ours = of(approval, matches);
        self.find_in_history(approval, channel, event, ours).await
    }

    /// Like [`Deliverer::find_posted`], for a message of any approval whose payload
    /// `matches` (a batch's, listing this one among its items), posted since this
    /// one was created.
    async fn find_in_history(
        &self,
        approval: &Approval,
        channel: &str,
        event: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(String, i64)>, SlackError> {
        // A minute early: Slack's clock and ours may differ a little.
        let oldest = format!("{}.000000", approval.created_at.timestamp() - 60);
        let params = [("channel", channel), ("oldest", oldest.as_str())];
        self.search("conversations.history", &params, event, matches)
            .await
    }

    /// Like [`Deliverer::find_posted`], among the replies in the thread of the message
    /// `ts` in `channel`.
    async fn find_reply(
        &self,
        approval: &Approval,
        (channel, ts): (&str, &str),
        event: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(String, i64)>, SlackError> {
        let params = [("channel", channel), ("ts", ts)];
        self.search(
            "conversations.replies",
            &params,
            event,
            of(approval, matches),
        )
        .await
    }

    /// Reads `method` (a history: `conversations.history` or `.replies`) with `params`,
    /// page by page, for a message of `event` whose payload `matches`.
    async fn search(
        &self,
        method: &str,
        params: &[(&str, &str)],
        event: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(String, i64)>, SlackError> {
        let mut cursor = String::new();
        for _ in 0..HISTORY_PAGES {
            let mut params = params.to_vec();
            params.extend([("limit", "200"), ("include_all_metadata", "true")]);
            if !cursor.is_empty() {
                params.push(("cursor", cursor.as_str()));
            }
            let answer = self.client.get(method, &params).await?;
            let found = answer["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|message| {
                    let metadata = &message["metadata"];
                    let payload = &metadata["event_payload"];
                    metadata["event_type"] == event && matches(payload)
                });
            if let Some(message) = found {
                let version = message["metadata"]["event_payload"]["version"]
                    .as_i64()
                    .unwrap_or(-1);
                return Ok(message["ts"].as_str().map(|ts| (ts.to_owned(), version)));
            }
            cursor = answer["response_metadata"]["next_cursor"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if cursor.is_empty() {
                break;
            }
        }
        Ok(None)
    }

    /// A reply in the thread of the message `ts` in `channel`, for `job` (its
    /// [`metadata`], [`THREAD_NOTE_EVENT`], names the job). A retried job first looks
    /// in the thread for the reply an earlier attempt may have posted (Slack took it,
    /// then the process died or its lease ran out before it was recorded), and posts
    /// nothing when it is there; a thread it may not read (a missing scope) is posted
    /// to again, with a warning, as for posts.
    pub(super) async fn thread_note(
        &self,
        job: &DueJob,
        approval: &Approval,
        (channel, ts): (&str, &str),
        note: &str,
    ) -> Result<(), SlackError> {
        let ours = |payload: &Value| payload["job"] == job.id;
        if job.attempts > 1 {
            let found = self
                .find_reply(approval, (channel, ts), THREAD_NOTE_EVENT, ours)
                .await;
            match found {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(error) if error.is_permanent() => tracing::warn!(
                    %error,
                    channel,
                    "cannot read the thread to look for an earlier reply; posting again \
                     (grant channels:history and groups:history for exactly-once replies)"
                ),
                Err(error) => return Err(error),
            }
        }
        let body = json!({
            "channel": channel,
            "thread_ts": ts,
            "text": note,
            "metadata": metadata(THREAD_NOTE_EVENT, approval, ("job", json!(job.id))),
        });
        self.client.call("chat.postMessage", &body).await.map(drop)
    }

    /// A link to the message for `/approvals` and reminders; a failure only loses the link.
    async fn permalink(&self, channel: &str, ts: &str) -> Option<String> {
        let answer = self
            .client
            .get(
                "chat.getPermalink",
                &[("channel", channel), ("message_ts", ts)],
            )
            .await
            .ok()?;
        answer["permalink"].as_str().map(str::to_owned)
    }
}

/// The message metadata every post ([`POST_EVENT`], keyed by `kind`), reminder DM
/// ([`REMINDER_EVENT`], keyed by `job`) and thread reply ([`THREAD_NOTE_EVENT`], keyed
/// by `job`) carries, by which a retry finds a message an
/// earlier attempt sent but did not record (see `Deliverer::posted_earlier`), and the
/// approval version it shows.
pub(super) fn metadata(event: &str, approval: &Approval, (key, value): (&str, Value)) -> Value {
    let mut payload = json!({
        "approval_id": approval.id.to_string(),
        "version": approval.version,
    });
    payload[key] = value;
    json!({ "event_type": event, "event_payload": payload })
}
