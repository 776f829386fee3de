//! The readable rendering of parameters: `• key: value` lines (never a raw JSON dump)
//! for messages and batch items, or one line for lists and modal intros.
//!
//! Two different parameters never read alike: a string that would read as another
//! value (`"true"`, `"5"`, `"null"`, one of the rendering's own words such as
//! `(empty list)`) is quoted as JSON writes it, and so is a key that would read as a
//! path or a line of its own (`"a.b"`, `"to: x"`). When not everything fits, every
//! top-level key still gets its line first (a nested value summarised, `(60 items)`,
//! `(object, 3 keys)`), then as many of the nested lines as fit, and the rendering says
//! it was cut ([`Rendered::cut`]), so that the message can offer all of it.

use serde_json::Value;

use super::text::{ELLIPSIS, breaks_line, fit_plain, fit_plain_reporting};
use crate::approval::Approval;

/// How deep the parameter rendering walks into nested values before summarising the rest.
const MAX_DEPTH: usize = 8;
/// Caps for one parameter line, so a single huge key or value cannot crowd out the rest.
const MAX_KEY_CHARS: usize = 120;
const MAX_VALUE_CHARS: usize = 300;
/// The fewest chars of a top-level line when every key's line must share the room:
/// below that, whole lines are shown while they fit, and the rest counted.
const MIN_TOP_CHARS: usize = 24;
/// Shown for a value nested deeper than [`MAX_DEPTH`].
const TOO_DEEP: &str = "(nested too deep to show)";

/// Parameters rendered within a limit.
#[derive(Debug, PartialEq)]
pub struct Rendered {
    /// Plain text (for [`super::text::plain`]).
    pub text: String,
    /// Whether anything was left out or shortened: then the whole parameters are worth
    /// offering (the Show all parameters button).
    pub cut: bool,
}

/// How the lines are laid out: one per line with a bullet, or joined on one line.
struct Layout {
    bullet: &'static str,
    sep: &'static str,
    more: fn(usize) -> String,
    max_lines: usize,
}

const LINES: Layout = Layout {
    bullet: "• ",
    sep: "\n",
    more: |n| format!("… and {n} more"),
    max_lines: usize::MAX,
};

/// A list item stays readable: a dozen parameters at most.
const ONE_LINE: Layout = Layout {
    bullet: "",
    sep: "; ",
    more: |n| format!("+{n} more"),
    max_lines: 12,
};

/// One rendered line, unescaped, without its bullet.
struct Line {
    text: String,
    /// It shows one line of the full rendering (a leaf), not a summary of several.
    leaf: bool,
    /// Its key or value was shortened.
    cut: bool,
}

/// The parameters as plain-text lines (for [`super::text::plain`]) within `max`
/// chars, ending with `… and N more` when lines had to be left out (N counts the lines
/// of the full rendering not shown). An empty object reads `No parameters.`.
pub fn params_plain(params: &Value, max: usize) -> String {
    params_rendered(params, max).text
}

/// [`params_plain`], and whether anything was cut.
pub fn params_rendered(params: &Value, max: usize) -> Rendered {
    render(params, max, &LINES).unwrap_or_else(|| Rendered {
        text: "No parameters.".into(),
        cut: false,
    })
}

/// Parameters on one line (`key: value; key: value`), plain text within `max` chars:
/// for list items.
pub fn params_one_line(params: &Value, max: usize) -> String {
    render(params, max, &ONE_LINE).map_or_else(|| "no parameters".into(), |r| r.text)
}

/// The summary if there is one, else the parameters on one line; plain text (for
/// [`super::text::plain`]), within `max`. Once an approver edited the parameters the
/// summary tells what was asked, not what runs: the edited parameters are shown instead.
pub fn summary_or_params(a: &Approval, max: usize) -> String {
    const EDITED: &str = "Edited: ";
    match a.summary.as_deref().map(str::trim) {
        _ if a.original_parameters.is_some() => format!(
            "{EDITED}{}",
            params_one_line(&a.parameters, max.saturating_sub(EDITED.len()))
        ),
        Some(summary) if !summary.is_empty() => fit_plain(summary, max),
        _ => params_one_line(&a.parameters, max),
    }
}

/// The whole rendering when it fits, else every top-level key's line and the nested
/// lines that fit ([`fit_summarised`]); `None` for no parameters.
///
/// Strings are unquoted unless they would read as something else; arrays of scalars
/// are comma-joined in brackets; nested objects become `key.sub: value`; arrays holding objects or
/// arrays are indexed (`key.0.sub`).
fn render(params: &Value, max: usize, layout: &Layout) -> Option<Rendered> {
    // A line is at least 4 chars with its separator, so this many lines fill `max`.
    let cap = layout.max_lines.min(max / 4 + 1);
    let map = match params {
        Value::Null => return None,
        Value::Object(map) if map.is_empty() => return None,
        Value::Object(map) => map,
        other => {
            let (text, cut) = scalar_or_list(other);
            let line = Line {
                text,
                leaf: true,
                cut,
            };
            return Some(fit_summarised(vec![line], Vec::new(), 1, max, layout));
        }
    };
    let (lines, total) = leaf_lines(map.iter(), cap);
    let width: usize = lines.iter().map(|line| width(line, layout)).sum();
    if lines.len() == total && width <= max + layout.sep.chars().count() {
        let cut = lines.iter().any(|line| line.cut);
        return Some(Rendered {
            text: join(&lines, None, layout),
            cut,
        });
    }
    let tops: Vec<Line> = map.iter().take(cap).map(|(k, v)| top_line(k, v)).collect();
    // Nested lines only once every key has its line.
    let nested = map
        .iter()
        .filter(|(_, v)| has_children(v) && map.len() <= cap);
    let (details, _) = leaf_lines(nested, cap);
    Some(fit_summarised(tops, details, total, max, layout))
}

