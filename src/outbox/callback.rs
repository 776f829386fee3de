//! Decision callbacks: when a request carried `callback_url`, its final state
//! (approved, denied, expired, cancelled) is POSTed there as JSON in the Standard
//! Webhooks format, signed with signoff's Ed25519 key (see [`crate::signing`]):
//!
//! ```text
//! webhook-id: msg_<approval id, 32 hex digits>_<status>   (the same on every redelivery)
//! webhook-timestamp: <unix seconds>
//! webhook-signature: v1a,<base64 Ed25519 signature of "{id}.{timestamp}.{raw body}">
//! ```
//!
//! The receiver checks the signature with the public key alone (`signoff key public`),
//! so nobody without the key file (a database reader included) can forge one. It
//! should refuse timestamps more than 5 minutes from now, ignore a `webhook-id` it
//! has already handled, and act only on a body whose `callback_url` is its own, about
//! an approval it asked for (a requester can forward its callbacks elsewhere).
//! docs/security.md shows verification in Python and TypeScript.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::approval::{Approval, ApprovalId, Status};
use crate::signing::Signer;
use crate::wire::ApprovalView;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Hosts whose checked addresses are kept at most.
const MAX_PINNED: usize = 10_000;
/// Checked addresses kept per host at most: a host's DNS answer is the caller's to
/// make, and one of thousands of records, kept for each of [`MAX_PINNED`] hosts,
/// would hold gigabytes. A connection tries them in the resolver's order of
/// preference, and rarely gets past the first.
const MAX_PINNED_ADDRESSES: usize = 8;
/// One callback's time limit, once its host is resolved.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a callback's host may take to resolve: with [`TIMEOUT`], 15 s, within
/// the job's limit at the default lease (24 s).
pub(super) const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// The JSON body: the event, the status it announces, the URL it is sent to (signed
/// with the rest, so that a receiver can tell a callback meant for another receiver,
/// forwarded to it, from its own), and the approval as it is.
pub fn body(approval: &Approval, url: &str, status: &str, now: DateTime<Utc>) -> String {
    json!({
        "event": "approval.decided",
        "approval_id": approval.id,
        "status": status,
        "callback_url": url,
        "sent_at": now,
        "approval": ApprovalView::new(approval, None),
    })
    .to_string()
}

/// The `webhook-id` of the callback announcing `status`: one per approval and
/// status, so every redelivery of it carries the same id.
pub fn message_id(approval: ApprovalId, status: Status) -> String {
    format!("msg_{}_{}", approval.0.simple(), status.as_str())
}

/// A callback's three Standard Webhooks headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub id: String,
    pub timestamp: i64,
    /// `v1a,` + base64 Ed25519 signature of `"{id}.{timestamp}.{body}"`.
    pub signature: String,
}

/// Signs `body` for delivery at `timestamp` (unix seconds) under the id `id`.
pub fn sign(signer: &Signer, id: String, timestamp: i64, body: &str) -> Signed {
    let mut message = Vec::with_capacity(id.len() + body.len() + 24);
    message.extend_from_slice(id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'.');
    message.extend_from_slice(body.as_bytes());
    let signature = format!("v1a,{}", signer.sign(&message));
    Signed {
        id,
        timestamp,
        signature,
    }
}

/// Answers the connector's lookups with the addresses a callback's host was checked
/// to have (see [`crate::egress::checked_addresses`]), and nothing else: a host nobody
/// checked does not resolve, so no DNS answer given after the check is ever used.
#[derive(Clone, Default)]
struct Pinned(Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>);

impl tower_service::Service<Name> for Pinned {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_ascii_lowercase();
        let pinned = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&host)
            .cloned();
        std::future::ready(pinned.map(Vec::into_iter).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{host} was not checked"),
            )
        }))
    }
}

