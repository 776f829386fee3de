//! Message updates: every message of an approval that shows an older version is
//! brought up to date, a few at a time, and shown again as the approval is once the
//! calls are done if it changed meanwhile: an update that ran beside this one (on
//! another replica) may have reached Slack first, and this one's older render landed
//! over it. The report records the version last sent.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::batch::RENDERS;
use super::remind::reminder_message;
use super::slack::{Deliverer, store_error};
use super::{after_refusal, fan_out, render};
use crate::approval::{Approval, ApprovalId, Status};
use crate::jobs::{Job, MessageKey, MessageKind, NewJob, Outcome, PostedMessage};
use crate::slack::client::SlackError;

/// What one round of updates did.
struct Round {
    /// The messages now showing the round's version (or never to be updated).
    rendered: Vec<MessageKey>,
    /// The last refusal that retrying may fix.
    refused: Option<SlackError>,
    /// Updates still under way at the deadline.
    unanswered: usize,
}

impl Deliverer<'_> {
    /// Brings every one of `messages` (the approval's) that shows an older version up to
    /// date; a channel message may be a batch's (`batch`, its members), shared with
    /// look-alike requests. Once they are, the approval is read again: changed
    /// meanwhile, they are shown again as it is now (up to [`RENDERS`] times). Those
    /// not updated by the deadline, or refused for now, are left to an update of their
    /// own, planned with this one's report (when Slack took none, the job is retried).
    pub async fn update(
        &self,
        approval: &Approval,
        messages: &[PostedMessage],
        batch: &[ApprovalId],
        now: DateTime<Utc>,
    ) -> Result<Outcome, SlackError> {
        let behind: Vec<&PostedMessage> = messages
            .iter()
            .filter(|m| m.rendered_version < approval.version)
            .collect();
        let mut shown = approval.clone();
        let mut sent = (Vec::new(), approval.version);
        for _ in 0..RENDERS {
            let round = self.update_round(&shown, &behind, batch, now).await;
            if round.refused.is_some() || round.unanswered > 0 {
                return partly(&shown, round, now);
            }
            sent = (round.rendered, shown.version);
            match self.store.get(approval.id).await.map_err(store_error)? {
                Some(again) if again.version > shown.version => shown = again,
                _ => break,
            }
        }
        // Still changing after the last round, the report (at the version last sent)
        // plans one more update.
        let (rendered, version) = sent;
        Ok(Outcome::Delivered {
            posted: Vec::new(),
            rendered,
            version,
            next: None,
        })
    }

    /// Shows `approval` in each of `messages`, a few at a time, until the deadline.
    async fn update_round(
        &self,
        approval: &Approval,
        messages: &[&PostedMessage],
        batch: &[ApprovalId],
        now: DateTime<Utc>,
    ) -> Round {
        let updates = messages
            .iter()
            .map(|message| self.update_one(approval, message, batch, now));
        let (answers, unanswered) = fan_out(updates, self.deadline).await;
        let mut round = Round {
            rendered: Vec::new(),
            refused: None,
            unanswered,
        };
        for answer in answers {
            match answer {
                Ok(key) => round.rendered.push(key),
                Err(error) => round.refused = Some(error),
            }
        }
        round
    }

    /// Brings one message up to date (a batch's, when the approval is in one with
    /// others: its channel message, and its escalation since batches escalate as one):
    /// its key, also when Slack says it can never be updated (deleted, too
    /// old to edit: nothing left to update there).
    async fn update_one(
        &self,
        approval: &Approval,
        message: &PostedMessage,
        batch: &[ApprovalId],
        now: DateTime<Utc>,
    ) -> Result<MessageKey, SlackError> {
        let (channel, ts) = (message.channel.as_str(), message.ts.as_str());
        let shows_batch = batch.len() > 1
            && match message.kind {
                MessageKind::Main => true,
                MessageKind::Escalation => {
                    self.escalates_batch(message, approval.id, batch).await?
                }
                MessageKind::Dm => false,
            };
        let updated = if shows_batch {
            self.update_batch((channel, ts), batch, now).await
        } else {
            let mut update =
                if message.kind == MessageKind::Dm && approval.status == Status::Pending {
                    reminder_message(approval, now, (None, 0))
                } else {
                    render(approval, now)
                };
            update["channel"] = json!(channel);
            update["ts"] = json!(ts);
            self.client.call("chat.update", &update).await.map(drop)
        };
        match updated {
            Ok(()) => {}
            Err(error) if error.is_permanent() => {
                tracing::warn!(%error, channel, ts, "message cannot be updated; skipped");
            }
            Err(error) => return Err(error),
        }
        Ok(MessageKey {
            channel: message.channel.clone(),
            ts: message.ts.clone(),
        })
    }
}

/// A round Slack took only in part: the messages it updated show `shown`, the rest
/// follow in an update of their own, after Slack's wait counted from when the attempt
/// ended (the pass moves it on by the attempt's length, `pass::waited_from`); none
/// updated, the job is retried. Each such update takes at least one message along,
/// so a run of them ends.
fn partly(shown: &Approval, round: Round, now: DateTime<Utc>) -> Result<Outcome, SlackError> {
    let Round {
        rendered,
        refused,
        unanswered,
    } = round;
    if rendered.is_empty() {
        return Err(refused.unwrap_or_else(|| {
            SlackError::Transport(format!("{unanswered} message updates out of time"))
        }));
    }
    tracing::warn!(
        updated = rendered.len(),
        unanswered,
        "some messages not updated: the rest follow in an update of their own"
    );
    let next = NewJob {
        approval_id: shown.id,
        job: Job::SlackUpdate {},
        due_at: after_refusal(now, refused.as_ref()),
    };
    Ok(Outcome::Delivered {
        posted: Vec::new(),
        rendered,
        version: shown.version,
        next: Some(next),
    })
}