/// The leaf lines under `entries` (top-level keys and their values), at most `cap` of
/// them, and how many there are in all.
fn leaf_lines<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    cap: usize,
) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut total = 0;
    for (key, value) in entries {
        let mut path = key_segment(key);
        walk(value, &mut path, 1, &mut |path, value| {
            total += 1;
            if lines.len() < cap {
                lines.push(leaf_line(path, value));
            }
        });
    }
    (lines, total)
}

/// `path: value`, each capped; `None` is a value nested too deep to show.
fn leaf_line(path: &str, value: Option<&Value>) -> Line {
    let (key, key_cut) = fit_plain_reporting(path, MAX_KEY_CHARS);
    let (value, value_cut) = value.map_or((TOO_DEEP.into(), true), scalar_or_list);
    Line {
        text: format!("{key}: {value}"),
        leaf: true,
        cut: key_cut || value_cut,
    }
}

/// A top-level key's line: its leaf line, or for a nested value what it holds.
fn top_line(key: &str, value: &Value) -> Line {
    let segment = key_segment(key);
    let count = |n: usize, one: &str, many: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    };
    let summary = match value {
        Value::Array(items) if has_children(value) => count(items.len(), "item", "items"),
        Value::Object(map) if has_children(value) => {
            format!("object, {}", count(map.len(), "key", "keys"))
        }
        _ => return leaf_line(&segment, Some(value)),
    };
    let (key, cut) = fit_plain_reporting(&segment, MAX_KEY_CHARS);
    Line {
        text: format!("{key}: ({summary})"),
        leaf: false,
        cut,
    }
}

/// When not everything fits: every top-level line first, sharing the room (a long one
/// shortened so that the others fit, while each keeps [`MIN_TOP_CHARS`]), then the
/// nested `details` in order while they fit, then how many of the `total` leaf lines
/// are not shown. Past that many keys, whole top-level lines while they fit.
fn fit_summarised(
    tops: Vec<Line>,
    details: Vec<Line>,
    total: usize,
    max: usize,
    layout: &Layout,
) -> Rendered {
    let sep = layout.sep.chars().count();
    let room = max.saturating_sub((layout.more)(total).chars().count() + sep) + sep;
    let widths: Vec<usize> = tops.iter().map(|line| width(line, layout)).collect();
    let shares = shares(&widths, room);
    let least = layout.bullet.chars().count() + MIN_TOP_CHARS + sep;
    let share_out = shares
        .iter()
        .zip(&widths)
        .all(|(s, w)| s >= w || *s >= least);
    let mut shown = Vec::new();
    let mut used = 0;
    let mut all_tops = true;
    for (mut line, (share, width)) in tops.into_iter().zip(shares.into_iter().zip(widths)) {
        if share_out && share < width {
            let keep = share - (width - line.text.chars().count());
            line.text = shorten(&line.text, keep);
            line.cut = true;
        } else if !share_out && used + width > room {
            all_tops = false;
            break;
        }
        used += if share_out { share.min(width) } else { width };
        shown.push(line);
    }
    if all_tops {
        for line in details {
            let width = width(&line, layout);
            if used + width > room || shown.len() >= layout.max_lines {
                break;
            }
            used += width;
            shown.push(line);
        }
    }
    let missing = total - shown.iter().filter(|line| line.leaf).count();
    let cut = missing > 0 || shown.iter().any(|line| line.cut);
    let text = join(
        &shown,
        (missing > 0).then(|| (layout.more)(missing)),
        layout,
    );
    Rendered {
        text: guard(text, max),
        cut,
    }
}

/// The room each of `widths` gets out of `room`: a fair share, what a short one does not
/// need going to the longer ones.
fn shares(widths: &[usize], room: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..widths.len()).collect();
    order.sort_by_key(|&i| widths[i]);
    let mut shares = vec![0; widths.len()];
    let mut left = room;
    for (n, &i) in order.iter().enumerate() {
        let share = (left / (widths.len() - n)).min(widths[i]);
        shares[i] = share;
        left -= share;
    }
    shares
}

/// A line's chars with its bullet and separator.
fn width(line: &Line, layout: &Layout) -> usize {
    layout.bullet.chars().count() + line.text.chars().count() + layout.sep.chars().count()
}

fn join(lines: &[Line], more: Option<String>, layout: &Layout) -> String {
    let lines = lines
        .iter()
        .map(|line| format!("{}{}", layout.bullet, line.text));
    lines.chain(more).collect::<Vec<_>>().join(layout.sep)
}

