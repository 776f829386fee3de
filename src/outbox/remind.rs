//! Reminders: while an approval waits, each approver who has not voted gets a DM (user
//! groups expanded; a few sent at once, until the job's deadline), or, with no
//! approvers list, a reply in the message's thread; a retried reminder never reminds
//! anyone twice. A reminder given up (dead-lettered) plans the next one all the same:
//! the chain of reminders ends only at the decision or the expiry.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::slack::{Deliverer, done, metadata, store_error};
use super::{failed, fan_out, render};
use crate::approval::{Approval, Status};
use crate::ids::Approver;
use crate::jobs::{self, DueJob, Job, MessageKind, NewJob, Outcome, PostedMessage};
use crate::slack::blocks::REMINDER_EVENT;
use crate::slack::client::SlackError;
use crate::slack::text;

/// Block Kit's limit on blocks per message.
const MAX_BLOCKS: usize = 50;
/// How long after a reminder the DMs still under way at its deadline are looked up:
/// by then each call has had its time (10 s) and Slack has taken the DM or not.
const LOOKUP_AFTER: chrono::Duration = chrono::Duration::seconds(30);
/// Attempts at that lookup before it is given up (and the reminders go on).
const LOOKUP_ATTEMPTS: i32 = 3;

impl Deliverer<'_> {
    /// DMs each approver who has not voted (with live buttons and a link to the
    /// channel message), or replies in the thread when anyone may decide; then plans
    /// the next reminder, also when this one is given up. Nothing once the approval is
    /// decided or expired (the chain of reminders ends there).
    pub async fn remind(
        &self,
        job: &DueJob,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        if approval.status != Status::Pending || approval.is_expired_at(now) {
            return Ok(done(approval.version));
        }
        // Planned while it waits, even past its expiry as it stands now: another
        // program may move `expires_at` later (the shared table's contract), and the
        // chain must go on then. A reminder that comes due once the approval is decided
        // or expired does nothing and plans nothing (above), so the chain ends there.
        let next = approval.routing.remind_every_secs.map(|secs| NewJob {
            approval_id: approval.id,
            job: jobs::reminder(approval),
            due_at: jobs::after_secs(now, secs.max(1)),
        });
        let reminded = self.remind_now(job, approval, next.clone(), now).await;
        // Given up (a refusal retrying cannot fix, or too many attempts): the next
        // reminder comes all the same, when Slack may be set right.
        Ok(match reminded.unwrap_or_else(|error| failed(job, now, error)) {
            Outcome::Dead { error, next: None } => Outcome::Dead { error, next },
            outcome => outcome,
        })
    }

    /// The reminder itself: the reply in the thread, or the DMs; `next` (the next
    /// reminder) is planned once it is delivered.
    async fn remind_now(
        &self,
        job: &DueJob,
        approval: &Approval,
        next: Option<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let messages = self
            .store
            .messages(approval.id)
            .await
            .map_err(store_error)?;
        let main = messages.iter().find(|m| m.kind == MessageKind::Main);
        let left = text::duration_short((approval.expires_at - now).num_seconds());
        if approval.routing.approvers.is_empty() {
            if let Some(main) = main {
                let note = format!(
                    ":bell: Reminder: this request is still waiting for a decision ({left} left)."
                );
                match self.thread_note(&main.channel, &main.ts, &note).await {
                    Ok(()) => {}
                    // Surely not posted: the reminder is tried again after Slack's
                    // wait, so that a burst of them in one channel reminds every one.
                    Err(error @ SlackError::RateLimited { .. }) => return Err(error),
                    // Perhaps posted (a lost answer), or never to be: not repeated.
                    Err(error) => {
                        tracing::warn!(%error, channel = main.channel, "reminder not posted")
                    }
                }
            }
            return Ok(Outcome::Delivered {
                posted: Vec::new(),
                rendered: Vec::new(),
                version: approval.version,
                next,
            });
        }
        let link = main.and_then(|m| m.permalink.as_deref());
        self.remind_by_dm(job, approval, link, next, now).await
    }

    /// DMs each approver who has not voted, a few at once until the deadline. The DMs
    /// still under way then may have reached Slack: a lookup in their history for them
    /// follows ([`Job::SlackRemindLookup`]), and plans the next reminder in its turn.
    async fn remind_by_dm(
        &self,
        job: &DueJob,
        approval: &Approval,
        link: Option<&str>,
        next: Option<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let people = self.people_to_remind(approval).await?;
        let sends = people.iter().map(|user| async move {
            let sent = self.dm(job, approval, user, link, now).await;
            (user, sent)
        });
        let (answers, unanswered) = fan_out(sends, self.deadline).await;
        let mut late: BTreeSet<&String> = people.iter().collect();
        let mut posted = Vec::new();
        let mut failures = Vec::new();
        for (user, sent) in answers {
            late.remove(user);
            match sent {
                Ok(message) => posted.push(message),
                Err(error) => {
                    tracing::warn!(%error, user, "reminder not delivered");
                    failures.push(error);
                }
            }
        }
        if unanswered > 0 {
            tracing::warn!(unanswered, "reminder DMs out of time");
        }
        // Retry only when nobody got it (a retry looks for the DMs this attempt may
        // have sent first); a partial failure waits for the next reminder rather than
        // reminding the others twice.
        if posted.is_empty() && failures.len() + unanswered > 0 {
            return Err(nobody_reminded(&failures, unanswered));
        }
        let next = if late.is_empty() {
            next
        } else {
            Some(NewJob {
                approval_id: approval.id,
                job: Job::SlackRemindLookup {
                    reminder: job.id,
                    users: late.into_iter().cloned().collect(),
                    next_at: next.map(|next| next.due_at),
                },
                due_at: now + LOOKUP_AFTER,
            })
        };
        Ok(Outcome::Delivered {
            posted,
            rendered: Vec::new(),
            version: approval.version,
            next,
        })
    }

    /// Records the DMs reminder `reminder` sent to `users` but could not record, found
    /// in their DM history by the metadata each carries; then plans the next reminder
    /// at `next_at`. A lookup that fails is tried again a few times, then given up
    /// (those DMs stay as they are), so that the reminders go on.
    pub async fn find_reminders(
        &self,
        job: &DueJob,
        approval: &Approval,
        (reminder, users): (i64, &[String]),
        next_at: Option<DateTime<Utc>>,
    ) -> Result<Outcome, SlackError> {
        let lookups = users
            .iter()
            .map(|user| self.sent_reminder(approval, reminder, user));
        let (answers, unanswered) = fan_out(lookups, self.deadline).await;
        let mut posted = Vec::new();
        let mut failed = (unanswered > 0)
            .then(|| SlackError::Transport(format!("{unanswered} DM history lookups out of time")));
        for answer in answers {
            match answer {
                Ok(found) => posted.extend(found),
                Err(error) => failed = Some(error),
            }
        }
        if let Some(error) = failed {
            if job.attempts < LOOKUP_ATTEMPTS {
                return Err(error);
            }
            tracing::warn!(%error, "reminder DMs sent late not looked up: given up");
        }
        Ok(Outcome::Delivered {
            posted,
            rendered: Vec::new(),
            version: approval.version,
            // Decided meanwhile: nobody left to remind.
            next: next_at
                .filter(|_| approval.status == Status::Pending)
                .map(|due_at| NewJob {
                    approval_id: approval.id,
                    job: jobs::reminder(approval),
                    due_at,
                }),
        })
    }

    /// The DM reminder `reminder` sent to `user`, if Slack took it: found in their DM
    /// history by its metadata. `None` too when it cannot be looked for (no
    /// `im:history` scope, the user gone): a retry would not find it either.
    async fn sent_reminder(
        &self,
        approval: &Approval,
        reminder: i64,
        user: &str,
    ) -> Result<Option<PostedMessage>, SlackError> {
        let found = async {
            let channel = self.dm_channel(user).await?;
            let found = self
                .find_posted(approval, &channel, REMINDER_EVENT, |payload| {
                    payload["job"] == reminder
                })
                .await?;
            let found = found.map(|(ts, version)| dm_message(approval, channel, ts, version));
            Ok::<_, SlackError>(found)
        };
        match found.await {
            Err(error) if error.is_permanent() => {
                tracing::warn!(%error, user, "cannot look for a reminder DM sent late");
                Ok(None)
            }
            found => found,
        }
    }

    /// Approvers (groups expanded) who may still vote: not the requester, not voted.
    async fn people_to_remind(&self, approval: &Approval) -> Result<BTreeSet<String>, SlackError> {
        let mut people = BTreeSet::new();
        for approver in &approval.routing.approvers {
            match approver {
                Approver::Group(group) => {
                    people.extend(self.approvers.members(group).await?.iter().cloned());
                }
                Approver::User(user) => {
                    people.insert(user.to_string());
                }
            }
        }
        people.retain(|user| !approval.has_voted(user) && !approval.is_requester(user));
        Ok(people)
    }

    /// One reminder DM. A retried reminder job first looks for the DM an earlier
    /// attempt sent but did not live to record (as a post does), so nobody is
    /// reminded twice for one reminder.
    async fn dm(
        &self,
        job: &DueJob,
        approval: &Approval,
        user: &str,
        link: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<PostedMessage, SlackError> {
        let channel = self.dm_channel(user).await?;
        let found = self
            .posted_earlier(job, approval, &channel, REMINDER_EVENT, |payload| {
                payload["job"] == job.id
            })
            .await?;
        let (ts, version) = match found {
            Some(found) => found,
            None => {
                let mut body = reminder_message(approval, now, link);
                body["channel"] = json!(channel);
                body["metadata"] = metadata(REMINDER_EVENT, approval, ("job", json!(job.id)));
                let answer = self.client.call("chat.postMessage", &body).await?;
                let ts = answer["ts"].as_str().unwrap_or_default().to_owned();
                (ts, approval.version)
            }
        };
        Ok(dm_message(approval, channel, ts, version))
    }

    /// The DM channel with `user`.
    async fn dm_channel(&self, user: &str) -> Result<String, SlackError> {
        let opened = self
            .client
            .call("conversations.open", &json!({ "users": user }))
            .await?;
        let channel = opened["channel"]["id"]
            .as_str()
            .ok_or_else(|| SlackError::Api {
                code: "conversations.open answered without a channel".into(),
            })?;
        Ok(channel.to_owned())
    }
}

