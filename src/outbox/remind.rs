//! Reminders: while an approval waits, each approver who has not voted gets a DM (user
//! groups expanded; a few sent at once, until the job's deadline), or, with no
//! approvers list, a reply in the message's thread; a retried reminder never reminds
//! anyone twice. A reminder given up (dead-lettered) plans the next one all the same:
//! the chain of reminders ends only at the decision or the expiry. The members of a
//! batch share their reminders ([`super::batch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::slack::{Deliverer, done, done_then, metadata, store_error};
use super::{failed, fan_out, render, retry};
use crate::approval::{Approval, Status};
use crate::ids::Approver;
use crate::jobs::{self, DueJob, Job, MessageKind, NewJob, Outcome, PostedMessage};
use crate::slack::blocks::REMINDER_EVENT;
use crate::slack::client::SlackError;
use crate::slack::text;

/// Block Kit's limit on blocks per message.
const MAX_BLOCKS: usize = 50;
/// How long after a reminder the DMs that may have reached Slack unanswered are looked
/// up, and the least a reminder nobody answered waits before its retry looks for them:
/// by then each call has had its time (10 s), Slack has taken the DM or not, and the
/// DM shows in its history.
const LOOKUP_AFTER: Duration = Duration::from_secs(30);
/// Attempts at that lookup before it is given up (and the reminders go on).
const LOOKUP_ATTEMPTS: i32 = 3;

/// One round of reminder DMs: the reminder job's id, which each DM carries in its
/// metadata, and whether a DM of the round may have gone out already (a retried
/// reminder, or the rest of a round sent by the job that follows it), to be looked for
/// first.
#[derive(Clone, Copy)]
struct Round {
    id: i64,
    again: bool,
}

/// What became of a round's DMs by the job's deadline.
#[derive(Default)]
struct Sent {
    /// The DMs Slack took.
    posted: Vec<PostedMessage>,
    /// Why the DMs that surely did not reach Slack were refused (a 429 or an
    /// `ok:false` from Slack, a failure before `chat.postMessage`): those wait for the
    /// next reminder (a retry would remind the others twice).
    failed: Vec<SlackError>,
    /// The users whose DM may have reached Slack unanswered: its `chat.postMessage`
    /// still under way at the deadline, or failed without Slack's own answer (a
    /// transport error or timeout, a gateway's 5xx). Looked up in their DM history.
    unsure: Vec<String>,
    /// The users whose DM cannot have reached Slack by the deadline, neither sent nor
    /// refused: not started (a few go out at once), or still opening its DM channel or
    /// looking in its history. Nothing to look up: the job that follows sends them
    /// theirs, in this round, rather than leave them to the next reminder (which
    /// starts in the same order and might never reach them while Slack is slow).
    unsent: Vec<String>,
}

/// A reminder DM ready to post: the DM of its round found already, or the DM channel
/// to post it to.
enum Ready {
    Found(PostedMessage),
    To(String),
}

/// A reminder DM not delivered, and whether Slack may have taken it all the same.
struct NotSent {
    error: SlackError,
    perhaps: bool,
}