/// An HTTP(S) client for callbacks; cheap to clone. It connects only to addresses
/// pinned for the host by [`Poster::pin`], and closes each connection once its
/// callback is answered (it keeps none idle).
#[derive(Clone)]
pub struct Poster {
    client: Client<HttpsConnector<HttpConnector<Pinned>>, Full<Bytes>>,
    pinned: Pinned,
    /// Why `https://` callbacks cannot be checked (the system's root certificates did
    /// not load): each fails with it and is retried, while plain-HTTP callbacks and
    /// Slack deliveries go on.
    no_roots: Option<Arc<str>>,
}

impl Poster {
    /// A poster trusting the system's root certificates (see [`crate::tls`]).
    pub fn new() -> Result<Self, String> {
        Self::with_tls(crate::tls::client_config())
    }

    /// A poster with `tls`, or, when it could not be made, one that refuses
    /// `https://` callbacks with that error.
    pub fn with_tls(tls: Result<rustls::ClientConfig, String>) -> Result<Self, String> {
        let (tls, no_roots) = match tls {
            Ok(tls) => (tls, None),
            Err(error) => {
                tracing::warn!(%error, "callbacks to https:// URLs will fail until restarted with root certificates");
                (crate::tls::without_roots()?, Some(error.into()))
            }
        };
        let pinned = Pinned::default();
        let mut http = HttpConnector::new_with_resolver(pinned.clone());
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // No idle connections: a callback is one request to a host its requester chose,
        // and a pooled connection stays open until the receiver closes it, so callbacks
        // to many hosts (or one that never closes) would each keep a socket for good.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(https);
        Ok(Self {
            client,
            pinned,
            no_roots,
        })
    }

    /// From now on, `host` connects to `addresses` (checked; the first
    /// [`MAX_PINNED_ADDRESSES`]) only. The table is emptied when it grows past
    /// [`MAX_PINNED`] hosts (callers choose the hosts); a callback whose pin went then
    /// fails closed and is retried, checked again.
    pub fn pin(&self, host: &str, mut addresses: Vec<SocketAddr>) {
        addresses.truncate(MAX_PINNED_ADDRESSES);
        addresses.shrink_to_fit();
        let mut pinned = self
            .pinned
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pinned.len() >= MAX_PINNED && !pinned.contains_key(host) {
            pinned.clear();
        }
        pinned.insert(host.to_owned(), addresses);
    }

    /// POSTs `body` with its signature headers; any answer but 2xx is an error (and
    /// retried).
    pub async fn post(&self, url: &str, signed: &Signed, body: &str) -> Result<(), String> {
        if let Some(error) = self
            .no_roots
            .as_deref()
            .filter(|_| crate::tls::uses_tls(url))
        {
            return Err(error.to_owned());
        }
        let request = axum::http::Request::post(url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("signoff/", env!("CARGO_PKG_VERSION")))
            .header(ID_HEADER, signed.id.as_str())
            .header(TIMESTAMP_HEADER, signed.timestamp.to_string())
            .header(SIGNATURE_HEADER, signed.signature.as_str())
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|error| format!("bad callback URL: {error}"))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
            .map_err(|error| crate::errors::with_causes(&error))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", response.status().as_u16()))
        }
    }
}

