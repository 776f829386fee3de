//! `SIGNOFF_LOG_FORMAT=json`: one JSON object per line for log shippers, with the
//! fields of the event and of every span it happened in (`request_id` of the HTTP
//! request, `approval_id`, …) at the top level, beside `timestamp`, `level`, `target`,
//! `message` and `spans` (the span names, outermost first).

use std::fmt;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format (spans must record their fields with [`JsonFields`]).
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("timestamp".into(), now.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(span.name());
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    line.extend(object(&fields.fields));
                }
            }
            line.insert("spans".into(), names.join(":").into());
        }
        let mut fields = String::new();
        JsonFields::new().format_fields(Writer::new(&mut fields), event)?;
        // The event's own fields win over its spans' of the same name.
        line.extend(object(&fields));
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{}", escape_separators(&text))
    }
}

/// The fields a JSON formatter wrote (nothing for none, or for text that is not an
/// object).
fn object(json: &str) -> Map<String, Value> {
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// serde_json leaves DEL, the C1 controls and the Unicode line and paragraph
/// separators as they are; some viewers break lines or obey escapes at them. Outside
/// strings JSON is ASCII, so each is inside a string, where `\uXXXX` means the same.
pub fn escape_separators(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_c1_controls_become_json_escapes() {
        let value = serde_json::json!({"m": "a\u{2028}b\u{85}c\u{1b}d\ne\u{7f}"});
        let line = escape_separators(&serde_json::to_string(&value).unwrap());
        assert!(!line.chars().any(|c| c.is_control() || c == '\u{2028}'));
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }
}
