//! Slack request signing: every request to `/slack/*` carries
//! `X-Slack-Signature: v0=<hex HMAC-SHA256>` over `v0:{timestamp}:{raw body}` under the
//! app's signing secret. We check it on the raw bytes, before parsing anything, and refuse
//! timestamps more than five minutes away from now so a captured request cannot be
//! replayed later.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the request's Unix timestamp in seconds.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// The header carrying `v0=` + the hex signature.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// How far (seconds) a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why a request was refused. The `Display` text is safe to log; the HTTP answer is a
/// bare 401 either way, so callers learn nothing about which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent.
    #[error("the {0} header is missing")]
    Missing(&'static str),
    /// The timestamp is not a plain integer number of seconds.
    #[error("the request timestamp is not a number of seconds")]
    BadTimestamp,
    /// The timestamp is more than [`MAX_SKEW_SECS`] away from now (old or in the future).
    #[error("the request timestamp is too far from the current time")]
    Stale,
    /// The signature is malformed or does not match.
    #[error("the request signature does not match")]
    BadSignature,
    /// An empty signing secret would let anyone sign; refuse everything instead.
    #[error("no Slack signing secret is configured")]
    NoSecret,
}

/// Checks one request against the signing secret at time `now` (Unix seconds).
///
/// The signature must be `v0=` followed by 64 hex digits. Hex is decoded before the
/// comparison, so upper-case digits are accepted: they name the same bytes, and Slack
/// itself sends lower case. The comparison is constant-time (`Mac::verify_slice`).
pub fn verify_at(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    // Only plain digits: `i64::from_str` would also take `+` and `-`, which Slack never
    // sends, and the exact string is part of what is signed.
    if timestamp.is_empty()
        || timestamp.len() > 18
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(VerifyError::BadTimestamp);
    }
    let sent: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if now.abs_diff(sent) > MAX_SKEW_SECS {
        return Err(VerifyError::Stale);
    }
    let hex_digits = signature
        .strip_prefix("v0=")
        .ok_or(VerifyError::BadSignature)?;
    let given = hex::decode(hex_digits).map_err(|_| VerifyError::BadSignature)?;
    // HMAC takes keys of any length, so this only fails in theory.
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| VerifyError::NoSecret)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time (and refuses a wrong length up front,
    // which reveals nothing secret).
    mac.verify_slice(&given)
        .map_err(|_| VerifyError::BadSignature)
}

