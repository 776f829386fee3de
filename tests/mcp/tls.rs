//! `signoff proxy --url https://…`: the certificate is checked against the system's
//! roots (here `SSL_CERT_FILE`, the test CA in `tests/common/tls/`), and a certificate
//! nobody vouches for is refused before any request is sent: the call is not run. Over
//! plain HTTP no root certificate is needed at all.

use rmcp::model::CallToolResult;
use serde_json::json;

use crate::common::tls::{https_stand_in, material};
use crate::helpers::{Harness, call, fixture, harness, texts};

/// One `echo` call through a proxy started with `flags`, its environment set by `roots`.
async fn echo_through(
    h: &Harness,
    flags: &[&str],
    roots: impl FnOnce(&mut tokio::process::Command),
) -> CallToolResult {
    let mut command = h.proxy_command(flags, &[fixture().to_str().unwrap()]);
    roots(&mut command);
    let proxy = h.proxy_with(command).await;
    proxy
        .client
        .call_tool(call("echo", json!({ "text": "hi" })))
        .await
        .unwrap()
}

#[tokio::test]
async fn an_https_signoff_is_asked_only_when_its_certificate_is_trusted() {
    let h = harness().await;
    let (url, seen) = https_stand_in();

    // The system's roots: the test CA is not one of them.
    let result = echo_through(&h, &["--url", &url], |command| {
        command.env_remove("SSL_CERT_FILE");
    })
    .await;
    let text = &texts(&result)[0];
    assert_eq!(result.is_error, Some(true));
    assert!(
        text.contains(&format!("signoff is unreachable at {url}"))
            && text.contains("certificate")
            && text.ends_with("The call was not run."),
        "{text}"
    );
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");

    let result = echo_through(&h, &["--url", &url], |command| {
        command.env("SSL_CERT_FILE", material("ca.pem"));
    })
    .await;
    assert_eq!(result.is_error, Some(true));
    assert!(
        texts(&result)[0].contains("signoff refused the proxy's token"),
        "{result:?}"
    );
    assert_eq!(*seen.lock().unwrap(), ["POST /v1/approvals HTTP/1.1"]);
    assert!(h.ran().is_empty(), "the upstream ran nothing");
}

#[tokio::test]
async fn a_machine_without_root_certificates_still_reaches_signoff_over_plain_http() {
    let h = harness().await;
    let nowhere = material("no-such-roots");
    let result = echo_through(&h, &[], |command| {
        command
            .env("SSL_CERT_FILE", &nowhere)
            .env("SSL_CERT_DIR", &nowhere);
    })
    .await;
    assert_eq!(result.is_error, Some(false), "{result:?}");
    assert_eq!(
        h.ran(),
        [json!({"tool": "echo", "arguments": {"text": "hi"}})]
    );
}
