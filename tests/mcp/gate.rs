//! The gate on `tools/call`: each outcome of an approval, as the agent sees it, and
//! what ran upstream (the fixture logs every call it runs).

use std::time::Duration;

use rmcp::model::{CallToolRequest, ClientRequest};
use rmcp::service::PeerRequestOptions;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn an_auto_approved_call_runs_once_with_its_arguments_and_returns_the_upstream_result() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let result = proxy
        .client
        .call_tool(call("echo", json!({"text": "hi", "n": 2})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    assert_eq!(texts(&result), [r#"echo ran with {"n":2,"text":"hi"}"#]);
    assert_eq!(
        h.ran(),
        [json!({"tool": "echo", "arguments": {"text": "hi", "n": 2}})]
    );
    let executed = "SELECT COUNT(*) FROM pending_approvals WHERE status = 'executed'";
    assert_eq!(crate::common::raw_count(&h.app.db, executed).await, 1);
}

#[tokio::test]
async fn a_call_approved_by_a_slack_click_runs_after_the_click_and_reports_progress_while_held() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call("delete_things", json!({"ids": [1, 2]})))
            .await
    });
    let id = h.posted(1).await;
    assert!(
        eventually(|| proxy
            .recorder
            .events()
            .iter()
            .any(|e| e["progress"].as_str().is_some_and(
                |m| m.starts_with("waiting for approval in #C0DEPLOYS, expires 13:00 UTC")
            )))
        .await,
        "progress names the channel and the expiry: {:?}",
        proxy.recorder.events()
    );
    assert!(h.ran().is_empty(), "nothing runs before the decision");
    h.approve(&id, "U0ALICE").await;
    let result = held.await.unwrap().unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    assert_eq!(
        h.ran(),
        [json!({"tool": "delete_things", "arguments": {"ids": [1, 2]}})]
    );
    assert_eq!(h.status(&id).await, "executed");
    let request = &h.app.store.get(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(request.server.as_deref(), Some("mcp_fixture"));
    assert_eq!(request.requested_by.as_deref(), Some("test-agent"));
}

#[tokio::test]
async fn a_denied_call_is_an_error_naming_who_and_why_and_never_runs() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    for (n, reason) in [(1, "not on a Friday"), (2, "")] {
        let peer = proxy.client.peer().clone();
        let held =
            tokio::spawn(
                async move { peer.call_tool(call("delete_things", json!({"n": n}))).await },
            );
        let id = h.posted(n).await;
        h.submit(&id, "U0BOB", "deny_reason", reason).await;
        let result = held.await.unwrap().unwrap();
        assert_eq!(result.is_error, Some(true));
        let expected = if reason.is_empty() {
            "Denied by U0BOB (no reason given). The call was not run.".to_owned()
        } else {
            format!("Denied by U0BOB: {reason}. The call was not run.")
        };
        assert_eq!(texts(&result), [expected]);
    }
    assert!(h.ran().is_empty());
}

#[tokio::test]
async fn a_policy_denied_call_names_the_rule_never_runs_and_its_tool_is_not_listed() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let text = &proxy.refused("drop_table", json!({"table": "users"})).await[0];
    assert!(
        text.starts_with("Denied by policy: ") && text.contains("drop_*"),
        "{text}"
    );
    assert!(h.ran().is_empty());
    let tools = proxy.client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert!(
        names.contains(&"echo") && !names.contains(&"drop_table"),
        "{names:?}"
    );
}

#[tokio::test]
async fn an_edited_call_runs_with_the_edited_arguments_and_its_first_text_says_what_changed() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call("delete_things", json!({"ids": [1, 2, 3]})))
            .await
    });
    let id = h.posted(1).await;
    h.submit(&id, "U0ALICE", "edit_approve", r#"{"ids": [1]}"#)
        .await;
    let result = held.await.unwrap().unwrap();
    let texts = texts(&result);
    assert_eq!(
        texts[0],
        "Approved with changes by U0ALICE: ids: [1,2,3] → [1]. It ran with the approved arguments."
    );
    assert_eq!(texts[1], r#"delete_things ran with {"ids":[1]}"#);
    assert_eq!(
        h.ran(),
        [json!({"tool": "delete_things", "arguments": {"ids": [1]}})]
    );
}

#[tokio::test]
async fn an_expired_call_says_until_when_and_never_runs() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move { peer.call_tool(call("delete_things", json!({}))).await });
    h.posted(1).await;
    h.expire_all().await;
    let result = held.await.unwrap().unwrap();
    assert_eq!(
        texts(&result),
        ["Nobody decided before 2026-11-23 13:00 UTC. The call was not run."]
    );
    assert!(h.ran().is_empty());
}

