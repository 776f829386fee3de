//! Block Kit rendering of approvals: the live message with buttons, the settled message
//! after a decision, and the Deny / Edit & approve modals. Pure functions from an
//! [`Approval`] to `serde_json::Value`; the client sends them.
//!
//! Whatever the input, the output stays within Block Kit's limits (50 blocks, 3000-char
//! sections, 2000-char fields, 150-char headers, 75-char button text, 2000-char button
//! values, 255-char ids), and text the requester wrote is shown in `plain_text` objects
//! (see [`super::text`]): it cannot format, link, ping anyone or pose as signoff.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::params::params_rendered;
use super::text::{
    ELLIPSIS, decider, fit, fit_line, fit_plain, fit_plain_lines, join_limited, outside_slack,
    people, person, plain, requester, slack_ago, slack_date, tier_badge,
};
use crate::approval::machine::POLICY_ACTOR;
use crate::approval::{Approval, Decision, Status, Tier, parameters_fingerprint};

/// Message metadata event type of signoff's posts (channel, escalation), whose payload
/// names the approval: a retry finds its earlier post by it, and a click on it is known
/// to come from a message signoff posted for that approval.
pub const POST_EVENT: &str = "signoff_approval_posted";
/// Message metadata event type of reminder DMs: the approval and the reminder job.
pub const REMINDER_EVENT: &str = "signoff_reminder_sent";
/// Message metadata event type of replies in an approval's thread (a reminder with no
/// approvers list, an escalation's note): the approval and the job that posted it.
pub const THREAD_NOTE_EVENT: &str = "signoff_thread_note";

/// Message metadata event type of the notice that a requester is throttled
/// (`max_pending`): a retry finds its earlier post by it.
pub const THROTTLE_EVENT: &str = "signoff_requester_throttled";

/// The notice that `requester`'s new requests are refused while `waiting` of them
/// wait (at or past `limit`): one per episode per channel, whatever the number of
/// refusals.
pub fn throttled_message(requester: &str, waiting: i64, limit: u32) -> Value {
    let text = format!(
        "Requests from {} are being refused: {waiting} of its requests already wait for \
         a decision (max_pending = {limit}). Decide or cancel some of them; new requests \
         are accepted again once fewer than {limit} wait. Every refusal is in the audit log.",
        fit_plain(requester, 200)
    );
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": plain(format!(":no_entry: {text}")) },
        ],
    })
}

/// `action_id` of the Approve button. Its value names the approval and the
/// parameters the message shows ([`approve_value`]), so that an approve clicked on a
/// message an edit has overtaken is refused.
pub const ACTION_APPROVE: &str = "approve";

/// The Approve button's value: `<approval id>:<fingerprint of the parameters shown>`.
pub fn approve_value(a: &Approval) -> String {
    format!("{}:{}", a.id, parameters_fingerprint(&a.parameters))
}

/// An Approve button's value read back: the approval id, and the fingerprint of the
/// parameters the message showed (empty on a message posted before buttons carried
/// it: on an edited approval such a click is refused).
pub fn read_approve_value(value: &str) -> (&str, &str) {
    value.split_once(':').unwrap_or((value, ""))
}
/// `action_id` of the Deny button (opens [`super::modals::deny_modal`]).
pub const ACTION_DENY: &str = "deny";
/// `action_id` of the Edit & approve button (opens [`super::modals::edit_modal`]).
pub const ACTION_EDIT: &str = "edit";
/// `action_id` of the Show all parameters button, there when the message could not
/// show every parameter in full (opens [`super::modals::parameters_modal`]). Not a
/// vote: whoever sees the message may open it.
pub const ACTION_SHOW_PARAMETERS: &str = "show_parameters";

const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const HEADER_MAX: usize = 150;
/// The longest deny reason: what the modal accepts and the message shows.
pub(super) const REASON_MAX: usize = 1000;

