//! Slack deliveries of batches (`batch_window`, see `store::ops::batching`): the
//! leader's post closes its batch and posts one message listing every member, recorded
//! as a message of each; an update of any member re-renders the whole message.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::slack::{Deliverer, done, metadata, store_error};
use crate::approval::{Approval, ApprovalId};
use crate::jobs::{DueJob, MessageKind, Outcome, PostedMessage};
use crate::slack::batch::batch_message;
use crate::slack::blocks::POST_EVENT;
use crate::slack::client::SlackError;

/// Renders of a message at most, when what it shows keeps changing under it.
pub(super) const RENDERS: usize = 3;

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

    /// The approvals of `ids` that exist, in order.
    async fn load(&self, ids: &[ApprovalId]) -> Result<Vec<Approval>, SlackError> {
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(approval) = self.store.get(*id).await.map_err(store_error)? {
                items.push(approval);
            }
        }
        Ok(items)
    }
}