/// A reminder DM of `approval` at `channel`/`ts`, showing `version`.
fn dm_message(approval: &Approval, channel: String, ts: String, version: i64) -> PostedMessage {
    PostedMessage {
        approval_id: approval.id,
        channel,
        ts,
        kind: MessageKind::Dm,
        permalink: None,
        rendered_version: version,
    }
}

/// Why nobody was reminded: Slack's rate limit when it refused any of them for it,
/// with its longest `Retry-After`, so that the retry waits as long as Slack asks; a
/// refusal for good when Slack refused every one for good (a missing scope, users
/// gone: given up at once, not retried for two hours); else that none could be
/// reached.
fn nobody_reminded(failures: &[SlackError], unanswered: usize) -> SlackError {
    let limited = failures.iter().filter_map(|error| match error {
        SlackError::RateLimited { retry_after } => Some(*retry_after),
        _ => None,
    });
    if let Some(retry_after) = limited.max() {
        return SlackError::RateLimited { retry_after };
    }
    match failures.first() {
        Some(error) if unanswered == 0 && failures.iter().all(SlackError::is_permanent) => {
            error.clone()
        }
        _ => SlackError::Transport(format!(
            "no reminder could be delivered ({} failed, {unanswered} out of time)",
            failures.len()
        )),
    }
}

/// The approval message with a reminder line on top (time left, link to the channel post).
pub fn reminder_message(approval: &Approval, now: DateTime<Utc>, link: Option<&str>) -> Value {
    let mut message = render(approval, now);
    let left = text::duration_short((approval.expires_at - now).num_seconds());
    let mut line =
        format!(":bell: *Reminder:* this request is waiting for your decision — {left} left.");
    if let Some(link) =
        link.filter(|l| l.starts_with("https://") && !l.contains(['<', '>', '|', ' ']))
    {
        line.push_str(&format!(" <{link}|Open it in the channel>"));
    }
    if let Some(blocks) = message["blocks"].as_array_mut() {
        blocks.insert(
            0,
            json!({ "type": "section", "text": { "type": "mrkdwn", "text": line } }),
        );
        blocks.truncate(MAX_BLOCKS);
    }
    let fallback = message["text"].as_str().unwrap_or_default().to_owned();
    message["text"] = json!(text::fit_plain(&format!("Reminder: {fallback}"), 300));
    message
}
