//! Everything but `tools/call` passes through; bad input gets the protocol's error and
//! the proxy keeps serving.

use std::time::Duration;

use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

#[tokio::test]
async fn the_proxy_advertises_the_upstream_and_passes_resources_prompts_progress_logs_list_changes_and_sampling_through()
 {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let info = proxy.client.peer().peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "mcp-fixture");
    assert!(info.capabilities.prompts.is_some() && info.capabilities.resources.is_some());

    let resources = proxy.client.list_all_resources().await.unwrap();
    assert_eq!(resources[0].uri, "fixture://note");
    let read = proxy
        .client
        .read_resource(ReadResourceRequestParams::new("fixture://note"))
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&read)
            .unwrap()
            .contains("the note's text")
    );
    let prompts = proxy.client.list_all_prompts().await.unwrap();
    assert_eq!(prompts[0].name, "greet");
    let prompt = proxy
        .client
        .get_prompt(GetPromptRequestParams::new("greet"))
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&prompt)
            .unwrap()
            .contains("hello from greet")
    );

    let slow = proxy
        .client
        .call_tool(call("slow", json!({"steps": 3})))
        .await
        .unwrap();
    assert_eq!(texts(&slow), ["slow done after 3 steps"]);
    proxy
        .client
        .call_tool(call("chatty", json!({})))
        .await
        .unwrap();
    proxy
        .client
        .call_tool(call("add_tool", json!({})))
        .await
        .unwrap();
    let asked = proxy
        .client
        .call_tool(call("ask_model", json!({})))
        .await
        .unwrap();
    assert!(
        texts(&asked)[0].contains("hello from the model"),
        "{asked:?}"
    );
    let events = || proxy.recorder.events();
    assert!(
        eventually(|| {
            let events = events();
            events.iter().any(|e| e["progress"] == "step 3 of 3")
                && events.iter().any(|e| e["log"] == "hello from the fixture")
                && events.iter().any(|e| e["tool_list_changed"] == true)
                && events.iter().any(|e| e.get("sampling").is_some())
        })
        .await,
        "{:?}",
        events()
    );
    let tools = proxy.client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|tool| tool.name == "extra"));
}

/// The upstream's tools/list_changed makes the proxy read the tool list again before
/// it classifies the next call: a tool that turned from read-only to destructive is
/// held for a person, not auto-approved by the annotations it had.
#[tokio::test]
async fn a_tool_whose_annotations_changed_is_classified_by_the_new_ones() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    a_hardened_tool_is_held(&h, &proxy).await;
}

/// The upstream's elicitation and roots requests reach the client, and its answers go
/// back: the tool's result carries them.
#[tokio::test]
async fn the_upstreams_elicitation_and_roots_requests_reach_the_client_and_its_answers_go_back() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let asked = proxy
        .client
        .call_tool(call("ask_user", json!({})))
        .await
        .unwrap();
    let answer = &texts(&asked)[0];
    assert!(
        answer.contains(r#""action":"accept""#) && answer.contains(r#""env":"staging""#),
        "{asked:?}"
    );
    let roots = proxy
        .client
        .call_tool(call("roots", json!({})))
        .await
        .unwrap();
    assert!(
        texts(&roots)[0].contains("file:///work/project"),
        "{roots:?}"
    );
    let events = proxy.recorder.events();
    let elicited = events.iter().find_map(|e| e.get("elicitation")).unwrap();
    assert_eq!(elicited["message"], "Which environment?", "{events:?}");
    assert!(events.iter().any(|e| e["roots"] == true), "{events:?}");
}

#[tokio::test]
async fn a_failing_tool_returns_the_upstreams_error_result_as_it_came() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let refused = proxy.refused("fail", json!({})).await;
    assert_eq!(refused, ["the fixture failed on purpose"]);
}

#[tokio::test]
async fn a_call_for_a_tool_the_upstream_does_not_list_is_refused_without_asking_signoff() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let error = proxy
        .client
        .call_tool(call("nope", json!({})))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("unknown tool"), "{error}");
    assert_eq!(
        crate::common::raw_count(&h.app.db, "SELECT COUNT(*) FROM pending_approvals").await,
        0
    );
}

