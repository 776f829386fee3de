//! Logging: tracing to stderr, one event per line, that no value from a caller can
//! break. A tool name, a `requested_by` or a header with a line break or a terminal
//! escape sequence in it is logged as `\n`, `\u{1b}`, …, so it can neither start a
//! forged log line nor recolour the terminal (see [`OneLine`]). With
//! `SIGNOFF_LOG_FORMAT=json`, each line is a JSON object instead ([`json`]), where JSON
//! string escapes do the same. `signoff proxy` writes its stderr through [`lossy`],
//! which never blocks it.

mod json;
pub mod lossy;

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines look: `SIGNOFF_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `key=value` text (the default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl Format {
    /// `SIGNOFF_LOG_FORMAT`: `text` (also when unset or empty) or `json`.
    pub fn parse(value: Option<&str>) -> Result<Format, String> {
        match value.map(str::trim) {
            None | Some("" | "text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!(
                "SIGNOFF_LOG_FORMAT must be text or json, not {other:?}"
            )),
        }
    }

    /// The format the environment asks for.
    pub fn from_env() -> Result<Format, String> {
        match std::env::var("SIGNOFF_LOG_FORMAT") {
            Ok(value) => Format::parse(Some(&value)),
            Err(std::env::VarError::NotPresent) => Format::parse(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err("SIGNOFF_LOG_FORMAT must be text or json".into())
            }
        }
    }
}

/// How log lines reach stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Written as they come, waiting for stderr if it is full (`signoff serve`).
    Blocking,
    /// Through [`lossy::stderr`], never waiting (`signoff proxy`, on one thread).
    Lossy,
}

/// Starts logging to stderr in `format`: `RUST_LOG` if set, else `default` (a filter
/// directive).
pub fn init(default: &str, format: Format, stderr: Stderr) {
    match stderr {
        Stderr::Blocking => init_with(default, format, io::stderr),
        Stderr::Lossy => init_with(default, format, lossy::stderr().clone()),
    }
}

fn init_with<M>(default: &str, format: Format, writer: M)
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // A RUST_LOG that is set but cannot be read is said once logging works, not
    // passed over in silence.
    let (filter, unread) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(error) => {
            let set = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some_and(|v| !v.is_empty());
            (EnvFilter::new(default), set.then(|| error.to_string()))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Escapes of our own would be escaped as a caller's are: no colours.
        .with_ansi(false);
    match format {
        Format::Text => builder.with_writer(OneLine(writer)).init(),
        Format::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json::FlatJson)
            .with_writer(writer)
            .init(),
    }
    // At error level: the default filters of one-shot commands show nothing less.
    if let Some(error) = unread {
        tracing::error!(%error, default, "RUST_LOG cannot be read; logging with the default filter");
    }
}

/// A writer for formatted events that escapes every control character except the
/// line break that ends the event: the formatter writes each event whole, so what it
/// wrote is one line, whatever the fields held.
#[derive(Clone, Copy)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }
}

/// See [`OneLine`].
pub struct Escaping<W>(W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_event(bytes))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `bytes` with each control character (C0, DEL, and the C1 range as UTF-8) written
/// as a visible escape, except one line break at the very end.
pub fn escape_event(bytes: &[u8]) -> Vec<u8> {
    let (body, end) = match bytes.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (bytes, &b""[..]),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + end.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            // Line and paragraph separators end lines in some viewers.
            '\u{2028}' | '\u{2029}' => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_format_is_text_or_json() {
        assert_eq!(Format::parse(None), Ok(Format::Text));
        assert_eq!(Format::parse(Some("")), Ok(Format::Text));
        assert_eq!(Format::parse(Some("text")), Ok(Format::Text));
        assert_eq!(Format::parse(Some("json")), Ok(Format::Json));
        assert_eq!(
            Format::parse(Some("xml")),
            Err("SIGNOFF_LOG_FORMAT must be text or json, not \"xml\"".into())
        );
    }

    #[test]
    fn a_value_cannot_break_the_line_or_carry_escapes() {
        let event = b"INFO approval requested requested_by=x\nERROR forged \x1b[31mred\x1b[0m\r\n";
        let safe = String::from_utf8(escape_event(event)).unwrap();
        assert_eq!(
            safe,
            "INFO approval requested requested_by=x\\nERROR forged \\u{1b}[31mred\\u{1b}[0m\\r\n"
        );
        assert_eq!(escape_event(b"plain line\n"), b"plain line\n");
        assert_eq!(
            escape_event("ünïcödé\t✓\n".as_bytes()),
            "ünïcödé\t✓\n".as_bytes()
        );
    }

    proptest! {
        #[test]
        fn whatever_is_written_comes_out_as_one_line(text in "\\PC*(\\n|\\r|\\x1b|\\u{85}|\\u{2028})\\PC*") {
            let safe = String::from_utf8(escape_event(format!("{text}\n").as_bytes())).unwrap();
            prop_assert_eq!(safe.matches('\n').count(), 1);
            prop_assert!(safe.ends_with('\n'));
            prop_assert!(!safe[..safe.len() - 1].chars().any(|c| c.is_control() && c != '\t'));
        }
    }
}
