//! The `/approvals` slash command: parsing its text into a [`Command`] and rendering the
//! ephemeral replies. Pure; the handler looks approvals up and decides who may see what.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::blocks::outcome_line;
use super::text::{
    fit_line, join_limited, person, plain, relative, requester, slack_date, summary_or_params,
    tier_badge,
};
use crate::approval::{Approval, Decision, Status};

/// The most items one `/approvals pending` reply lists (each is two blocks; Slack allows
/// 50).
pub const MAX_LISTED: usize = 20;

/// The one-line usage, appended to every "did not understand" reply.
pub const USAGE_LINE: &str = "Usage: `/approvals [pending | status ID | help]`";

/// What someone asked for with `/approvals …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/approvals`, `/approvals pending` or `/approvals list`: what waits for me.
    Pending,
    /// `/approvals status ID`: one approval, by full UUID or a prefix of at least 4 hex
    /// digits (lower-cased; dashes kept as typed).
    Status(String),
    /// `/approvals help` (also `-h`, `--help`, `?`).
    Help,
    /// Anything else. The text says what was wrong, escaped for mrkdwn, ready for
    /// [`unknown_reply`].
    Unknown(String),
}

/// Parses the text after `/approvals`. Keywords are case-insensitive and any amount of
/// whitespace separates words.
pub fn parse(text: &str) -> Command {
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((first, rest)) = words.split_first() else {
        return Command::Pending;
    };
    let keyword = first.to_lowercase();
    match (keyword.as_str(), rest) {
        ("pending" | "list", []) => Command::Pending,
        ("pending" | "list", _) => Command::Unknown(format!("`{keyword}` takes no arguments")),
        ("status", [id]) => parse_id(id),
        ("status", []) => Command::Unknown(
            "`status` needs an approval id, for example `/approvals status 0123abcd`".into(),
        ),
        ("status", _) => Command::Unknown("`status` takes exactly one approval id".into()),
        ("help" | "-h" | "--help" | "?", _) => Command::Help,
        _ => Command::Unknown(format!(
            "I don't know the command `{}`",
            fit_line(first, 40).replace('`', "'")
        )),
    }
}

/// A full UUID or a prefix of one: hex digits and dashes, 4 to 36 chars, at least four
/// of them hex digits (so `----` is not an id).
fn parse_id(id: &str) -> Command {
    let len = id.chars().count();
    let hex = id.chars().filter(char::is_ascii_hexdigit).count();
    let allowed = id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if allowed && (4..=36).contains(&len) && hex >= 4 {
        Command::Status(id.to_ascii_lowercase())
    } else {
        Command::Unknown(format!(
            "`{}` is not an approval id: use the 8-character ID shown on the request",
            fit_line(id, 40).replace('`', "'")
        ))
    }
}

/// The help text, with examples.
pub fn usage() -> &'static str {
    "*`/approvals`* shows the approval requests that are waiting for you.\n\
     • `/approvals` or `/approvals pending`: requests you can decide\n\
     • `/approvals status ID`: one request and its votes, for example \
     `/approvals status 0123abcd` (the ID is on the request's message)\n\
     • `/approvals help`: this message\n\
     Decide a request with the buttons on its message."
}

/// A one-liner for input we did not understand: what was wrong plus [`USAGE_LINE`].
/// `problem` is the text of [`Command::Unknown`].
pub fn unknown_reply(problem: &str) -> String {
    format!("{problem}. {USAGE_LINE}")
}

/// A text-only ephemeral reply (help, unknown command, not found).
pub fn text_reply(text: &str) -> Value {
    ephemeral(text, vec![section(text)])
}

/// The ephemeral answer to `/approvals pending`, without message links.
pub fn pending_list_reply(items: &[&Approval], now: DateTime<Utc>) -> Value {
    let linked: Vec<(&Approval, Option<&str>)> = items.iter().map(|a| (*a, None)).collect();
    let found = Found {
        total: items.len(),
        unchecked: 0,
    };
    pending_list_reply_linked(&linked, found, now)
}

/// What a `/approvals pending` scan found for the reader.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// How many wait for the reader in all (the items listed may be the first of them).
    pub total: usize,
    /// How many could not be checked against their approvers' user groups (Slack did
    /// not list the members in time): not listed, and perhaps the reader's.
    pub unchecked: usize,
}

