//! The readable rendering of parameters: `• key: value` lines (never a raw JSON dump)
//! for messages and batch items, or one line for lists and modal intros.

use serde_json::Value;

use super::text::fit_plain;
use crate::approval::Approval;

/// How deep the parameter rendering walks into nested values before summarising the rest.
const MAX_DEPTH: usize = 8;
/// Caps for one parameter line, so a single huge key or value cannot crowd out the rest.
const MAX_KEY_CHARS: usize = 120;
const MAX_VALUE_CHARS: usize = 300;

/// Parameters as readable lines (`• key: value`), at most `max_lines` of them, plus the
/// total number of lines the full rendering has. The lines are NOT escaped yet: callers
/// escape whole lines so that length accounting happens on what Slack receives.
///
/// Strings are unquoted; arrays of scalars are comma-joined; nested objects become
/// `key.sub: value`; arrays holding objects or arrays are indexed (`key.0.sub`).
fn raw_param_lines(params: &Value, max_lines: usize) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut total = 0;
    match params {
        Value::Null => {}
        Value::Object(map) if map.is_empty() => {}
        Value::Object(_) => walk(params, &mut String::new(), 0, &mut |path, value| {
            total += 1;
            if lines.len() < max_lines {
                lines.push(format!(
                    "• {}: {}",
                    fit_plain(path, MAX_KEY_CHARS),
                    scalar_or_list(value)
                ));
            }
        }),
        other => {
            total = 1;
            if max_lines > 0 {
                lines.push(format!("• {}", scalar_or_list(other)));
            }
        }
    }
    (lines, total)
}

/// The parameters as plain-text lines (for [`plain`]) within `max` chars, ending with
/// `… and N more` when lines had to be left out. An empty object reads `No parameters.`.
pub fn params_plain(params: &Value, max: usize) -> String {
    // A line is at least 6 chars plus a newline, so this many lines always fill `max`.
    let (lines, total) = raw_param_lines(params, max / 4 + 1);
    if total == 0 {
        return "No parameters.".to_string();
    }
    let more = |n: usize| format!("… and {n} more");
    let mut out = String::new();
    let mut used = 0;
    for (i, line) in lines.iter().enumerate() {
        let left = total - i - 1;
        let tail = if left > 0 {
            more(left).chars().count() + 1
        } else {
            0
        };
        let add = line.chars().count() + usize::from(i > 0);
        if used + add + tail > max {
            let missing = more(total - i);
            if i == 0 {
                // Not even one whole line fits: cut it, and still say what is missing.
                let room = max.saturating_sub(missing.chars().count() + 1);
                if room == 0 {
                    return fit_plain(&missing, max);
                }
                return format!("{}\n{missing}", fit_plain(line, room));
            }
            out.push('\n');
            out.push_str(&missing);
            return out;
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line);
        used += add;
    }
    if total > lines.len() {
        out.push('\n');
        out.push_str(&more(total - lines.len()));
    }
    out
}

/// Parameters on one line (`key: value; key: value`), plain text within `max` chars:
/// for list items.
pub fn params_one_line(params: &Value, max: usize) -> String {
    let (lines, total) = raw_param_lines(params, 12);
    if total == 0 {
        return "no parameters".to_string();
    }
    let mut joined = lines
        .iter()
        .map(|line| line.trim_start_matches("• "))
        .collect::<Vec<_>>()
        .join("; ");
    if total > lines.len() {
        joined.push_str(&format!("; +{} more", total - lines.len()));
    }
    fit_plain(&joined, max)
}

/// The summary if there is one, else the parameters on one line; plain text (for
/// [`plain`]), within `max`. Once an approver edited the parameters the summary tells
/// what was asked, not what runs: the edited parameters are shown instead.
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

/// Calls `emit(path, value)` for every leaf, in key order. Depth is bounded so that a
/// pathological nesting cannot exhaust the stack.
fn walk(value: &Value, path: &mut String, depth: usize, emit: &mut dyn FnMut(&str, &Value)) {
    let has_children = match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => items.iter().any(|i| i.is_object() || i.is_array()),
        _ => false,
    };
    if !has_children {
        return emit(path, value);
    }
    if depth >= MAX_DEPTH {
        return emit(path, &Value::String("(nested too deep to show)".into()));
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
        Value::Object(map) => map.iter().for_each(|(key, item)| child(key, item)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, item)| child(&i.to_string(), item)),
        _ => {}
    }
}

/// One value, unescaped but capped: strings unquoted, scalars as written, arrays of
/// scalars comma-joined, empty containers spelled out.
fn scalar_or_list(value: &Value) -> String {
    // Cut once, from the text as written: a cut of text already cut (and its marks
    // already escaped) could end inside an escape.
    match as_written(value) {
        (text, None) => fit_plain(&text, MAX_VALUE_CHARS),
        (text, Some(more)) => {
            let more = format!(" (+{more} more)");
            let mut shown = fit_plain(&text, MAX_VALUE_CHARS - more.len());
            shown.push_str(&more);
            shown
        }
    }
}

/// A value's text before [`scalar_or_list`] cuts it; for a list, its items joined with
/// commas up to a little past the cap, and how many items were left out.
fn as_written(value: &Value) -> (String, Option<usize>) {
    let text = match value {
        Value::String(s) if s.is_empty() => "\"\"".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "(empty list)".to_string(),
        Value::Array(items) => {
            let mut joined = String::new();
            for (i, item) in items.iter().enumerate() {
                if joined.chars().count() > MAX_VALUE_CHARS {
                    return (joined, Some(items.len() - i));
                }
                if i > 0 {
                    joined.push_str(", ");
                }
                let (text, more) = as_written(item);
                joined.push_str(&text);
                if let Some(more) = more {
                    joined.push_str(&format!(" (+{more} more)"));
                }
            }
            joined
        }
        Value::Object(map) if map.is_empty() => "(empty)".to_string(),
        Value::Object(_) => "(object)".to_string(),
        other => other.to_string(),
    };
    (text, None)
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