#[tokio::test]
async fn a_call_still_pending_after_the_hold_says_where_and_a_repeat_joins_the_same_approval_and_runs_once()
 {
    let h = harness().await;
    let proxy = h.proxy(&["--hold", "1s"]).await;
    let first = proxy
        .client
        .call_tool(call("delete_things", json!({"ids": [7]})))
        .await
        .unwrap();
    let id = h.posted(1).await;
    let text = &texts(&first)[0];
    assert!(
        text.starts_with(&format!(
            "Waiting for approval {} in #C0DEPLOYS (",
            &id[..8]
        )),
        "{text}"
    );
    assert!(
        text.ends_with(
            "Not run yet. Call this tool again with the same arguments to wait for the decision."
        ),
        "{text}"
    );
    assert_eq!(first.is_error, Some(true));
    // The repeat waits on the same approval; the decision comes while it is held: once
    // the proxy, listening for it, has read it pending (one more read of it served).
    let reads =
        r#"signoff_http_requests_total{method="GET",route="/v1/approvals/{id}",status="200"}"#;
    let before = crate::common::server::metric(&h.app.address, reads).await;
    let peer = proxy.client.peer().clone();
    let again = tokio::spawn(async move {
        peer.call_tool(call("delete_things", json!({"ids": [7]})))
            .await
    });
    crate::common::server::until_metric(&h.app.address, reads, before + 1.0).await;
    assert!(!again.is_finished(), "the repeat waits for the decision");
    h.approve(&id, "U0ALICE").await;
    let result = again.await.unwrap().unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    // After the decision, a third call is a new request (the first one ran).
    assert_eq!(h.ran().len(), 1);
    assert_eq!(
        h.app
            .slack
            .as_ref()
            .unwrap()
            .calls_to("chat.postMessage")
            .len(),
        1,
        "one Slack message"
    );
}

#[tokio::test]
async fn a_repeat_after_the_decision_joins_the_approved_call_and_runs_it_once() {
    let h = harness().await;
    let proxy = h.proxy(&["--hold", "500ms"]).await;
    let first = proxy
        .client
        .call_tool(call("delete_things", json!({"ids": [8]})))
        .await
        .unwrap();
    assert_eq!(first.is_error, Some(true));
    let id = h.posted(1).await;
    h.approve(&id, "U0ALICE").await;
    let again = proxy
        .client
        .call_tool(call("delete_things", json!({"ids": [8]})))
        .await
        .unwrap();
    assert_eq!(again.is_error, Some(false), "{again:?}");
    assert_eq!(h.ran().len(), 1);
    assert_eq!(h.status(&id).await, "executed");
}

#[tokio::test]
async fn cancelling_a_held_call_cancels_its_approval() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let request =
        ClientRequest::CallToolRequest(CallToolRequest::new(call("delete_things", json!({}))));
    let handle = proxy
        .client
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let id = h.posted(1).await;
    handle
        .cancel(Some("the user changed their mind".into()))
        .await
        .unwrap();
    let status = h.status_becomes(&id, "cancelled").await;
    assert_eq!(status, "cancelled");
    assert!(h.ran().is_empty());
}

#[tokio::test]
async fn a_client_that_goes_away_mid_call_leaves_no_pending_approval() {
    let h = harness().await;
    let mut proxy = h.proxy(&[]).await;
    let peer = proxy.client.peer().clone();
    tokio::spawn(async move { peer.call_tool(call("delete_things", json!({}))).await });
    let id = h.posted(1).await;
    let _ = proxy.client.cancel().await;
    let exit = exit_of(&mut proxy.child).await;
    assert!(
        exit.success(),
        "the proxy exits 0 when its client leaves: {exit}"
    );
    assert_eq!(h.status(&id).await, "cancelled");
    assert_eq!(h.pending().await, 0);
}

