//! Errors from loading a policy file, each rendered as a single line that
//! says where the problem is: a TOML line/column for syntax and type errors,
//! or a field path such as `rules[2].when` for semantic errors.

use std::path::PathBuf;

/// Why a policy could not be loaded. `Display` is always exactly one line,
/// so it can go straight into a log line or a CLI error.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy file {}: {message}", path.display())]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error, already flattened to text.
        message: String,
    },
    /// The TOML is malformed, or a value has the wrong type or an unknown key.
    #[error("invalid policy at line {line}, column {column}{context}: {message}")]
    Syntax {
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        column: usize,
        /// Where in the file this is, e.g. ` (in rules[1])`, or empty.
        context: String,
        /// What the TOML parser said, newlines removed.
        message: String,
    },
    /// The TOML is well-formed but a value is not acceptable.
    #[error("invalid policy: {field}: {message}")]
    Invalid {
        /// Field path, e.g. `defaults.expires_after` or `rules[2].when`
        /// (rule indexes are 0-based, like TOML array positions).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Any of the above, found in a file at `path`.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The policy file.
        path: PathBuf,
        /// The underlying problem.
        error: Box<PolicyError>,
    },
}

impl PolicyError {
    /// Shorthand for a semantic error at `field`.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError::Invalid {
            field: field.into(),
            message: one_line(&message.into()),
        }
    }

    /// Converts a `toml` deserialization error into a one-line error with a
    /// line/column computed from the error's byte span in `text`.
    pub(crate) fn from_toml(err: &toml::de::Error, text: &str) -> Self {
        // Our integer fields are i64 only to range-check them ourselves;
        // "expected i64" would puzzle someone writing a policy.
        let message = one_line(err.message()).replace("expected i64", "expected an integer");
        match err.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                let context = match table_context(text, line) {
                    Some(table) => format!(" (in {table})"),
                    None => String::new(),
                };
                PolicyError::Syntax {
                    line,
                    column,
                    context,
                    message,
                }
            }
            // The toml crate gives a span for nearly everything; if it does
            // not, the message alone is still better than nothing.
            None => PolicyError::Syntax {
                line: 0,
                column: 0,
                context: String::new(),
                message,
            },
        }
    }
}

/// Collapses any line breaks so `Display` stays on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns a byte offset into a 1-based (line, column), counting columns in
/// characters so non-ASCII text does not skew them.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // A span can in principle point inside a multi-byte character.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Names the table that 1-based `line` belongs to, such as `defaults` or
/// `rules[2]`, by scanning the table headers above it. It is only a hint
/// for the reader, so a heuristic header check is good enough.
fn table_context(text: &str, line: usize) -> Option<String> {
    let mut current: Option<String> = None;
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for raw in text.lines().take(line) {
        let trimmed = raw.trim();
        if let Some(rest) = trimmed.strip_prefix("[[") {
            let Some(end) = rest.find("]]") else { continue };
            let name = rest[..end].trim().to_string();
            let index = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    array_counts.push((name.clone(), 1));
                    0
                }
            };
            current = Some(format!("{name}[{index}]"));
        } else if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(end) = rest.find(']') else { continue };
            let name = rest[..end].trim();
            let is_header = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '));
            if is_header {
                current = Some(name.to_string());
            }
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn table_context_names_array_tables_by_index() {
        let text = "[defaults]\nx = 1\n[[rules]]\na = 1\n[[rules]]\nb = 2\n";
        assert_eq!(table_context(text, 2).as_deref(), Some("defaults"));
        assert_eq!(table_context(text, 4).as_deref(), Some("rules[0]"));
        assert_eq!(table_context(text, 6).as_deref(), Some("rules[1]"));
        assert_eq!(table_context("x = 1", 1), None);
    }

    #[test]
    fn one_line_joins_multiline_messages() {
        assert_eq!(one_line("a\n  b\r\n\nc"), "a; b; c");
    }

    #[test]
    fn read_error_display_is_one_line_and_names_the_path() {
        let err = PolicyError::Read {
            path: PathBuf::from("/etc/signoff/policy.toml"),
            message: "No such file or directory (os error 2)".into(),
        };
        let shown = err.to_string();
        assert!(shown.contains("/etc/signoff/policy.toml"));
        assert!(!shown.contains('\n'));
    }
}
