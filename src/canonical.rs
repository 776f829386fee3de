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

/// The canonical text of `value` with every number written by its value alone: one
/// with no fractional part as an integer (`1e16`, `100.0` and `100` are all `100…`),
/// and `-0` as `0`. What two requests' parameters are compared by (the execute gate,
/// repeats and idempotency keys), because a store may give a number back in another
/// form than it was sent in (PostgreSQL's `jsonb` writes `1e16` out in digits and
/// drops the sign of `-0`). The audit log keeps [`to_string`]: its hashes are the
/// text as it was recorded.
pub fn value_text(value: &Value) -> String {
    let mut out = String::new();
    write_as(value, &mut out, Numbers::ByValue);
    out
}

/// Hex SHA-256 of [`value_text`].
pub fn value_sha256_hex(value: &Value) -> String {
    hex::encode(Sha256::digest(value_text(value).as_bytes()))
}

/// Whether two values are the same JSON, numbers compared by value ([`value_text`]).
pub fn same_value(a: &Value, b: &Value) -> bool {
    value_text(a) == value_text(b)
}

/// How numbers are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numbers {
    /// As serde_json holds them (the audit log's form).
    AsRead,
    /// By value (see [`value_text`]).
    ByValue,
}

/// Appends the canonical text of `value` to `out`.
pub fn write(value: &Value, out: &mut String) {
    write_as(value, out, Numbers::AsRead);
}

fn write_as(value: &Value, out: &mut String, numbers: Numbers) {
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
                write_as(item, out, numbers);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_as(item, out, numbers);
            }
            out.push(']');
        }
        Value::Number(number) if numbers == Numbers::ByValue => write_number(number, out),
        // Scalars (strings with their escapes, numbers, bools, null) have exactly one
        // compact serde_json rendering, which is what we want.
        scalar => serialize_into(scalar, out),
    }
}

/// Appends `number` by its value: a float with no fractional part that an integer of
/// 64 bits holds as an integer (serde_json reads such digits as one), `-0` as `0`;
/// any other as serde_json writes it.
fn write_number(number: &serde_json::Number, out: &mut String) {
    /// 2^64: integral floats below it in magnitude are written as integers.
    const WHOLE: f64 = 18_446_744_073_709_551_616.0;
    match number.as_f64() {
        Some(float) if number.is_f64() && float.fract() == 0.0 && float.abs() < WHOLE => {
            // Integral and within ±2^64: the conversion is exact.
            out.push_str(&(float as i128).to_string());
        }
        _ => serialize_into(number, out),
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
    fn numbers_compare_by_value_however_a_store_writes_them_back() {
        let read = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
        // As sent, and as PostgreSQL's jsonb gives it back.
        for (sent, stored) in [
            ("1e16", "10000000000000000"),
            ("-0.0", "0"),
            ("-0", "0.0"),
            ("100.0", "100"),
            ("1.50", "1.5"),
            ("-9223372036854775808.0", "-9223372036854775808"),
            ("4e18", "4000000000000000000"),
            ("1e20", "100000000000000000000"),
        ] {
            let (a, b) = (read(&format!("[{sent}]")), read(&format!("[{stored}]")));
            assert!(same_value(&a, &b), "{sent} and {stored}: {a} {b}");
            assert_eq!(value_sha256_hex(&a), value_sha256_hex(&b));
        }
        assert_eq!(
            value_text(&read("[1e16, -0.0, 2.5]")),
            "[10000000000000000,0,2.5]"
        );
        // Different numbers stay different, and the recorded form is untouched.
        for (a, b) in [
            ("1", "1.5"),
            ("0.1", "0.10000000000000002"),
            ("1e16", "1e16+1"),
        ] {
            let Ok(b) = serde_json::from_str::<Value>(&format!("[{b}]")) else {
                continue;
            };
            assert!(!same_value(&read(&format!("[{a}]")), &b), "{a} {b}");
        }
        assert!(!same_value(&json!([1]), &json!(["1"])));
        assert_eq!(to_string(&read("[1e16, -0.0]")), "[1e+16,-0.0]");
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