impl Deliverer<'_> {
    /// DMs each approver who has not voted (with live buttons and a link to the
    /// channel message), or replies in the thread when anyone may decide; then plans
    /// the next reminder (given up, the pass plans it: `given_up_then`). Nothing once the approval is
    /// decided or expired (the chain of reminders ends there).
    pub async fn remind(
        &self,
        job: &DueJob,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        if approval.status != Status::Pending {
            return Ok(done(approval.version));
        }
        // Planned while it waits, even past its expiry as it stands now: another
        // program may move `expires_at` later (the shared table's contract), and the
        // chain must go on then. A reminder that comes due once the approval is decided
        // or marked expired does nothing and plans nothing (above): the chain ends there.
        let next = next_reminder(job, approval, now);
        if approval.is_expired_at(now) {
            // Past its expiry and not yet marked (the timers' pass runs apart from the
            // deliveries): nobody is reminded of what can no longer be decided, but the
            // chain goes on, ending at the next reminder if the mark comes first.
            return Ok(done_then(approval.version, next));
        }
        let reminded = self.remind_now(job, approval, next, now).await;
        Ok(reminded.unwrap_or_else(|error| failed(job, now, error)))
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
                let Some(note) = self.thread_reminder(approval, &left, now).await? else {
                    return Ok(done_then(approval.version, next));
                };
                let thread = (main.channel.as_str(), main.ts.as_str());
                match self.thread_note(job, approval, thread, &note).await {
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
            return Ok(done_then(approval.version, next));
        }
        let link = main.and_then(|m| m.permalink.as_deref());
        self.remind_by_dm(job, approval, link, next, now).await
    }

    /// DMs each approver who has not voted, a few at once until the deadline. The DMs
    /// that may have reached Slack unanswered are looked up in their history, and
    /// those that cannot have reached it by then are sent, by a job that follows
    /// ([`Job::SlackRemindLookup`]) and plans the next reminder in its turn. Nobody
    /// reminded, the reminder is retried, unless Slack refused every DM for good.
    async fn remind_by_dm(
        &self,
        job: &DueJob,
        approval: &Approval,
        link: Option<&str>,
        next: Option<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let people = self.people_to_remind(approval).await?;
        let (people, more) = self.batch_share(approval, people, now).await?;
        let round = Round {
            id: job.id,
            again: job.attempts > 1,
        };
        let sent = self
            .send_round(approval, round, (&people, &more), link, now)
            .await;
        // Retry only when nobody got it (a retry looks for the DMs this attempt may
        // have sent first); a partial failure waits for the next reminder rather than
        // reminding the others twice.
        if sent.posted.is_empty() && !people.is_empty() {
            let error = nobody_reminded(&sent.failed, sent.unsure.len() + sent.unsent.len());
            if sent.unsure.is_empty() {
                return Err(error);
            }
            // A DM Slack took as the attempt ended may not show in its history at
            // once: the retry looks for it no sooner than a lookup would.
            let wait = match &error {
                SlackError::RateLimited {
                    retry_after: Some(after),
                } => (*after).max(LOOKUP_AFTER),
                _ => LOOKUP_AFTER,
            };
            return Ok(retry(job, now, Some(wait), error.to_string()));
        }
        Ok(Outcome::Delivered {
            version: approval.version,
            next: after_round(approval, round, (sent.unsure, sent.unsent), next, now),
            posted: sent.posted,
            rendered: Vec::new(),
        })
    }

    /// DMs `users` the `round`'s reminder, a few at once until the deadline, each
    /// told how many more requests of the approval's batch wait for them (`more`).
    async fn send_round(
        &self,
        approval: &Approval,
        round: Round,
        (users, more): (&[String], &BTreeMap<String, usize>),
        link: Option<&str>,
        now: DateTime<Utc>,
    ) -> Sent {
        let posting = Mutex::new(BTreeSet::new());
        let sends = users.iter().map(|user| {
            let posting = &posting;
            async move {
                let sent = match self.dm_ready(approval, round, user).await {
                    Ok(Ready::Found(message)) => Ok(message),
                    Ok(Ready::To(channel)) => {
                        // From here on, Slack may take the DM and no answer come.
                        {
                            let mut posting =
                                posting.lock().unwrap_or_else(PoisonError::into_inner);
                            posting.insert(user.as_str());
                        }
                        let pointer = (link, more.get(user).copied().unwrap_or(0));
                        let posted = self.post_dm(approval, round, channel, pointer, now).await;
                        posted.map_err(|error| NotSent {
                            perhaps: may_have_posted(&error),
                            error,
                        })
                    }
                    Err(error) => Err(NotSent {
                        error,
                        perhaps: false,
                    }),
                };
                (user, sent)
            }
        });
        let (answers, unanswered) = fan_out(sends, self.deadline).await;
        if unanswered > 0 {
            tracing::warn!(unanswered, "reminder DMs out of time");
        }
        let mut sent = Sent::default();
        let mut answered = BTreeSet::new();
        for (user, result) in answers {
            answered.insert(user.as_str());
            match result {
                Ok(message) => sent.posted.push(message),
                Err(NotSent { error, perhaps }) => {
                    tracing::warn!(%error, user, perhaps, "reminder not delivered");
                    match perhaps {
                        true => sent.unsure.push(user.clone()),
                        false => sent.failed.push(error),
                    }
                }
            }
        }
        let posting = posting.into_inner().unwrap_or_else(PoisonError::into_inner);
        for user in users.iter().filter(|u| !answered.contains(u.as_str())) {
            match posting.contains(user.as_str()) {
                true => sent.unsure.push(user.clone()),
                false => sent.unsent.push(user.clone()),
            }
        }
        sent
    }

    /// Ends a round of reminder DMs cut short (`job`, a [`Job::SlackRemindLookup`]):
    /// records the DMs the reminder sent to `users` unanswered, found in their DM
    /// history by the metadata each carries; DMs `unsent` while the approval waits
    /// (each looked for in its history first: an earlier attempt of the reminder, or
    /// of this job, may have sent it); then plans the next reminder at `next_at`, or
    /// the end of the round again when these DMs are cut short too. A lookup that
    /// fails is tried again a few times, then given up (those DMs stay as they are),
    /// so that the reminders go on; a DM refused waits for the next reminder. Given up
    /// all the same (the store failing for two hours), the pass plans the next reminder
    /// (`given_up_then`).
    pub async fn find_reminders(
        &self,
        job: &DueJob,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let Job::SlackRemindLookup {
            reminder,
            users,
            unsent,
            ..
        } = &job.job
        else {
            return Ok(done(approval.version));
        };
        let next = next_reminder(job, approval, now);
        let round = (*reminder, users.as_slice(), unsent.as_slice());
        let ended = self.end_round(job, approval, round, next, now).await;
        Ok(ended.unwrap_or_else(|error| failed(job, now, error)))
    }

    /// [`Deliverer::find_reminders`] for the DMs reminder `reminder` may have sent to
    /// `users` and those it did not send to `unsent`; `next` is planned once it is
    /// delivered.
    async fn end_round(
        &self,
        job: &DueJob,
        approval: &Approval,
        (reminder, users, unsent): (i64, &[String], &[String]),
        next: Option<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let mut posted = self.sent_late(job, approval, reminder, users).await?;
        let unsent: BTreeSet<String> = unsent
            .iter()
            .filter(|user| may_vote(approval, user))
            .cloned()
            .collect();
        if unsent.is_empty() || !approval.is_pending_at(now) {
            return Ok(Outcome::Delivered {
                posted,
                rendered: Vec::new(),
                version: approval.version,
                next,
            });
        }
        let messages = self
            .store
            .messages(approval.id)
            .await
            .map_err(store_error)?;
        let main = messages.iter().find(|m| m.kind == MessageKind::Main);
        let link = main.and_then(|m| m.permalink.as_deref());
        let round = Round {
            id: reminder,
            again: true,
        };
        let (unsent, more) = self.batch_share(approval, unsent, now).await?;
        let sent = self
            .send_round(approval, round, (&unsent, &more), link, now)
            .await;
        posted.extend(sent.posted);
        Ok(Outcome::Delivered {
            posted,
            rendered: Vec::new(),
            version: approval.version,
            next: after_round(approval, round, (sent.unsure, sent.unsent), next, now),
        })
    }

    /// The DMs reminder `reminder` sent to `users` that Slack took unanswered, found in
    /// their DM history. A failure to look is retried while [`LOOKUP_ATTEMPTS`] allow;
    /// then what was found.
    async fn sent_late(
        &self,
        job: &DueJob,
        approval: &Approval,
        reminder: i64,
        users: &[String],
    ) -> Result<Vec<PostedMessage>, SlackError> {
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
        Ok(posted)
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
    pub(super) async fn people_to_remind(
        &self,
        approval: &Approval,
    ) -> Result<BTreeSet<String>, SlackError> {
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
        people.retain(|user| may_vote(approval, user));
        Ok(people)
    }

    /// Gets one reminder DM of `round` ready, nothing sent yet: its DM channel, or the
    /// DM of the round found already (an earlier attempt that did not live to record
    /// it, looked for as a post is), so nobody is reminded twice for one reminder.
    async fn dm_ready(
        &self,
        approval: &Approval,
        round: Round,
        user: &str,
    ) -> Result<Ready, SlackError> {
        let channel = self.dm_channel(user).await?;
        if round.again {
            let found = self
                .look_for_earlier(approval, &channel, REMINDER_EVENT, |payload| {
                    payload["job"] == round.id
                })
                .await?;
            if let Some((ts, version)) = found {
                return Ok(Ready::Found(dm_message(approval, channel, ts, version)));
            }
        }
        Ok(Ready::To(channel))
    }

    /// Posts one reminder DM of `round` to the DM `channel`, with the `link` to the
    /// channel message and how many `more` of the batch wait for its reader.
    async fn post_dm(
        &self,
        approval: &Approval,
        round: Round,
        channel: String,
        (link, more): (Option<&str>, usize),
        now: DateTime<Utc>,
    ) -> Result<PostedMessage, SlackError> {
        let mut body = reminder_message(approval, now, (link, more));
        body["channel"] = json!(channel);
        body["metadata"] = metadata(REMINDER_EVENT, approval, ("job", json!(round.id)));
        let answer = self.client.call("chat.postMessage", &body).await?;
        let ts = answer["ts"].as_str().unwrap_or_default().to_owned();
        Ok(dm_message(approval, channel, ts, approval.version))
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

/// The next reminder that reminder `job` (or the job that ends its round) plans, as
/// [`Deliverer::remind`] does, with `approval` as it is at `now`: `None` once it is
/// decided (nobody left to remind), or for any other job.
pub(super) fn next_reminder(
    job: &DueJob,
    approval: &Approval,
    now: DateTime<Utc>,
) -> Option<NewJob> {
    if approval.status != Status::Pending {
        return None;
    }
    let due_at = match &job.job {
        Job::SlackRemind { .. } => {
            jobs::after_secs(now, approval.routing.remind_every_secs?.max(1))
        }
        Job::SlackRemindLookup { next_at, .. } => (*next_at)?,
        _ => return None,
    };
    Some(NewJob {
        approval_id: approval.id,
        job: jobs::reminder(approval),
        due_at,
    })
}

/// `outcome`, and when it gives the job up (a refusal retrying cannot fix, too many
/// attempts, out of time, no Slack here) with nothing planned next, `next` planned with
/// it all the same: the next reminder comes when Slack may be set right, rather than
/// the chain of reminders ending there. Applied by the pass to every reminder's outcome
/// (`Outbox::given_up_then_next`), whatever gave it up.
pub(super) fn given_up_then(outcome: Outcome, next: Option<NewJob>) -> Outcome {
    match outcome {
        Outcome::Dead { error, next: None } => Outcome::Dead { error, next },
        outcome => outcome,
    }
}

/// Whether the approver `user` may still vote on `approval`: not the requester, not
/// voted.
fn may_vote(approval: &Approval, user: &str) -> bool {
    !approval.has_voted(user) && !approval.is_requester(user)
}

/// Whether a `chat.postMessage` that failed with `error` may have reached Slack all
/// the same: no answer came (a transport error, a timeout) or a gateway's (a 5xx). A
/// 429 or an `ok:false` is Slack's own answer: the message was not posted.
fn may_have_posted(error: &SlackError) -> bool {
    match error {
        SlackError::Transport(_) => true,
        SlackError::Http { status } => *status >= 500,
        SlackError::Api { .. } | SlackError::RateLimited { .. } => false,
    }
}

/// What follows a `round` of DMs: with DMs that may have reached Slack unanswered or
/// had no time to start (`unsure`, `unsent`), the job that ends the round
/// ([`LOOKUP_AFTER`] later), which plans `next` in its turn; else `next`.
fn after_round(
    approval: &Approval,
    round: Round,
    (unsure, unsent): (Vec<String>, Vec<String>),
    next: Option<NewJob>,
    now: DateTime<Utc>,
) -> Option<NewJob> {
    if unsure.is_empty() && unsent.is_empty() {
        return next;
    }
    Some(NewJob {
        approval_id: approval.id,
        job: Job::SlackRemindLookup {
            reminder: round.id,
            users: unsure,
            unsent,
            next_at: next.map(|next| next.due_at),
        },
        due_at: jobs::after_secs(now, LOOKUP_AFTER.as_secs()),
    })
}

/// Why nobody was reminded: Slack's rate limit when it refused any of them for it,
/// with its longest `Retry-After`, so that the retry waits as long as Slack asks; a
/// refusal for good when Slack refused every one for good (a missing scope, users
/// gone: given up at once, not retried for two hours); else that none could be
/// reached (`unanswered`: DMs that may have reached Slack, or not started).
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

/// The approval message with a reminder line on top: time left, how many `more`
/// requests of its batch wait for the reader too, the `link` to the channel post.
pub fn reminder_message(
    approval: &Approval,
    now: DateTime<Utc>,
    (link, more): (Option<&str>, usize),
) -> Value {
    let mut message = render(approval, now);
    let left = text::duration_short((approval.expires_at - now).num_seconds());
    let mut line = match more {
        0 => format!(":bell: *Reminder:* this request is waiting for your decision — {left} left."),
        more => format!(
            ":bell: *Reminder:* this request and {more} more like it in the same message are \
             waiting for your decision — {left} left."
        ),
    };
    if let Some(link) =
        link.filter(|l| l.starts_with("https://") && !l.contains(['<', '>', '|', ' ']))
    {
        let them = if more == 0 { "it" } else { "them" };
        line.push_str(&format!(" <{link}|Open {them} in the channel>"));
    }
    if let Some(blocks) = message["blocks"].as_array_mut() {
        blocks.insert(
            0,
            json!({ "type": "section", "text": { "type": "mrkdwn", "text": line } }),
        );
        blocks.truncate(MAX_BLOCKS);
    }
    let fallback = message["text"].as_str().unwrap_or_default().to_owned();
    let reminder = match more {
        0 => "Reminder".to_owned(),
        more => format!("Reminder, with {more} more like it"),
    };
    message["text"] = json!(text::fit_plain(&format!("{reminder}: {fallback}"), 300));
    message
}
