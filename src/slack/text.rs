//! Text helpers shared by the Slack renderers: cutting text to Block Kit's limits on
//! character boundaries, mentions and times. The readable `• key: value` rendering of
//! parameters (never a raw JSON dump) is in [`super::params`], re-exported here.
//!
//! Text a requester wrote (tool name aside: its alphabet is fixed) — the summary, the
//! context, the parameters, `requested_by` — only ever goes into `plain_text` objects
//! ([`plain`]): Slack shows those literally, so `*APPROVED by security*` is not bold, a
//! URL is not a link and `<!channel>` or a user id pings nobody; it cannot pose as
//! signoff's own words. signoff's own words are mrkdwn, escaped with [`escape`] where
//! they quote anything.
//!
//! Lengths are counted in `char`s, after escaping, because that is what Slack measures
//! against its limits.

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use super::params::{params_one_line, params_plain, summary_or_params};
use crate::approval::{Approval, Tier};

/// Appended to anything that was cut.
pub const ELLIPSIS: char = '…';

/// Escapes the three characters Slack treats as control characters in mrkdwn, so that
/// user text cannot produce mentions (`<!channel>`), links or user pings.
pub fn escape(text: &str) -> String {
    fit(text, usize::MAX)
}

/// Escapes `text` for mrkdwn and cuts it to at most `max` chars (counted after
/// escaping), ending with `…` when cut. An escape sequence is never split.
pub fn fit(text: &str, max: usize) -> String {
    cut(text, max, true, false)
}

/// Like [`fit`], with line breaks, tabs and the other control characters turned into
/// spaces ([`breaks_line`]): for list items and fallback text where one value must
/// stay on one line.
pub fn fit_line(text: &str, max: usize) -> String {
    cut(text, max, true, true)
}

/// For `plain_text` objects (headers, button labels, modal titles): no escaping, since
/// Slack shows plain text literally, one line ([`breaks_line`] as spaces), cut to
/// `max` chars.
pub fn fit_plain(text: &str, max: usize) -> String {
    cut(text, max, false, true)
}

/// Like [`fit_plain`], keeping line feeds and tabs (other control characters and line
/// separators are shown escaped): for a requester's summary or context.
pub fn fit_plain_lines(text: &str, max: usize) -> String {
    cut(text, max, false, false)
}

/// A `plain_text` object: shown literally (no formatting, links, mentions or emoji
/// codes), never empty (Slack refuses an empty text).
pub fn plain(text: impl Into<String>) -> Value {
    let text: String = text.into();
    let text = if text.trim().is_empty() {
        " ".to_owned()
    } else {
        text
    };
    serde_json::json!({ "type": "plain_text", "text": text, "emoji": false })
}

fn cut(text: &str, max: usize, escape: bool, single_line: bool) -> String {
    cut_reporting(text, max, escape, single_line).0
}

/// Like [`fit_plain`], also saying whether anything was cut.
pub fn fit_plain_reporting(text: &str, max: usize) -> (String, bool) {
    cut_reporting(text, max, false, true)
}

/// [`cut`], and whether it cut anything. In single-line mode a line feed and a tab are
/// a space; elsewhere they are kept (a CR LF read as one line feed). Every other
/// character that breaks a line or controls the terminal (see [`breaks_line`]) is
/// shown escaped in both (see [`hidden`]): a space in its place would read as another
/// text (U+2028 ends a JavaScript `//` comment, U+0085 a Python line).
fn cut_reporting(text: &str, max: usize, escape: bool, single_line: bool) -> (String, bool) {
    if max == 0 {
        return (String::new(), !text.is_empty());
    }
    let mut out = String::new();
    let mut used = 0usize;
    // Byte length of `out` at the last point that still leaves room for the ellipsis.
    let mut mark = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let c = if single_line && breaks_line(c) && !hidden(c) {
            ' '
        } else if c == '\r' && chars.peek() == Some(&'\n') {
            continue;
        } else {
            c
        };
        let shown;
        let piece = match c {
            '&' if escape => "&amp;",
            '<' if escape => "&lt;",
            '>' if escape => "&gt;",
            c if hidden(c) => {
                shown = c.escape_unicode().to_string();
                shown.as_str()
            }
            _ => "",
        };
        let len = if piece.is_empty() {
            1
        } else {
            piece.chars().count()
        };
        if used + len > max {
            out.truncate(mark.unwrap_or(out.len()));
            out.push(ELLIPSIS);
            return (out, true);
        }
        if mark.is_none() && used + len > max - 1 {
            mark = Some(out.len());
        }
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
        used += len;
    }
    (out, false)
}

