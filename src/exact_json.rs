//! JSON read so that what signoff stores, shows and compares is exactly what the caller
//! sent: parameters decide what runs, so two readings of one body must not differ.
//!
//! [`parse`] refuses three things plain `serde_json` accepts silently:
//! - **an object key given twice** (`{"id": 1, "id": 2}`): parsers disagree on which
//!   one wins, so the approver could see one value and the tool run the other;
//! - **a number that cannot be kept exactly** (`123456789012345678901234567890`, or
//!   `0.1000000000000000000001`): serde_json keeps integers in 64 bits and the rest as
//!   an `f64`, so such a number would be stored, shown and compared as a neighbour, and
//!   an execute with a different number that rounds the same way would pass. A number
//!   is kept when the value serde_json reads renders back to the same decimal value
//!   (`1e2` and `100.0` read back as `100.0`, which is the same number).
//! - **the NUL character** (`"\u0000"`) in a string or a key: PostgreSQL can keep it
//!   nowhere, so one store would refuse (at the commit, as a failure to retry) what
//!   the other keeps.
//!
//! Everything else is serde_json's own reading, whose own limits (a number beyond
//! ±1.8e308, nesting past [`MAX_DEPTH`]) are refusals of the same kind, not malformed
//! JSON.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body was refused; `Display` is what the caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExactError {
    /// Not JSON at all (or cut short): a 400.
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// Well-formed JSON that cannot be kept as sent: a 422.
    #[error("{0}")]
    Inexact(String),
}

/// Parses `bytes` as JSON, refusing duplicate keys and numbers that cannot be kept
/// exactly (see the module doc).
pub fn parse(bytes: &[u8]) -> Result<Value, ExactError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| {
            use serde_json::error::Category;
            match error.classify() {
                // Our own refusal (a duplicate key) comes back as a data error.
                Category::Data => ExactError::Inexact(strip_position(&error)),
                Category::Syntax | Category::Eof | Category::Io => match beyond_limits(&error) {
                    Some(why) => ExactError::Inexact(why),
                    None => ExactError::Syntax(error.to_string()),
                },
            }
        })?;
    check_numbers(bytes)?;
    Ok(value)
}

/// Levels of arrays and objects a document may nest (serde_json's limit, 128, less
/// one: it refuses the 128th).
pub const MAX_DEPTH: usize = 127;

/// Levels of arrays and objects a call's parameters may nest (their object is the
/// first), as a request's and as an edit's: what signoff writes around them stays
/// within [`MAX_DEPTH`] with room to spare, so that every JSON reader that stops where
/// serde_json does reads it back: an audit export's line (`{"data": {"parameters":
/// …}}`, an edit's `{"data": {"from": …}}`), a callback's body (`{"approval":
/// {"parameters": …}}`), a list answer. PostgreSQL refuses a row inserted straight
/// into the table past it too (migration 0021).
pub const MAX_PARAMETERS_DEPTH: usize = 100;

/// Refuses `parameters` nested past [`MAX_PARAMETERS_DEPTH`], saying so.
pub fn check_parameters_depth(parameters: &Value) -> Result<(), String> {
    match depth(parameters) > MAX_PARAMETERS_DEPTH {
        true => Err(too_deep_parameters()),
        false => Ok(()),
    }
}

/// Why parameters nested past [`MAX_PARAMETERS_DEPTH`] are refused.
fn too_deep_parameters() -> String {
    format!(
        "{}, the most signoff keeps",
        nested_deeper("the parameters are", MAX_PARAMETERS_DEPTH)
    )
}

/// The well-formed JSON serde_json refuses as if it were malformed: a number beyond a
/// 64-bit float's range and nesting past [`MAX_DEPTH`]. Neither can be kept, like an
/// inexact number (422, not 400). serde_json names them only in its message.
fn beyond_limits(error: &serde_json::Error) -> Option<String> {
    let text = error.to_string();
    if text.starts_with("number out of range") {
        Some(
            "a number is beyond ±1.8e308 (a 64-bit float's range) and cannot be kept: \
             send it as a string"
                .into(),
        )
    } else if text.starts_with("recursion limit exceeded") {
        Some(nested_deeper("the JSON is", MAX_DEPTH))
    } else {
        None
    }
}

/// The refusal of what is nested past `levels`: `what_is`, as "the JSON is".
fn nested_deeper(what_is: &str, levels: usize) -> String {
    format!("{what_is} nested deeper than {levels} levels of arrays and objects")
}

/// Parses a string (a row another program stored).
pub fn parse_str(text: &str) -> Result<Value, ExactError> {
    parse(text.as_bytes())
}

/// Parses parameters given on their own (the edit modal's text box) as [`parse`] does,
/// and refuses them nested past [`MAX_PARAMETERS_DEPTH`], as a request's are.
pub fn parse_parameters(text: &str) -> Result<Value, ExactError> {
    match parse(text.as_bytes()) {
        Ok(value) => match check_parameters_depth(&value) {
            Ok(()) => Ok(value),
            Err(why) => Err(ExactError::Inexact(why)),
        },
        Err(ExactError::Inexact(why)) if why == nested_deeper("the JSON is", MAX_DEPTH) => {
            Err(ExactError::Inexact(too_deep_parameters()))
        }
        read => read,
    }
}