/// The ephemeral answer to `/approvals pending`: up to [`MAX_LISTED`] items in the given
/// order, each with its tool, summary, risk, short id, age and expiry, plus a link to
/// its message when the permalink is known; how many there are in all, and how many
/// could not be checked, as `found` says.
pub fn pending_list_reply_linked(
    items: &[(&Approval, Option<&str>)],
    Found { total, unchecked }: Found,
    now: DateTime<Utc>,
) -> Value {
    let note = (unchecked > 0).then(|| {
        let them = match unchecked {
            1 => "1 request".to_owned(),
            n => format!("{n} requests"),
        };
        format!(
            "{them} could not be checked just now: Slack did not list a user group's \
             members in time. Try again in a moment."
        )
    });
    if total == 0 {
        return text_reply(&match note {
            None => "Nothing is waiting for you.".to_owned(),
            Some(note) => {
                format!("Nothing is waiting for you among the requests signoff could check. {note}")
            }
        });
    }
    let title = match total {
        1 => "1 request is waiting for you".to_string(),
        n => format!("{n} requests are waiting for you"),
    };
    let mut blocks = vec![section(&format!("*{title}*"))];
    for (a, link) in items.iter().take(MAX_LISTED) {
        blocks.push(section(&list_item(a, *link, now)));
        // What was asked, in the requester's words: plain text.
        blocks.push(json!({ "type": "context", "elements": [plain(summary_or_params(a, 500))] }));
    }
    let listed = items.len().min(MAX_LISTED);
    if total > listed {
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": format!("… and {} more", total - listed) }],
        }));
    }
    if let Some(note) = note {
        blocks.push(
            json!({ "type": "context", "elements": [{ "type": "plain_text", "text": note }] }),
        );
    }
    ephemeral(&title, blocks)
}

fn list_item(a: &Approval, link: Option<&str>, now: DateTime<Utc>) -> String {
    let link = link
        .filter(|url| is_safe_link(url))
        .map_or(String::new(), |url| format!(" · <{url}|open>"));
    format!(
        "*`{}`*{}\n{} · `{}` · requested {} · expires {}{link}",
        fit_line(&a.tool_name, 150),
        server_suffix(a),
        tier_badge(a.risk_tier),
        a.id.short(),
        relative(a.created_at, now),
        relative(a.expires_at, now),
    )
}

/// ` on SERVER` for an MCP call (a server name's alphabet cannot format).
fn server_suffix(a: &Approval) -> String {
    a.server.as_deref().map_or(String::new(), |server| {
        format!(" on `{}`", fit_line(server, 60))
    })
}

/// Permalinks come from Slack, but a link is only ever built from a plain https URL
/// that cannot close the `<…|…>` syntax early.
fn is_safe_link(url: &str) -> bool {
    url.starts_with("https://")
        && url.len() <= 1000
        && !url.contains(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '|'))
}

/// The ephemeral answer to `/approvals status ID`: where the approval stands, its
/// votes (who, which way, when), expiry, and how it ended if it has.
pub fn status_reply(a: &Approval, now: DateTime<Utc>) -> Value {
    let status = format!("{} {}", status_emoji(a.status), a.status);
    let expires = if now < a.expires_at {
        format!(
            "{} ({})",
            slack_date(a.expires_at),
            relative(a.expires_at, now)
        )
    } else {
        format!("{} (passed)", slack_date(a.expires_at))
    };
    let mut fields: Vec<Value> = [
        ("Status", status),
        ("Risk", tier_badge(a.risk_tier)),
        ("Requested", relative(a.created_at, now)),
        (
            "Approvals",
            format!("{} of {}", a.approvals(), a.required_approvals),
        ),
        ("Expires", expires),
    ]
    .into_iter()
    .map(|(label, value)| json!({ "type": "mrkdwn", "text": format!("*{label}*\n{value}") }))
    .collect();
    // Whoever the caller said it was: plain text, never a mention.
    fields.insert(2, plain(format!("Requested by\n{}", requester(a))));
    let mut blocks = vec![
        section(&format!(
            "*`{}`*{} `{}`",
            fit_line(&a.tool_name, 150),
            server_suffix(a),
            a.id.short(),
        )),
        json!({ "type": "section", "text": plain(summary_or_params(a, 1500)) }),
        json!({ "type": "section", "fields": fields }),
    ];
    if !a.votes.is_empty() {
        let lines: Vec<String> = a
            .votes
            .iter()
            .map(|vote| {
                let verb = match vote.decision {
                    Decision::Approve => "approved",
                    Decision::Deny => "denied",
                };
                let reason = vote
                    .reason
                    .as_deref()
                    .filter(|r| !r.trim().is_empty())
                    .map_or(String::new(), |r| format!(" — {}", fit_line(r, 200)));
                format!(
                    "• {} {verb} {}{reason}",
                    person(&vote.user),
                    relative(vote.at, now)
                )
            })
            .collect();
        blocks.push(section(&format!(
            "*Votes*\n{}",
            join_limited(&lines, "\n", 2800)
        )));
    }
    if a.status != Status::Pending {
        blocks.push(section(&outcome_line(a)));
    }
    let text = format!(
        "{} ({}) is {}",
        fit_line(&a.tool_name, 100),
        a.id.short(),
        a.status
    );
    ephemeral(&text, blocks)
}

fn status_emoji(status: Status) -> &'static str {
    match status {
        Status::Pending => ":hourglass_flowing_sand:",
        Status::Approved => ":white_check_mark:",
        Status::Denied => ":x:",
        Status::Expired => ":hourglass:",
        Status::Executed => ":rocket:",
        Status::Cancelled => ":no_entry_sign:",
    }
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

fn ephemeral(text: &str, blocks: Vec<Value>) -> Value {
    json!({ "response_type": "ephemeral", "text": text, "blocks": blocks })
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
