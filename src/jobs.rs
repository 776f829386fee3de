//! Durable work for one approval: deliveries (the outbox), each due at a time, planned
//! by a pure function and written in the same transaction as the state change that
//! causes them. The [`crate::scheduler`] claims due deliveries with a lease ([`LEASE`]);
//! they run in [`crate::outbox`] and report back.
//!
//! Two timers need no job row until they fire, both kept on the approval's own row and
//! fired by the store (`Store::fire_due`): its expiry (`expires_at`), and its nudges,
//! the first reminder and the escalation post ([`first_nudge`] sets `nudge_at`, the
//! earlier of the two; [`nudges`] turns those due into deliveries when it comes). A
//! request decided before then (most are) never writes them at all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::approval::{Approval, ApprovalId, Status};
use crate::ids::ChannelId;

/// What a delivery does. Stored as two columns, its `kind` and the rest as `payload`
/// (adjacently tagged), so a job's shape is checked when it is read, not when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Job {
    /// Post the approval message to a channel.
    SlackPost {
        channel: ChannelId,
        /// `main` or `escalation`.
        kind: MessageKind,
        /// Who asked (the API token): a channel's posts are paced fairly across
        /// requesters. Absent in rows written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester: Option<String>,
        /// The approval leads a batch (`batch_window`): the post closes the batch and
        /// lists its members (see `store::ops::batching`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
    },
    /// Bring every posted message of the approval up to date.
    SlackUpdate {},
    /// DM the approvers who have not voted (or reply in the thread), then plan the next.
    SlackRemind {
        /// With no approvers list, the reminder is a reply in the thread of the
        /// approval's message in this channel: paced with the channel's posts. `None`
        /// for DMs, and in rows written before it was recorded (not paced).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_in: Option<ChannelId>,
    },
    /// Look in the DM history of `users` for the reminder DMs that job `reminder` sent
    /// but could not record (no answer from Slack by its deadline, or a call that timed
    /// out: it may have taken them), record those found (so that they are brought up
    /// to date like any message, and lose their buttons at the decision); DM `unsent`,
    /// whose DMs the reminder had no time to post (the rest of its round; absent in
    /// rows written before it was recorded); then plan the next reminder, due at
    /// `next_at`.
    SlackRemindLookup {
        reminder: i64,
        users: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unsent: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_at: Option<DateTime<Utc>>,
    },
    /// Note in the thread of the approval's channel message that it was escalated to
    /// `channel`: after the escalation's post, retried when Slack rate-limits it.
    SlackEscalationNote {
        channel: ChannelId,
        /// The channel of the approval's message, where the note is posted: paced with
        /// its posts. Absent in rows written before it was recorded (not paced).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_in: Option<ChannelId>,
    },
    /// POST the decision to the request's `callback_url`.
    Callback {
        status: Status,
        /// Who asked (the API token): the callbacks' slots are shared fairly across
        /// requesters (`outbox::slots`). Absent in rows written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester: Option<String>,
    },
    /// Tell a channel that a requester's requests are refused (`max_pending`). Jobs
    /// belong to an approval: this one to the requester's newest waiting approval.
    SlackThrottled {
        channel: ChannelId,
        requester: String,
        /// Its requests waiting when it was first refused, and the limit it hit.
        waiting: i64,
        limit: u32,
    },
}

/// The `kind` of a callback's row ([`Job::Callback`]); the reads of [`Due`] and the
/// partial indexes they go through (migrations SQLite 0017, PostgreSQL 0024) spell it
/// out.
pub const CALLBACK_KIND: &str = "callback";

/// Which due jobs a read takes (`Store::due_jobs`). The scheduler's delivery pass and
/// its callbacks' loop each read their own, through a partial index of their own, so
/// that neither walks the other's backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Every kind but callbacks (kinds only a newer signoff knows included): the
    /// delivery pass's.
    Deliveries,
    /// Callbacks alone, earliest first: the callbacks' loop's.
    Callbacks,
    /// Callbacks alone, in turns across requesters (each one's earliest, then each
    /// one's second…): the callbacks' loop's when it shares its slots fairly. It
    /// reads every callback due (a sort, not an index's first rows), so the loop
    /// takes it at most once a second while one requester alone has callbacks due.
    CallbacksInTurns,
    /// Every kind, earliest first (`Store::claim_jobs`, for tests and tools).
    All,
}

