//! Approval policy: which tool calls are auto-approved, need a human, or are
//! denied, and where/how the approval request is routed.
//!
//! A policy is a TOML file with three optional parts:
//!
//! ```toml
//! [defaults]                      # routing/timing for every approval
//! channel = "C0APPROVALS"
//! approvers = ["U0ALICE", "S0ONCALL"]
//! required_approvals = 1          # 1..=20
//! max_pending = 20                # one requester's waiting requests at most; 0: no limit
//! expires_after = "4h"            # humantime; built-in 1h
//! remind_after = "30m"
//! remind_every = "1h"
//! escalate_after = "2h"
//! escalation_channel = "C0MANAGERS"
//! escalation_approvers = ["S0MANAGERS"] # decide too once escalated; built-in: nobody more
//! batch_window = "30s"            # look-alike requests in one message; built-in off
//!
//! [tiers]                         # auto_approve | require_approval | deny
//! low = "auto_approve"
//! medium = "require_approval"
//! high = "deny"
//!
//! [[rules]]                       # first match wins, in file order
//! tools = ["deploy_*"]            # globs on the whole name, any case
//! servers = ["git", "github*"]    # optional globs on the MCP server's name
//! case_sensitive = false          # true: globs match the case as written
//! when = "params.env == 'prod'"   # optional CEL over `params`, `tool`, `server`, `annotations`
//! tier = "medium"                 # low | medium | high
//! required_approvals = 2          # any [defaults] key may be overridden
//! summary = "Deploy {service} to {env}"
//! ```
//!
//! Fail-safe rules: a tool no rule matches is `medium`; a `when` that fails
//! to evaluate counts as if its rule might have matched: the first such rule
//! routes the call (its approvers, approval count and channel), the result is
//! raised to at least that rule's tier (and at least `medium`), and the call is
//! never auto-approved; a requested tier can raise the policy's tier but never
//! lower it, nor make its action laxer (under `[tiers]` where a higher tier has a
//! laxer action, the stricter action stands).
//!
//! Errors name their location: TOML problems as "line L, column C", semantic
//! ones by field path. Rule indexes are **0-based** everywhere (`rules[0]` is
//! the first `[[rules]]` entry), in errors, in [`Classification::rule`] and
//! in the check report.

mod check;
mod classify;
mod condition;
mod error;
mod load;
mod route;
mod schedule;
mod template;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use globset::GlobSet;

use crate::ids::{Approver, ChannelId};

pub use check::{SampleCall, check_report, sample_calls};
pub use classify::{Classified, Denied};
use condition::Condition;
pub use error::PolicyError;
pub use route::MAX_DURATION;
pub use template::render_summary;

/// Risk tier of a tool call, ordered `Low < Medium < High`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Read-only or harmless.
    Low,
    /// Needs a look; the fail-safe default.
    Medium,
    /// Dangerous.
    High,
}

impl Tier {
    /// The lowercase name used in policy files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Low => "low",
            Tier::Medium => "medium",
            Tier::High => "high",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error from parsing a [`Tier`] or [`TierAction`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}, expected one of {expected}")]
pub struct ParseNameError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for Tier {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Tier::Low),
            "medium" => Ok(Tier::Medium),
            "high" => Ok(Tier::High),
            _ => Err(ParseNameError {
                kind: "tier",
                value: s.to_string(),
                expected: "low, medium, high",
            }),
        }
    }
}

/// What happens to a call of a given tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierAction {
    /// Let the call through without asking anyone.
    AutoApprove,
    /// Post an approval request and wait for a decision.
    RequireApproval,
    /// Refuse the call outright.
    Deny,
}