/// Whether `c` ends a line, or may, wherever a reader shows it: the C0 and C1 control
/// characters (line feed, CR, tab, vertical tab, form feed, next line U+0085, …) and
/// Unicode's line and paragraph separators (U+2028, U+2029). Requester text in one
/// line has none of them (a line feed or a tab as a space, the rest escaped), so it
/// cannot start a line of its own (a fake `• dry_run: true` under a real parameter).
pub fn breaks_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `c` shows nothing, or reorders the text around it, so that an approver
/// would not read what is there: Unicode's bidirectional embeddings, overrides,
/// isolates and marks (`/tmp/\u{202E}fdp.exe` reads as `/tmp/exe.pdf`); zero-width
/// spaces and joiners, the word joiner and invisible operators, the byte-order mark,
/// the soft hyphen, the fillers, the shorthand format controls and the musical
/// symbols' formatting characters (two keys, or two values, that differ only by them
/// look the same); and the tag characters and the supplementary variation selectors,
/// which can spell out whole hidden sentences (instructions smuggled past a reader);
/// and the characters that break a line where signoff did not, or control a terminal
/// ([`breaks_line`]: every C0 and C1 control character but the line feed and the tab,
/// which text on several lines keeps, and U+2028, U+2029). Requester text shows them
/// as `\u{202e}` instead, so an approver reads every character in its real order and
/// every line break as signoff made it.
pub fn hidden(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{8}'
            | '\u{B}'..='\u{1F}'
            | '\u{7F}'..='\u{9F}'
            | '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// JSON text with every [`hidden`] character written as its `\uXXXX` escape (past
/// U+FFFF a pair of them, JSON's surrogates): the same value, every character in
/// sight. Such characters only occur inside JSON strings, where the escape means the
/// character itself.
pub fn json_showing_hidden(json: String) -> String {
    if !json.chars().any(hidden) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut units = [0u16; 2];
    for c in json.chars() {
        if hidden(c) {
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `id` looks like a Slack user id (`U…` or `W…`, upper-case letters and digits).
pub fn is_user_id(id: &str) -> bool {
    id.len() >= 2
        && id.len() <= 32
        && id.starts_with(['U', 'W'])
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `<@U…>` for a Slack user id, else the escaped name (an API token name, `policy`, …).
pub fn person(who: &str) -> String {
    let who = who.trim();
    if is_user_id(who) {
        format!("<@{who}>")
    } else {
        fit_line(who, 80)
    }
}

/// Renders a `decided_by` value (one actor, or approvers joined with `, `) as mentions,
/// keeping to `max` chars by dropping whole names: a cut mention would show as raw text.
pub fn people(decided_by: &str, max: usize) -> String {
    let names: Vec<String> = decided_by
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(person)
        .collect();
    join_limited(&names, ", ", max)
}

/// ` by NAME outside Slack (signoff decide)`: a break-glass decider, in plain words
/// (an operator's name, never a mention).
pub fn outside_slack(by: &str) -> String {
    format!(
        " by {} outside Slack (signoff decide)",
        fit_line(by.trim(), 80)
    )
}

/// ` by …` for whoever decided: people in Slack, or an operator outside it.
pub fn decider(a: &Approval, by: &str) -> String {
    if a.is_break_glass() {
        outside_slack(by)
    } else {
        format!(" by {}", people(by, 1500))
    }
}

/// Joins whole `items` with `sep`, ending with ` and N more` when they do not all fit in
/// `max` chars. Items are never cut, so mentions and links stay intact.
pub fn join_limited(items: &[String], sep: &str, max: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for (i, item) in items.iter().enumerate() {
        let rest = items.len() - i - 1;
        let tail = if rest > 0 {
            format!(" and {rest} more").chars().count()
        } else {
            0
        };
        let add = item.chars().count() + if i > 0 { sep.chars().count() } else { 0 };
        if used + add + tail > max {
            let more = format!(" and {} more", items.len() - i);
            if used + more.chars().count() <= max {
                out.push_str(&more);
            }
            return out;
        }
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(item);
        used += add;
    }
    out
}

/// The risk tier as an emoji badge, e.g. `:large_yellow_circle: medium`.
pub fn tier_badge(tier: Tier) -> String {
    let emoji = match tier {
        Tier::Low => ":large_green_circle:",
        Tier::Medium => ":large_yellow_circle:",
        Tier::High => ":red_circle:",
    };
    format!("{emoji} {}", tier.as_str())
}

/// A Slack date token: each reader sees it in their own time zone; the fallback (UTC) is
/// what clients that cannot format dates show.
pub fn slack_date(at: DateTime<Utc>) -> String {
    date_token(at, "{date_short_pretty} {time}")
}

/// A Slack date token for a past time, which each reader sees as how long ago it was
/// ("5 minutes ago"), kept current by Slack; the fallback is the time in UTC.
pub fn slack_ago(at: DateTime<Utc>) -> String {
    date_token(at, "{ago}")
}

/// Slack's date token for `at`, shown as `format` says (its `{…}` tokens), with the
/// time in UTC as the fallback.
fn date_token(at: DateTime<Utc>, format: &str) -> String {
    format!(
        "<!date^{}^{format}|{}>",
        at.timestamp(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

/// A short duration such as `2h 5m`, `3d 4h`, `5m` or `40s` (negative is treated as 0).
pub fn duration_short(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `in 2h 5m` for a future time, `5m ago` for a past one.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    if secs >= 0 {
        format!("in {}", duration_short(secs))
    } else {
        format!("{} ago", duration_short(-secs))
    }
}

/// Who asked, as plain text (for [`plain`]): the `requested_by` the caller gave (never a
/// mention: the caller chose it) with the API token's name beside it, which the
/// caller cannot choose (so a request cannot pass itself off as someone else's); the
/// token's name alone when that is all there is, or what `requested_by` says.
pub fn requester(a: &Approval) -> String {
    let who = a
        .requested_by
        .as_deref()
        .map(str::trim)
        .filter(|who| !who.is_empty());
    match (who, a.token_name.as_deref()) {
        (Some(who), Some(token)) if who != token => {
            format!("{} (token {})", fit_plain(who, 80), fit_plain(token, 80))
        }
        (Some(who), _) => fit_plain(who, 80),
        (None, Some(token)) => format!("token {}", fit_plain(token, 80)),
        (None, None) => "unknown".to_string(),
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