impl Job {
    /// The `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::SlackPost { .. } => "slack_post",
            Job::SlackUpdate {} => "slack_update",
            Job::SlackRemind { .. } => "slack_remind",
            Job::SlackRemindLookup { .. } => "slack_remind_lookup",
            Job::SlackEscalationNote { .. } => "slack_escalation_note",
            Job::Callback { .. } => CALLBACK_KIND,
            Job::SlackThrottled { .. } => "slack_throttled",
        }
    }

    /// The `payload` column.
    pub fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("payload").unwrap_or_else(|| json!({})),
            _ => json!({}),
        }
    }

    /// The job a row holds; `None` for a kind or payload this version does not know
    /// (written by a newer signoff: it waits for that version).
    pub fn from_columns(kind: &str, payload: Value) -> Option<Job> {
        serde_json::from_value(json!({ "kind": kind, "payload": payload })).ok()
    }
}

/// Which of an approval's messages: the channel post, its escalation, a reminder DM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Main,
    Escalation,
    Dm,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Main => "main",
            MessageKind::Escalation => "escalation",
            MessageKind::Dm => "dm",
        }
    }

    pub fn parse(text: &str) -> Option<MessageKind> {
        [MessageKind::Main, MessageKind::Escalation, MessageKind::Dm]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub approval_id: ApprovalId,
    pub job: Job,
    pub due_at: DateTime<Utc>,
}

/// A job claimed from the table (its lease runs until it reports back).
#[derive(Debug, Clone, PartialEq)]
pub struct DueJob {
    pub id: i64,
    pub approval_id: ApprovalId,
    pub job: Job,
    /// Including this one.
    pub attempts: i32,
    /// When the claim's lease ends (`locked_until` as the claim wrote it), `None`
    /// until claimed. It fences the report: a job finishes, retries or dies only while
    /// its row still holds this lease, so a holder whose lease ran out (and was claimed
    /// again by another replica, or finished by it) changes nothing.
    pub lease_until: Option<DateTime<Utc>>,
}

/// The deliveries due at a moment, as read (of the kinds a [`Due`] takes): none is
/// leased yet (see `Store::claim_due`), and each one's `attempts` does not count the
/// next.
#[derive(Debug, Default)]
pub struct DueJobs {
    pub jobs: Vec<DueJob>,
    /// Rows this version cannot read (a newer signoff wrote them): leased with the
    /// rest and left to that version, so that they do not come back at every pass.
    pub foreign: Vec<i64>,
}

impl DueJobs {
    /// Rows read, foreign ones included.
    pub fn len(&self) -> usize {
        self.jobs.len() + self.foreign.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A claimed job to put back: its id, the lease of the claim that took it
/// ([`DueJob::lease_until`]), and when it is due again.
pub type PutBack = (i64, Option<DateTime<Utc>>, DateTime<Utc>);

/// Due jobs split by pacing: those to run now, and those to come back at the paired
/// times (job id, when).
pub type Paced = (Vec<DueJob>, Vec<(i64, DateTime<Utc>)>);

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
    /// `next`: a job to schedule all the same (a reminder given up plans the next one,
    /// so that one refusal does not end the chain of reminders).
    Dead { error: String, next: Option<NewJob> },
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
    pub kind: MessageKind,
    pub permalink: Option<String>,
    /// The approval version the message shows.
    pub rendered_version: i64,
}

/// How long a claimed delivery is ours by default; a crashed holder loses it after
/// this (the scheduler takes its lease as a setting).
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

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
    let new = |job, due_at| NewJob {
        approval_id: after.id,
        job,
        due_at,
    };
    let slack_channel = after.routing.channel.as_ref().filter(|_| deliveries.slack);
    let was = before.map(|b| b.status);
    if was != Some(after.status) && after.callback_url.is_some() && is_final(after.status) {
        jobs.push(new(
            Job::Callback {
                status: after.status,
                requester: after.token_name.clone(),
            },
            now,
        ));
    }
    match before {
        None => {
            // Only requests that wait for people are posted; instant decisions are in
            // the audit log and the API.
            if let (Some(channel), Status::Pending) = (slack_channel, after.status) {
                // Its reminders and escalation wait on its row ([`first_nudge`]).
                jobs.push(new(post(after, channel, MessageKind::Main), now));
            }
        }
        Some(before) => {
            let changed = before.status != after.status
                || before.votes != after.votes
                || before.parameters != after.parameters;
            if changed && slack_channel.is_some() {
                jobs.push(new(Job::SlackUpdate {}, now));
            }
        }
    }
    jobs
}

/// When `approval`'s first nudge (its first reminder or its escalation post) falls
/// due, if it waits for people in a channel and its policy nudges: its row's
/// `nudge_at`, set as it opens. No job is written until then.
pub fn first_nudge(approval: &Approval) -> Option<DateTime<Utc>> {
    nudge_times(approval).map(|(at, _)| at).min()
}