/// The `block_id` of a message's actions block: carries the approval id back with clicks.
pub fn block_id(a: &Approval) -> String {
    format!("approval:{}", a.id)
}

/// The message for a pending approval: what is asked, by whom, how risky, until when,
/// votes so far, and the Approve / Deny / Edit & approve buttons.
///
/// An approval that is no longer pending gets [`decided_message`] instead, so live
/// buttons are never shown for something already settled.
pub fn approval_message(a: &Approval, now: DateTime<Utc>) -> Value {
    if a.status != Status::Pending {
        return decided_message(a);
    }
    let (mut blocks, cut) = body(a);
    let expires = expires(a, now);
    blocks.push(fields(&[
        Field::Mrkdwn("Risk", tier_badge(a.risk_tier)),
        Field::Plain("Requested by", requester(a)),
        Field::Mrkdwn("Expires", expires),
        Field::Mrkdwn("Votes", votes(a)),
    ]));
    blocks.push(id_context(a, true));
    blocks.push(actions(a, cut));
    json!({ "text": fallback("Approval needed", a), "blocks": blocks })
}

/// The message after a decision, expiry, cancellation or execution: the same request,
/// no buttons, and one outcome line saying what happened, who and when.
pub fn decided_message(a: &Approval) -> Value {
    let (mut blocks, _) = body(a);
    blocks.push(fields(&[
        Field::Mrkdwn("Risk", tier_badge(a.risk_tier)),
        Field::Plain("Requested by", requester(a)),
    ]));
    blocks.push(mrkdwn_section(outcome_line(a)));
    blocks.push(id_context(a, false));
    json!({ "text": fallback(outcome_word(a.status), a), "blocks": blocks })
}

/// The message's `text`, which notifications show and which Slack reads as mrkdwn: only
/// signoff's words and the tool's name (whose alphabet cannot format), no requester text.
fn fallback(what: &str, a: &Approval) -> String {
    let server = a.server.as_deref().map_or(String::new(), |server| {
        format!(" on {}", fit_line(server, 60))
    });
    format!(
        "{what}: {}{server} (ID {})",
        fit_line(&a.tool_name, 130),
        a.id.short()
    )
}

/// One mrkdwn line saying how the approval ended (or that it is still waiting).
pub fn outcome_line(a: &Approval) -> String {
    let at = |time: Option<DateTime<Utc>>| time.map(|t| format!(" at {}", slack_date(t)));
    let by = a.decided_by.as_deref().filter(|by| !by.trim().is_empty());
    let line = match a.status {
        Status::Pending => ":hourglass_flowing_sand: Waiting for a decision".to_string(),
        Status::Approved => {
            let who = match by {
                Some(by) if a.is_break_glass() => outside_slack(by),
                Some(POLICY_ACTOR) => " automatically by policy".to_string(),
                Some(by) => format!(" by {}", people(by, 1500)),
                None => String::new(),
            };
            format!(
                ":white_check_mark: Approved{who}{}",
                at(a.decision_at).unwrap_or_default()
            )
        }
        Status::Denied => {
            let who = match by {
                Some(by) if a.is_break_glass() => outside_slack(by),
                Some(POLICY_ACTOR) => " by policy".to_string(),
                Some(by) => format!(" by {}", people(by, 1000)),
                None => String::new(),
            };
            let reason = match a.reason.as_deref().map(str::trim) {
                Some(reason) if !reason.is_empty() => format!(" — {}", fit(reason, REASON_MAX)),
                _ => String::new(),
            };
            format!(
                ":x: Denied{who}{}{reason}",
                at(a.decision_at).unwrap_or_default()
            )
        }
        // An approval that expired after being approved was never run either. It
        // expired when it was due to: at `expires_at`.
        Status::Expired => {
            let when = at(Some(a.expires_at)).unwrap_or_default();
            match by {
                Some(by) => format!(
                    ":hourglass: Expired{when} — approved{} but not run in time (not executed)",
                    decider(a, by)
                ),
                None => {
                    format!(":hourglass: Expired{when} — nobody decided in time (not executed)")
                }
            }
        }
        Status::Cancelled => format!(
            ":no_entry_sign: Cancelled by requester{}",
            at(a.decision_at).unwrap_or_default()
        ),
        Status::Executed => {
            let approved = by.map_or(String::new(), |by| format!(" (approved{})", decider(a, by)));
            format!(
                ":rocket: Executed{}{approved}",
                at(a.executed_at).unwrap_or_default()
            )
        }
    };
    fit_mrkdwn_built(line, SECTION_MAX)
}

