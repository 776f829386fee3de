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

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_scalar(&Value::String(key.clone()), out);
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
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut String) {
    // Scalars (strings with their escapes, numbers, bools, null) have exactly one
    // compact serde_json rendering, which is what we want.
    out.push_str(&value.to_string());
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
    }
}