impl TierAction {
    /// The snake_case name used in policy files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TierAction::AutoApprove => "auto_approve",
            TierAction::RequireApproval => "require_approval",
            TierAction::Deny => "deny",
        }
    }

    /// The stricter of two actions: `Deny`, then `RequireApproval`, then `AutoApprove`.
    /// `[tiers]` need not be ordered (`high = "auto_approve"` is allowed), so a higher
    /// tier can have a laxer action; where a call could be taken at either, this one
    /// stands.
    pub fn stricter(self, other: TierAction) -> TierAction {
        let rank = |action: TierAction| match action {
            TierAction::AutoApprove => 0,
            TierAction::RequireApproval => 1,
            TierAction::Deny => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for TierAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TierAction {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto_approve" => Ok(TierAction::AutoApprove),
            "require_approval" => Ok(TierAction::RequireApproval),
            "deny" => Ok(TierAction::Deny),
            _ => Err(ParseNameError {
                kind: "tier action",
                value: s.to_string(),
                expected: "auto_approve, require_approval, deny",
            }),
        }
    }
}

/// `max_pending` when the policy does not set it.
pub const DEFAULT_MAX_PENDING: u32 = 20;

/// Routing and timing for one approval, resolved from defaults + the matched rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Slack channel id to post in; `None` means the service's fallback.
    pub channel: Option<ChannelId>,
    /// Slack users (U/W) or user groups (S) allowed to decide.
    pub approvers: Vec<Approver>,
    /// Approvals needed before the call is approved (1..=20).
    pub required_approvals: u32,
    /// How many of one requester's requests may wait for people at once; past it, a
    /// request this route would open is refused (see `store` throttling). 0: no limit.
    pub max_pending: u32,
    /// How long the request stays open before it expires.
    pub expires_after: Duration,
    /// First reminder after this long without a decision.
    pub remind_after: Option<Duration>,
    /// Further reminders at this interval.
    pub remind_every: Option<Duration>,
    /// Escalate after this long without a decision.
    pub escalate_after: Option<Duration>,
    /// Where escalations go.
    pub escalation_channel: Option<ChannelId>,
    /// Slack users (U/W) or user groups (S) who may decide as approvers too once the
    /// request is escalated (managers), beside `approvers`.
    pub escalation_approvers: Vec<Approver>,
    /// Look-alike requests (same requester, tool and parameter names, in one channel)
    /// arriving within this window of the first are posted as one message; `None`: off.
    pub batch_window: Option<Duration>,
    /// The matched rule's `summary` template, unrendered.
    pub summary_template: Option<String>,
}

impl Default for Route {
    /// The built-in defaults used for any key the policy leaves out.
    fn default() -> Self {
        Route {
            channel: None,
            approvers: Vec::new(),
            required_approvals: 1,
            max_pending: DEFAULT_MAX_PENDING,
            expires_after: Duration::from_secs(3600),
            remind_after: None,
            remind_every: None,
            escalate_after: None,
            escalation_channel: None,
            escalation_approvers: Vec::new(),
            batch_window: None,
            summary_template: None,
        }
    }
}

/// One tool call as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub tool: &'a str,
    /// The MCP server's name; `None` outside MCP (rules with `servers` never match).
    pub server: Option<&'a str>,
    pub params: &'a serde_json::Value,
    /// The tool's annotations as its server lists them: hints, never proof.
    pub annotations: Option<&'a serde_json::Value>,
}

impl<'a> Call<'a> {
    /// A call outside MCP: no server, no annotations.
    pub fn new(tool: &'a str, params: &'a serde_json::Value) -> Self {
        Call {
            tool,
            server: None,
            params,
            annotations: None,
        }
    }
}

