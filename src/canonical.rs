//! Canonical JSON: one byte string per JSON value, so that "the same parameters" and
//! "the same audit event" mean byte equality and stable hashes.
//!
//! Object keys are sorted (by their UTF-8 bytes) at every depth and no whitespace is
//! written. We sort explicitly instead of relying on `serde_json`'s default `BTreeMap`,
//! because any crate in the build enabling `preserve_order` would silently change that.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical text of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Hex SHA-256 of the canonical text of `value`.
pub fn sha256_hex(value: &Value) -> String {
    hex::encode(Sha256::digest(to_string(value).as_bytes()))
}

/// Whether two values are equal as canonical JSON (`{"a":1,"b":2}` equals `{"b":2,"a":1}`).
pub fn equal(a: &Value, b: &Value) -> bool {
    to_string(a) == to_string(b)
}

/// Appends the canonical text of `value` to `out`.
pub fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(key, out);
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        // Scalars (strings with their escapes, numbers, bools, null) have exactly one
        // compact serde_json rendering, which is what we want.
        scalar => serialize_into(scalar, out),
    }
}

/// Appends `text` as a JSON string, escaped as canonical text escapes it.
pub fn write_str(text: &str, out: &mut String) {
    serialize_into(text, out);
}

/// serde_json's compact rendering of `value`, appended without an intermediate String.
fn serialize_into<T: serde::Serialize + ?Sized>(value: &T, out: &mut String) {
    // Serializing a JSON value or a str cannot fail, and serde_json writes whole UTF-8
    // pieces, which the writer checks.
    let _ = serde_json::to_writer(Utf8Writer(out), value);
}

/// An `io::Write` that appends to a String, refusing bytes that are not UTF-8.
struct Utf8Writer<'a>(&'a mut String);

impl std::io::Write for Utf8Writer<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(bytes)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
        self.0.push_str(text);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(to_string(&a), r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
        assert!(equal(&a, &b));
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
    }

    #[test]
    fn different_values_differ() {
        assert!(!equal(
            &json!({"ids": ["c1", "c2"]}),
            &json!({"ids": ["c2", "c1"]})
        ));
        assert!(!equal(&json!({"n": 1}), &json!({"n": "1"})));
        assert!(!equal(&json!({"n": 1}), &json!({"n": 1, "m": null})));
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(to_string(&json!({"k\"": "a\nb"})), r#"{"k\"":"a\nb"}"#);
        assert_eq!(
            to_string(&json!(["\u{1}", "é ☃ 🦀", "\\", 1.5, -2, true, null])),
            r#"["\u0001","é ☃ 🦀","\\",1.5,-2,true,null]"#
        );
    }
}