/// An upstream whose `tools/list` never ends (a cursor on every page) is read so far
/// and no further: a call for a tool on its pages runs, one for a tool it never
/// lists is refused as unknown instead of held forever.
#[tokio::test]
async fn an_endless_tool_list_is_read_so_far_and_a_tool_past_it_is_refused() {
    let h = harness().await;
    let mut command = h.proxy_command(&[], &[fixture().to_str().unwrap()]);
    command.env("FIXTURE_ENDLESS_PAGES", "1");
    let proxy = h.proxy_with(command).await;
    let within = std::time::Duration::from_secs(60);
    let error = tokio::time::timeout(within, proxy.client.call_tool(call("nope", json!({}))))
        .await
        .expect("refused, not held")
        .unwrap_err();
    assert!(error.to_string().contains("unknown tool"), "{error}");
    let result = tokio::time::timeout(within, proxy.client.call_tool(call("echo", json!({}))))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(texts(&result), [r#"echo ran with {}"#]);
}

#[tokio::test]
async fn a_five_mib_argument_is_refused_as_too_large_and_never_runs() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let big = "x".repeat(5 * 1024 * 1024);
    let refused = proxy.refused("echo", json!({"blob": big})).await;
    assert!(refused[0].contains("too large"), "{refused:?}");
    assert!(h.ran().is_empty());
    let still = proxy
        .client
        .call_tool(call("echo", json!({})))
        .await
        .unwrap();
    assert_eq!(still.is_error, Some(false));
}

#[tokio::test]
async fn malformed_json_rpc_unknown_methods_and_non_object_arguments_get_errors_and_the_proxy_keeps_serving()
 {
    let h = harness().await;
    let mut raw = raw(&h).await;
    raw.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#).await;
    assert_eq!(
        raw.answer(1).await["result"]["serverInfo"]["name"],
        "mcp-fixture"
    );
    raw.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;
    raw.send("this is not json").await;
    raw.send(r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method","params":{}}"#)
        .await;
    assert!(raw.answer(2).await["error"]["code"].is_i64());
    raw.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":[1,2]}}"#).await;
    assert_eq!(raw.answer(3).await["error"]["code"], -32602);
    raw.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo"}}"#)
        .await;
    let answer = raw.answer(4).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "echo ran with {}",
        "{answer}"
    );
    assert_eq!(h.ran(), [json!({"tool": "echo", "arguments": {}})]);
    let _ = raw.child.start_kill();
}

#[tokio::test]
async fn an_http_upstream_is_wrapped_with_its_credentials_header_and_named_by_its_host() {
    let h = harness().await;
    let mut server = tokio::process::Command::new(fixture())
        .arg("--http")
        .env("FIXTURE_KEY", "s3cret")
        .env("FIXTURE_LOG", h.log_path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let url = lines.next_line().await.unwrap().unwrap();
    let flags = [
        "--upstream",
        url.as_str(),
        "--upstream-header",
        "X-Fixture-Key: s3cret",
    ];
    let proxy = h.proxy_with(h.proxy_command(&flags, &[])).await;
    let result = proxy
        .client
        .call_tool(call("echo", json!({"via": "http"})))
        .await
        .unwrap();
    assert_eq!(texts(&result), [r#"echo ran with {"via":"http"}"#]);
    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move { peer.call_tool(call("delete_things", json!({}))).await });
    let id = h.posted(1).await;
    let approval = h.app.store.get(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(approval.server.as_deref(), Some("127.0.0.1"));
    h.approve(&id, "U0ALICE").await;
    assert_eq!(held.await.unwrap().unwrap().is_error, Some(false));
    assert_eq!(h.ran().len(), 2);

    let refused = h.proxy_command(&["--upstream", url.as_str()], &[]).output();
    let refused = tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .unwrap()
        .unwrap();
    assert!(!refused.status.success());
    let _ = server.start_kill();
}

/// An HTTP upstream that redirects to another host is refused with the redirect's
/// status: neither its credentials header nor the request reaches that host, and the
/// URL's userinfo and query string (credentials too) are not shown.
#[tokio::test]
async fn an_http_upstreams_redirect_is_refused_and_its_credentials_go_nowhere_else() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let h = harness().await;
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let elsewhere = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "taken" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, elsewhere).await });
    let redirecting = axum::Router::new().fallback(move || {
        let to = [(axum::http::header::LOCATION, target.clone())];
        async move { (axum::http::StatusCode::TEMPORARY_REDIRECT, to) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, redirecting).await });

    let url = format!("http://agent:hunter2@{address}/mcp?api_key=secret");
    let flags = ["--upstream", &url, "--upstream-header", "X-Api-Key: k3y"];
    let refused = h.proxy_command(&flags, &[]).output();
    let refused = tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .unwrap()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("at http://{address}/mcp?…:")) && stderr.contains("307"),
        "{stderr}"
    );
    for secret in ["secret", "hunter2", "k3y"] {
        assert!(!stderr.contains(secret), "{secret}: {stderr}");
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the other host was never asked"
    );
}

#[tokio::test]
async fn a_2026_07_28_client_without_initialize_is_served_and_gated() {
    let h = harness().await;
    let mut raw = raw(&h).await;
    raw.send(&modern_request(1, "tools/list", json!({}))).await;
    let tools = raw.answer(1).await;
    assert!(
        tools["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|tool| tool["name"] == "echo"),
        "{tools}"
    );
    raw.send(&modern_request(
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"x": 1}}),
    ))
    .await;
    let answer = raw.answer(2).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], r#"echo ran with {"x":1}"#,
        "{answer}"
    );
    // 2026-07-28 requires it of a server; the upstream (on the session protocol)
    // left it out.
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert_eq!(tools["result"]["resultType"], "complete", "{tools}");
    let asked = "SELECT COUNT(*) FROM pending_approvals WHERE status = 'executed' AND requested_by = 'modern-agent'";
    assert_eq!(crate::common::raw_count(&h.app.db, asked).await, 1);
    let _ = raw.child.start_kill();
}