/// The nudges of `approval` that fall due from `from` (its row's `nudge_at`, the
/// earliest not yet planned) up to `now`, each a delivery due at its own time; and
/// when the next one falls due (its new `nudge_at`), `None` when none is left. Nothing
/// once it is decided or expired (each reminder planned by then runs as it always has,
/// and plans the next, `remind_every` later), or without Slack (a process without it
/// does not fire nudges: `work::fire_nudges`).
pub fn nudges(
    approval: &Approval,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    deliveries: Deliveries,
) -> (Vec<NewJob>, Option<DateTime<Utc>>) {
    if !deliveries.slack || approval.is_expired_at(now) {
        return (Vec::new(), None);
    }
    let mut due = Vec::new();
    let mut next: Option<DateTime<Utc>> = None;
    for (at, job) in nudge_times(approval).filter(|(at, _)| *at >= from) {
        if at <= now {
            due.push(NewJob {
                approval_id: approval.id,
                job,
                due_at: at,
            });
        } else {
            next = Some(next.map_or(at, |next| next.min(at)));
        }
    }
    (due, next)
}

/// The first reminder and the escalation post of a pending approval with a channel,
/// each with its time, as its policy sets them.
fn nudge_times(approval: &Approval) -> impl Iterator<Item = (DateTime<Utc>, Job)> + '_ {
    let routing = &approval.routing;
    let waits = approval.status == Status::Pending && routing.channel.is_some();
    let remind = routing
        .remind_after_secs
        .map(|secs| (after_secs(approval.created_at, secs), reminder(approval)));
    let escalate = approval
        .escalation()
        .map(|(at, channel)| (at, post(approval, channel, MessageKind::Escalation)));
    remind.into_iter().chain(escalate).filter(move |_| waits)
}

/// A reminder of `approval`: DMs to its approvers, or with no approvers list a reply
/// in its message's thread (in its channel, whose pace it keeps).
pub fn reminder(approval: &Approval) -> Job {
    let routing = &approval.routing;
    Job::SlackRemind {
        thread_in: routing
            .approvers
            .is_empty()
            .then(|| routing.channel.clone())
            .flatten(),
    }
}

