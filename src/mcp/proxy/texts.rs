//! What the agent (and the person behind it) reads: every text the proxy writes into a
//! result or a progress notification.

use serde_json::{Map, Value};

use super::api::{ApiError, View};
use crate::approval::machine::POLICY_ACTOR;

const NOT_RUN: &str = "The call was not run.";
/// A call signoff took that still waits: the same call again joins its approval.
const CALL_AGAIN: &str =
    "Not run yet. Call this tool again with the same arguments to wait for the decision.";

fn short_id(view: &View) -> &str {
    view.approval_id.get(..8).unwrap_or(&view.approval_id)
}

fn channel(view: &View) -> String {
    match &view.channel {
        Some(channel) => format!("#{channel}"),
        None => "Slack".into(),
    }
}

fn time(view: &View) -> String {
    view.expires_at.map_or_else(
        || "its expiry".into(),
        |at| at.format("%H:%M UTC").to_string(),
    )
}

/// The progress message while a call is held.
pub fn waiting(view: &View) -> String {
    format!(
        "waiting for approval in {}, expires {}",
        channel(view),
        time(view)
    )
}

/// The call is still pending when the proxy stops holding it.
pub fn still_pending(view: &View) -> String {
    let link = view.permalink.as_deref().unwrap_or("not posted yet");
    format!(
        "Waiting for approval {} in {} ({link}). {CALL_AGAIN}",
        short_id(view),
        channel(view)
    )
}

/// A decision other than approval, as the agent reads it.
pub fn decided(view: &View) -> String {
    let who = view.decided_by.as_deref().unwrap_or("an approver");
    let reason = view.reason.as_deref().map(str::trim).unwrap_or_default();
    match view.status.as_str() {
        // The policy's own denial, told by who decided: an approver's reason may begin
        // with the same words.
        "denied" if who == POLICY_ACTOR => {
            let rule = reason.strip_prefix("denied by policy:").unwrap_or(reason);
            format!("Denied by policy: {}. {NOT_RUN}", rule.trim())
        }
        "denied" if reason.is_empty() => format!("Denied by {who} (no reason given). {NOT_RUN}"),
        "denied" => format!(
            "Denied by {who}: {}. {NOT_RUN}",
            reason.trim_end_matches('.')
        ),
        "expired" => format!(
            "Nobody decided before {}. {NOT_RUN}",
            view.expires_at.map_or_else(
                || "the deadline".into(),
                |at| at.format("%Y-%m-%d %H:%M UTC").to_string()
            )
        ),
        "cancelled" => format!("Approval {} was cancelled. {NOT_RUN}", short_id(view)),
        "executed" => format!(
            "Approval {} was already used: the call ran once and does not run again.",
            short_id(view)
        ),
        other => format!("Approval {} is {other}. {NOT_RUN}", short_id(view)),
    }
}

/// signoff could not be asked, or refused to answer.
pub fn api_failed(error: &ApiError) -> String {
    match error {
        ApiError::TooLarge => {
            format!("The arguments are too large to ask for approval (over 1 MiB). {NOT_RUN}")
        }
        ApiError::Throttled(detail) => format!("Not asked: {detail}. {NOT_RUN}"),
        other => format!("Could not get an approval: {other}. {NOT_RUN}"),
    }
}

/// signoff took the call's request, but the proxy could not wait for its decision
/// (the decision stream refused or broke): the approval stays open, and the same call
/// again joins it.
pub fn lost_track(view: &View, error: &ApiError) -> String {
    let why = match error {
        ApiError::Throttled(detail) => detail.clone(),
        other => other.to_string(),
    };
    format!(
        "Approval {} was asked for in {}, but the proxy could not wait for its decision ({why}). {CALL_AGAIN}",
        short_id(view),
        channel(view)
    )
}

/// The approved call could not pass the single-use gate.
pub fn not_executable(view: &View, error: &ApiError) -> String {
    format!(
        "Approval {} could not be used: {error}. {NOT_RUN}",
        short_id(view)
    )
}

/// The client withdrew the call while it waited.
pub fn cancelled() -> String {
    format!("Cancelled while waiting for approval; the approval was withdrawn. {NOT_RUN}")
}

/// The client withdrew the call before it was asked for: nothing was asked.
pub fn cancelled_unasked() -> String {
    format!("Cancelled before approval was asked for. {NOT_RUN}")
}

/// The call was approved as its client cancelled it or went away: the approval is
/// left unspent (it expires unexecuted) and nothing runs.
pub fn cancelled_when_approved() -> String {
    format!("Cancelled as it was approved; the approval was not used. {NOT_RUN}")
}

/// The client cancelled the call or went away while signoff spent its approval:
/// the approval is used up, and nothing runs.
pub fn cancelled_when_spent() -> String {
    format!("Cancelled as its approval was being used; the approval is spent. {NOT_RUN}")
}

/// The upstream server is gone, and the call was not sent to it.
pub fn upstream_gone() -> String {
    format!("The MCP server behind signoff proxy has exited. {NOT_RUN}")
}

/// The upstream server died with the call sent to it: it may have run it, and its
/// approval (when it spent one) is used up, so the agent must not take the call for
/// not run and repeat it blindly.
pub fn upstream_gone_running(approval: Option<&str>) -> String {
    let spent = approval.map_or_else(String::new, |id| {
        format!(" (approval {} is spent)", id.get(..8).unwrap_or(id))
    });
    format!(
        "The MCP server behind signoff proxy exited while running the call: it may have \
         run{spent}; check before calling again."
    )
}