/// `text` (already rendered: its marks escaped) in `max` chars, ending with `…`; an
/// escape such as `\u{202e}` is dropped whole rather than cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(open) = cut.rfind("\\u{")
        && !cut[open..].contains('}')
    {
        cut.truncate(open);
    }
    cut.push(ELLIPSIS);
    cut
}

/// Last guard on the sum (the parts are sized to fit): lines kept, cut to `max`.
fn guard(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        text
    } else {
        shorten(&text, max)
    }
}

/// Whether the walk goes into `value` (else it is one line).
fn has_children(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => items.iter().any(|i| i.is_object() || i.is_array()),
        _ => false,
    }
}

/// Calls `emit(path, value)` for every leaf, in key order (`None`: nested too deep to
/// show). Depth is bounded so that a pathological nesting cannot exhaust the stack.
fn walk(
    value: &Value,
    path: &mut String,
    depth: usize,
    emit: &mut dyn FnMut(&str, Option<&Value>),
) {
    if !has_children(value) {
        return emit(path, Some(value));
    }
    if depth >= MAX_DEPTH {
        return emit(path, None);
    }
    let mut child = |key: &str, item: &Value| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        walk(item, path, depth + 1, emit);
        path.truncate(len);
    };
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(key, item)| child(&key_segment(key), item)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, item)| child(&i.to_string(), item)),
        _ => {}
    }
}

/// A key as one segment of a path: quoted as JSON writes it when it would read as
/// something else: a path (`a.b`), a line of its own or a value after it (`:`, `•`),
/// another parameter on one line (`;`), an array's index (`0`), a quoted key, nothing,
/// or the same key with a space for its control character.
fn key_segment(key: &str) -> String {
    let quote = key.is_empty()
        || key.contains(['.', ':', ';'])
        || key.chars().any(breaks_line)
        || key.starts_with(['•', '"'])
        || key.bytes().all(|b| b.is_ascii_digit());
    if quote {
        Value::String(key.to_owned()).to_string()
    } else {
        key.to_owned()
    }
}

/// One value, unescaped but capped: strings unquoted (unless they would read as
/// something else), scalars as written, arrays of scalars comma-joined in brackets, empty
/// containers spelled out; and whether it was cut.
fn scalar_or_list(value: &Value) -> (String, bool) {
    // Cut once, from the text as written: a cut of text already cut (and its marks
    // already escaped) could end inside an escape.
    match as_written(value, false) {
        (text, None) => fit_plain_reporting(&text, MAX_VALUE_CHARS),
        (text, Some(more)) => {
            let more = format!(" (+{more} more)");
            let (mut shown, _) = fit_plain_reporting(&text, MAX_VALUE_CHARS - more.len());
            shown.push_str(&more);
            (shown, true)
        }
    }
}

/// A value's text before [`scalar_or_list`] cuts it; for a list, its items joined with
/// commas in brackets up to a little past the cap, and how many items were left out.
fn as_written(value: &Value, in_list: bool) -> (String, Option<usize>) {
    let text = match value {
        Value::String(s) if reads_as_other(s, in_list) => value.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "(empty list)".to_string(),
        Value::Array(items) => {
            // Whole items while they fit, with room left for the count of the rest, so
            // that what is shown is not cut again and the count is of what is not
            // (lengths as shown: a hidden character shows as its escape).
            let budget = MAX_VALUE_CHARS - " (+1000000 more)".len();
            let mut joined = String::from("[");
            let mut shown = 1;
            for (i, item) in items.iter().enumerate() {
                let (text, _) = as_written(item, true);
                let piece = if i == 0 { text } else { format!(", {text}") };
                let length = fit_plain(&piece, usize::MAX).chars().count();
                if i > 0 && shown + length + 1 > budget {
                    joined.push(']');
                    return (joined, Some(items.len() - i));
                }
                joined.push_str(&piece);
                shown += length;
            }
            joined.push(']');
            joined
        }
        Value::Object(map) if map.is_empty() => "(empty)".to_string(),
        Value::Object(_) => "(object)".to_string(),
        other => other.to_string(),
    };
    (text, None)
}

/// Whether a string, unquoted, would read as something it is not: another JSON value
/// (`true`, `5`, `null`, `"x"`, `[1]`), a list as this rendering writes one (`[a, b]`),
/// nothing, one of this rendering's own words (`(empty list)`, `(object, 3 keys)`,
/// `(+4 more)`), in a list two items, on one line two parameters (`; `), or, with a
/// line break or another control character in it, the same text with a space there
/// (`"echo\nrm -rf ~"` quoted shows its `\n`).
fn reads_as_other(s: &str, in_list: bool) -> bool {
    let trimmed = s.trim();
    s.is_empty()
        || s.chars().any(breaks_line)
        || s.contains("; ")
        || trimmed.starts_with('"')
        || (trimmed.starts_with('(') && trimmed.ends_with(')'))
        || trimmed.ends_with(" more)")
        || (trimmed.starts_with('[') && trimmed.ends_with(']'))
        || (in_list && s.contains(", "))
        || serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