/// A callback URL as errors and logs show it: its scheme and host (and port) only, the
/// rest as `/…`. A query may carry a token, and so may the path: a Slack or Discord
/// webhook's URL is its secret (`https://hooks.slack.com/services/T…/B…/…`).
pub(super) fn shown(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(end) if url.len() > after_scheme + end + 1 || !url.ends_with('/') => {
            format!("{}/…", &url[..after_scheme + end])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_url_is_shown_as_its_scheme_and_host_alone() {
        for (url, as_shown) in [
            (
                "https://hooks.example.com/done?token=secret#x",
                "https://hooks.example.com/…",
            ),
            (
                "https://hooks.example.com/a#t=1",
                "https://hooks.example.com/…",
            ),
            (
                "https://hooks.slack.com/services/T0/B0/secretsecret",
                "https://hooks.slack.com/…",
            ),
            ("http://10.0.0.1:8080?token=x", "http://10.0.0.1:8080/…"),
            ("https://hooks.example.com/", "https://hooks.example.com/"),
            ("https://hooks.example.com", "https://hooks.example.com"),
        ] {
            assert_eq!(shown(url), as_shown, "{url}");
        }
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_body() {
        let signer = Signer::generate();
        let public = signer.public_key();
        let body = r#"{"status":"approved"}"#;
        let signed = sign(&signer, "msg_1".into(), 1_700_000_000, body);
        let signature = signed.signature.strip_prefix("v1a,").unwrap();
        assert!(public.verify(br#"msg_1.1700000000.{"status":"approved"}"#, signature));
        assert!(!public.verify(br#"msg_1.1700000001.{"status":"approved"}"#, signature));
        assert!(!public.verify(br#"msg_2.1700000000.{"status":"approved"}"#, signature));
        assert!(!public.verify(br#"msg_1.1700000000.{"status":"denied"}"#, signature));
    }

    #[test]
    fn each_status_of_an_approval_has_its_own_stable_id() {
        let id = ApprovalId::new();
        assert_eq!(
            message_id(id, Status::Approved),
            message_id(id, Status::Approved)
        );
        assert_ne!(
            message_id(id, Status::Approved),
            message_id(id, Status::Expired)
        );
        assert!(message_id(id, Status::Denied).starts_with("msg_"));
    }

    #[test]
    fn a_host_keeps_its_first_few_addresses_and_the_table_a_bounded_number_of_hosts() {
        let poster = Poster::new().unwrap();
        let many: Vec<SocketAddr> = (0..100u32)
            .map(|i| SocketAddr::from((std::net::Ipv4Addr::from(0x0800_0000 + i), 443)))
            .collect();
        let pin = |host: usize| poster.pin(&format!("h{host}.example"), many.clone());
        (0..MAX_PINNED).for_each(pin);
        let kept: usize = {
            let pinned = poster.pinned.0.lock().unwrap();
            assert_eq!(pinned.len(), MAX_PINNED);
            assert_eq!(pinned["h7.example"][..], many[..MAX_PINNED_ADDRESSES]);
            pinned.values().map(Vec::capacity).sum()
        };
        assert_eq!(
            kept,
            MAX_PINNED * MAX_PINNED_ADDRESSES,
            "held, not only used"
        );
        pin(MAX_PINNED);
        let pinned = poster.pinned.0.lock().unwrap();
        assert!(pinned.len() <= MAX_PINNED, "{}", pinned.len());
    }

    #[tokio::test]
    async fn a_failed_connection_says_why() {
        let poster = Poster::new().unwrap();
        let signed = sign(&Signer::generate(), "msg_1".into(), 1_700_000_000, "{}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        poster.pin("127.0.0.1", vec![address]);
        let url = format!("http://127.0.0.1:{}/done", address.port());
        let error = poster.post(&url, &signed, "{}").await.unwrap_err();
        assert!(
            error.to_lowercase().contains("connection refused"),
            "{error}"
        );
        let error = poster
            .post("http://unpinned.example/done", &signed, "{}")
            .await
            .unwrap_err();
        assert!(
            error.contains("unpinned.example was not checked"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn without_root_certificates_https_callbacks_fail_saying_why_and_plain_ones_go_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let why = "cannot load the system's TLS root certificates: none found";
        let poster = Poster::with_tls(Err(why.into())).unwrap();
        let signed = sign(&Signer::generate(), "msg_1".into(), 1_700_000_000, "{}");
        let refused = poster
            .post("https://hooks.example.com/done", &signed, "{}")
            .await;
        assert_eq!(refused, Err(why.to_owned()), "refused before connecting");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let receiver = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let read = socket.read(&mut request).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        poster.pin("127.0.0.1", vec![address]);
        let url = format!("http://127.0.0.1:{}/done", address.port());
        assert_eq!(poster.post(&url, &signed, "{}").await, Ok(()));
        let request = receiver.await.unwrap();
        assert!(request.starts_with("POST /done HTTP/1.1"), "{request}");
    }
}
