//! Durable work for one approval: deliveries (the outbox), each due at a time, planned
//! by a pure function and written in the same transaction as the state change that
//! causes them. Reminders and escalations are deliveries due later. The
//! [`crate::scheduler`] claims due deliveries with a lease ([`LEASE`]); they run in
//! [`crate::outbox`] and report back. Expiry needs no job: the approval's own
//! `expires_at` is its timer, which the store fires (see `Store::fire_due`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::approval::{Approval, ApprovalId, Status};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Post the approval message to a channel (payload: [`PostTarget`]).
    SlackPost,
    /// Bring every posted message of the approval up to date.
    SlackUpdate,
    /// DM the approvers who have not voted (or reply in the thread), then plan the next.
    SlackRemind,
    /// POST the decision to the request's `callback_url` (payload: `{"status": …}`).
    Callback,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SlackPost => "slack_post",
            JobKind::SlackUpdate => "slack_update",
            JobKind::SlackRemind => "slack_remind",
            JobKind::Callback => "callback",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            JobKind::SlackPost,
            JobKind::SlackUpdate,
            JobKind::SlackRemind,
            JobKind::Callback,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == s)
    }
}

/// Where a [`JobKind::SlackPost`] goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostTarget {
    pub channel: String,
    /// `main`, `escalation` or `dm`.
    pub kind: String,
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub approval_id: ApprovalId,
    pub kind: JobKind,
    pub payload: Value,
    pub due_at: DateTime<Utc>,
}

/// A job claimed from the table (its lease runs until it reports back).
#[derive(Debug, Clone, PartialEq)]
pub struct DueJob {
    pub id: i64,
    pub approval_id: ApprovalId,
    pub kind: JobKind,
    pub payload: Value,
    /// Including this one.
    pub attempts: i32,
}

/// How a claimed job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done. `posted`: messages it created; `rendered`: messages now showing
    /// `version`; `next`: a job to schedule after this one (the next reminder).
    Delivered {
        posted: Vec<PostedMessage>,
        rendered: Vec<MessageKey>,
        version: i64,
        next: Option<NewJob>,
    },
    /// Try again at `at` (backoff, or Slack's Retry-After).
    Retry { at: DateTime<Utc>, error: String },
    /// Give up: the error will not go away by retrying. Counted as undelivered.
    Dead { error: String },
}

/// A Slack message's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub channel: String,
    pub ts: String,
}

/// A message signoff posted for an approval.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedMessage {
    pub approval_id: ApprovalId,
    pub channel: String,
    pub ts: String,
    pub kind: String,
    pub permalink: Option<String>,
    /// The approval version the message shows.
    pub rendered_version: i64,
}

/// How long a claimed delivery is ours; a crashed holder loses it after this.
pub const LEASE: Duration = Duration::from_secs(60);

/// Which deliveries this process makes (Slack only when a bot token is configured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deliveries {
    pub slack: bool,
}

/// The jobs that a change at `now` from `before` (None: just created) to `after` calls for.
pub fn plan(
    before: Option<&Approval>,
    after: &Approval,
    deliveries: Deliveries,
    now: DateTime<Utc>,
) -> Vec<NewJob> {
    let mut jobs = Vec::new();
    let job = |kind, payload, due_at| NewJob {
        approval_id: after.id,
        kind,
        payload,
        due_at,
    };
    let slack_channel = after.routing.channel.as_ref().filter(|_| deliveries.slack);
    let was = before.map(|b| b.status);
    if was != Some(after.status) && after.callback_url.is_some() && is_final(after.status) {
        jobs.push(job(
            JobKind::Callback,
            json!({ "status": after.status }),
            now,
        ));
    }
    match before {
        None => {
            // Only requests that wait for people are posted; instant decisions are in
            // the audit log and the API.
            if let (Some(channel), Status::Pending) = (slack_channel, after.status) {
                let post = |channel: &str, kind: &str| {
                    json!(PostTarget {
                        channel: channel.into(),
                        kind: kind.into()
                    })
                };
                jobs.push(job(JobKind::SlackPost, post(channel, "main"), now));
                let routing = &after.routing;
                if let Some(secs) = routing.remind_after_secs {
                    jobs.push(job(JobKind::SlackRemind, json!({}), after_secs(now, secs)));
                }
                if let (Some(secs), Some(escalation)) =
                    (routing.escalate_after_secs, &routing.escalation_channel)
                {
                    jobs.push(job(
                        JobKind::SlackPost,
                        post(escalation, "escalation"),
                        after_secs(now, secs),
                    ));
                }
            }
        }
        Some(before) => {
            let changed = before.status != after.status
                || before.votes != after.votes
                || before.parameters != after.parameters;
            if changed && slack_channel.is_some() {
                jobs.push(job(JobKind::SlackUpdate, json!({}), now));
            }
        }
    }
    jobs
}

