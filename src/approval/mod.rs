//! The approval domain: plain data types and the pure state machine ([`machine`]).
//! Nothing in here does IO; the store persists what these functions decide.

pub mod machine;
pub mod names;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ids::{Approver, ChannelId};
pub use crate::policy::Tier;
pub use machine::{Decider, Event, Happening, Rejection, Transition, parameters_fingerprint};

/// The id of one approval (a UUID, shown in full in the API and shortened in Slack).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(example = "1b0c6f2e-7d4a-4c1e-9a53-2f8e0b7c4d19")]
pub struct ApprovalId(pub Uuid);

impl ApprovalId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The first 8 hex digits: what people type in `/approvals status`.
    pub fn short(&self) -> String {
        self.0.simple().to_string()[..8].to_string()
    }
}

impl Default for ApprovalId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ApprovalId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where an approval is in its life. `pending → approved | denied | expired | cancelled`,
/// `approved → executed | expired`; the rest are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Executed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Expired,
        Status::Executed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Executed => "executed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Approved)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// One person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

impl FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approve" => Ok(Decision::Approve),
            "deny" => Ok(Decision::Deny),
            other => Err(format!("unknown decision {other:?}")),
        }
    }
}

/// A recorded vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"user": "U0ALICE", "decision": "approve", "at": "2026-11-23T12:04:10Z"}))]
pub struct Vote {
    /// Who voted: a Slack user id, or the name given to `signoff decide --as`.
    pub user: String,
    pub decision: Decision,
    pub at: DateTime<Utc>,
    /// A denial's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where and when people are asked, fixed when the approval is classified so that a
/// later policy change does not rewrite running approvals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    pub channel: Option<ChannelId>,
    #[serde(default)]
    pub approvers: Vec<Approver>,
    /// Index of the policy rule that matched, if any.
    pub rule: Option<usize>,
    /// That rule's fingerprint (`policy::Rule::fingerprint`): after the policy file
    /// changes, the index may name another rule. `None` when no rule matched, or on an
    /// approval classified before fingerprints were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_fingerprint: Option<String>,
    pub remind_after_secs: Option<u64>,
    pub remind_every_secs: Option<u64>,
    pub escalate_after_secs: Option<u64>,
    pub escalation_channel: Option<ChannelId>,
    /// Who may decide as approvers too once the request is escalated (the policy's
    /// `escalation_approvers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation_approvers: Vec<Approver>,
    /// The policy's `batch_window`: look-alike requests within it share one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_window_ms: Option<u64>,
    /// The MCP tool's annotations the request came with (the caller's words), kept so
    /// that an edit of its parameters is classified as the request was
    /// ([`crate::policy::Policy::check_edit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

impl Routing {
    /// Whether `user` is one of the approvers, where the list alone answers it:
    /// `Some(true)` when nobody is listed (anyone who can see the message decides) or
    /// `user` is listed by name, `Some(false)` when only other people are listed,
    /// `None` when a user group is listed (its members are Slack's to tell; see
    /// `slack::approvers`). Once `escalated`, the escalation approvers are listed too.
    pub fn lists(&self, user: &str, escalated: bool) -> Option<bool> {
        if self.approvers.is_empty() {
            return Some(true);
        }
        let mut groups = false;
        for approver in self.approvers_when(escalated) {
            match approver {
                Approver::User(listed) if listed.as_str() == user => return Some(true),
                Approver::User(_) => {}
                Approver::Group(_) => groups = true,
            }
        }
        (!groups).then_some(false)
    }

    /// The approvers listed, and the escalation approvers too once `escalated`.
    pub fn approvers_when(&self, escalated: bool) -> impl Iterator<Item = &Approver> {
        let managers = if escalated {
            self.escalation_approvers.as_slice()
        } else {
            &[]
        };
        self.approvers.iter().chain(managers)
    }
}

/// One approval as stored: the request, its classification and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: ApprovalId,
    pub tool_name: String,
    /// The MCP server the tool belongs to (the proxy's `--name`); `None` outside MCP.
    pub server: Option<String>,
    /// The parameters that may run: the requested ones, or the edited ones after
    /// "Edit & approve".
    pub parameters: Value,
    /// The parameters as first requested, kept when an approver edited them.
    pub original_parameters: Option<Value>,
    pub risk_tier: Tier,
    pub status: Status,
    pub requested_by: Option<String>,
    /// Name of the API token that asked; `None` for rows inserted straight into the table.
    pub token_name: Option<String>,
    pub summary: Option<String>,
    pub context: Option<String>,
    pub decided_by: Option<String>,
    /// How the decision was made when not in Slack nor by the policy:
    /// [`BREAK_GLASS_VIA`] for `signoff decide`.
    pub decided_via: Option<String>,
    pub decision_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub required_approvals: u32,
    pub votes: Vec<Vote>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub executed_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub routing: Routing,
    /// Bumped on every change: the store's compare-and-set guard.
    pub version: i64,
}

