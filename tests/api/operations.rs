//! Health, metrics and request ids.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use signoff::scheduler::Scheduler;

use crate::helpers::*;

#[tokio::test]
async fn health_reports_degraded_with_503_when_expiry_falls_behind() {
    let app = spawn_app().await;
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    app.request("a", json!({})).await;
    let (status, health) = app.get("/health/approvals").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["pending_count"], 1);
    assert_eq!(health["stale_pending"], 0);
    assert_eq!(health["undelivered"], 0);
    assert!(health.get("slack_reachable").is_some());

    app.clock.advance(Duration::from_secs(3600 + 120));
    let (status, health) = app.get("/health/approvals").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["stale_pending"], 1);

    Scheduler::new(app.store.clone())
        .run_once(signoff::clock::Clock::now(&app.clock))
        .await
        .unwrap();
    let (status, health) = app.get("/health/approvals").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["pending_count"], 0);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_decisions() {
    let app = spawn_app().await;
    let id = app.request("a", json!({})).await;
    app.approve(&id, "U1").await;
    app.get("/v1/approvals/not-a-uuid").await;
    app.post(
        "/v1/approvals",
        &json!({"tool_name": "search_x", "parameters": {}}),
    )
    .await;
    // The decision counter is fed asynchronously from the change feed.
    let mut text = String::new();
    for _ in 0..100 {
        text = app.metrics().await;
        if text.contains(r#"signoff_decisions_total{outcome="approved"} 2"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        text.contains(
            r#"signoff_http_requests_total{method="POST",route="/v1/approvals",status="201"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/approvals/{id}",status="404""#),
        "{text}"
    );
    assert!(
        text.contains("signoff_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"signoff_decisions_total{outcome="approved"} 2"#),
        "{text}"
    );
}

/// An unlabelled sample of the metrics text, e.g. `signoff_writer_batch_seconds_count`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_show_the_writers_queue_wait_batch_commit_and_sync_times() {
    let app = spawn_app().await;
    let before = app.metrics().await;
    let waits = |text: &str| sample(text, "signoff_writer_queue_wait_seconds_count");
    let batches = |text: &str| sample(text, "signoff_writer_batch_seconds_count");
    let commits = |text: &str| sample(text, "signoff_writer_commit_seconds_count");
    let operations = |text: &str| sample(text, "signoff_writer_batch_operations_sum");

    let tools: Vec<String> = (0..8).map(|i| format!("tool_{i}")).collect();
    let asks = tools.iter().map(|tool| app.request(tool, json!({})));
    let ids = futures_util::future::join_all(asks).await;
    app.approve(&ids[0], "U1").await;
    let after = app.metrics().await;

    // Each write waited in the queue once and was in one batch; each batch committed.
    let written = waits(&after) - waits(&before);
    assert!(written >= 9.0, "8 creates and a vote: {written} writes");
    assert_eq!(operations(&after) - operations(&before), written, "{after}");
    let batches_run = batches(&after) - batches(&before);
    assert!(
        (1.0..=written).contains(&batches_run),
        "{batches_run} batches for {written} writes"
    );
    assert_eq!(commits(&after) - commits(&before), batches_run, "{after}");
    // On SQLite (this app's store) each batch's answers then waited for the WAL's sync.
    let held = |text: &str| sample(text, "signoff_writer_held_seconds_count");
    assert_eq!(held(&after) - held(&before), batches_run, "{after}");
    assert!(
        sample(&after, "signoff_writer_commit_seconds_sum")
            > sample(&before, "signoff_writer_commit_seconds_sum"),
        "{after}"
    );
    assert!(
        sample(&after, "signoff_writer_batch_seconds_sum")
            >= sample(&after, "signoff_writer_commit_seconds_sum"),
        "a batch's time includes its commit: {after}"
    );
}

#[tokio::test]
async fn odd_methods_and_unknown_paths_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    let size = |text: &str| text.len();
    let metrics = || app.metrics();
    let send = |method: &str, path: String| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = app.http.request(method, app.url(&path));
        async move { request.send().await.unwrap().status() }
    };
    // Warm every label a flood below can touch.
    send("FROB0", "/nowhere/0".into()).await;
    send("GET", "/v1/0/x".into()).await;
    metrics().await;
    let before = size(&metrics().await);
    for i in 0..300 {
        send(&format!("FROB{i}"), format!("/nowhere/{i}")).await;
        send("GET", format!("/v1/{i}/x")).await;
    }
    let after = metrics().await;
    assert!(
        size(&after) < before + 200,
        "grew from {before} to {} bytes: {after}",
        size(&after)
    );
    assert!(after.contains(r#"method="other",route="other""#), "{after}");
    assert!(
        !after.contains("FROB") && !after.contains("/nowhere"),
        "{after}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .expect("request id")
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    let given = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        given.headers()["x-request-id"],
        "trace-me-42",
        "a caller's id is kept"
    );
}
