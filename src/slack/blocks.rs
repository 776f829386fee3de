//! Block Kit rendering of approvals: the live message with buttons, the settled message
//! after a decision, and the Deny / Edit & approve modals. Pure functions from an
//! [`Approval`] to `serde_json::Value`; the client sends them.
//!
//! Whatever the input, the output stays within Block Kit's limits (50 blocks, 3000-char
//! sections, 2000-char fields, 150-char headers, 75-char button text, 2000-char button
//! values, 255-char ids), and user-supplied text is escaped so that a parameter cannot
//! ping `@channel`, mention people or hide a link.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::text::{
    ELLIPSIS, fit, fit_line, fit_plain, join_limited, params_mrkdwn, people, person, relative,
    requester, slack_date, summary_or_params, tier_badge,
};
use crate::approval::machine::POLICY_ACTOR;
use crate::approval::{Approval, Decision, Status, Tier};

/// `action_id` of the Approve button.
pub const ACTION_APPROVE: &str = "approve";
/// `action_id` of the Deny button (opens [`deny_modal`]).
pub const ACTION_DENY: &str = "deny";
/// `action_id` of the Edit & approve button (opens [`edit_modal`]).
pub const ACTION_EDIT: &str = "edit";
/// `callback_id` of the deny modal.
pub const DENY_CALLBACK: &str = "deny_reason";
/// `callback_id` of the edit modal.
pub const EDIT_CALLBACK: &str = "edit_approve";
/// `block_id` and `action_id` of the deny modal's reason input.
pub const REASON_INPUT: &str = "reason";
/// `block_id` and `action_id` of the edit modal's parameters input.
pub const PARAMETERS_INPUT: &str = "parameters";
/// The most a `plain_text_input` may hold, and so the largest editable parameters.
pub const INPUT_MAX_CHARS: usize = 3000;

const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const HEADER_MAX: usize = 150;
/// Fallback text shows in notifications; Slack allows 4000, a glance needs far less.
const FALLBACK_MAX: usize = 300;
const REASON_MAX: usize = 1000;

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
    let mut blocks = body(a);
    let expires = if now < a.expires_at {
        format!(
            "{} ({})",
            slack_date(a.expires_at),
            relative(a.expires_at, now)
        )
    } else {
        format!("{} (overdue)", slack_date(a.expires_at))
    };
    blocks.push(fields(&[
        ("Risk", tier_badge(a.risk_tier)),
        ("Requested by", requester(a)),
        ("Expires", expires),
        ("Votes", votes(a)),
    ]));
    blocks.push(id_context(a, Some(now)));
    blocks.push(actions(a));
    let text = format!(
        "Approval needed: {} — {}",
        fit_line(&a.tool_name, 100),
        summary_or_params(a, FALLBACK_MAX - 120)
    );
    json!({ "text": text, "blocks": blocks })
}

/// The message after a decision, expiry, cancellation or execution: the same request,
/// no buttons, and one outcome line saying what happened, who and when.
pub fn decided_message(a: &Approval) -> Value {
    let mut blocks = body(a);
    blocks.push(fields(&[
        ("Risk", tier_badge(a.risk_tier)),
        ("Requested by", requester(a)),
    ]));
    blocks.push(mrkdwn_section(outcome_line(a)));
    blocks.push(id_context(a, None));
    let text = format!(
        "{}: {} — {}",
        outcome_word(a.status),
        fit_line(&a.tool_name, 100),
        summary_or_params(a, FALLBACK_MAX - 120)
    );
    json!({ "text": text, "blocks": blocks })
}