/// Levels of arrays and objects in `value`: `1` is `[]` or `{"a": 1}`, `0` a scalar.
/// Recursion is safe: a parsed value is at most [`MAX_DEPTH`] deep.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// serde_json appends " at line L column C" to custom errors; keys are named already.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Builds a [`Value`] like serde_json does, refusing a key seen twice in one object.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number is not finite"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        no_nul(value)?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        no_nul(&value)?;
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key)?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key {key:?} appears twice in one object; send each key once"
                )));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Refuses text with the NUL character: PostgreSQL can keep it in neither `jsonb` nor
/// `text`, so one store would refuse what the other keeps.
fn no_nul<E: de::Error>(text: &str) -> Result<(), E> {
    match text.contains('\0') {
        true => Err(E::custom(
            "text may not contain the NUL character (U+0000), which the store cannot keep",
        )),
        false => Ok(()),
    }
}

/// Checks every number token of `bytes` (already known to be valid JSON): each must
/// read back as the same decimal value.
fn check_numbers(bytes: &[u8]) -> Result<(), ExactError> {
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = skip_string(bytes, at + 1),
            b'-' | b'0'..=b'9' => {
                let start = at;
                while at < bytes.len()
                    && matches!(bytes[at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    at += 1;
                }
                // Valid JSON: the token is ASCII.
                let token = std::str::from_utf8(&bytes[start..at]).unwrap_or_default();
                check_number(token)?;
            }
            _ => at += 1,
        }
    }
    Ok(())
}

/// The index just past the closing quote of a string whose body starts at `at`.
fn skip_string(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return at + 1,
            _ => at += 1,
        }
    }
    at
}

/// One number token: refused unless serde_json's reading renders to the same value.
fn check_number(token: &str) -> Result<(), ExactError> {
    let read: Value = serde_json::from_str(token)
        .map_err(|error| ExactError::Syntax(format!("number {token}: {error}")))?;
    let rendered = read.to_string();
    if Decimal::parse(token) == Decimal::parse(&rendered) {
        return Ok(());
    }
    let shown: String = token.chars().take(60).collect();
    let ellipsis = if shown.len() < token.len() { "…" } else { "" };
    Err(ExactError::Inexact(format!(
        "the number {shown}{ellipsis} cannot be kept exactly (integers must fit in 64 bits, \
         other numbers in a 64-bit float's 15–17 significant digits): send it as a string"
    )))
}

