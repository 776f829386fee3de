//! What the proxy keeps to itself: the credentials in its signoff URL never reach the
//! model or the log, and its signoff token and URL never reach the upstream.

use serde_json::json;

use crate::helpers::*;

/// A signoff URL with credentials in it (`SIGNOFF_URL`/`--url`
/// `http://user:secret@host`) is shown without them: in the refusal the model reads,
/// and in the proxy's log.
#[tokio::test]
async fn the_credentials_in_the_signoff_url_reach_neither_the_model_nor_the_log() {
    let h = harness().await;
    let fixture = fixture();
    let down = crate::common::server::free_address();
    let url = format!("http://agent:s3cr3t-pw@{down}");
    let mut command = h.proxy_command(&["--url", &url], &[fixture.to_str().unwrap()]);
    command.env("RUST_LOG", "signoff=debug");
    let mut proxy = h.proxy_with(command).await;
    // The policy cannot be read for the list (a warning in the log) ...
    proxy.client.list_all_tools().await.unwrap();
    // ... and the call is refused, saying where signoff was not reached.
    let text = &proxy.refused("echo", json!({})).await[0];
    assert!(
        text.contains(&format!("signoff is unreachable at http://{down} (")),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t") && !text.contains("agent:"),
        "{text}"
    );
    let _ = proxy.client.cancel().await;
    exit_of(&mut proxy.child).await;
    let stderr = stderr_of(&mut proxy.child).await;
    assert!(
        stderr.contains(&format!("http://{down}")),
        "the log names signoff: {stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

/// The upstream server is someone else's code: it does not inherit the token that
/// reads, cancels and spends the proxy's approvals, nor where signoff is.
#[tokio::test]
async fn the_upstream_inherits_neither_the_signoff_token_nor_the_signoff_url() {
    let h = harness().await;
    let fixture = fixture();
    let mut command = h.proxy_command(&[], &[fixture.to_str().unwrap()]);
    command
        .env("SIGNOFF_TOKEN", &h.app.token)
        .env("SIGNOFF_URL", &h.app.address);
    let proxy = h.proxy_with(command).await;
    let result = proxy
        .client
        .call_tool(call("environment", json!({})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let names: Vec<String> = serde_json::from_str(&texts(&result)[0]).unwrap();
    assert!(
        names.iter().any(|name| name == "FIXTURE_LOG"),
        "the rest of the environment is passed on: {names:?}"
    );
    for secret in ["SIGNOFF_TOKEN", "SIGNOFF_URL"] {
        assert!(!names.iter().any(|name| name == secret), "{names:?}");
    }
}