/// The outcome of classifying one tool call.
#[derive(Debug, Clone)]
pub struct Classification {
    /// Effective tier: max of the policy tier and the requested tier.
    pub tier: Tier,
    /// What the policy alone said: the matched rule's tier (or `Medium`), raised to
    /// at least the tier of each rule whose condition failed to evaluate (and at
    /// least `Medium` then).
    pub policy_tier: Tier,
    /// The action configured for the effective `tier`, unless the policy's own tier
    /// (or the matched rule's, or that of a rule whose condition failed to evaluate)
    /// has a stricter one, which stands: the caller's tier only ever adds review.
    /// And a call whose classification met a condition that failed to evaluate is
    /// never auto-approved: `RequireApproval` instead.
    pub action: TierAction,
    /// 0-based index of the rule that applies, whose route this is: the first rule
    /// whose condition failed to evaluate (it might have matched, and comes before
    /// any that did), else the matched rule; `None` if neither.
    pub rule: Option<usize>,
    /// [`Classification::rule`]'s fingerprint (see `Rule::fingerprint`).
    pub rule_fingerprint: Option<String>,
    /// What decided the tier, in words (`rules[2] (tools delete_*)`, `no rule
    /// matched`): a deny says it, so the requester knows which rule to look at. A
    /// condition that could not be evaluated is always said: `the condition of
    /// rules[1] (tools transfer_funds) could not be evaluated, so that rule applies
    /// (high)`. When the tier is above that rule's, it says what raised it: `rules[0]
    /// (tools search_*) sets low, raised to high by the caller's request`.
    pub why: String,
    /// Routing and timing for the approval.
    pub route: Route,
    /// Human-readable remarks, e.g. condition evaluation failures.
    pub notes: Vec<String>,
}

/// The action for each tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    /// Action for `low`.
    pub low: TierAction,
    /// Action for `medium`.
    pub medium: TierAction,
    /// Action for `high`.
    pub high: TierAction,
}

impl Tiers {
    /// The action configured for `tier`.
    pub fn action(&self, tier: Tier) -> TierAction {
        match tier {
            Tier::Low => self.low,
            Tier::Medium => self.medium,
            Tier::High => self.high,
        }
    }
}

impl Default for Tiers {
    /// Built-ins: only `low` is automatic; nothing is denied by default.
    fn default() -> Self {
        Tiers {
            low: TierAction::AutoApprove,
            medium: TierAction::RequireApproval,
            high: TierAction::RequireApproval,
        }
    }
}

/// One validated `[[rules]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// What the rule says, as a short digest of it as written: an approval keeps its
    /// rule's, so that an edit is not checked against another rule that took its
    /// place (its index) after the policy file changed.
    pub(crate) fingerprint: String,
    /// The globs as written, for reports.
    pub(crate) tools: Vec<String>,
    pub(crate) matcher: GlobSet,
    /// The server globs as written (empty: any server, or none).
    pub(crate) servers: Vec<String>,
    /// `None`: the rule applies whatever the server.
    pub(crate) server_matcher: Option<GlobSet>,
    pub(crate) when: Option<Condition>,
    pub(crate) tier: Tier,
    /// Defaults with this rule's overrides already applied.
    pub(crate) route: Route,
}

/// A loaded, validated policy. Cheap to share: wrap it in an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) defaults: Route,
    pub(crate) tiers: Tiers,
    pub(crate) rules: Vec<Rule>,
    /// `[callbacks] allow`: internal hosts and ranges callbacks may reach.
    pub callbacks: crate::egress::Allow,
}

// The policy is shared across tokio tasks; fail the build, not a deploy, if
// a field (such as a CEL program) ever stops being thread-safe.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
};

impl Policy {
    /// Parses and validates policy TOML. Conditions are compiled here, once.
    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyError> {
        load::parse(text)
    }

    /// Reads and parses the policy file at `path`; every error names the path.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Policy::from_toml_str(&text).map_err(|error| PolicyError::InFile {
            path: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// The built-in policy: built-in defaults and tiers, no rules, so every
    /// call is `medium` and needs approval.
    pub fn builtin() -> Policy {
        Policy {
            defaults: Route::default(),
            tiers: Tiers::default(),
            rules: Vec::new(),
            callbacks: crate::egress::Allow::default(),
        }
    }

    /// Number of `[[rules]]` entries.
    pub fn rules_len(&self) -> usize {
        self.rules.len()
    }

    /// The resolved `[defaults]` route (used when no rule matches).
    pub fn defaults(&self) -> &Route {
        &self.defaults
    }

    /// The action for each tier.
    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }
}

#[cfg(test)]
mod fuzz_tests;
