//! Block Kit for a batch (`batch_window`): look-alike requests of one requester in one
//! message. Each item has its parameters, where it stands and, while it waits, its own
//! Approve / Deny / Edit & approve buttons (the same actions as a single request's,
//! with Show all parameters when its parameters were cut);
//! below them Approve all / Deny all act on every item still waiting. Within Block
//! Kit's limits for up to `MAX_BATCH` items (three blocks each).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::blocks::{
    actions, button, context, expires, header_text, outcome_line, plain_section, votes,
};
use super::modals::reason_input;
use super::params::params_rendered;
use super::text::{fit_line, fit_plain, plain, requester, tier_badge};
use crate::approval::{Approval, ApprovalId, Status, Tier};
use crate::jobs::MessageKey;

/// `action_id` of the Approve all button (its value: the batch's leader).
pub const ACTION_APPROVE_ALL: &str = "approve_all";
/// `action_id` of the Deny all button (opens [`deny_all_modal`]).
pub const ACTION_DENY_ALL: &str = "deny_all";
/// `callback_id` of the Deny all modal.
pub const DENY_ALL_CALLBACK: &str = "deny_all_reason";

/// Characters of one item's parameters: ten items stay a readable message.
const ITEM_MAX: usize = 700;

/// The message for a batch: `items` in order, the first its leader.
pub fn batch_message(items: &[Approval], now: DateTime<Utc>) -> Value {
    let Some(first) = items.first() else {
        return json!({ "text": "No requests", "blocks": [] });
    };
    let waiting: Vec<&Approval> = items
        .iter()
        .filter(|a| a.status == Status::Pending)
        .collect();
    let highest = items
        .iter()
        .map(|a| a.risk_tier)
        .max()
        .unwrap_or(Tier::Medium);
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": plain(fit_plain(&format!("{} × {}", items.len(), header_text(first)), 150)),
        }),
        json!({
            "type": "section",
            "fields": [
                { "type": "mrkdwn", "text": format!("*Risk*\n{}", tier_badge(highest)) },
                plain(fit_plain(&format!("Requested by\n{}", requester(first)), 2000)),
            ],
        }),
        context(format!(
            "{} requests alike but for their parameter values, in one message. Each is \
             decided, runs and expires on its own.",
            items.len()
        )),
    ];
    for (n, item) in items.iter().enumerate() {
        blocks.extend(item_blocks(n + 1, item, now));
    }
    if waiting.len() > 1 {
        blocks.push(bulk_actions(first.id, &waiting));
    }
    let what = if waiting.is_empty() {
        "Decided"
    } else {
        "Approval needed"
    };
    let text = format!(
        "{what}: {} requests for {} ({} waiting)",
        items.len(),
        fit_line(&first.tool_name, 130),
        waiting.len()
    );
    json!({ "text": text, "blocks": blocks })
}

/// One item: what it asks (its summary on its own line, one line at most, and its
/// parameters under a label, so that a summary cannot pass for a parameter), then its
/// buttons and votes while it waits, or how it ended.
fn item_blocks(n: usize, a: &Approval, now: DateTime<Utc>) -> Vec<Value> {
    let summary = a
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or(String::new(), |s| format!("{}\n", fit_plain(s, 300)));
    let params = params_rendered(&a.parameters, ITEM_MAX);
    let text = format!("{n}. {summary}Parameters:\n{}", params.text);
    let mut blocks = vec![plain_section(text)];
    let id = format!("ID `{}`", a.id.short());
    if a.status == Status::Pending {
        let expires = expires(a, now);
        blocks.push(actions(a, params.cut));
        blocks.push(context(format!("{id} · {} · expires {expires}", votes(a))));
    } else {
        blocks.push(context(format!("{} · {id}", outcome_line(a))));
    }
    blocks
}

/// Approve all / Deny all, on the items still waiting.
fn bulk_actions(leader: ApprovalId, waiting: &[&Approval]) -> Value {
    let leader = leader.to_string();
    let count = waiting.len();
    let mut approve = button(
        &format!("Approve all {count}"),
        ACTION_APPROVE_ALL,
        &leader,
        Some("primary"),
    );
    // Approving many at once is where approval fatigue bites: one more look.
    approve["confirm"] = json!({
        "title": { "type": "plain_text", "text": format!("Approve all {count}?") },
        "text": { "type": "mrkdwn", "text": format!(
            "This lets `{}` run {count} times, each with the parameters shown.",
            fit_line(&waiting[0].tool_name, 200)) },
        "confirm": { "type": "plain_text", "text": "Approve all" },
        "deny": { "type": "plain_text", "text": "Back" },
    });
    json!({
        "type": "actions",
        "block_id": format!("batch:{leader}"),
        "elements": [
            approve,
            button(&format!("Deny all {count}"), ACTION_DENY_ALL, &leader, Some("danger")),
        ],
    })
}

/// The `view` for `views.open` when someone clicks Deny all: one optional reason for
/// every item still waiting.
///
/// `named` are the items the clicked message's own metadata listed: the submission
/// counts them as on the message, as the click did, even where signoff has not recorded
/// the post (at most [`MAX_BATCH`](crate::store::ops::batching::MAX_BATCH) ids).
pub fn deny_all_modal(
    leader: &Approval,
    waiting: usize,
    clicked: &MessageKey,
    named: &[ApprovalId],
) -> Value {
    let metadata = json!({
        "leader": leader.id, "channel": clicked.channel, "ts": clicked.ts, "named": named,
    });
    json!({
        "type": "modal",
        "callback_id": DENY_ALL_CALLBACK,
        "private_metadata": metadata.to_string(),
        "title": { "type": "plain_text", "text": "Deny all" },
        "submit": { "type": "plain_text", "text": format!("Deny {waiting}") },
        "close": { "type": "plain_text", "text": "Cancel" },
        "blocks": [
            plain_section(format!(
                "{} × {}\n\nDenying means none of the {waiting} requests still waiting will run.",
                waiting,
                fit_plain(&leader.tool_name, 150)
            )),
            reason_input(
                "Shown in the channel and sent back to whoever asked, for each request.",
            ),
        ],
    })
}

/// What a submitted Deny all modal names: the batch leader, the clicked message and
/// the items that message's metadata listed (see [`deny_all_modal`]).
pub fn deny_all_source(
    private_metadata: &str,
) -> Option<(ApprovalId, MessageKey, Vec<ApprovalId>)> {
    let value: Value = serde_json::from_str(private_metadata).ok()?;
    let leader = value["leader"].as_str()?.parse().ok()?;
    let key = MessageKey {
        channel: value["channel"].as_str()?.to_owned(),
        ts: value["ts"].as_str()?.to_owned(),
    };
    // A form opened before the named items were kept names none: checked against what
    // signoff recorded, as then.
    let named = match value.get("named") {
        None => Vec::new(),
        Some(named) => named
            .as_array()?
            .iter()
            .map(|id| id.as_str()?.parse().ok())
            .collect::<Option<_>>()?,
    };
    Some((leader, key, named))
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
