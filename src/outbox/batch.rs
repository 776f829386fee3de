//! Slack deliveries of batches (`batch_window`, see `store::ops::batching`): the
//! leader's post closes its batch and posts one message listing every member, recorded
//! as a message of each; an update of any member re-renders the whole message.
//!
//! A batch is nudged as one: its escalation is one post listing every member, once
//! every member still waiting is due for it ([`Deliverer::escalate_batch`]); each
//! approver gets one reminder a round, from the first member still waiting that they
//! may vote on, saying how many more wait for them ([`Deliverer::batch_share`]; a
//! thread reminder likewise, once a round for the batch: [`Deliverer::thread_reminder`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::slack::{Deliverer, done, done_then, metadata, note_after_escalation, store_error};
use crate::approval::{Approval, ApprovalId};
use crate::jobs::{self, DueJob, MessageKey, MessageKind, NewJob, Outcome, PostedMessage};
use crate::slack::batch::batch_message;
use crate::slack::blocks::POST_EVENT;
use crate::slack::client::SlackError;

/// Renders of a message at most, when what it shows keeps changing under it.
pub(super) const RENDERS: usize = 3;

/// How long the escalation of a batch member waits before it looks again for the
/// batch's escalation, while a member before it in the message, still waiting, is to
/// post it.
pub(super) const ESCALATION_WAIT: Duration = Duration::from_secs(30);

/// How long past the batch's escalation time a member waits for the batch's
/// escalation, per member still waiting before it, before it posts it itself (their
/// jobs given up, or far behind): one member takes over at a time.
pub(super) const ESCALATION_GRACE: Duration = Duration::from_secs(120);

/// The batch an approval is in, as its reminder or escalation reads it.
pub(super) struct Batch {
    /// Every member in the message's order; empty when the approval was posted alone.
    members: Vec<Approval>,
    /// The approval's place among them.
    at: usize,
}

impl Batch {
    fn alone() -> Batch {
        Batch {
            members: Vec::new(),
            at: 0,
        }
    }

    /// Whether the approval shares its message with others.
    pub fn is_shared(&self) -> bool {
        self.members.len() > 1
    }

    /// Whether the approval leads the batch (comes first in its message).
    fn leads(&self) -> bool {
        self.at == 0
    }