/// The first text of an edited call's result: what the approver changed.
pub fn edited(view: &View, ran_with: &Value) -> Option<String> {
    let before = view.original_parameters.as_ref()?.as_object()?;
    let after = ran_with.as_object()?;
    let changes = changes(before, after);
    if changes.is_empty() {
        return None;
    }
    let who = view.decided_by.as_deref().unwrap_or("the approver");
    Some(format!(
        "Approved with changes by {who}: {}. It ran with the approved arguments.",
        changes.join("; ")
    ))
}

fn changes(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| match (before.get(key), after.get(key)) {
            (Some(old), Some(new)) if old != new => Some(format!("{key}: {old} → {new}")),
            (Some(old), None) => Some(format!("{key}: {old} removed")),
            (None, Some(new)) => Some(format!("{key}: {new} added")),
            _ => None,
        })
        .collect()
}

/// A retry whose `requestState` names no round in progress, nor a tool round still
/// remembered as ended (see [`spent_round`]). A prompt or resource read spends
/// nothing, so it is asked anew; a `tool` call's round may have ended after the call
/// went upstream (its approval spent, the call perhaps run) and been forgotten since,
/// so the agent must check before calling again.
pub fn unknown_round(within: std::time::Duration, tool: bool) -> String {
    let known = format!(
        "This request's earlier round is not known to signoff proxy: it was answered, given \
         up after {} without the client's answers, ended too long ago to be remembered, or \
         the proxy restarted.",
        humantime::format_duration(within)
    );
    if tool {
        format!(
            "{known} If the call had gone to the MCP server, it may have run (its approval \
             spent): check before calling again; otherwise send it again without \
             requestState to ask anew."
        )
    } else {
        format!(
            "{known} Nothing was run for this request; send it again without requestState to ask anew."
        )
    }
}

/// A retry of a tool round that ended after its call went upstream: given up after
/// `given_up` without the client's answers (the call then cancelled upstream), or
/// taken by an earlier retry. The call may have run and its approval is spent, so the
/// agent must not take it for not run and repeat it blindly.
pub fn spent_round(approval: &str, given_up: Option<std::time::Duration>) -> String {
    let ended = given_up.map_or_else(
        || "was taken by an earlier retry".to_owned(),
        |within| {
            format!(
                "was given up after {} without the client's answers, and the call cancelled",
                humantime::format_duration(within)
            )
        },
    );
    format!(
        "This request's earlier round {ended}. The call had gone to the MCP server: it may \
         have run (approval {} is spent); check before calling again.",
        approval.get(..8).unwrap_or(approval)
    )
}

/// A retry that names another tool or other arguments than its round's request.
pub fn other_round(what: &str) -> String {
    format!(
        "This retry does not repeat the request it continues ({what} with the same \
         arguments). Nothing was run for this request; the running one keeps waiting for \
         its retry."
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view(status: &str, by: Option<&str>, reason: Option<&str>) -> View {
        serde_json::from_value(json!({
            "approval_id": "0123456789abcdef", "status": status, "decided_by": by,
            "reason": reason, "channel": "C0DEPLOYS", "expires_at": "2026-11-23T13:05:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn denials_name_who_and_why() {
        assert_eq!(
            decided(&view("denied", Some("U0ALICE"), Some("not on Friday."))),
            "Denied by U0ALICE: not on Friday. The call was not run."
        );
        assert_eq!(
            decided(&view("denied", Some("U0ALICE"), None)),
            "Denied by U0ALICE (no reason given). The call was not run."
        );
        assert!(
            decided(&view(
                "denied",
                Some("policy"),
                Some("denied by policy: rules[1] (tools drop_*)")
            ))
            .starts_with("Denied by policy: rules[1]")
        );
        // An approver's reason cannot pass for the policy's.
        assert_eq!(
            decided(&view(
                "denied",
                Some("U0MALLORY"),
                Some("denied by policy: rules[1]")
            )),
            "Denied by U0MALLORY: denied by policy: rules[1]. The call was not run."
        );
        assert_eq!(
            decided(&view("expired", None, None)),
            "Nobody decided before 2026-11-23 13:05 UTC. The call was not run."
        );
    }

    #[test]
    fn a_throttled_call_says_why_it_was_not_asked() {
        let detail = "agent has 20 requests waiting for a decision (max_pending is 20): this \
                      one was not opened. Wait for decisions, or cancel requests no longer needed";
        assert_eq!(
            api_failed(&ApiError::Throttled(detail.into())),
            format!("Not asked: {detail}. The call was not run.")
        );
    }

    #[test]
    fn waiting_says_where_and_until_when() {
        let held = view("pending", None, None);
        assert_eq!(
            waiting(&held),
            "waiting for approval in #C0DEPLOYS, expires 13:05 UTC"
        );
        assert!(still_pending(&held).starts_with("Waiting for approval 01234567 in #C0DEPLOYS ("));
    }

    #[test]
    fn an_edit_lists_each_change() {
        let mut approved = view("approved", Some("U0BOB"), None);
        approved.original_parameters = Some(json!({"amount": 500, "to": "x", "memo": "m"}));
        let note = edited(&approved, &json!({"amount": 50, "to": "x", "cap": 1})).unwrap();
        assert_eq!(
            note,
            "Approved with changes by U0BOB: amount: 500 → 50; cap: 1 added; memo: \"m\" removed. It ran with the approved arguments."
        );
        assert_eq!(edited(&view("approved", None, None), &json!({})), None);
    }
}
