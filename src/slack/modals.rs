//! The modals a click opens: Deny (an optional reason), Edit & approve (the
//! parameters as JSON in a text box) and Show all parameters (read only), what they
//! carry back to their submission, and reading what was submitted. Within Block Kit's limits like the messages
//! ([`super::blocks`]).

use serde_json::{Value, json};

use super::blocks::{REASON_MAX, header_text, plain_section};
use super::text::{self, fit_plain, summary_or_params};
use crate::approval::{Approval, ApprovalId};
use crate::exact_json::{self, ExactError};
use crate::jobs::MessageKey;

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
/// `callback_id` of the Show all parameters modal (it has no submit button).
pub const PARAMETERS_CALLBACK: &str = "show_parameters";
/// Block Kit: a modal holds at most 100 blocks, a section's text 3000 chars.
const MODAL_BLOCKS: usize = 100;
const SECTION_CHARS: usize = 3000;

/// The `view` for `views.open` when someone clicks Deny: an optional reason, sent back
/// to the requester. Optional, because denying must never be harder than approving.
pub fn deny_modal(a: &Approval, clicked: &MessageKey, named: bool) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_CALLBACK,
        "private_metadata": modal_metadata(a, clicked, named),
        "title": { "type": "plain_text", "text": "Deny request" },
        "submit": { "type": "plain_text", "text": "Deny" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "blocks": [
            modal_intro(a, "Denying means this will not run."),
            reason_input("Shown in the channel and sent back to whoever asked."),
        ],
    })
}

/// The optional reason a deny modal asks for, with `hint` under it.
pub(super) fn reason_input(hint: &str) -> Value {
    json!({
        "type": "input",
        "block_id": REASON_INPUT,
        "optional": true,
        "label": { "type": "plain_text", "text": "Reason (optional)" },
        "hint": { "type": "plain_text", "text": hint },
        "element": {
            "type": "plain_text_input",
            "action_id": REASON_INPUT,
            "multiline": true,
            "max_length": REASON_MAX,
        },
    })
}

/// The reason a submitted deny modal ([`reason_input`]) gives, trimmed (`None`: none),
/// or what is wrong with it, for the modal to show. Slack keeps the box to
/// [`REASON_MAX`] characters; a submission is checked again here, since whatever
/// reaches signoff signed is taken from it as is: a reason goes to the channel, the
/// audit log, callbacks and the agent, so it is text, lines and tabs at most.
pub fn submitted_reason(view: &Value) -> Result<Option<String>, String> {
    let reason = view["state"]["values"][REASON_INPUT][REASON_INPUT]["value"]
        .as_str()
        .map(str::trim)
        .unwrap_or_default();
    if reason.chars().count() > REASON_MAX {
        return Err(format!("Keep the reason to {REASON_MAX} characters."));
    }
    if reason
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("The reason has a control character in it: write it as plain text.".into());
    }
    Ok((!reason.is_empty()).then(|| reason.to_owned()))
}