/// A post of `approval` to `channel`.
fn post(approval: &Approval, channel: &ChannelId, kind: MessageKind) -> Job {
    Job::SlackPost {
        channel: channel.clone(),
        kind,
        requester: approval.token_name.clone(),
        batch: false,
    }
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

    fn kinds(jobs: &[NewJob]) -> Vec<&'static str> {
        jobs.iter().map(|j| j.job.kind()).collect()
    }

    fn routed(a: &mut Approval) {
        a.routing.remind_after_secs = Some(1800);
        a.routing.escalate_after_secs = Some(7200);
        a.routing.escalation_channel = Some("C0MANAGERS".into());
        a.token_name = Some("billing-mcp".into());
        a.expires_at = after(a, 4 * 3600);
    }

    fn after(a: &Approval, secs: i64) -> DateTime<Utc> {
        a.created_at + chrono::Duration::seconds(secs)
    }

    #[test]
    fn a_new_request_writes_its_post_and_leaves_its_nudges_to_its_row() {
        let mut a = opened("deploy");
        routed(&mut a);
        a.callback_url = Some("https://agent.example/cb".into());
        a.token_name = Some("agent".into());
        let jobs = plan(None, &a, SLACK, a.created_at);
        assert_eq!(kinds(&jobs), ["slack_post"]);
        assert_eq!(first_nudge(&a), Some(after(&a, 1800)), "the reminder first");

        let deny = Event::Vote {
            by: crate::approval::Decider::approver("U1"),
            decision: Decision::Deny,
            reason: None,
            parameters_shown: None,
        };
        let denied = machine::apply(&a, &deny, a.created_at).unwrap().next;
        let jobs = plan(Some(&a), &denied, Deliveries::default(), a.created_at);
        assert_eq!(kinds(&jobs), ["callback"], "callbacks need no Slack");
        assert_eq!(
            jobs[0].job,
            Job::Callback {
                status: Status::Denied,
                requester: Some("agent".into()),
            }
        );
        assert_eq!(first_nudge(&denied), None, "decided: nobody to nudge");
        let mut quiet = opened("deploy");
        quiet.routing.escalate_after_secs = Some(7200);
        assert_eq!(first_nudge(&quiet), None, "an escalation needs its channel");
    }

    #[test]
    fn nudges_fall_due_one_after_the_other_each_at_its_own_time() {
        let mut a = opened("deploy");
        routed(&mut a);
        let first = first_nudge(&a).unwrap();
        assert_eq!(
            nudges(&a, first, after(&a, 1799), SLACK),
            (vec![], Some(first))
        );

        let (due, next) = nudges(&a, first, after(&a, 1801), SLACK);
        assert_eq!(kinds(&due), ["slack_remind"]);
        assert_eq!(due[0].due_at, first);
        assert_eq!(next, Some(after(&a, 7200)));

        let (due, next) = nudges(&a, after(&a, 7200), after(&a, 7200), SLACK);
        assert_eq!(
            due,
            [NewJob {
                approval_id: a.id,
                job: Job::SlackPost {
                    channel: "C0MANAGERS".into(),
                    kind: MessageKind::Escalation,
                    requester: Some("billing-mcp".into()),
                    batch: false,
                },
                due_at: after(&a, 7200),
            }]
        );
        assert_eq!(next, None);

        // A pass that comes late plans both, each due at its time.
        let (due, next) = nudges(&a, first, after(&a, 8000), SLACK);
        assert_eq!(kinds(&due), ["slack_remind", "slack_post"]);
        assert_eq!((due[0].due_at, due[1].due_at), (first, after(&a, 7200)));
        assert_eq!(next, None);
    }

    #[test]
    fn nothing_nudges_a_decided_or_expired_request_or_without_slack() {
        let mut a = opened("deploy");
        routed(&mut a);
        let first = first_nudge(&a).unwrap();
        let at = after(&a, 1800);
        assert_eq!(nudges(&a, first, at, Deliveries::default()), (vec![], None));
        let mut decided = a.clone();
        decided.status = Status::Approved;
        assert_eq!(nudges(&decided, first, at, SLACK), (vec![], None));
        let mut expiring = a.clone();
        expiring.expires_at = at;
        assert_eq!(nudges(&expiring, first, at, SLACK), (vec![], None));
    }

    #[test]
    fn every_job_reads_back_from_its_two_columns_as_rows_store_them() {
        let all = [
            Job::SlackPost {
                channel: "C1".into(),
                kind: MessageKind::Escalation,
                requester: Some("agent".into()),
                batch: false,
            },
            Job::SlackPost {
                channel: "C1".into(),
                kind: MessageKind::Main,
                requester: Some("agent".into()),
                batch: true,
            },
            Job::SlackUpdate {},
            Job::SlackRemind { thread_in: None },
            Job::SlackRemind {
                thread_in: Some("C1".into()),
            },
            Job::SlackEscalationNote {
                channel: "C2".into(),
                thread_in: Some("C1".into()),
            },
            Job::SlackRemindLookup {
                reminder: 7,
                users: vec!["U1".into(), "U2".into()],
                unsent: vec!["U3".into()],
                next_at: Some(chrono::DateTime::UNIX_EPOCH),
            },
            Job::Callback {
                status: Status::Expired,
                requester: Some("billing-mcp".into()),
            },
            Job::SlackThrottled {
                channel: "C1".into(),
                requester: "billing-mcp".into(),
                waiting: 20,
                limit: 20,
            },
        ];
        for job in all {
            assert_eq!(Job::from_columns(job.kind(), job.payload()), Some(job));
        }
        // Rows as the store has always written them.
        assert_eq!(
            Job::from_columns("slack_post", json!({"channel": "C1", "kind": "main"})),
            Some(Job::SlackPost {
                channel: "C1".into(),
                kind: MessageKind::Main,
                requester: None,
                batch: false,
            })
        );
        assert_eq!(
            Job::from_columns("slack_update", json!({})),
            Some(Job::SlackUpdate {})
        );
        assert_eq!(
            Job::from_columns("slack_remind", json!({})),
            Some(Job::SlackRemind { thread_in: None })
        );
        assert_eq!(
            Job::from_columns("slack_escalation_note", json!({"channel": "C2"})),
            Some(Job::SlackEscalationNote {
                channel: "C2".into(),
                thread_in: None
            })
        );
        assert_eq!(
            Job::from_columns("callback", json!({"status": "approved"})),
            Some(Job::Callback {
                status: Status::Approved,
                requester: None,
            })
        );
        assert_eq!(
            Job::from_columns("teleport", json!({})),
            None,
            "a newer signoff's"
        );
        assert_eq!(Job::from_columns("slack_post", json!({"channel": 5})), None);
    }

    #[test]
    fn a_pending_request_gets_one_channel_post_due_now() {
        let a = opened("deploy");
        let jobs = plan(None, &a, SLACK, a.created_at);
        assert_eq!(kinds(&jobs), ["slack_post"]);
        assert_eq!(jobs[0].due_at, a.created_at);
        assert_eq!(
            jobs[0].job.payload(),
            json!({"channel": "C0APPROVALS", "kind": "main"})
        );
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
            by: crate::approval::Decider::approver("U1"),
            decision: Decision::Approve,
            reason: None,
            parameters_shown: None,
        };
        let after = machine::apply(&a, &vote, a.created_at).unwrap().next;
        let jobs = plan(Some(&a), &after, SLACK, a.created_at);
        assert_eq!(kinds(&jobs), ["slack_update"]);
        assert!(plan(Some(&a), &after, Deliveries::default(), a.created_at).is_empty());
    }
}