fn outcome_word(status: Status) -> &'static str {
    match status {
        Status::Pending => "Approval needed",
        Status::Approved => "Approved",
        Status::Denied => "Denied",
        Status::Expired => "Expired",
        Status::Executed => "Executed",
        Status::Cancelled => "Cancelled",
    }
}

/// Header, summary, parameters and context: shared by live and settled messages. All
/// of it but the header's emoji is the requester's text, so all of it is plain text.
/// Also whether the parameters had to be cut to fit.
fn body(a: &Approval) -> (Vec<Value>, bool) {
    let mut blocks = vec![json!({
        "type": "header",
        "text": plain(header_text(a)),
    })];
    if let Some(summary) = a
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        // After an edit it tells what was asked; the parameters below are what runs.
        // One line, as a batch item's: a summary on several lines could pass for a
        // `Parameters:` list of its own above the real one (pushed out of sight by
        // blank lines).
        let summary = one_line(summary);
        let summary = match a.original_parameters {
            Some(_) => format!("As asked: {summary}"),
            None => summary,
        };
        blocks.push(plain_section(fit_plain(&summary, SECTION_MAX)));
    }
    // The summary is the requester's own words; the parameters are what would actually
    // run, so approvers always see them too.
    let label = "Parameters:\n";
    let params = params_rendered(&a.parameters, SECTION_MAX - label.len());
    blocks.push(plain_section(format!("{label}{}", params.text)));
    if a.original_parameters.is_some() {
        blocks.push(context(
            ":pencil2: An approver edited these parameters; the edited ones are what runs.".into(),
        ));
    }
    if let Some(text) = a
        .context
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        blocks.push(json!({
            "type": "context",
            "elements": [
                { "type": "mrkdwn", "text": ":speech_balloon: Context:" },
                plain(fit_plain_lines(text, FIELD_MAX - 20)),
            ],
        }));
    }
    (blocks, params.cut)
}

/// The tool (and its MCP server); an empty tool name still needs some text.
pub(super) fn header_text(a: &Approval) -> String {
    let tool = a.tool_name.trim();
    let tool = if tool.is_empty() {
        "(unnamed tool)"
    } else {
        tool
    };
    let text = match a.server.as_deref() {
        Some(server) => format!("{tool} · {server}"),
        None => tool.to_owned(),
    };
    fit_plain(&text, HEADER_MAX)
}

pub(super) fn votes(a: &Approval) -> String {
    let approvers: Vec<String> = a
        .votes
        .iter()
        .filter(|vote| vote.decision == Decision::Approve)
        .map(|vote| person(&vote.user))
        .collect();
    let count = format!("{} of {} approvals", approvers.len(), a.required_approvals);
    if approvers.is_empty() {
        return count;
    }
    let names = join_limited(&approvers, ", ", FIELD_MAX - 100);
    format!("{count}: {names}")
}

/// When a pending approval expires, as a Slack date, `(overdue)` once past it. No "in
/// 2h" beside it: a message stays up for hours unchanged, and a relative time would go
/// stale with it (Slack renders the date in each reader's time zone).
pub(super) fn expires(a: &Approval, now: DateTime<Utc>) -> String {
    if now < a.expires_at {
        slack_date(a.expires_at)
    } else {
        format!("{} (overdue)", slack_date(a.expires_at))
    }
}

