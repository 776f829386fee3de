//! Decision callbacks: when a request carried `callback_url`, its final state
//! (approved, denied, expired, cancelled) is POSTed there as JSON, signed so the
//! receiver can tell it came from signoff:
//!
//! ```text
//! X-Signoff-Timestamp: <unix seconds>
//! X-Signoff-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<raw body>")>
//! ```
//!
//! The key is the hex SHA-256 of the requester's API token (what signoff stores), so
//! the receiver, which holds the token, computes it as `sha256_hex(token)`. Refuse
//! timestamps more than 5 minutes old and compare signatures in constant time.

use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use sha2::Sha256;

use crate::approval::Approval;
use crate::wire::ApprovalView;

pub const TIMESTAMP_HEADER: &str = "x-signoff-timestamp";
pub const SIGNATURE_HEADER: &str = "x-signoff-signature";
/// One callback's time limit.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body: the event, the status it announces, and the approval as it is.
pub fn body(approval: &Approval, status: &str, now: DateTime<Utc>) -> String {
    json!({
        "event": "approval.decided",
        "approval_id": approval.id,
        "status": status,
        "sent_at": now,
        "approval": ApprovalView::new(approval, None),
    })
    .to_string()
}

/// `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"` under `key`.
pub fn sign(key: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// An HTTP(S) client for callbacks; cheap to clone.
#[derive(Clone)]
pub struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Poster {
    pub fn new() -> Result<Self, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|error| format!("cannot load the system's TLS root certificates: {error}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// POSTs `body` signed with `key`; any answer but 2xx is an error (and retried).
    pub async fn post(
        &self,
        url: &str,
        key: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let timestamp = now.timestamp();
        let request = axum::http::Request::post(url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("signoff/", env!("CARGO_PKG_VERSION")))
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sign(key, timestamp, body))
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|error| format!("bad callback URL: {error}"))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
            .map_err(|error| error.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", response.status().as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let key = crate::tokens::hash("so_example");
        let signature = sign(&key, 1_700_000_000, r#"{"status":"approved"}"#);
        assert!(signature.starts_with("v1=") && signature.len() == 67);
        assert_eq!(
            signature,
            sign(&key, 1_700_000_000, r#"{"status":"approved"}"#)
        );
        assert_ne!(
            signature,
            sign(&key, 1_700_000_001, r#"{"status":"approved"}"#)
        );
        assert_ne!(
            signature,
            sign(&key, 1_700_000_000, r#"{"status":"denied"}"#)
        );
        assert_ne!(
            signature,
            sign(
                &crate::tokens::hash("so_other"),
                1_700_000_000,
                r#"{"status":"approved"}"#
            )
        );
    }
}