impl Approval {
    /// Distinct approve votes so far.
    pub fn approvals(&self) -> usize {
        self.votes
            .iter()
            .filter(|vote| vote.decision == Decision::Approve)
            .count()
    }

    pub fn has_voted(&self, user: &str) -> bool {
        self.votes.iter().any(|vote| vote.user == user)
    }

    /// Whether `user` is the requester, who never decides their own request: the
    /// `requested_by` the caller gave (spaces around it and letter case aside, or as a
    /// Slack mention: `<@U0BOB|bob>` is `U0BOB`), or the name of the API token that
    /// asked, which DESIGN makes the requester's identity (a token named after a
    /// person's Slack user id is that person asking).
    pub fn is_requester(&self, user: &str) -> bool {
        let named = |who: Option<&str>| {
            who.map(str::trim).is_some_and(|who| {
                let mentioned = crate::ids::mentioned_user(who).unwrap_or(who);
                mentioned.eq_ignore_ascii_case(user)
            })
        };
        named(self.requested_by.as_deref()) || named(self.token_name.as_deref())
    }

    /// When and where the policy escalates the request, if it does: `escalate_after`
    /// from its creation, to `escalation_channel`, for a request posted to a channel
    /// (and still waiting then: see [`crate::jobs`], which plans the post).
    pub fn escalation(&self) -> Option<(DateTime<Utc>, &ChannelId)> {
        let routing = &self.routing;
        let secs = routing
            .escalate_after_secs
            .filter(|_| routing.channel.is_some())?;
        let channel = routing.escalation_channel.as_ref()?;
        Some((crate::jobs::after_secs(self.created_at, secs), channel))
    }

    /// Whether `user` is one of its approvers at `now` (see [`Routing::lists`]).
    pub fn lists(&self, user: &str, now: DateTime<Utc>) -> Option<bool> {
        self.routing.lists(user, self.escalated_by(now))
    }

    /// Whether the request has been escalated by `now`: its policy escalates it and it
    /// was still waiting then.
    pub fn escalated_by(&self, now: DateTime<Utc>) -> bool {
        let Some((due, _)) = self.escalation() else {
            return false;
        };
        let waited_until = self
            .decision_at
            .unwrap_or(self.expires_at)
            .min(self.expires_at);
        due <= now && due < waited_until
    }

    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// Whether people may still decide it at `now`: pending, and not past its expiry
    /// (which the timers may not have marked yet).
    pub fn is_pending_at(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Pending && !self.is_expired_at(now)
    }

    /// The approval as a reader should see it at `now`: one still pending or approved
    /// past its expiry is expired, as the scheduler's next pass will record it (in
    /// the moment between, it would show as open a request nobody can decide or run
    /// any more). What is stored is untouched.
    pub fn as_seen_at(self, now: DateTime<Utc>) -> Approval {
        if self.status.is_terminal() || !self.is_expired_at(now) {
            return self; // the usual case, without the machine's copy
        }
        match machine::apply(&self, &Event::Expire, now) {
            // A pending one was decided by nobody, at its expiry (the same on every
            // read; the pass records its own time).
            Ok(expired) => Approval {
                version: self.version,
                decision_at: self.decision_at.or(Some(self.expires_at)),
                ..expired.next
            },
            Err(_) => self,
        }
    }

    /// Decided outside Slack by an operator with `signoff decide` (`decided_by` is the
    /// name they gave).
    pub fn is_break_glass(&self) -> bool {
        self.decided_via.as_deref() == Some(BREAK_GLASS_VIA)
    }
}

/// `decided_via` of a break-glass decision (`signoff decide`), also the `via` of its
/// audit events.
pub const BREAK_GLASS_VIA: &str = "cli";

/// The longest `summary` or `context` an approval keeps, in bytes (UTF-8): a caller's
/// longer one is refused, a policy template's rendering longer is cut.
pub const MAX_TEXT_BYTES: usize = 10_000;

/// What a caller asks for (already validated at the edge).
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    pub tool_name: String,
    pub parameters: Value,
    /// The MCP server the tool belongs to.
    pub server: Option<String>,
    /// The tool's annotations as the MCP server lists them (hints, never proof).
    pub annotations: Option<Value>,
    pub summary: Option<String>,
    pub context: Option<String>,
    pub requested_by: Option<String>,
    pub requested_tier: Option<Tier>,
    pub expires_in: Option<std::time::Duration>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub token_name: Option<String>,
}

impl NewApproval {
    /// A request with only the required parts; set the optional fields as needed.
    pub fn new(tool_name: impl Into<String>, parameters: Value) -> Self {
        Self {
            tool_name: tool_name.into(),
            parameters,
            server: None,
            annotations: None,
            summary: None,
            context: None,
            requested_by: None,
            requested_tier: None,
            expires_in: None,
            idempotency_key: None,
            callback_url: None,
            token_name: None,
        }
    }
}