/// The `view` for `views.open` when someone clicks Edit & approve: the parameters as
/// pretty JSON in a text box.
///
/// A `plain_text_input` holds at most 3000 chars: longer pretty JSON falls back to
/// compact JSON, and if that is still too long the modal only explains that the
/// parameters are too large to edit in Slack, with no input and no submit button.
pub fn edit_modal(a: &Approval, clicked: &MessageKey, named: bool) -> Value {
    let fits = |s: &String| s.chars().count() <= INPUT_MAX_CHARS;
    let shown = |json: serde_json::Result<String>| json.ok().map(text::json_showing_hidden);
    let initial = shown(serde_json::to_string_pretty(&a.parameters))
        .filter(fits)
        .or_else(|| shown(serde_json::to_string(&a.parameters)).filter(fits));
    let mut view = json!({
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "private_metadata": modal_metadata(a, clicked, named),
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

/// The `view` for `views.open` when someone clicks Show all parameters: the whole
/// parameters as pretty JSON (every hidden or line-breaking character escaped, see
/// [`text::json_showing_hidden`]), read only, in as many sections as they need. Past
/// what one modal holds (99 sections of 3000 chars), the last block says exactly how
/// much is not shown, and where to read all of it.
pub fn parameters_modal(a: &Approval) -> Value {
    let json = serde_json::to_string_pretty(&a.parameters)
        .map(text::json_showing_hidden)
        .unwrap_or_default();
    let intro = plain_section(format!(
        "{}\n\nThe parameters that run if this request is approved, in full, as JSON \
         (read only).",
        header_text(a)
    ));
    let room = MODAL_BLOCKS - 1;
    let (mut chunks, rest) = sections_of(&json, room);
    if !rest.is_empty() {
        // One section gives way to the note.
        let last = chunks.pop().unwrap_or_default();
        let rest = format!("{last}{rest}");
        chunks.push(not_shown(a, &rest));
    }
    let blocks: Vec<Value> = std::iter::once(intro)
        .chain(chunks.into_iter().map(plain_section))
        .collect();
    json!({
        "type": "modal",
        "callback_id": PARAMETERS_CALLBACK,
        "title": { "type": "plain_text", "text": "Parameters" },
        "close": { "type": "plain_text", "text": "Close" },
        "blocks": blocks,
    })
}

/// `text` in at most `count` pieces of at most [`SECTION_CHARS`] chars, each ending at
/// a line's end where a line fits; and what did not fit. The pieces and the rest,
/// joined, are `text`.
fn sections_of(text: &str, count: usize) -> (Vec<String>, &str) {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() && pieces.len() < count {
        let end = rest
            .char_indices()
            .nth(SECTION_CHARS)
            .map_or(rest.len(), |(at, _)| at);
        let end = match rest[..end].rfind('\n') {
            Some(line_end) if end < rest.len() && line_end > 0 => line_end + 1,
            _ => end,
        };
        pieces.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    (pieces, rest)
}

/// What the parameters modal says of `rest`, the JSON it has no room for.
fn not_shown(a: &Approval, rest: &str) -> String {
    format!(
        "Not shown: the last {} characters ({} lines) of the JSON above, more than a Slack \
         form holds: {}",
        rest.chars().count(),
        rest.lines().count(),
        where_to_read(a)
    )
}

/// Where else the whole parameters of `a` can be read, when Slack cannot show them.
pub fn where_to_read(a: &Approval) -> String {
    format!(
        "read the whole parameters with `signoff list --status pending --json` where \
         signoff runs (an operator), or GET /v1/approvals/{} with the API token that asked.",
        a.id
    )
}

/// What a modal carries back to its submission: the approval and the message whose
/// button opened it, so that the submission is checked against that message again,
/// and the fingerprint of the parameters the modal showed
/// ([`crate::approval::parameters_fingerprint`]), so that an edit started from
/// parameters someone else has edited since is refused ([`ModalSource::shown`]).
fn modal_metadata(a: &Approval, clicked: &MessageKey, named: bool) -> String {
    let mut metadata = json!({
        "approval_id": a.id,
        "channel": clicked.channel,
        "ts": clicked.ts,
        "shown": crate::approval::parameters_fingerprint(&a.parameters),
    });
    if named {
        metadata["named"] = json!(true);
    }
    metadata.to_string()
}

/// What a submitted modal carries back (see [`modal_metadata`]).
#[derive(Debug, PartialEq)]
pub struct ModalSource {
    pub approval_id: ApprovalId,
    /// The message whose button opened it.
    pub clicked: MessageKey,
    /// The fingerprint of the parameters it showed; `None` for a modal from before it
    /// carried one.
    pub shown: Option<String>,
    /// The clicked message's own metadata named the approval (see
    /// `http::slack::interactions::Clicked`): it counts for the submission as it did
    /// for the click, although signoff may not have recorded it (yet). Only signoff
    /// writes a modal's metadata, and Slack signs it back.
    pub named: bool,
}

/// What a submitted modal names (see [`modal_metadata`]); `None` for anything else (a
/// modal from before this format).
pub fn modal_source(private_metadata: &str) -> Option<ModalSource> {
    let value: Value = serde_json::from_str(private_metadata).ok()?;
    let approval_id = value["approval_id"].as_str()?.parse().ok()?;
    let clicked = MessageKey {
        channel: value["channel"].as_str()?.to_owned(),
        ts: value["ts"].as_str()?.to_owned(),
    };
    let shown = value["shown"].as_str().map(str::to_owned);
    Some(ModalSource {
        approval_id,
        clicked,
        shown,
        named: value["named"].as_bool().unwrap_or(false),
    })
}

pub(super) fn modal_intro(a: &Approval, note: &str) -> Value {
    plain_section(format!(
        "{}\n{}\n\n{note}",
        fit_plain(&a.tool_name, 150),
        summary_or_params(a, 1000)
    ))
}

/// Parses the text submitted from [`edit_modal`]. The error is what the person reads
/// under the input (see [`modal_errors`]).
pub fn parse_edited_parameters(text: &str) -> Result<Value, String> {
    // Read exactly, as the API reads requests: no key twice, no number rounded, no
    // deeper than a request's parameters.
    let value: Value = exact_json::parse_parameters(text.trim()).map_err(|err| {
        let mut message = match err {
            ExactError::Syntax(why) => format!("Not valid JSON: {why}"),
            ExactError::Inexact(why) => why,
        };
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
/// under the input `block_id`. Slack shows a form's errors as plain text, so the
/// mentions a refusal names people with are written as `@U…` there.
pub fn modal_errors(block_id: &str, message: &str) -> Value {
    let message = plain_mentions(message);
    json!({ "response_action": "errors", "errors": { block_id: message } })
}

/// `message` with each `<@U…>` and `<!subteam^S…>` (see
/// [`mention`](crate::slack::approvers::mention)) written as `@U…`, `@S…`.
fn plain_mentions(message: &str) -> String {
    let mut plain = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find('<') {
        plain.push_str(&rest[..at]);
        let tail = &rest[at..];
        let inner = tail[1..].split_once('>').and_then(|(inner, _)| {
            let id = inner
                .strip_prefix('@')
                .or(inner.strip_prefix("!subteam^"))?;
            id.chars()
                .all(|c| c.is_ascii_alphanumeric())
                .then_some((inner.len(), id))
        });
        match inner {
            Some((len, id)) => {
                plain.push('@');
                plain.push_str(id);
                rest = &tail[len + 2..];
            }
            None => {
                plain.push('<');
                rest = &tail[1..];
            }
        }
    }
    plain.push_str(rest);
    plain
}

#[cfg(test)]
#[path = "modals_tests.rs"]
mod tests;