/// The approval's short id, and with `asked` when it was requested (as Slack's live
/// "5 minutes ago").
fn id_context(a: &Approval, asked: bool) -> Value {
    let asked = if asked {
        format!(" · requested {}", slack_ago(a.created_at))
    } else {
        String::new()
    };
    context(format!("ID `{}`{asked}", a.id.short()))
}

/// The buttons of a pending approval; `show_all` adds Show all parameters, for
/// parameters the message had to cut.
pub(super) fn actions(a: &Approval, show_all: bool) -> Value {
    let id = a.id.to_string();
    let mut approve = button(
        "Approve",
        ACTION_APPROVE,
        &approve_value(a),
        Some("primary"),
    );
    if a.risk_tier == Tier::High {
        // One more look before a high-risk action is let through.
        approve["confirm"] = json!({
            "title": { "type": "plain_text", "text": "Approve a high-risk action?" },
            "text": { "type": "mrkdwn", "text": format!(
                "This lets `{}` run with the parameters shown.", fit_line(&a.tool_name, 200)) },
            "confirm": { "type": "plain_text", "text": "Approve" },
            "deny": { "type": "plain_text", "text": "Back" },
        });
    }
    let mut elements = vec![
        approve,
        button("Deny", ACTION_DENY, &id, Some("danger")),
        button("Edit & approve", ACTION_EDIT, &id, None),
    ];
    if show_all {
        elements.push(button(
            "Show all parameters",
            ACTION_SHOW_PARAMETERS,
            &id,
            None,
        ));
    }
    json!({ "type": "actions", "block_id": block_id(a), "elements": elements })
}

pub(super) fn button(text: &str, action_id: &str, value: &str, style: Option<&str>) -> Value {
    let mut button = json!({
        "type": "button",
        "text": { "type": "plain_text", "text": text, "emoji": true },
        "action_id": action_id,
        "value": value,
    });
    if let Some(style) = style {
        button["style"] = json!(style);
    }
    button
}

/// One field of a section: signoff's own mrkdwn, or text a requester wrote (plain).
enum Field {
    Mrkdwn(&'static str, String),
    Plain(&'static str, String),
}

fn fields(pairs: &[Field]) -> Value {
    let fields: Vec<Value> = pairs
        .iter()
        .map(|field| match field {
            Field::Mrkdwn(label, value) => json!({
                "type": "mrkdwn",
                "text": fit_mrkdwn_built(format!("*{label}*\n{value}"), FIELD_MAX),
            }),
            Field::Plain(label, value) => {
                plain(fit_plain_lines(&format!("{label}\n{value}"), FIELD_MAX))
            }
        })
        .collect();
    json!({ "type": "section", "fields": fields })
}

pub(super) fn plain_section(text: String) -> Value {
    json!({ "type": "section", "text": plain(text) })
}

fn mrkdwn_section(text: String) -> Value {
    let text = if text.is_empty() {
        " ".to_string()
    } else {
        text
    };
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

pub(super) fn context(text: String) -> Value {
    json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": text }] })
}

/// Last-resort cap for text we assembled from already-escaped parts (so it must not be
/// escaped again). The parts are sized to fit; this only guards the sum.
fn fit_mrkdwn_built(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    // Never leave half an entity or half a `<…>` token behind.
    if let Some(open) = cut.rfind(['<', '&'])
        && !cut[open..].contains(['>', ';'])
    {
        cut.truncate(open);
    }
    cut.push(ELLIPSIS);
    cut
}

#[cfg(test)]
#[path = "blocks_tests.rs"]
mod tests;

/// `text` on one line: each run of spaces, tabs and line feeds (a CR LF among them) one
/// space. Any other character that breaks a line is left to the cut, which shows it
/// escaped.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r') {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}
