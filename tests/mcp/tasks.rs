//! A client that declares the tasks extension gets a task for each call.

use std::time::Duration;

use rmcp::model::{
    CallToolResponse, CancelTaskParams, DetailedTask, GetTaskParams, TaskPayload, TaskStatus,
};
use serde_json::{Value, json};

use crate::helpers::*;

async fn tasks_proxy(h: &Harness) -> Proxy {
    tasks_proxy_with(h, &[]).await
}

async fn tasks_proxy_with(h: &Harness, flags: &[&str]) -> Proxy {
    let fixture = fixture();
    let recorder = Recorder {
        tasks: true,
        ..Recorder::default()
    };
    h.proxy_as(
        h.proxy_command(flags, &[fixture.to_str().unwrap()]),
        recorder,
    )
    .await
}

/// Starts `tool` as a task; its id.
async fn start(proxy: &Proxy, tool: &str, arguments: Value) -> String {
    match proxy
        .client
        .peer()
        .call_tool_once(call(tool, arguments))
        .await
        .unwrap()
    {
        CallToolResponse::Task(created) => created.task.task_id,
        other => panic!("not a task: {other:?}"),
    }
}

async fn task(proxy: &Proxy, id: &str) -> DetailedTask {
    proxy
        .client
        .peer()
        .get_task(GetTaskParams::new(id))
        .await
        .unwrap()
        .task
}

/// Polls the task until it leaves `working`.
async fn settled(proxy: &Proxy, id: &str) -> DetailedTask {
    for _ in 0..500 {
        let task = task(proxy, id).await;
        if task.task.status != TaskStatus::Working {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("task {id} never settled");
}

fn result(task: &DetailedTask) -> Value {
    match &task.payload {
        TaskPayload::Completed { result } => Value::Object(result.clone()),
        other => panic!("not completed: {other:?}"),
    }
}

#[tokio::test]
async fn a_task_waits_with_the_waiting_message_then_completes_with_the_upstreams_result() {
    let h = harness().await;
    let proxy = tasks_proxy(&h).await;
    let id = start(&proxy, "delete_things", json!({"ids": [4]})).await;
    let approval = h.posted(1).await;
    for _ in 0..250 {
        let message = task(&proxy, &id)
            .await
            .task
            .status_message
            .unwrap_or_default();
        if message.starts_with("waiting for approval in #C0DEPLOYS") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let working = task(&proxy, &id).await;
    assert_eq!(working.task.status, TaskStatus::Working);
    assert!(
        working
            .task
            .status_message
            .unwrap()
            .starts_with("waiting for approval in #C0DEPLOYS")
    );
    h.approve(&approval, "U0ALICE").await;
    let done = settled(&proxy, &id).await;
    assert_eq!(
        result(&done)["content"][0]["text"],
        r#"delete_things ran with {"ids":[4]}"#
    );
    assert_eq!(h.ran().len(), 1);
}

#[tokio::test]
async fn a_denied_task_completes_with_the_denial_as_an_error_result() {
    let h = harness().await;
    let proxy = tasks_proxy(&h).await;
    let id = start(&proxy, "delete_things", json!({})).await;
    let approval = h.posted(1).await;
    h.submit(&approval, "U0BOB", "deny_reason", "no").await;
    let done = settled(&proxy, &id).await;
    let result = result(&done);
    assert_eq!(result["isError"], true);
    assert_eq!(
        result["content"][0]["text"],
        "Denied by U0BOB: no. The call was not run."
    );
    assert!(h.ran().is_empty());
}

#[tokio::test]
async fn cancelling_a_task_cancels_its_approval() {
    let h = harness().await;
    let proxy = tasks_proxy(&h).await;
    let id = start(&proxy, "delete_things", json!({})).await;
    let approval = h.posted(1).await;
    proxy
        .client
        .peer()
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .unwrap();
    let done = settled(&proxy, &id).await;
    assert_eq!(done.task.status, TaskStatus::Cancelled);
    assert_eq!(h.status(&approval).await, "cancelled");
    assert!(h.ran().is_empty());
}

/// A task that ended is kept, with its result, for its TTL (the hold and an hour;
/// here shortened), then forgotten: a busy client's results do not pile up in the
/// proxy. Tasks started later are served all the same.
#[tokio::test]
async fn a_finished_task_is_forgotten_once_its_ttl_has_passed() {
    let h = harness().await;
    let ttl = Duration::from_secs(2);
    let proxy = tasks_proxy_with(&h, &["--task-ttl", "2s"]).await;
    let first = start(&proxy, "echo", json!({"n": 1})).await;
    let done = settled(&proxy, &first).await;
    assert_eq!(done.task.ttl_ms, Some(2000));
    assert_eq!(
        result(&done)["content"][0]["text"],
        r#"echo ran with {"n":1}"#
    );
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let later = start(&proxy, "echo", json!({"n": 2})).await;
    let done = settled(&proxy, &later).await;
    assert_eq!(
        result(&done)["content"][0]["text"],
        r#"echo ran with {"n":2}"#
    );
    let gone = proxy
        .client
        .peer()
        .get_task(GetTaskParams::new(&first))
        .await;
    assert!(
        matches!(&gone, Err(error) if error.to_string().contains("unknown task")),
        "{gone:?}"
    );
    assert_eq!(runs_of(&h, "echo"), 2);
}