/// One mrkdwn line saying how the approval ended (or that it is still waiting).
pub fn outcome_line(a: &Approval) -> String {
    let at = |time: Option<DateTime<Utc>>| time.map(|t| format!(" at {}", slack_date(t)));
    let by = a.decided_by.as_deref().filter(|by| !by.trim().is_empty());
    let line = match a.status {
        Status::Pending => ":hourglass_flowing_sand: Waiting for a decision".to_string(),
        Status::Approved => {
            let who = match by {
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
        // An approval that expired after being approved was never run either.
        Status::Expired => match by {
            Some(by) => format!(
                ":hourglass: Expired — approved by {} but not run in time (not executed)",
                people(by, 1500)
            ),
            None => ":hourglass: Expired — nobody decided in time (not executed)".into(),
        },
        Status::Cancelled => format!(
            ":no_entry_sign: Cancelled by requester{}",
            at(a.decision_at).unwrap_or_default()
        ),
        Status::Executed => {
            let approved = by.map_or(String::new(), |by| {
                format!(" (approved by {})", people(by, 1500))
            });
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

/// Header, summary, parameters and context: shared by live and settled messages.
fn body(a: &Approval) -> Vec<Value> {
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": header_text(&a.tool_name), "emoji": true },
    })];
    match a.summary.as_deref().map(str::trim) {
        Some(summary) if !summary.is_empty() => {
            blocks.push(mrkdwn_section(fit(summary, SECTION_MAX)));
            // The summary is the requester's own words; the parameters are what would
            // actually run, so approvers always see them too.
            let label = "*Parameters*\n";
            let params = params_mrkdwn(&a.parameters, SECTION_MAX - label.len());
            blocks.push(mrkdwn_section(format!("{label}{params}")));
        }
        _ => blocks.push(mrkdwn_section(params_mrkdwn(&a.parameters, SECTION_MAX))),
    }
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
        blocks.push(context(format!(
            ":speech_balloon: {}",
            fit(text, FIELD_MAX - 20)
        )));
    }
    blocks
}

/// Headers are plain text; an empty tool name still needs some text.
fn header_text(tool: &str) -> String {
    let text = fit_plain(tool.trim(), HEADER_MAX);
    if text.is_empty() {
        "(unnamed tool)".into()
    } else {
        text
    }
}

fn votes(a: &Approval) -> String {
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

fn id_context(a: &Approval, now: Option<DateTime<Utc>>) -> Value {
    let asked = now.map_or(String::new(), |now| {
        format!(" · requested {}", relative(a.created_at, now))
    });
    context(format!("ID `{}`{asked}", a.id.short()))
}

fn actions(a: &Approval) -> Value {
    let id = a.id.to_string();
    let mut approve = button("Approve", ACTION_APPROVE, &id, Some("primary"));
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
    json!({
        "type": "actions",
        "block_id": block_id(a),
        "elements": [
            approve,
            button("Deny", ACTION_DENY, &id, Some("danger")),
            button("Edit & approve", ACTION_EDIT, &id, None),
        ],
    })
}

fn button(text: &str, action_id: &str, value: &str, style: Option<&str>) -> Value {
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

fn fields(pairs: &[(&str, String)]) -> Value {
    let fields: Vec<Value> = pairs
        .iter()
        .map(|(label, value)| {
            json!({ "type": "mrkdwn", "text": fit_mrkdwn_built(format!("*{label}*\n{value}"), FIELD_MAX) })
        })
        .collect();
    json!({ "type": "section", "fields": fields })
}

fn mrkdwn_section(text: String) -> Value {
    let text = if text.is_empty() {
        " ".to_string()
    } else {
        text
    };
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

fn context(text: String) -> Value {
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
    if let Some(open) = cut.rfind(['<', '&']) {
        if !cut[open..].contains(['>', ';']) {
            cut.truncate(open);
        }
    }
    cut.push(ELLIPSIS);
    cut
}

/// The `view` for `views.open` when someone clicks Deny: an optional reason, sent back
/// to the requester. Optional, because denying must never be harder than approving.
pub fn deny_modal(a: &Approval) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_CALLBACK,
        "private_metadata": a.id.to_string(),
        "title": { "type": "plain_text", "text": "Deny request" },
        "submit": { "type": "plain_text", "text": "Deny" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "blocks": [
            modal_intro(a, "Denying means this will not run."),
            {
                "type": "input",
                "block_id": REASON_INPUT,
                "optional": true,
                "label": { "type": "plain_text", "text": "Reason (optional)" },
                "hint": { "type": "plain_text", "text": "Shown in the channel and sent back to whoever asked." },
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": true,
                    "max_length": REASON_MAX,
                },
            },
        ],
    })
}

/// The `view` for `views.open` when someone clicks Edit & approve: the parameters as
/// pretty JSON in a text box.
///
/// A `plain_text_input` holds at most 3000 chars: longer pretty JSON falls back to
/// compact JSON, and if that is still too long the modal only explains that the
/// parameters are too large to edit in Slack, with no input and no submit button.
pub fn edit_modal(a: &Approval) -> Value {
    let fits = |s: &String| s.chars().count() <= INPUT_MAX_CHARS;
    let initial = serde_json::to_string_pretty(&a.parameters)
        .ok()
        .filter(fits)
        .or_else(|| serde_json::to_string(&a.parameters).ok().filter(fits));
    let mut view = json!({
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "private_metadata": a.id.to_string(),
        "title": { "type": "plain_text", "text": "Edit & approve" },
    });
    match initial {
        Some(initial) => {
            view["submit"] = json!({ "type": "plain_text", "text": "Approve edited" });
            view["close"] = json!({ "type": "plain_text", "text": "Cancel" });
            view["blocks"] = json!([
                modal_intro(a, "Approving runs exactly the parameters below. Approvals given for the old parameters no longer count."),
                {
                    "type": "input",
                    "block_id": PARAMETERS_INPUT,
                    "label": { "type": "plain_text", "text": "Parameters (a JSON object)" },
                    "element": {
                        "type": "plain_text_input",
                        "action_id": PARAMETERS_INPUT,
                        "multiline": true,
                        "max_length": INPUT_MAX_CHARS,
                        "initial_value": initial,
                    },
                },
            ]);
        }
        None => {
            view["close"] = json!({ "type": "plain_text", "text": "Close" });
            view["blocks"] = json!([modal_intro(
                a,
                "These parameters are too large to edit in Slack (a text box holds 3000 \
                 characters). Approve or deny them as they are, or ask for a smaller request.",
            )]);
        }
    }
    view
}

fn modal_intro(a: &Approval, note: &str) -> Value {
    mrkdwn_section(format!(
        "*{}*\n{}\n\n{note}",
        fit_line(&a.tool_name, 150),
        summary_or_params(a, 1000)
    ))
}

/// Parses the text submitted from [`edit_modal`]. The error is what the person reads
/// under the input (see [`modal_errors`]).
pub fn parse_edited_parameters(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|err| {
        let mut message = format!("Not valid JSON: {err}");
        // Some keyboards turn quotes into curly ones, which JSON does not accept.
        if text.contains(['“', '”', '‘', '’']) {
            message.push_str(" (curly quotes are not JSON quotes: use \")");
        }
        fit_plain(&message, 300)
    })?;
    if !value.is_object() {
        return Err("Parameters must be a JSON object".into());
    }
    Ok(value)
}

/// The answer to a `view_submission` that keeps the modal open and shows `message`
/// under the input `block_id`.
pub fn modal_errors(block_id: &str, message: &str) -> Value {
    json!({ "response_action": "errors", "errors": { block_id: message } })
}

#[cfg(test)]
#[path = "blocks_tests.rs"]
mod tests;
