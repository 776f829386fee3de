//! `summary` templates: `{name}` / `{a.b}` placeholders filled from the
//! call's JSON parameters. The result is kept to what an approval's summary may
//! hold ([`MAX_TEXT_BYTES`]); the Slack renderer decides how much of it fits.

use serde_json::Value;

use crate::approval::MAX_TEXT_BYTES;

/// Renders `template` with values from `params`.
///
/// - `{name}` is the top-level parameter `name`; `{a.b}` walks into nested
///   objects (a numeric segment also indexes into an array, e.g. `{items.0}`).
/// - Strings are inserted without quotes, numbers and bools as written,
///   `null` as `null`, arrays as `, `-separated items, objects as compact JSON.
/// - A placeholder whose path is missing is left exactly as written, so a
///   reviewer sees that something was absent rather than an empty gap.
/// - `{{` and `}}` produce literal braces; any other unmatched brace is kept.
/// - Past [`MAX_TEXT_BYTES`] the result is cut, ending in `…`.
pub fn render_summary(template: &str, params: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('}') {
            out.push('}');
            rest = after;
        } else {
            // `tail` starts with a single `{`: look for its closing brace,
            // giving up at a nested `{` so `{a{b}` keeps `{a` literally.
            let body = &tail[1..];
            match body.find(['{', '}']) {
                Some(end) if body[end..].starts_with('}') && end > 0 => {
                    let path = &body[..end];
                    match lookup(params, path) {
                        Some(value) => out.push_str(&format_value(value)),
                        None => {
                            out.push('{');
                            out.push_str(path);
                            out.push('}');
                        }
                    }
                    rest = &body[end + 1..];
                }
                _ => {
                    out.push('{');
                    rest = body;
                }
            }
        }
    }
    out.push_str(rest);
    cut_to(out, MAX_TEXT_BYTES)
}

/// `text` cut to `max` bytes at most, at a character's boundary, ending in `…` when cut:
/// a placeholder may stand for parameters of up to a megabyte, a template may repeat it,
/// and the summary is kept with the approval and shown in every answer.
fn cut_to(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// Finds the value at a dotted `path`. If the nested walk fails, a
/// top-level key spelled with dots (`"a.b"`) is tried as a fallback.
fn lookup<'a>(params: &'a Value, path: &str) -> Option<&'a Value> {
    let trimmed = path.trim();
    if trimmed.is_empty() {
        return None;
    }
    let nested = trimmed
        .split('.')
        .try_fold(params, |value, segment| match value {
            Value::Object(fields) => fields.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        });
    nested.or_else(|| params.get(trimmed))
}

/// Formats a value for a human-readable summary line.
fn format_value(value: &Value) -> String {
    match value {
        Value::Array(items) => items.iter().map(format_item).collect::<Vec<_>>().join(", "),
        other => format_item(other),
    }
}

/// Formats a scalar as written; nested containers as compact JSON so an
/// array of objects stays unambiguous.
fn format_item(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        // `Display` on a JSON value is compact JSON (numbers as written).
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_summary_past_what_an_approval_keeps_is_cut_at_a_character() {
        let params = json!({"name": "é".repeat(600_000)});
        let summary = render_summary("Rename to {name} ({name})", &params);
        assert!(summary.len() <= MAX_TEXT_BYTES, "{}", summary.len());
        assert!(summary.len() > MAX_TEXT_BYTES - 8, "{}", summary.len());
        assert!(summary.starts_with("Rename to éé") && summary.ends_with("é…"));
        let short = render_summary("Rename to {name}", &json!({"name": "x"}));
        assert_eq!(short, "Rename to x");
    }

    #[test]
    fn top_level_strings_are_inserted_without_quotes() {
        let params = json!({"service": "api", "environment": "prod"});
        assert_eq!(
            render_summary("Deploy {service} to {environment}", &params),
            "Deploy api to prod"
        );
    }

    #[test]
    fn nested_paths_are_followed() {
        let params = json!({"target": {"cluster": {"name": "eu-1"}}, "items": ["a", "b"]});
        assert_eq!(
            render_summary("on {target.cluster.name}", &params),
            "on eu-1"
        );
        assert_eq!(render_summary("first {items.1}", &params), "first b");
    }

    #[test]
    fn missing_placeholders_are_left_as_is() {
        let params = json!({"service": "api", "target": {}});
        assert_eq!(
            render_summary("Deploy {service} to {environment} ({target.env})", &params),
            "Deploy api to {environment} ({target.env})"
        );
    }

    #[test]
    fn numbers_bools_and_null_are_written_as_json() {
        let params = json!({"n": 42, "f": 1.5, "b": true, "z": null, "neg": -3});
        assert_eq!(
            render_summary("{n} {f} {b} {z} {neg}", &params),
            "42 1.5 true null -3"
        );
    }

    #[test]
    fn arrays_are_comma_separated() {
        let params = json!({"to": ["a@x.com", "b@x.com"], "ids": [1, 2], "mixed": [{"k": 1}, [2]]});
        assert_eq!(render_summary("To {to}", &params), "To a@x.com, b@x.com");
        assert_eq!(render_summary("{ids}", &params), "1, 2");
        assert_eq!(render_summary("{mixed}", &params), r#"{"k":1}, [2]"#);
        assert_eq!(render_summary("[{empty}]", &json!({"empty": []})), "[]");
    }

    #[test]
    fn objects_are_compact_json() {
        let params = json!({"opts": {"force": true}});
        assert_eq!(
            render_summary("with {opts}", &params),
            r#"with {"force":true}"#
        );
    }

    #[test]
    fn double_braces_are_literal() {
        let params = json!({"name": "x"});
        assert_eq!(render_summary("{{name}} is {name}", &params), "{name} is x");
        assert_eq!(render_summary("a }} b {{", &params), "a } b {");
    }

    #[test]
    fn unmatched_braces_are_kept() {
        let params = json!({"b": "B"});
        assert_eq!(render_summary("a { b", &params), "a { b");
        assert_eq!(render_summary("a } b", &params), "a } b");
        assert_eq!(render_summary("{a{b}", &params), "{aB");
        assert_eq!(render_summary("{}", &params), "{}");
        assert_eq!(render_summary("end {", &params), "end {");
    }

    #[test]
    fn dotted_top_level_keys_are_a_fallback() {
        let params = json!({"a.b": "flat"});
        assert_eq!(render_summary("{a.b}", &params), "flat");
    }

    #[test]
    fn non_object_params_leave_placeholders() {
        assert_eq!(render_summary("{x}", &json!(null)), "{x}");
        assert_eq!(render_summary("plain", &json!([1])), "plain");
    }

    proptest::proptest! {
        #[test]
        fn rendering_never_panics_and_keeps_brace_free_text(template in ".{0,40}", key in "[a-z]{1,5}") {
            let params = json!({ key: "v", "n": [1, {"x": null}] });
            let _ = render_summary(&template, &params);
            if !template.contains(['{', '}']) {
                proptest::prop_assert_eq!(render_summary(&template, &params), template);
            }
        }
    }
}