    /// The members before the approval in the message that still wait at `now`: the
    /// batch's nudges are theirs first.
    pub fn waiting_before(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Approval> {
        waiting(self.members.get(..self.at).unwrap_or_default(), now)
    }

    /// The members that still wait at `now`, the approval among them if it does.
    pub fn waiting(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Approval> {
        waiting(&self.members, now)
    }

    /// The members after the approval in the message that still wait at `now`.
    pub fn waiting_after(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Approval> {
        waiting(self.members.get(self.at + 1..).unwrap_or_default(), now)
    }
}

/// Those of `members` that still wait at `now`.
fn waiting(members: &[Approval], now: DateTime<Utc>) -> impl Iterator<Item = &Approval> {
    members
        .iter()
        .filter(move |member| member.is_pending_at(now))
}

impl Deliverer<'_> {
    /// Posts the batch `leader` leads to `channel`: closes it (nothing joins it any
    /// more), then lists its members in one message. A batch nobody joined is posted
    /// as a single request.
    pub async fn post_batch(
        &self,
        job: &DueJob,
        channel: &str,
        leader: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let messages = self.store.messages(leader.id).await.map_err(store_error)?;
        if messages
            .iter()
            .any(|m| m.channel == channel && m.kind == MessageKind::Main)
        {
            return Ok(done(leader.version));
        }
        let members = self
            .store
            .close_batch(leader.id)
            .await
            .map_err(store_error)?;
        if members.len() <= 1 {
            return self
                .post(job, (channel, MessageKind::Main), leader, now)
                .await;
        }
        let items = self.load(&members).await?;
        // Posted by an earlier attempt that did not live to record it: every row is
        // recorded as behind (-1), so that the report brings the message up to date.
        let found = self
            .posted_earlier(job, leader, channel, POST_EVENT, |payload| {
                payload["kind"] == MessageKind::Main.as_str()
            })
            .await?;
        let (channel, ts, fresh) = match found {
            Some((ts, _)) => (channel.to_owned(), ts, false),
            None => {
                let mut body = batch_message(&items, now);
                body["channel"] = json!(channel);
                let mut tag = metadata(POST_EVENT, leader, ("kind", json!(MessageKind::Main)));
                tag["event_payload"]["items"] = json!(members);
                body["metadata"] = tag;
                let answer = self.client.call("chat.postMessage", &body).await?;
                let channel = answer["channel"].as_str().unwrap_or(channel).to_owned();
                let ts = answer["ts"].as_str().unwrap_or_default().to_owned();
                (channel, ts, true)
            }
        };
        let posted = items
            .iter()
            .map(|item| PostedMessage {
                approval_id: item.id,
                channel: channel.clone(),
                ts: ts.clone(),
                kind: MessageKind::Main,
                permalink: None,
                rendered_version: if fresh { item.version } else { -1 },
            })
            .collect();
        Ok(Outcome::Delivered {
            posted,
            rendered: Vec::new(),
            version: leader.version,
            next: None,
        })
    }

    /// Brings a batch message (`channel`, `ts`, of `members`) up to date. Updates of
    /// several members may run at once: after each render the members are read again,
    /// and the message rendered again if one changed meanwhile, so the last render to
    /// reach Slack shows them as they are.
    pub async fn update_batch(
        &self,
        (channel, ts): (&str, &str),
        members: &[ApprovalId],
        now: DateTime<Utc>,
    ) -> Result<(), SlackError> {
        let mut items = self.load(members).await?;
        for _ in 0..RENDERS {
            let mut update = batch_message(&items, now);
            update["channel"] = json!(channel);
            update["ts"] = json!(ts);
            self.client.call("chat.update", &update).await?;
            let again = self.load(members).await?;
            let same = again
                .iter()
                .map(|a| a.version)
                .eq(items.iter().map(|a| a.version));
            if same {
                break;
            }
            items = again;
        }
        Ok(())
    }

    /// The approvals of `ids` that exist, in order, in one read.
    async fn load(&self, ids: &[ApprovalId]) -> Result<Vec<Approval>, SlackError> {
        self.store.get_many(ids).await.map_err(store_error)
    }

    /// The batch `approval` is in; not read when its policy batches nothing.
    pub(super) async fn batch_of(&self, approval: &Approval) -> Result<Batch, SlackError> {
        if approval.routing.batch_window_ms.is_none() {
            return Ok(Batch::alone());
        }
        let ids = self
            .store
            .batch_members(approval.id)
            .await
            .map_err(store_error)?;
        if ids.len() <= 1 {
            return Ok(Batch::alone());
        }
        let members = self.load(&ids).await?;
        Ok(match members.iter().position(|m| m.id == approval.id) {
            Some(at) => Batch { members, at },
            None => Batch::alone(),
        })
    }

    /// Of `people` (approvers who may still vote on `approval`), those its reminder
    /// DMs: in a batch, each approver is reminded once a round, by the first member
    /// still waiting that they may vote on (the others' reminders pass them over).
    /// With how many members after it wait for each of them too (their DM says so).
    pub(super) async fn batch_share(
        &self,
        approval: &Approval,
        mut people: BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, BTreeMap<String, usize>), SlackError> {
        let batch = self.batch_of(approval).await?;
        for earlier in batch.waiting_before(now) {
            let theirs = self.people_to_remind(earlier).await?;
            people.retain(|person| !theirs.contains(person));
        }
        let mut more = BTreeMap::new();
        for later in batch.waiting_after(now) {
            for person in self.people_to_remind(later).await? {
                if people.contains(&person) {
                    *more.entry(person).or_insert(0) += 1;
                }
            }
        }
        Ok((people.into_iter().collect(), more))
    }

    /// The reminder in the thread of `approval`'s message, `left` before it expires:
    /// in a batch, one for the members still waiting, by the first of them (`None`
    /// for the others).
    pub(super) async fn thread_reminder(
        &self,
        approval: &Approval,
        left: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, SlackError> {
        let batch = self.batch_of(approval).await?;
        if batch.waiting_before(now).next().is_some() {
            return Ok(None);
        }
        Ok(Some(match 1 + batch.waiting_after(now).count() {
            1 => format!(
                ":bell: Reminder: this request is still waiting for a decision ({left} left)."
            ),
            n => format!(
                ":bell: Reminder: {n} requests in this message are still waiting for a \
                 decision ({left} left for the first)."
            ),
        }))
    }

    /// Escalates the `batch` `approval` is in to `channel`: one post listing every
    /// member, recorded as the escalation of each (theirs then find it posted), then
    /// one note in the batch message's thread. It goes out once every member still
    /// waiting is due for escalation ([`escalation_time`]), so that the managers may
    /// decide every item it lists at once; see [`look_again_at`] for which member
    /// posts it. Before it posts, a member looks in the channel for the batch's
    /// escalation when another may have posted it and not lived to record it (it
    /// does not lead the batch), or an earlier attempt of its own (a retry).
    pub(super) async fn escalate_batch(
        &self,
        job: &DueJob,
        (channel, batch): (&str, Batch),
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let mut found = None;
        if job.attempts > 1 {
            found = self.escalation_listing(approval, channel).await?;
        }
        if found.is_none() {
            if !approval.is_pending_at(now) {
                return Ok(done(approval.version));
            }
            if let Some(due_at) = look_again_at(&batch, now) {
                let again = NewJob {
                    approval_id: approval.id,
                    job: job.job.clone(),
                    due_at,
                };
                return Ok(done_then(approval.version, Some(again)));
            }
            if !batch.leads() && job.attempts <= 1 {
                found = self.escalation_listing(approval, channel).await?;
            }
        }
        let (channel, ts, fresh) = match found {
            // Rendered at versions unknown: the report brings it up to date.
            Some(ts) => (channel.to_owned(), ts, false),
            None => self.post_escalation(channel, &batch, approval, now).await?,
        };
        let posted = batch
            .members
            .iter()
            .map(|member| PostedMessage {
                approval_id: member.id,
                channel: channel.clone(),
                ts: ts.clone(),
                kind: MessageKind::Escalation,
                permalink: None,
                rendered_version: if fresh { member.version } else { -1 },
            })
            .collect();
        Ok(Outcome::Delivered {
            posted,
            rendered: Vec::new(),
            version: approval.version,
            next: note_after_escalation(job, approval, now),
        })
    }

    /// The `ts` of a batch escalation in `channel` listing `approval` among its items,
    /// if one is there; `None` too when the history cannot be read
    /// ([`Deliverer::look_in_history`]).
    async fn escalation_listing(
        &self,
        approval: &Approval,
        channel: &str,
    ) -> Result<Option<String>, SlackError> {
        let id = json!(approval.id.to_string());
        let kind = MessageKind::Escalation.as_str();
        let lists = |payload: &Value| {
            let items = payload["items"].as_array();
            payload["kind"] == kind && items.is_some_and(|items| items.contains(&id))
        };
        let found = self.look_in_history(approval, channel, POST_EVENT, lists);
        Ok(found.await?.map(|(ts, _)| ts))
    }

    /// Posts the `batch`'s escalation (by `approval`) to `channel`: where it went
    /// (channel, ts), and that it is fresh.
    async fn post_escalation(
        &self,
        channel: &str,
        batch: &Batch,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<(String, String, bool), SlackError> {
        let mut body = batch_message(&batch.members, now);
        body["channel"] = json!(channel);
        let kind = json!(MessageKind::Escalation);
        let mut tag = metadata(POST_EVENT, approval, ("kind", kind));
        let ids: Vec<ApprovalId> = batch.members.iter().map(|m| m.id).collect();
        tag["event_payload"]["items"] = json!(ids);
        body["metadata"] = tag;
        let answer = self.client.call("chat.postMessage", &body).await?;
        let channel = answer["channel"].as_str().unwrap_or(channel).to_owned();
        let ts = answer["ts"].as_str().unwrap_or_default().to_owned();
        Ok((channel, ts, true))
    }

    /// Whether `message`, an escalation of `own` in a batch of `members`, is the
    /// batch's (shown for another member too), to be updated as the batch; an
    /// escalation posted before batches were escalated as one is its approval's alone.
    pub(super) async fn escalates_batch(
        &self,
        message: &PostedMessage,
        own: ApprovalId,
        members: &[ApprovalId],
    ) -> Result<bool, SlackError> {
        let Some(other) = members.iter().find(|id| **id != own) else {
            return Ok(false);
        };
        let key = MessageKey {
            channel: message.channel.clone(),
            ts: message.ts.clone(),
        };
        let shown = self.store.get_shown_in(*other, &key).await;
        Ok(matches!(shown.map_err(store_error)?, Some((_, true))))
    }
}

/// When a batch escalates, given the members still waiting at `now`: once the last
/// of them is due (at most the batch window after the first, as they arrived within
/// it under one routing), but a minute before the first of them expires, and never
/// before the first is due. `None` once none of them waits.
fn escalation_time(batch: &Batch, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let waiting: Vec<&Approval> = batch.waiting(now).collect();
    let times = waiting
        .iter()
        .filter_map(|m| m.escalation().map(|(at, _)| at));
    let first = times.clone().min()?;
    let last = times.max()?;
    let expires = waiting.iter().map(|m| m.expires_at).min()?;
    Some(last.min(expires - chrono::Duration::minutes(1)).max(first))
}

/// When the escalation of a member of `batch` (one still waiting at `now`) looks again
/// rather than post the batch's escalation now (`None`). The batch escalates at
/// [`escalation_time`], posted by the first member still waiting; a member after it
/// waits for that post, [`ESCALATION_WAIT`] at a time, until [`ESCALATION_GRACE`] per
/// member still waiting before it has passed since then.
fn look_again_at(batch: &Batch, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let due = escalation_time(batch, now)?;
    let before = batch.waiting_before(now).count();
    if before == 0 {
        return (now < due).then_some(due);
    }
    let grace = ESCALATION_GRACE.as_secs() * u64::try_from(before).unwrap_or(u64::MAX);
    let again = jobs::after_secs(now, ESCALATION_WAIT.as_secs()).max(due);
    (now < jobs::after_secs(due, grace)).then_some(again)
}