#[tokio::test]
async fn signoff_unreachable_or_the_token_refused_is_an_error_the_call_never_runs_and_the_proxy_keeps_serving()
 {
    let h = harness().await;
    let fixture = fixture();
    let down = crate::common::server::free_address();
    let proxy = h
        .proxy_for(
            &["--url", &format!("http://{down}")],
            &[fixture.to_str().unwrap()],
        )
        .await;
    for _ in 0..2 {
        let text = &proxy.refused("echo", json!({})).await[0];
        assert!(
            text.contains(&format!("signoff is unreachable at http://{down}"))
                && text.contains("Connection refused")
                && text.ends_with("The call was not run."),
            "{text}"
        );
    }
    let refused = h
        .proxy_for(&["--token", "so_wrong"], &[fixture.to_str().unwrap()])
        .await;
    let result = refused
        .client
        .call_tool(call("echo", json!({})))
        .await
        .unwrap();
    assert!(
        texts(&result)[0].contains("signoff refused the proxy's token"),
        "{result:?}"
    );
    assert!(h.ran().is_empty());
}

/// The call the upstream died running was sent to it: it may have run, and its
/// approval is spent, whether the proxy saw the upstream go before the call's
/// connection closed or after. A held call was never sent: it was not run.
#[tokio::test]
async fn when_the_upstream_crashes_the_call_it_ran_may_have_run_held_calls_did_not_and_the_proxy_exits_non_zero_quoting_its_stderr()
 {
    let h = harness().await;
    let mut proxy = h.proxy(&[]).await;
    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move { peer.call_tool(call("delete_things", json!({}))).await });
    let id = h.posted(1).await;
    let crashed = proxy.client.call_tool(call("crash", json!({}))).await;
    let crashed = crashed.expect("the crash call is answered with a result");
    assert_eq!(crashed.is_error, Some(true), "{crashed:?}");
    let [text] = &texts(&crashed)[..] else {
        panic!("{crashed:?}")
    };
    let prefix = "The MCP server behind signoff proxy exited while running the call: it may \
                  have run (approval ";
    let approval = text
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(" is spent); check before calling again."));
    assert!(
        approval.is_some_and(|id| id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
    let spent =
        "SELECT COUNT(*) FROM pending_approvals WHERE tool_name = 'crash' AND status = 'executed'";
    assert_eq!(crate::common::raw_count(&h.app.db, spent).await, 1);
    let held = held
        .await
        .unwrap()
        .expect("the held call is answered before the exit");
    assert_eq!(held.is_error, Some(true), "{held:?}");
    assert_eq!(
        texts(&held),
        ["The MCP server behind signoff proxy has exited. The call was not run."]
    );
    let exit = exit_of(&mut proxy.child).await;
    assert_eq!(exit.code(), Some(1));
    let stderr = stderr_of(&mut proxy.child).await;
    assert!(
        stderr.contains("the MCP server exited with status 3; its last stderr lines:")
            && stderr.contains("  fixture: crashing on purpose"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("after its command"),
        "a server's own command names it: {stderr}"
    );
    assert_eq!(h.status(&id).await, "cancelled");
}

#[tokio::test]
async fn an_approval_spent_before_a_restart_does_not_run_again() {
    let h = harness().await;
    let proxy = h.proxy(&["--hold", "300ms"]).await;
    let first = proxy
        .client
        .call_tool(call("delete_things", json!({"ids": [9]})))
        .await
        .unwrap();
    assert_eq!(first.is_error, Some(true));
    let id = h.posted(1).await;
    h.approve(&id, "U0ALICE").await;
    // Another proxy (say, before a restart) used the approval.
    let run = json!({"parameters": {"ids": [9]}, "tool_name": "delete_things"});
    let executed = h
        .app
        .http
        .post(h.app.url(&format!("/v1/approvals/{id}/execute")))
        .bearer_auth(&h.app.token)
        .json(&run)
        .send()
        .await
        .unwrap();
    assert_eq!(executed.status(), 200);
    drop(proxy);
    let restarted = h.proxy(&["--hold", "300ms"]).await;
    let again = restarted
        .client
        .call_tool(call("delete_things", json!({"ids": [9]})))
        .await
        .unwrap();
    assert_eq!(again.is_error, Some(true));
    assert!(
        texts(&again)[0].starts_with("Waiting for approval"),
        "a new request: {again:?}"
    );
    assert!(h.ran().is_empty());
}

#[tokio::test]
async fn many_held_calls_wait_on_one_stream_and_each_gets_its_own_decision() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let held: Vec<_> = (1..=4)
        .map(|n| {
            let peer = proxy.client.peer().clone();
            tokio::spawn(
                async move { peer.call_tool(call("delete_things", json!({"n": n}))).await },
            )
        })
        .collect();
    let mut approved = Vec::new();
    for count in 1..=4 {
        let id = h.posted(count).await;
        let approval = h.app.store.get(id.parse().unwrap()).await.unwrap().unwrap();
        let n = approval.parameters["n"].as_i64().unwrap();
        if n % 2 == 1 {
            h.approve(&id, "U0ALICE").await;
            approved.push(json!({"tool": "delete_things", "arguments": {"n": n}}));
        } else {
            h.submit(&id, "U0BOB", "deny_reason", &format!("not {n}"))
                .await;
        }
    }
    for (n, call) in (1..=4).zip(held) {
        let result = call.await.unwrap().unwrap();
        if n % 2 == 1 {
            assert_ne!(result.is_error, Some(true), "call {n}: {result:?}");
            assert!(
                texts(&result)
                    .iter()
                    .any(|text| text.contains(&format!("\"n\":{n}"))),
                "call {n} ran with its own arguments: {result:?}"
            );
        } else {
            assert_eq!(
                texts(&result),
                [format!("Denied by U0BOB: not {n}. The call was not run.")]
            );
        }
    }
    let mut ran = h.ran();
    let by_n = |call: &serde_json::Value| call["arguments"]["n"].as_i64();
    ran.sort_by_key(by_n);
    approved.sort_by_key(by_n);
    assert_eq!(
        ran, approved,
        "each approved call ran once, no denied one ran"
    );
}

#[tokio::test]
async fn when_signoff_goes_away_held_calls_are_errors_and_never_run() {
    let h = harness().await;
    let replica = h.app.replica().await;
    let proxy = h.proxy(&["--url", &replica.address]).await;
    let peer = proxy.client.peer().clone();
    let held =
        tokio::spawn(async move { peer.call_tool(call("delete_things", json!({"n": 1}))).await });
    let mut waiting = false;
    for _ in 0..250 {
        if h.pending().await == 1 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(waiting, "the call is held");
    drop(replica);
    let result = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the held call is answered when signoff goes away")
        .unwrap()
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = &texts(&result)[0];
    // Asked already: the approval stays open, and the same call joins it once signoff
    // is back.
    assert!(
        text.contains("was asked for")
            && text.contains("signoff is unreachable")
            && text.contains("Not run yet. Call this tool again"),
        "{text}"
    );
    assert!(h.ran().is_empty());
}

/// A decision comes on the event stream with the approval's parameters; non-ASCII text
/// in them, split across the stream's chunks, arrives whole, so the approved call
/// passes the gate with exactly the arguments it was asked with.
#[tokio::test]
async fn a_held_call_with_non_ascii_arguments_runs_with_exactly_them_once_approved() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    // 270 KB, 9 bytes a round: the stream comes in chunks (64 KiB reads) whose ends
    // fall inside characters.
    let arguments = json!({"text": "é日本!".repeat(30_000), "names": ["Zoë", "日本語", "😀"]});
    let peer = proxy.client.peer().clone();
    let sent = arguments.clone();
    let held = tokio::spawn(async move { peer.call_tool(call("delete_things", sent)).await });
    let id = h.posted(1).await;
    // Held: the decision comes on the stream, not in the first read.
    assert!(
        eventually(|| (proxy.recorder.events().iter()).any(|e| e.get("progress").is_some())).await
    );
    h.approve(&id, "U0ALICE").await;
    let result = held.await.unwrap().unwrap();
    let said: String = texts(&result).concat().chars().take(300).collect();
    assert_eq!(result.is_error, Some(false), "{said}");
    assert_eq!(
        h.ran(),
        [json!({"tool": "delete_things", "arguments": arguments})]
    );
    assert_eq!(h.status(&id).await, "executed");
}