/// A decimal number's value as (negative, significant digits, exponent): `-12.30e1` is
/// (true, "123", 0), i.e. -123 × 10⁰. Zero is (false, "", 0) whatever its sign.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    /// `None` for text that is not a JSON number (never the case for checked tokens).
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: String = whole.chars().chain(fraction.chars()).collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.is_empty() {
            return None;
        }
        let mut exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
        let trailing = digits.len() - digits.trim_end_matches('0').len();
        digits.truncate(digits.len() - trailing);
        exponent = exponent.checked_add(i64::try_from(trailing).ok()?)?;
        let digits = digits.trim_start_matches('0').to_owned();
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Some(Decimal {
            negative,
            digits,
            exponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn inexact(text: &str) -> String {
        match parse_str(text) {
            Err(ExactError::Inexact(why)) => why,
            other => panic!("{text}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn numbers_that_fit_are_read_as_serde_json_reads_them() {
        let value = parse_str(
            r#"{"a": 5, "b": -7, "c": 0.1, "d": 1e2, "e": 18446744073709551615, "f": -0, "g": 2.5e-7, "h": 100.000}"#,
        )
        .unwrap();
        assert_eq!(value["a"], json!(5));
        assert_eq!(value["c"], json!(0.1));
        assert_eq!(value["d"], json!(100.0));
        assert_eq!(value["e"], json!(u64::MAX));
        assert_eq!(value["g"], json!(2.5e-7));
    }

    #[test]
    fn numbers_beyond_what_a_value_keeps_are_refused() {
        let why = inexact(r#"{"id": 123456789012345678901234567890}"#);
        assert!(
            why.contains("123456789012345678901234567890") && why.contains("as a string"),
            "{why}"
        );
        inexact(r#"{"n": 18446744073709551616}"#);
        inexact(r#"{"n": -9223372036854775809}"#);
        inexact(r#"[0.1000000000000000000001]"#);
        inexact(r#"{"deep": [{"x": 1.00000000000000000000001}]}"#);
        assert!(inexact(&format!("[{}]", "9".repeat(80))).contains('…'));
        // Beyond any f64: well-formed, and no value can keep it.
        for huge in [
            format!("[{}]", "9".repeat(400)),
            "[1e400]".into(),
            "[-1e400]".into(),
        ] {
            assert!(inexact(&huge).contains("beyond ±1.8e308"), "{huge}");
        }
    }

    #[test]
    fn nesting_is_kept_to_max_depth_levels() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(parse_str(&nested(MAX_DEPTH)).is_ok());
        let why = inexact(&nested(MAX_DEPTH + 1));
        assert!(why.contains("nested deeper than 127 levels"), "{why}");
        // Parameters go no deeper than 100 levels, what signoff writes around them
        // included past that.
        let nested_object =
            |levels: usize| format!("{}1{}", r#"{"a": "#.repeat(levels), "}".repeat(levels));
        assert!(parse_parameters(&nested_object(MAX_PARAMETERS_DEPTH)).is_ok());
        let read = parse_str(&nested_object(MAX_PARAMETERS_DEPTH)).unwrap();
        assert_eq!(check_parameters_depth(&read), Ok(()));
        let deeper = parse_str(&nested_object(MAX_PARAMETERS_DEPTH + 1)).unwrap();
        for levels in [MAX_PARAMETERS_DEPTH + 1, MAX_DEPTH, MAX_DEPTH + 1, 200] {
            let Err(ExactError::Inexact(why)) = parse_parameters(&nested_object(levels)) else {
                panic!("{levels} levels of parameters were read");
            };
            assert_eq!(
                why,
                "the parameters are nested deeper than 100 levels of arrays and objects, \
                 the most signoff keeps"
            );
            assert_eq!(check_parameters_depth(&deeper), Err(why));
        }
        // Cut short at that depth it is still malformed.
        assert!(matches!(
            parse_str(&"[".repeat(10)),
            Err(ExactError::Syntax(_))
        ));
    }

    #[test]
    fn the_nul_character_is_refused_in_strings_and_keys() {
        for text in [
            r#"{"a": "x\u0000y"}"#,
            r#"{"a\u0000": 1}"#,
            r#"[["\u0000"]]"#,
        ] {
            assert!(inexact(text).contains("NUL"), "{text}");
        }
        // Other control characters are text like any other.
        assert_eq!(parse_str(r#"["\u0001"]"#).unwrap(), json!(["\u{1}"]));
    }

    #[test]
    fn numbers_inside_strings_are_not_numbers() {
        assert!(parse_str(r#"{"id": "123456789012345678901234567890", "e\"1": "-1e999"}"#).is_ok());
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        let why = inexact(r#"{"user_id": 5, "user_id": 6}"#);
        assert!(why.contains("\"user_id\" appears twice"), "{why}");
        inexact(r#"{"a": [{"k": 1, "k": 1}]}"#);
        assert!(parse_str(r#"{"a": {"k": 1}, "b": {"k": 1}}"#).is_ok());
    }

    #[test]
    fn broken_json_is_a_syntax_error() {
        for bad in ["{", "not json", r#"{"a": 1} x"#, "", r#"{"a": 1e}"#] {
            assert!(
                matches!(parse_str(bad), Err(ExactError::Syntax(_))),
                "{bad:?}: {:?}",
                parse_str(bad)
            );
        }
    }

    #[test]
    fn decimals_compare_by_value() {
        let d = |text| Decimal::parse(text).unwrap();
        assert_eq!(d("100"), d("1e2"));
        assert_eq!(d("100.0"), d("1.00E+2"));
        assert_eq!(d("-0"), d("0.000"));
        assert_ne!(d("0.1"), d("0.10000000000000001"));
        assert_ne!(d("-1"), d("1"));
    }

    /// Arbitrary JSON values, as serde_json writes them (without the NUL character,
    /// which [`parse`] refuses).
    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[^\\x00]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[^\\x00]{0,6}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Fuzz targets (`crate::fuzz` sets how long they run; `cargo test fuzz` finds them).
    mod fuzz {
        use super::*;

        /// Arbitrary bytes never panic; whatever is accepted is what serde_json reads.
        #[test]
        fn arbitrary_input_is_read_or_refused_never_misread() {
            crate::fuzz::run(256, &prop::collection::vec(any::<u8>(), 0..64), |bytes| {
                if let Ok(value) = parse(&bytes) {
                    let plain: Value = serde_json::from_slice(&bytes).unwrap();
                    prop_assert_eq!(value, plain);
                }
                Ok(())
            });
        }
    }

    proptest! {
        /// Whatever serde_json writes is read back exactly, and canonically the same.
        #[test]
        fn what_serde_json_writes_reads_back_the_same(value in values()) {
            let text = serde_json::to_string(&value).unwrap();
            let read = parse_str(&text).unwrap();
            prop_assert_eq!(crate::canonical::to_string(&read), crate::canonical::to_string(&value));
        }

        /// A decimal with more digits than an f64 holds is refused, never rounded.
        #[test]
        fn long_decimals_are_refused_unless_they_read_back_the_same(digits in "[1-9][0-9]{18,40}") {
            let text = format!("{{\"n\": {digits}}}");
            match parse_str(&text) {
                Ok(value) => prop_assert_eq!(
                    Decimal::parse(&value["n"].to_string()),
                    Decimal::parse(&digits)
                ),
                Err(error) => prop_assert!(matches!(error, ExactError::Inexact(_))),
            }
        }
    }
}