/// Reads the timestamp and signature headers and calls [`verify_at`].
pub fn verify_headers(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let timestamp = headers
        .get(TIMESTAMP_HEADER)
        .ok_or(VerifyError::Missing("X-Slack-Request-Timestamp"))?
        .to_str()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .ok_or(VerifyError::Missing("X-Slack-Signature"))?
        .to_str()
        .map_err(|_| VerifyError::BadSignature)?;
    verify_at(secret, timestamp, body, signature, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    // Slack's published example from "Verifying requests from Slack".
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const NOW: i64 = 1_531_420_618;
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check(secret: &[u8], ts: &str, body: &str, sig: &str, now: i64) -> Result<(), VerifyError> {
        verify_at(secret, ts, body.as_bytes(), sig, now)
    }

    #[test]
    fn slacks_published_example_is_accepted() {
        assert_eq!(check(SECRET, TS, BODY, SIG, NOW), Ok(()));
    }

    #[test]
    fn one_changed_body_byte_is_refused() {
        let body = BODY.replacen("roadrunner", "roadrunnes", 1);
        assert_eq!(
            check(SECRET, TS, &body, SIG, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_different_timestamp_in_the_signed_string_is_refused() {
        assert_eq!(
            check(SECRET, "1531420619", BODY, SIG, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn the_wrong_secret_is_refused() {
        assert_eq!(
            check(b"8f742231b10e8888abcd99yyyzzz85a6", TS, BODY, SIG, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn an_empty_secret_refuses_everything() {
        assert_eq!(check(b"", TS, BODY, SIG, NOW), Err(VerifyError::NoSecret));
    }

    #[test]
    fn a_request_stale_by_301_seconds_is_refused() {
        assert_eq!(
            check(SECRET, TS, BODY, SIG, NOW + 301),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn a_request_301_seconds_in_the_future_is_refused() {
        assert_eq!(
            check(SECRET, TS, BODY, SIG, NOW - 301),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn exactly_300_seconds_either_way_is_accepted() {
        assert_eq!(check(SECRET, TS, BODY, SIG, NOW + 300), Ok(()));
        assert_eq!(check(SECRET, TS, BODY, SIG, NOW - 300), Ok(()));
    }

    #[test]
    fn staleness_is_checked_before_the_signature() {
        // A replayed request is refused as stale even if its signature is fine, and the
        // HMAC is not computed for obviously old requests.
        assert_eq!(
            check(SECRET, TS, BODY, "v0=00", NOW + 10_000),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn a_signature_without_the_v0_prefix_is_refused() {
        let bare = SIG.trim_start_matches("v0=");
        assert_eq!(
            check(SECRET, TS, BODY, bare, NOW),
            Err(VerifyError::BadSignature)
        );
        let v1 = SIG.replacen("v0=", "v1=", 1);
        assert_eq!(
            check(SECRET, TS, BODY, &v1, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_signature_with_bad_hex_is_refused() {
        let bad = SIG.replacen('a', "g", 1);
        assert_eq!(
            check(SECRET, TS, BODY, &bad, NOW),
            Err(VerifyError::BadSignature)
        );
        let odd = &SIG[..SIG.len() - 1];
        assert_eq!(
            check(SECRET, TS, BODY, odd, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_truncated_or_extended_signature_is_refused() {
        let short = &SIG[..SIG.len() - 2];
        assert_eq!(
            check(SECRET, TS, BODY, short, NOW),
            Err(VerifyError::BadSignature)
        );
        let long = format!("{SIG}00");
        assert_eq!(
            check(SECRET, TS, BODY, &long, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn upper_case_hex_is_accepted_because_it_names_the_same_bytes() {
        let upper = format!("v0={}", SIG["v0=".len()..].to_ascii_uppercase());
        assert_eq!(check(SECRET, TS, BODY, &upper, NOW), Ok(()));
        // The prefix itself stays exact.
        let upper_prefix = upper.replacen("v0=", "V0=", 1);
        assert_eq!(
            check(SECRET, TS, BODY, &upper_prefix, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn an_empty_signature_is_refused() {
        assert_eq!(
            check(SECRET, TS, BODY, "", NOW),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            check(SECRET, TS, BODY, "v0=", NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn timestamps_that_are_not_plain_seconds_are_refused() {
        for ts in [
            "",
            "abc",
            "+1531420618",
            "-1",
            "1531420618.5",
            " 1531420618",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(SECRET, ts, BODY, SIG, NOW),
                Err(VerifyError::BadTimestamp),
                "{ts:?}"
            );
        }
    }

    fn headers(ts: Option<&str>, sig: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(ts) = ts {
            map.insert(
                "X-Slack-Request-Timestamp",
                HeaderValue::from_str(ts).unwrap(),
            );
        }
        if let Some(sig) = sig {
            map.insert("X-Slack-Signature", HeaderValue::from_str(sig).unwrap());
        }
        map
    }

    #[test]
    fn headers_are_read_case_insensitively_and_verified() {
        let map = headers(Some(TS), Some(SIG));
        assert_eq!(verify_headers(SECRET, &map, BODY.as_bytes(), NOW), Ok(()));
    }

    #[test]
    fn a_missing_header_is_named_in_the_error() {
        let no_ts = headers(None, Some(SIG));
        assert_eq!(
            verify_headers(SECRET, &no_ts, BODY.as_bytes(), NOW),
            Err(VerifyError::Missing("X-Slack-Request-Timestamp"))
        );
        let no_sig = headers(Some(TS), None);
        let err = verify_headers(SECRET, &no_sig, BODY.as_bytes(), NOW).unwrap_err();
        assert_eq!(err, VerifyError::Missing("X-Slack-Signature"));
        assert_eq!(err.to_string(), "the X-Slack-Signature header is missing");
    }

    #[test]
    fn non_ascii_header_values_are_refused() {
        let mut map = headers(Some(TS), None);
        map.insert(
            "X-Slack-Signature",
            HeaderValue::from_bytes(b"v0=\xff").unwrap(),
        );
        assert_eq!(
            verify_headers(SECRET, &map, BODY.as_bytes(), NOW),
            Err(VerifyError::BadSignature)
        );
    }
}
