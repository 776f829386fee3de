//! Progress under one request's token keeps increasing, as MCP requires: the gate's
//! waiting reports while the call is held, then the upstream's own once it runs.

use serde_json::{Value, json};

use crate::helpers::*;

/// The upstream counts its progress from its own start (1, 2, 3 of 3); after the
/// gate's waiting reports (1, 2, … n) they come shifted past them (n+1, n+2, n+3 of
/// n+3), so the client never sees progress go back.
#[tokio::test]
async fn a_held_calls_progress_keeps_increasing_from_the_waiting_reports_into_the_upstreams() {
    let h = harness().await;
    let proxy = h.proxy(&[]).await;
    let peer = proxy.client.peer().clone();
    let held =
        tokio::spawn(async move { peer.call_tool(call("migrate", json!({"steps": 3}))).await });
    let id = h.posted(1).await;
    let waiting = |e: &Value| {
        e["progress"]
            .as_str()
            .is_some_and(|m| m.starts_with("waiting"))
    };
    let reports = || {
        proxy
            .recorder
            .events()
            .iter()
            .filter(|e| waiting(e))
            .count()
    };
    assert!(
        eventually(|| reports() >= 2).await,
        "{:?}",
        proxy.recorder.events()
    );
    h.approve(&id, "U0ALICE").await;
    let result = held.await.unwrap().unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let done = || (proxy.recorder.events().iter()).any(|e| e["progress"] == "step 3 of 3");
    assert!(eventually(done).await, "{:?}", proxy.recorder.events());

    let events = proxy.recorder.events();
    let values = |keep: &dyn Fn(&Value) -> bool| -> Vec<(f64, Option<f64>)> {
        let mut values: Vec<_> = (events.iter())
            .filter(|e| e.get("value").is_some() && keep(e))
            .map(|e| (e["value"].as_f64().unwrap(), e["total"].as_f64()))
            .collect();
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        values
    };
    let held = values(&waiting);
    let n = held.len() as f64;
    let expected: Vec<(f64, Option<f64>)> = (1..=held.len()).map(|k| (k as f64, None)).collect();
    assert_eq!(held, expected, "the waiting reports count 1, 2, …");
    let ran = values(&|e| !waiting(e));
    assert_eq!(
        ran,
        [
            (n + 1.0, Some(n + 3.0)),
            (n + 2.0, Some(n + 3.0)),
            (n + 3.0, Some(n + 3.0))
        ],
        "the upstream's, after them: {events:?}"
    );
    let tokens: Vec<&Value> = events.iter().map(|e| &e["token"]).collect();
    assert!(
        tokens.windows(2).all(|pair| pair[0] == pair[1]),
        "one token"
    );
}