/// Statuses a callback announces.
fn is_final(status: Status) -> bool {
    matches!(
        status,
        Status::Approved | Status::Denied | Status::Expired | Status::Cancelled
    )
}

/// `now` plus whole seconds (saturating far in the future).
pub fn after_secs(now: DateTime<Utc>, secs: u64) -> DateTime<Utc> {
    let secs = i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .min(100 * 365 * 86_400);
    now + chrono::Duration::seconds(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::machine::{self, Event};
    use crate::approval::{Decision, NewApproval};
    use crate::policy::Policy;

    fn opened(action_tool: &str) -> Approval {
        let policy = Policy::from_toml_str(
            "[defaults]\nchannel = \"C0APPROVALS\"\n[[rules]]\ntools = [\"search_*\"]\ntier = \"low\"\n",
        )
        .unwrap();
        let request = NewApproval::new(action_tool, json!({}));
        let class = policy.classify(action_tool, &request.parameters, None);
        machine::open(ApprovalId::new(), request, &class, Utc::now()).next
    }

    const SLACK: Deliveries = Deliveries { slack: true };

    fn kinds(jobs: &[NewJob]) -> Vec<JobKind> {
        jobs.iter().map(|j| j.kind).collect()
    }

    #[test]
    fn reminders_escalation_and_callbacks_are_planned_from_the_routing() {
        let mut a = opened("deploy");
        a.routing.remind_after_secs = Some(1800);
        a.routing.escalate_after_secs = Some(7200);
        a.routing.escalation_channel = Some("C0MANAGERS".into());
        a.callback_url = Some("https://agent.example/cb".into());
        let jobs = plan(None, &a, SLACK, a.created_at);
        assert_eq!(
            kinds(&jobs),
            [JobKind::SlackPost, JobKind::SlackRemind, JobKind::SlackPost]
        );
        assert_eq!(
            jobs[1].due_at,
            a.created_at + chrono::Duration::seconds(1800)
        );
        assert_eq!(jobs[2].payload["kind"], "escalation");
        assert_eq!(jobs[2].payload["channel"], "C0MANAGERS");
        assert_eq!(
            jobs[2].due_at,
            a.created_at + chrono::Duration::seconds(7200)
        );

        let deny = Event::Vote {
            user: "U1".into(),
            decision: Decision::Deny,
            reason: None,
        };
        let denied = machine::apply(&a, &deny, a.created_at).unwrap().next;
        let jobs = plan(Some(&a), &denied, Deliveries::default(), a.created_at);
        assert_eq!(kinds(&jobs), [JobKind::Callback], "callbacks need no Slack");
        assert_eq!(jobs[0].payload["status"], "denied");
    }

    #[test]
    fn a_pending_request_gets_one_channel_post_due_now() {
        let a = opened("deploy");
        let jobs = plan(None, &a, SLACK, a.created_at);
        assert_eq!(kinds(&jobs), [JobKind::SlackPost]);
        assert_eq!(jobs[0].due_at, a.created_at);
        assert_eq!(jobs[0].payload["channel"], "C0APPROVALS");
        assert!(
            plan(None, &a, Deliveries::default(), a.created_at).is_empty(),
            "no Slack, no post (its expiry is its own expires_at, not a job)"
        );
    }

    #[test]
    fn auto_approved_requests_are_not_posted() {
        let a = opened("search_x");
        assert_eq!(a.status, Status::Approved);
        assert!(plan(None, &a, SLACK, a.created_at).is_empty());
    }

    #[test]
    fn votes_and_decisions_update_the_messages() {
        let a = opened("deploy");
        let vote = Event::Vote {
            user: "U1".into(),
            decision: Decision::Approve,
            reason: None,
        };
        let after = machine::apply(&a, &vote, a.created_at).unwrap().next;
        let jobs = plan(Some(&a), &after, SLACK, a.created_at);
        assert_eq!(kinds(&jobs), [JobKind::SlackUpdate]);
        assert!(plan(Some(&a), &after, Deliveries::default(), a.created_at).is_empty());
    }
}
