//! A 2026-07-28 client takes no requests from a server: the upstream's sampling,
//! elicitation and roots requests in the middle of a call reach it inside an
//! `input_required` result, and its retry (with `inputResponses` and the
//! `requestState`) carries the answers back and rejoins the running call, which was
//! approved and runs once. An upstream that speaks 2026-07-28 only: its
//! `input_required` rounds, list changes and resource updates through the proxy.

// A session client's resources/subscribe is deprecated by 2026-07-28; tested still.
#![allow(deprecated)]

use std::time::Duration;

use rmcp::model::*;
use rmcp::service::ClientLifecycleMode;
use rmcp::service::ClientServiceExt;
use serde_json::{Value, json};

use crate::common::{raw_count, raw_value};
use crate::helpers::*;

fn call(id: i64, tool: &str, arguments: Value) -> String {
    modern_request(
        id,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
}

/// The retry of `first`'s call (tool and arguments) with `responses` and `state`.
fn retry(id: i64, tool: &str, arguments: Value, responses: Value, state: &Value) -> String {
    modern_request(
        id,
        "tools/call",
        json!({"name": tool, "arguments": arguments, "inputResponses": responses, "requestState": state}),
    )
}

fn model_answer(text: &str) -> Value {
    json!({"role": "assistant", "model": "m1", "content": {"type": "text", "text": text}})
}

/// The one key of an `input_required` result's `inputRequests`, and its request.
fn only_request(answer: &Value) -> (String, Value) {
    let result = &answer["result"];
    assert_eq!(result["resultType"], "input_required", "{answer}");
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{answer}");
    let (key, request) = requests.iter().next().unwrap();
    (key.clone(), request.clone())
}

/// The first text of a call's result.
fn text_of(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"].as_str().unwrap()
}

async fn approvals_of(h: &Harness, tool: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM pending_approvals WHERE tool_name = '{tool}'");
    raw_count(&h.app.db, &sql).await
}

/// The short id (as the texts show it) of `tool`'s one approval.
async fn approval_of(h: &Harness, tool: &str) -> String {
    let sql = format!("SELECT CAST(id AS TEXT) FROM pending_approvals WHERE tool_name = '{tool}'");
    let id: String = raw_value(&h.app.db, &sql).await;
    id[..8].to_owned()
}

/// A retry of a tool round that ended after its call went upstream is not invited to
/// send the call again as if nothing ran: it names the spent approval.
fn says_it_may_have_run(answer: &Value, approval: &str) {
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = text_of(answer);
    assert!(text.contains("may have run"), "{answer}");
    assert!(
        text.contains(&format!("approval {approval} is spent")),
        "{answer}"
    );
    assert!(!text.contains("Nothing was run"), "{answer}");
}

/// `tool` was asked about once, and the upstream ran it once.
async fn asked_and_ran_once(h: &Harness, tool: &str) {
    assert_eq!(approvals_of(h, tool).await, 1, "approvals of {tool}");
    assert_eq!(runs_of(h, tool), 1, "runs of {tool}");
}

#[tokio::test]
async fn an_upstreams_sampling_request_reaches_a_2026_07_28_client_as_input_required_and_its_retry_finishes_the_one_approved_call()
 {
    let h = harness().await;
    let mut raw = raw(&h).await;
    raw.send(&call(1, "ask_model", json!({"topic": "greeting"})))
        .await;
    let first = raw.answer(1).await;
    let (key, request) = only_request(&first);
    assert_eq!(request["method"], "sampling/createMessage", "{first}");
    assert_eq!(
        request["params"]["messages"][0]["content"]["text"], "Say hello",
        "{first}"
    );
    let state = first["result"]["requestState"].clone();
    assert!(state.as_str().is_some_and(|s| s.len() >= 32), "{first}");

    let responses = json!({key.clone(): model_answer("bonjour")});
    raw.send(&retry(
        2,
        "ask_model",
        json!({"topic": "greeting"}),
        responses,
        &state,
    ))
    .await;
    let done = raw.answer(2).await;
    let text = text_of(&done);
    assert!(
        text.contains("the model said") && text.contains("bonjour"),
        "{done}"
    );
    assert_ne!(done["result"]["isError"], true, "{done}");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");

    // One approval, spent once; the upstream ran the call once.
    assert_eq!(approvals_of(&h, "ask_model").await, 1);
    let executed = "SELECT COUNT(*) FROM pending_approvals WHERE tool_name = 'ask_model' AND status = 'executed'";
    assert_eq!(raw_count(&h.app.db, executed).await, 1);
    assert_eq!(runs_of(&h, "ask_model"), 1);

    // The round is over: its state cannot be used again, and the call ran.
    raw.send(&retry(
        3,
        "ask_model",
        json!({"topic": "greeting"}),
        json!({key: model_answer("again")}),
        &state,
    ))
    .await;
    let again = raw.answer(3).await;
    says_it_may_have_run(&again, &approval_of(&h, "ask_model").await);
    assert!(
        text_of(&again).contains("taken by an earlier retry"),
        "{again}"
    );
    asked_and_ran_once(&h, "ask_model").await;
    let _ = raw.child.start_kill();
}

#[tokio::test]
async fn a_retry_with_other_arguments_or_a_forged_state_is_refused_and_the_round_still_finishes() {
    let h = harness().await;
    let mut raw = raw(&h).await;
    raw.send(&call(1, "ask_user", json!({"why": "deploy"})))
        .await;
    let first = raw.answer(1).await;
    let (key, request) = only_request(&first);
    assert_eq!(request["method"], "elicitation/create", "{first}");
    let state = first["result"]["requestState"].clone();
    let answer = json!({key.clone(): {"action": "accept", "content": {"env": "production"}}});

    raw.send(&retry(
        2,
        "ask_user",
        json!({"why": "something else"}),
        answer.clone(),
        &state,
    ))
    .await;
    let other = raw.answer(2).await;
    assert_eq!(other["result"]["isError"], true, "{other}");
    assert!(
        text_of(&other).contains("does not repeat the request"),
        "{other}"
    );
    raw.send(&retry(
        3,
        "ask_user",
        json!({"why": "deploy"}),
        answer.clone(),
        &json!("forged-state"),
    ))
    .await;
    let forged = raw.answer(3).await;
    assert_eq!(forged["result"]["isError"], true, "{forged}");

    // A retry without the answer is asked again, under the same key.
    raw.send(&retry(
        4,
        "ask_user",
        json!({"why": "deploy"}),
        json!({}),
        &state,
    ))
    .await;
    let asked_again = raw.answer(4).await;
    let (again_key, _) = only_request(&asked_again);
    assert_eq!(again_key, key);
    let state = asked_again["result"]["requestState"].clone();

    raw.send(&retry(
        5,
        "ask_user",
        json!({"why": "deploy"}),
        answer,
        &state,
    ))
    .await;
    let done = raw.answer(5).await;
    let text = text_of(&done);
    assert!(
        text.contains("the user answered") && text.contains("production"),
        "{done}"
    );
    asked_and_ran_once(&h, "ask_user").await;
    let _ = raw.child.start_kill();
}

/// The upstream's request gets an error and its call is cancelled; the late retry is
/// told that the call may have run (its approval spent), not to send it again.
#[tokio::test]
async fn a_round_the_client_never_comes_back_for_is_given_up_and_its_state_refused() {
    let h = harness().await;
    let mut raw = raw_with(&h, &["--input-within", "300ms"]).await;
    raw.send(&call(1, "ask_model", json!({}))).await;
    let first = raw.answer(1).await;
    let (key, _) = only_request(&first);
    let state = first["result"]["requestState"].clone();
    let sampling_failed =
        || (h.ran().into_iter()).find(|call| call["tool"] == "ask_model: sampling failed");
    assert!(eventually(|| sampling_failed().is_some()).await);
    let failed = sampling_failed().expect("the upstream's sampling got its error");
    let error = failed["arguments"]["error"].as_str().unwrap();
    assert!(error.contains("did not come back"), "{error}");

    raw.send(&retry(
        2,
        "ask_model",
        json!({}),
        json!({key: model_answer("late")}),
        &state,
    ))
    .await;
    let late = raw.answer(2).await;
    says_it_may_have_run(&late, &approval_of(&h, "ask_model").await);
    assert!(text_of(&late).contains("given up after 300ms"), "{late}");
    // The proxy keeps serving.
    raw.send(&call(3, "echo", json!({"x": 1}))).await;
    let echo = raw.answer(3).await;
    assert_eq!(
        echo["result"]["content"][0]["text"],
        r#"echo ran with {"x":1}"#
    );
    asked_and_ran_once(&h, "ask_model").await;
    let _ = raw.child.start_kill();
}

/// A tool call's retry with a `requestState` the proxy does not know (never issued
/// here, or forgotten: too old, or the proxy restarted) is not told that nothing was
/// run: had its round gone upstream, the call may have run. Nothing is asked or run.
#[tokio::test]
async fn a_tool_retry_with_an_unknown_state_is_told_the_call_may_have_run() {
    let h = harness().await;
    let mut raw = raw(&h).await;
    raw.send(&retry(
        1,
        "echo",
        json!({"x": 1}),
        json!({"sampling-1": model_answer("late")}),
        &json!("0123456789abcdef0123456789abcdef"),
    ))
    .await;
    let unknown = raw.answer(1).await;
    assert_eq!(unknown["result"]["isError"], true, "{unknown}");
    let text = text_of(&unknown);
    assert!(!text.contains("Nothing was run"), "{unknown}");
    assert!(text.contains("it may have run"), "{unknown}");
    assert!(text.contains("check before calling again"), "{unknown}");
    assert_eq!(approvals_of(&h, "echo").await, 0, "nothing was asked");
    assert_eq!(runs_of(&h, "echo"), 0, "nothing ran");
    let _ = raw.child.start_kill();
}

/// The upstream asks the client again (`ask_twice`: its user, 800 ms after its model)
/// while the call is parked on the first question: the second waits for a call to
/// carry it to the client. When the parked call is given up and no call is left that
/// could, the second request gets an error too, instead of waiting forever.
#[tokio::test]
async fn a_request_queued_behind_a_parked_call_gets_an_error_when_that_call_is_given_up() {
    let h = harness().await;
    let mut raw = raw_with(&h, &["--input-within", "2s"]).await;
    raw.send(&call(1, "ask_twice", json!({"after_ms": 800})))
        .await;
    let first = raw.answer(1).await;
    let (_, request) = only_request(&first);
    assert_eq!(request["method"], "sampling/createMessage", "{first}");
    // Both requests are answered, in either order; wait until the fixture logged both.
    let logged = |tool: &str| -> Vec<Value> {
        (h.ran().into_iter())
            .filter(|call| call["tool"] == tool)
            .collect()
    };
    let both = eventually(|| {
        !logged("ask_twice: elicitation").is_empty()
            && !logged("ask_model: sampling failed").is_empty()
    });
    assert!(both.await, "{:?}", h.ran());
    let elicited = logged("ask_twice: elicitation");
    let outcome = elicited
        .first()
        .expect("the upstream's second request is answered");
    assert_eq!(outcome["arguments"]["is_error"], true, "{outcome}");
    let text = outcome["arguments"]["text"].as_str().unwrap();
    assert!(
        text.contains("no request of the client's is left"),
        "{text}"
    );
    let failed = logged("ask_model: sampling failed");
    assert_eq!(failed.len(), 1, "the first request got its error as well");
    let _ = raw.child.start_kill();
}

#[tokio::test]
async fn a_prompt_and_a_resource_read_go_in_rounds_too() {
    let h = harness().await;
    let mut raw = raw(&h).await;
    let prompt = |id: i64, extra: Value| {
        let mut params = json!({"name": "ask_user", "arguments": {"who": "ops"}});
        params
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        modern_request(id, "prompts/get", params)
    };
    raw.send(&prompt(1, json!({}))).await;
    let first = raw.answer(1).await;
    let (key, request) = only_request(&first);
    assert_eq!(request["method"], "elicitation/create", "{first}");
    let state = first["result"]["requestState"].clone();
    let answer = json!({key: {"action": "accept", "content": {"env": "prompted"}}});
    raw.send(&prompt(
        2,
        json!({"inputResponses": answer, "requestState": state}),
    ))
    .await;
    let done = raw.answer(2).await;
    let text = done["result"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap();
    assert!(
        text.contains("the user answered") && text.contains("prompted"),
        "{done}"
    );
    assert_eq!(done["result"]["resultType"], "complete", "{done}");

    let read = |id: i64, uri: &str, extra: Value| {
        let mut params = json!({"uri": uri});
        params
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        modern_request(id, "resources/read", params)
    };
    raw.send(&read(3, "fixture://roots", json!({}))).await;
    let first = raw.answer(3).await;
    let (key, request) = only_request(&first);
    assert_eq!(request["method"], "roots/list", "{first}");
    let state = first["result"]["requestState"].clone();
    let roots = json!({key: {"roots": [{"uri": "file:///read/here", "name": "here"}]}});
    let retry = json!({"inputResponses": roots, "requestState": state});
    // Another resource under this round's state is refused, and the round waits on.
    raw.send(&read(4, "fixture://note", retry.clone())).await;
    let other = raw.answer(4).await;
    assert_eq!(other["error"]["code"], -32602, "{other}");
    assert!(
        other["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not repeat"),
        "{other}"
    );
    raw.send(&read(5, "fixture://roots", retry)).await;
    let done = raw.answer(5).await;
    let text = done["result"]["contents"][0]["text"].as_str().unwrap();
    assert!(text.contains("file:///read/here"), "{done}");
    // Neither is a tool call: no approval was asked for.
    let asked = "SELECT COUNT(*) FROM pending_approvals";
    assert_eq!(raw_count(&h.app.db, asked).await, 0);
    let _ = raw.child.start_kill();
}

/// A request line of a 2026-07-28 client that declares the tasks extension.
fn task_request(id: i64, method: &str, mut params: Value) -> String {
    let mut meta = modern_meta();
    meta["io.modelcontextprotocol/clientCapabilities"] =
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    params["_meta"] = meta;
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// Polls `tasks/get` (request ids from `id`) until the task's status is `status`.
/// `tasks/update` of `task` with `answers` (its input responses), under the next id:
/// the answer.
async fn update_task(raw: &mut Raw, id: &mut i64, task: &Value, answers: Value) -> Value {
    *id += 1;
    let params = json!({"taskId": task, "inputResponses": answers});
    raw.send(&task_request(*id, "tasks/update", params)).await;
    raw.answer(*id).await
}

async fn task_until(raw: &mut Raw, id: &mut i64, task: &Value, status: &str) -> Value {
    for _ in 0..200 {
        *id += 1;
        raw.send(&task_request(*id, "tasks/get", json!({"taskId": task})))
            .await;
        let got = raw.answer(*id).await;
        if got["result"]["status"] == status {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the task never became {status}");
}

/// In a 2026-07-28 client's task, the upstream's request shows as `input_required`
/// in `tasks/get`, and `tasks/update` answers it; the call runs once.
#[tokio::test]
async fn a_2026_07_28_clients_task_shows_the_upstreams_request_and_tasks_update_answers_it() {
    let h = harness().await;
    let mut raw = raw(&h).await;
    raw.send(&task_request(
        1,
        "tools/call",
        json!({"name": "ask_model", "arguments": {}}),
    ))
    .await;
    let created = raw.answer(1).await;
    let task = created["result"]["taskId"].clone();
    assert!(task.is_string(), "{created}");
    let mut id = 1;
    let waiting = task_until(&mut raw, &mut id, &task, "input_required").await;
    let requests = waiting["result"]["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{waiting}");
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(request["method"], "sampling/createMessage", "{waiting}");

    let answers = json!({key.clone(): model_answer("from the task")});
    let updated = update_task(&mut raw, &mut id, &task, answers).await;
    assert!(updated.get("error").is_none(), "{updated}");
    let done = task_until(&mut raw, &mut id, &task, "completed").await;
    let text = done["result"]["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("from the task"), "{done}");
    asked_and_ran_once(&h, "ask_model").await;
    let _ = raw.child.start_kill();
}

/// Two tasks of a 2026-07-28 client run calls to a 2026-07-28 upstream; the upstream
/// asks in the second one's call only. The question is that task's input request,
/// not the first task's (whose end would fail it while the second still waits).
#[tokio::test]
async fn a_2026_07_28_upstreams_question_goes_to_the_task_whose_call_asked_it() {
    let h = harness().await;
    let mut raw = raw_from(modern_upstream(&h));
    let start = |id: i64, tool: &str, arguments: Value| {
        task_request(
            id,
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
        )
    };
    raw.send(&start(1, "slow", json!({"steps": 600}))).await;
    let deploy = raw.answer(1).await["result"]["taskId"].clone();
    assert!(deploy.is_string());
    // Running upstream: the task waits on it.
    assert!(
        eventually(|| runs_of(&h, "slow") == 1).await,
        "{:?}",
        h.ran()
    );
    raw.send(&start(2, "ask_model", json!({}))).await;
    let asking = raw.answer(2).await["result"]["taskId"].clone();
    let mut id = 2;
    let waiting = task_until(&mut raw, &mut id, &asking, "input_required").await;
    let requests = waiting["result"]["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{waiting}");
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(request["method"], "sampling/createMessage", "{waiting}");
    id += 1;
    raw.send(&task_request(id, "tasks/get", json!({"taskId": deploy})))
        .await;
    let other = raw.answer(id).await;
    assert_eq!(other["result"]["status"], "working", "{other}");
    assert!(other["result"].get("inputRequests").is_none(), "{other}");

    let answers = json!({key.clone(): model_answer("to the asking task")});
    let updated = update_task(&mut raw, &mut id, &asking, answers).await;
    assert!(updated.get("error").is_none(), "{updated}");
    let done = task_until(&mut raw, &mut id, &asking, "completed").await;
    let text = done["result"]["result"]["content"][0]["text"].as_str();
    assert!(
        text.is_some_and(|text| text.contains("to the asking task")),
        "{done}"
    );
    let _ = raw.child.start_kill();
}

/// The same without tasks: the question comes back in a round of the call that asked
/// it, not of another call waiting meanwhile, which ends with its own answer.
#[tokio::test]
async fn a_2026_07_28_upstreams_question_comes_back_in_the_round_of_the_call_that_asked_it() {
    let h = harness().await;
    let mut raw = raw_from(modern_upstream(&h));
    raw.send(&call(1, "slow", json!({"steps": 60}))).await;
    assert!(
        eventually(|| runs_of(&h, "slow") == 1).await,
        "{:?}",
        h.ran()
    );
    raw.send(&call(2, "ask_model", json!({}))).await;
    let asked = raw.answer(2).await;
    let (key, request) = only_request(&asked);
    assert_eq!(request["method"], "sampling/createMessage", "{asked}");
    let state = asked["result"]["requestState"].clone();
    let answer = json!({key: model_answer("to the asking call")});
    raw.send(&retry(3, "ask_model", json!({}), answer, &state))
        .await;
    let done = raw.answer(3).await;
    assert!(text_of(&done).contains("to the asking call"), "{done}");
    let slow = raw.answer(1).await;
    assert_eq!(text_of(&slow), "slow done after 60 steps", "{slow}");
    let _ = raw.child.start_kill();
}

/// rmcp's own client on 2026-07-28 (discover, no `initialize`) drives the rounds by
/// itself: it answers each request with its handler and retries.
#[tokio::test]
async fn rmcps_2026_07_28_client_answers_the_upstreams_requests_through_rounds() {
    let h = harness().await;
    let fixture = fixture();
    let mut command = h.proxy_command(&[], &[fixture.to_str().unwrap()]);
    let mut child = command.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let recorder = Recorder::default();
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let client = recorder
        .clone()
        .serve_with_lifecycle((stdout, stdin), lifecycle)
        .await
        .expect("discover");
    for (tool, expected) in [
        ("ask_model", "hello from the model"),
        ("ask_user", "staging"),
        ("roots", "file:///work/project"),
    ] {
        let params = CallToolRequestParams::new(tool).with_arguments(Default::default());
        let result = client.call_tool(params).await.unwrap();
        let text = serde_json::to_value(&result.content).unwrap().to_string();
        assert!(text.contains(expected), "{tool}: {text}");
        asked_and_ran_once(&h, tool).await;
    }
    let prompt = GetPromptRequestParams::new("ask_user");
    let prompt = client.get_prompt(prompt).await.unwrap();
    let text = serde_json::to_value(&prompt.messages).unwrap().to_string();
    assert!(text.contains("the user answered"), "{text}");
    let read = ReadResourceRequestParams::new("fixture://roots");
    let read = client.read_resource(read).await.unwrap();
    let text = serde_json::to_value(&read.contents).unwrap().to_string();
    assert!(text.contains("file:///work/project"), "{text}");
    let events = recorder.events();
    assert!(
        events.iter().any(|e| e.get("sampling").is_some()),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.get("elicitation").is_some()),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["roots"] == true), "{events:?}");
    let _ = child.start_kill();
}

/// The proxy in front of the fixture speaking 2026-07-28 only.
fn modern_upstream(h: &Harness) -> tokio::process::Command {
    let fixture = fixture();
    let mut command = h.proxy_command(&[], &[fixture.to_str().unwrap()]);
    command.env("FIXTURE_PROTOCOL", "2026-07-28");
    command
}

/// An upstream that refuses `initialize` is reached with `server/discover`; its
/// `input_required` answers become requests to a session client, and the proxy
/// retries with the client's answers. One approval, spent once. Its list changes
/// reach the client too.
#[tokio::test]
async fn a_2026_07_28_only_upstream_is_served_and_its_input_required_reaches_a_session_client_as_requests()
 {
    let h = harness().await;
    let proxy = h.proxy_with(modern_upstream(&h)).await;
    let info = proxy.client.peer().peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "mcp-fixture");
    let echo = CallToolRequestParams::new("echo").with_arguments(Default::default());
    let echoed = proxy.client.call_tool(echo).await.unwrap();
    let text = serde_json::to_value(&echoed.content).unwrap().to_string();
    assert!(text.contains("echo ran with"), "{text}");

    let ask = CallToolRequestParams::new("ask_model").with_arguments(Default::default());
    let asked = proxy.client.call_tool(ask).await.unwrap();
    let text = serde_json::to_value(&asked.content).unwrap().to_string();
    assert!(text.contains("hello from the model"), "{text}");
    let events = proxy.recorder.events();
    assert!(
        events.iter().any(|e| e.get("sampling").is_some()),
        "{events:?}"
    );
    asked_and_ran_once(&h, "ask_model").await;
    assert_eq!(runs_of(&h, "ask_model (retried with answers)"), 1);

    // Its list changes come on the stream the proxy opened, and reach the client.
    let add = CallToolRequestParams::new("add_tool").with_arguments(Default::default());
    proxy.client.call_tool(add).await.unwrap();
    let mut heard = false;
    for _ in 0..100 {
        heard = (proxy.recorder.events().iter()).any(|e| e["tool_list_changed"] == true);
        if heard {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(heard, "{:?}", proxy.recorder.events());
}

/// How many listen streams naming `uri` the fixture opened.
fn listens_naming(h: &Harness, uri: &str) -> usize {
    (h.ran().iter())
        .filter(|call| call["tool"] == "subscriptions/listen")
        .filter(|call| call["arguments"].to_string().contains(uri))
        .count()
}

/// The upstream ends the listen stream of a resource subscription: the proxy opens it
/// again while the client is subscribed, and the resource's updates keep coming.
#[tokio::test]
async fn a_2026_07_28_upstreams_resource_stream_that_ends_is_opened_again_while_subscribed() {
    let h = harness().await;
    let proxy = h.proxy_with(modern_upstream(&h)).await;
    let note = SubscribeRequestParams::new("fixture://note");
    proxy.client.subscribe(note).await.unwrap();
    // The fixture logs a stream as it serves it, which may be after it acknowledged it.
    assert!(
        eventually(|| listens_naming(&h, "fixture://note") == 1).await,
        "{:?}",
        h.ran()
    );
    proxy
        .client
        .call_tool(tool_call("end_streams", json!({})))
        .await
        .unwrap();
    assert!(
        eventually(|| listens_naming(&h, "fixture://note") == 2).await,
        "{:?}",
        h.ran()
    );
    let mut arguments = serde_json::Map::new();
    arguments.insert("uri".into(), json!("fixture://note"));
    let touch = CallToolRequestParams::new("touch").with_arguments(arguments);
    proxy.client.call_tool(touch).await.unwrap();
    let updated = || (proxy.recorder.events().iter()).any(|e| e["updated"] == "fixture://note");
    assert!(eventually(updated).await, "{:?}", proxy.recorder.events());
}

/// A session client's resource subscription to a 2026-07-28 upstream (which has no
/// `resources/subscribe`) is a listen stream of the proxy's naming the resource: its
/// updates reach the client until it unsubscribes.
#[tokio::test]
async fn a_2026_07_28_only_upstreams_resource_updates_reach_a_subscribed_session_client() {
    let h = harness().await;
    let proxy = h.proxy_with(modern_upstream(&h)).await;
    let updates = |proxy: &Proxy| {
        let events = proxy.recorder.events();
        events
            .iter()
            .filter(|e| e["updated"] == "fixture://note")
            .count()
    };
    let touch = || {
        let mut arguments = serde_json::Map::new();
        arguments.insert("uri".into(), json!("fixture://note"));
        CallToolRequestParams::new("touch").with_arguments(arguments)
    };
    let note = SubscribeRequestParams::new("fixture://note");
    proxy.client.subscribe(note).await.unwrap();
    proxy.client.call_tool(touch()).await.unwrap();
    for _ in 0..100 {
        if updates(&proxy) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(updates(&proxy), 1, "{:?}", proxy.recorder.events());

    let note = UnsubscribeRequestParams::new("fixture://note");
    proxy.client.unsubscribe(note).await.unwrap();
    proxy.client.call_tool(touch()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(updates(&proxy), 1, "{:?}", proxy.recorder.events());
}

/// The same upstream and a 2026-07-28 client: the upstream's `input_required` reaches
/// the client in the proxy's own round, and its retry finishes the call.
#[tokio::test]
async fn a_2026_07_28_only_upstreams_input_required_reaches_a_2026_07_28_client_in_a_round() {
    let h = harness().await;
    let mut raw = raw_from(modern_upstream(&h));
    raw.send(&call(1, "ask_model", json!({"n": 1}))).await;
    let first = raw.answer(1).await;
    let (key, request) = only_request(&first);
    assert_eq!(request["method"], "sampling/createMessage", "{first}");
    let state = first["result"]["requestState"].clone();
    raw.send(&retry(
        2,
        "ask_model",
        json!({"n": 1}),
        json!({key: model_answer("modern hello")}),
        &state,
    ))
    .await;
    let done = raw.answer(2).await;
    assert!(text_of(&done).contains("modern hello"), "{done}");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    asked_and_ran_once(&h, "ask_model").await;
    let _ = raw.child.start_kill();
}

/// A 2026-07-28 upstream's list changes come on the proxy's listen stream; they too
/// make the proxy read the tool list again before it classifies the next call.
#[tokio::test]
async fn a_2026_07_28_only_upstreams_tool_whose_annotations_changed_is_classified_by_the_new_ones()
{
    let h = harness().await;
    let proxy = h.proxy_with(modern_upstream(&h)).await;
    a_hardened_tool_is_held(&h, &proxy).await;
}

/// A retry of a parked round that declares the tasks extension (a client may declare
/// it on any request) still rejoins the running call: not gated anew as a task of its
/// own, which would be a second approval and the tool run twice.
#[tokio::test]
async fn a_retry_that_declares_the_tasks_extension_rejoins_its_round_and_the_call_runs_once() {
    let h = harness().await;
    let mut raw = raw(&h).await;
    raw.send(&call(1, "ask_model", json!({"topic": "tasks"})))
        .await;
    let first = raw.answer(1).await;
    let (key, _) = only_request(&first);
    let state = first["result"]["requestState"].clone();
    let params = json!({
        "name": "ask_model", "arguments": {"topic": "tasks"},
        "inputResponses": {key: model_answer("as a task")}, "requestState": state,
    });
    raw.send(&task_request(2, "tools/call", params)).await;
    let done = raw.answer(2).await;
    assert!(done["result"].get("taskId").is_none(), "{done}");
    assert!(text_of(&done).contains("as a task"), "{done}");
    assert_ne!(done["result"]["isError"], true, "{done}");
    asked_and_ran_once(&h, "ask_model").await;
    // Nothing runs or is asked for later, as a task would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    asked_and_ran_once(&h, "ask_model").await;
    let _ = raw.child.start_kill();
}

/// A session client's call of `tool`.
fn tool_call(tool: &str, arguments: Value) -> CallToolRequestParams {
    crate::helpers::call(tool, arguments)
}

/// How many listen streams the fixture opened.
fn listens(h: &Harness) -> usize {
    runs_of(h, "subscriptions/listen")
}

/// A 2026-07-28 upstream's stream of list changes that ends is opened again; meanwhile
/// a change could go unheard, so the tool list is read again before each call: an
/// annotation changed right after the stream ended still classifies the next call.
#[tokio::test]
async fn a_2026_07_28_upstreams_list_stream_that_ends_is_opened_again_and_no_change_is_missed_meanwhile()
 {
    let h = harness().await;
    let proxy = h.proxy_with(modern_upstream(&h)).await;
    assert!(eventually(|| listens(&h) == 1).await, "{:?}", h.ran());
    let flipped = proxy
        .client
        .call_tool(tool_call("flip", json!({"n": 1})))
        .await;
    assert_eq!(flipped.unwrap().is_error, Some(false));
    assert_eq!(runs_of(&h, "flip"), 1, "read-only: auto-approved");

    proxy
        .client
        .call_tool(tool_call("end_streams", json!({})))
        .await
        .unwrap();
    proxy
        .client
        .call_tool(tool_call("harden", json!({})))
        .await
        .unwrap();
    let peer = proxy.client.peer().clone();
    let held =
        tokio::spawn(async move { peer.call_tool(tool_call("flip", json!({"n": 2}))).await });
    let id = h.posted(1).await;
    assert_eq!(runs_of(&h, "flip"), 1, "destructive now: held");
    h.approve(&id, "U0ALICE").await;
    assert_eq!(held.await.unwrap().unwrap().is_error, Some(false));

    // Listening again, the proxy tells the client that its lists may have changed (the
    // upstream's word of `harden` was lost), then hears the next change and passes
    // it on.
    assert!(eventually(|| listens(&h) == 2).await, "{:?}", h.ran());
    let changed = |proxy: &Proxy| {
        (proxy.recorder.events().iter())
            .filter(|e| e["tool_list_changed"] == true)
            .count()
    };
    assert!(
        eventually(|| changed(&proxy) >= 1).await,
        "{:?}",
        proxy.recorder.events()
    );
    let before = changed(&proxy);
    proxy
        .client
        .call_tool(tool_call("add_tool", json!({})))
        .await
        .unwrap();
    assert!(
        eventually(|| changed(&proxy) > before).await,
        "{:?}",
        proxy.recorder.events()
    );
}