impl Raw {
    /// Reads until a message matches `wanted` (answers, notifications); every message
    /// read on the way is pushed to `seen`.
    async fn wait(&mut self, seen: &mut Vec<Value>, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = seen.iter().find(|m| wanted(m)) {
            return found.clone();
        }
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("waited in vain; seen: {seen:?}"))
                .unwrap()
                .expect("the proxy is still there");
            let message: Value = serde_json::from_str(&line).unwrap();
            seen.push(message.clone());
            if wanted(&message) {
                return message;
            }
        }
    }
}

fn method(name: &'static str) -> impl Fn(&Value) -> bool {
    move |message| message["method"] == name
}

/// The fixture's resource subscriptions so far: ("resources/subscribe", uri), ….
fn subscriptions(h: &Harness) -> Vec<(String, String)> {
    let ran = h.ran().into_iter();
    let subscriptions = ran.filter(|call| call["tool"].as_str().unwrap().starts_with("resources/"));
    subscriptions
        .map(|call| {
            let uri = call["arguments"]["uri"].as_str().unwrap().to_owned();
            (call["tool"].as_str().unwrap().to_owned(), uri)
        })
        .collect()
}

async fn until_subscriptions(h: &Harness, n: usize) -> Vec<(String, String)> {
    for _ in 0..100 {
        if subscriptions(h).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subscriptions(h)
}

/// A 2026-07-28 client gets list changes and resource updates only on the stream it
/// opened with `subscriptions/listen`, only those it asked for; the proxy subscribes
/// upstream to the resources named, and unsubscribes when the stream is cancelled.
#[tokio::test]
async fn a_2026_07_28_client_hears_list_changes_and_its_resources_updates_on_its_stream() {
    let h = harness().await;
    let mut raw = raw(&h).await;
    let touch = |id: i64, uri: &str| {
        modern_request(
            id,
            "tools/call",
            json!({"name": "touch", "arguments": {"uri": uri}}),
        )
    };
    let mut seen = Vec::new();
    // No stream yet: nothing is sent unasked.
    raw.send(&touch(1, "fixture://note")).await;
    raw.wait(&mut seen, |m| m["id"] == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let asked = json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true,
        "resourceSubscriptions": ["fixture://note"]}});
    raw.send(&modern_request(2, "subscriptions/listen", asked))
        .await;
    let ack = raw
        .wait(
            &mut seen,
            method("notifications/subscriptions/acknowledged"),
        )
        .await;
    let accepted = &ack["params"]["notifications"];
    assert_eq!(accepted["toolsListChanged"], true, "{ack}");
    assert_eq!(
        accepted["resourceSubscriptions"],
        json!(["fixture://note"]),
        "{ack}"
    );
    assert!(
        accepted.get("promptsListChanged").is_none(),
        "the upstream does not advertise it: {ack}"
    );
    assert!(
        !seen.iter().any(method("notifications/resources/updated")),
        "{seen:?}"
    );
    let subscribed = until_subscriptions(&h, 1).await;
    assert_eq!(
        subscribed,
        [(
            "resources/subscribe".to_owned(),
            "fixture://note".to_owned()
        )]
    );

    raw.send(&modern_request(
        3,
        "tools/call",
        json!({"name": "add_tool", "arguments": {}}),
    ))
    .await;
    let changed = raw
        .wait(&mut seen, method("notifications/tools/list_changed"))
        .await;
    assert!(
        changed["params"]["_meta"].to_string().contains('2'),
        "on stream 2: {changed}"
    );
    raw.send(&touch(4, "fixture://other")).await;
    raw.wait(&mut seen, |m| m["id"] == 4).await;
    raw.send(&touch(5, "fixture://note")).await;
    let updated = raw
        .wait(&mut seen, method("notifications/resources/updated"))
        .await;
    assert_eq!(updated["params"]["uri"], "fixture://note");
    let updates = seen
        .iter()
        .filter(|m| method("notifications/resources/updated")(m));
    assert_eq!(updates.count(), 1, "not the unnamed resource: {seen:?}");

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 2, "_meta": modern_meta()}});
    raw.send(&cancel.to_string()).await;
    let both = until_subscriptions(&h, 2).await;
    assert_eq!(
        both[1],
        (
            "resources/unsubscribe".to_owned(),
            "fixture://note".to_owned()
        )
    );
    let _ = raw.child.start_kill();
}
