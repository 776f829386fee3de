//! The gate against a stand-in signoff: joins, withdrawals and spends.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

use super::*;

/// A signoff whose every new approval is approved, not spent (as when a person
/// decided it just before the proxy read it); it records the requests it gets.
async fn approving_signoff() -> (String, Arc<Mutex<Vec<String>>>) {
    let approved = json!({"approval_id": "a1", "status": "approved",
                          "parameters": {"ids": [1]}});
    stand_in(approved).await
}

/// A signoff that answers every new request with `created`; it records the
/// requests it gets.
async fn stand_in(created: Value) -> (String, Arc<Mutex<Vec<String>>>) {
    stand_in_slow(created, None).await
}

/// How long the slow request of [`stand_in_slow`] takes.
const SLOW: Duration = Duration::from_millis(300);

/// [`stand_in`], whose answer to `slow` (`create` or `execute`) comes [`SLOW`]ly.
async fn stand_in_slow(
    created: Value,
    slow: Option<&'static str>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = |path: &'static str, body: Value| {
        let delay = if slow == Some(path) {
            SLOW
        } else {
            Duration::ZERO
        };
        move |State(seen): State<Arc<Mutex<Vec<String>>>>| {
            seen.lock().unwrap().push(path.to_owned());
            let body = body.clone();
            async move {
                tokio::time::sleep(delay).await;
                axum::Json(body)
            }
        }
    };
    let executed = json!({"approval_id": "a1", "status": "executed", "parameters": {"ids": [1]}});
    let pending = json!({"approval_id": "a1", "status": "pending", "parameters": {"ids": [1]}});
    let router = Router::new()
        .route("/v1/approvals", post(answer("create", created)))
        .route(
            "/v1/approvals/a1/execute",
            post(answer("execute", executed)),
        )
        .route("/v1/approvals/a1", get(answer("get", pending.clone())))
        .route("/v1/approvals/a1/cancel", post(answer("cancel", pending)))
        .route("/v1/approvals/events", get(listening))
        .with_state(seen.clone());
    let base = serve(router).await;
    (base, seen)
}

/// Serves `router` as a stand-in signoff on a port of its own; its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// A decision stream that says it listens, then brings nothing.
async fn listening() -> axum::response::Response {
    let ready = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(axum::body::Bytes::from("event: ready\ndata: {}\n\n"))
    });
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(
        ready,
        futures_util::stream::pending(),
    ));
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

/// Two identical calls join one approval: cancelling one leaves it to the other,
/// cancelling the other too withdraws it, once.
#[tokio::test]
async fn a_cancelled_call_withdraws_an_approval_only_when_no_identical_call_waits_for_it() {
    let (gate, seen) = pending_gate(None).await;
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let held = |cancelled: &CancellationToken| decide_in_task(&gate, cancelled);
    let (one, other) = (held(&first), held(&second));
    let cancels = || count(&seen, "cancel");
    until_seen(&seen, "get", 2).await;
    first.cancel();
    assert!(matches!(one.await.unwrap(), Verdict::Refuse(_)));
    assert_eq!(cancels(), 0, "the other call still waits for it");
    second.cancel();
    assert!(matches!(other.await.unwrap(), Verdict::Refuse(_)));
    assert_eq!(cancels(), 1, "the last one to go withdraws it");
}

/// A gate before a signoff that answers every new request `a1` pending, `slow` as
/// [`stand_in_slow`]'s; with the requests it gets.
async fn pending_gate(slow: Option<&'static str>) -> (Arc<Gate>, Arc<Mutex<Vec<String>>>) {
    let pending = json!({"approval_id": "a1", "status": "pending", "parameters": {"ids": [1]}});
    let (base, seen) = stand_in_slow(pending, slow).await;
    (Arc::new(gate(&base)), seen)
}

/// [`call`] decided in a task of its own, cancelled by `cancelled`.
fn decide_in_task(
    gate: &Arc<Gate>,
    cancelled: &CancellationToken,
) -> tokio::task::JoinHandle<Verdict> {
    let (gate, cancelled) = (gate.clone(), cancelled.clone());
    tokio::spawn(async move { gate.decide(&call(), &cancelled, None).await })
}

/// Counts what `seen` holds of `path`.
fn count(seen: &Mutex<Vec<String>>, path: &str) -> usize {
    seen.lock().unwrap().iter().filter(|s| *s == path).count()
}

/// Waits until `seen` holds `path` `times` times.
async fn until_seen(seen: &Mutex<Vec<String>>, path: &str, times: usize) {
    while count(seen, path) < times {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A call cancelled while an identical call's ask is on its way (an agent that
/// gave a call up and at once called again) leaves the approval to it: the ask
/// joins it, and the approval is withdrawn only when that call goes too.
#[tokio::test]
async fn a_cancelled_call_leaves_its_approval_to_an_identical_call_still_asking() {
    let (gate, seen) = pending_gate(Some("create")).await;
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let held = |cancelled: &CancellationToken| decide_in_task(&gate, cancelled);
    let one = held(&first);
    until_seen(&seen, "get", 1).await;
    let other = held(&second);
    until_seen(&seen, "create", 2).await;
    first.cancel();
    assert!(matches!(one.await.unwrap(), Verdict::Refuse(_)));
    assert_eq!(count(&seen, "cancel"), 0, "left to the call asking");
    until_seen(&seen, "get", 2).await;
    second.cancel();
    assert!(matches!(other.await.unwrap(), Verdict::Refuse(_)));
    assert_eq!(count(&seen, "cancel"), 1, "withdrawn by the last to go");
}

/// A call cancelled just before an identical call arrives (the order an agent that
/// gives a call up and calls again sends them): the new call asks only once the
/// withdrawal has reached signoff, so it never joins an approval being cancelled.
#[tokio::test]
async fn an_identical_call_after_a_cancel_asks_once_the_withdrawal_has_ended() {
    let (gate, seen) = pending_gate(Some("cancel")).await;
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let held = |cancelled: &CancellationToken| decide_in_task(&gate, cancelled);
    let one = held(&first);
    until_seen(&seen, "get", 1).await;
    first.cancel();
    until_seen(&seen, "cancel", 1).await;
    let other = held(&second);
    tokio::time::sleep(SLOW / 3).await;
    assert_eq!(
        count(&seen, "create"),
        1,
        "the new call waits for the withdrawal"
    );
    assert!(matches!(one.await.unwrap(), Verdict::Refuse(_)));
    until_seen(&seen, "create", 2).await;
    let order = seen.lock().unwrap().clone();
    let cancel_at = order.iter().position(|s| s == "cancel").unwrap();
    let asked_at = order.iter().rposition(|s| s == "create").unwrap();
    assert!(cancel_at < asked_at, "{order:?}");
    second.cancel();
    assert!(matches!(other.await.unwrap(), Verdict::Refuse(_)));
}

/// A signoff whose first create answers `a1` pending, and every later one, after
/// [`SLOW`], a 503.
async fn stand_in_failing_repeats() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |path: &'static str| {
        move |State(seen): State<Arc<Mutex<Vec<String>>>>| async move {
            seen.lock().unwrap().push(path.to_owned());
            let pending = json!({"approval_id": "a1", "status": "pending"});
            if path == "create" && count(&seen, "create") > 1 {
                tokio::time::sleep(SLOW).await;
                let refused = json!({"error": "unavailable", "detail": "down"});
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(refused),
                );
            }
            (axum::http::StatusCode::OK, axum::Json(pending))
        }
    };
    let router = Router::new()
        .route("/v1/approvals", post(record("create")))
        .route("/v1/approvals/a1", get(record("get")))
        .route("/v1/approvals/a1/cancel", post(record("cancel")))
        .route("/v1/approvals/events", get(listening))
        .with_state(seen.clone());
    let base = serve(router).await;
    (base, seen)
}

/// The approval a cancelled call left to an identical call asking is withdrawn
/// when that call goes without an answer (signoff failed it): nobody waits for it.
#[tokio::test]
async fn an_approval_left_to_a_call_whose_ask_fails_is_withdrawn_when_it_goes() {
    let (base, seen) = stand_in_failing_repeats().await;
    let gate = Arc::new(gate(&base));
    let first = CancellationToken::new();
    let held = |cancelled: &CancellationToken| decide_in_task(&gate, cancelled);
    let one = held(&first);
    until_seen(&seen, "get", 1).await;
    let other = held(&CancellationToken::new());
    until_seen(&seen, "create", 2).await;
    first.cancel();
    assert!(matches!(one.await.unwrap(), Verdict::Refuse(_)));
    assert_eq!(count(&seen, "cancel"), 0, "left to the call asking");
    let refused = other.await.unwrap();
    assert!(
        matches!(&refused, Verdict::Refuse(why) if why.contains("503")),
        "{refused:?}"
    );
    assert_eq!(count(&seen, "cancel"), 1, "withdrawn as the last call went");
}

fn gate(base: &str) -> Gate {
    let api = Api::new(base, None).unwrap();
    Gate {
        watch: Watch::new(api.clone(), super::super::watch::SILENT),
        api,
        server: "fixture".into(),
        hold: Duration::from_secs(5),
        interval: Duration::from_secs(5),
        client_gone: CancellationToken::new(),
        upstream_gone: CancellationToken::new(),
        holders: Holders::default(),
    }
}

fn call() -> Call {
    Call {
        tool: "delete_things".into(),
        arguments: json!({"ids": [1]}).as_object().unwrap().clone(),
        annotations: None,
        requested_by: None,
    }
}

#[tokio::test]
async fn a_call_approved_as_its_client_cancelled_or_left_is_neither_executed_nor_run() {
    let (base, seen) = approving_signoff().await;
    let live = CancellationToken::new();
    assert!(matches!(
        gate(&base).decide(&call(), &live, None).await,
        Verdict::Run { .. }
    ));
    assert_eq!(*seen.lock().unwrap(), ["create", "execute"]);

    // Cancelled, or its client gone, while signoff answers the ask with an approval.
    let approved = json!({"approval_id": "a1", "status": "approved", "parameters": {"ids": [1]}});
    for client_left in [false, true] {
        let (base, seen) = stand_in_slow(approved.clone(), Some("create")).await;
        let gate = gate(&base);
        let cancelled = CancellationToken::new();
        cancel_soon(if client_left {
            &gate.client_gone
        } else {
            &cancelled
        });
        let verdict = gate.decide(&call(), &cancelled, None).await;
        assert!(
            matches!(&verdict, Verdict::Refuse(why) if why.starts_with("Cancelled as it was approved")),
            "client left: {client_left}: {verdict:?}"
        );
        assert_eq!(*seen.lock().unwrap(), ["create"], "asked, never spent");
    }
}

/// Cancels `token` a third of [`SLOW`] from now (while a slow request is on its way).
fn cancel_soon(token: &CancellationToken) {
    let token = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SLOW / 3).await;
        token.cancel();
    });
}

/// A call cancelled, or whose client left, before it asked signoff never asks (no
/// Slack message, no auto-approval spent for nothing): also one that waits to ask
/// while an identical call's withdrawal is on its way stops at once.
#[tokio::test]
async fn a_call_cancelled_before_it_asks_never_asks() {
    for client_left in [false, true] {
        let (gate, seen) = pending_gate(None).await;
        let cancelled = CancellationToken::new();
        if client_left {
            gate.client_gone.cancel();
        } else {
            cancelled.cancel();
        }
        let verdict = gate.decide(&call(), &cancelled, None).await;
        assert!(
            matches!(&verdict, Verdict::Refuse(why) if why.starts_with("Cancelled before approval was asked for")),
            "client left: {client_left}: {verdict:?}"
        );
        assert!(seen.lock().unwrap().is_empty(), "nothing asked");
    }

    let (gate, seen) = pending_gate(Some("cancel")).await;
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let one = decide_in_task(&gate, &first);
    until_seen(&seen, "get", 1).await;
    first.cancel();
    until_seen(&seen, "cancel", 1).await;
    // Waits for the withdrawal (SLOW) before it asks; cancelled meanwhile.
    let other = decide_in_task(&gate, &second);
    tokio::time::sleep(SLOW / 6).await;
    second.cancel();
    let verdict = tokio::time::timeout(SLOW / 3, other)
        .await
        .expect("it stops at once, not after the withdrawal")
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Refuse(why) if why.starts_with("Cancelled before approval was asked for")),
        "{verdict:?}"
    );
    assert!(matches!(one.await.unwrap(), Verdict::Refuse(_)));
    tokio::time::sleep(SLOW / 3).await;
    assert_eq!(count(&seen, "create"), 1, "asked by the first call only");
}

/// A signoff that answers every new request `a1` pending, whose decision stream never
/// answers (`stuck` = `events`: the proxy would wait 30 s for it to listen), or whose
/// read of the approval fails after [`SLOW`] (`stuck` = `get`).
async fn stand_in_stuck(stuck: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |path: &'static str| {
        move |State(seen): State<Arc<Mutex<Vec<String>>>>| async move {
            seen.lock().unwrap().push(path.to_owned());
            if path == stuck {
                tokio::time::sleep(SLOW).await;
                if path == "events" {
                    std::future::pending::<()>().await;
                }
                let refused = json!({"error": "unavailable", "detail": "down"});
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(refused),
                );
            }
            let pending = json!({"approval_id": "a1", "status": "pending"});
            (axum::http::StatusCode::OK, axum::Json(pending))
        }
    };
    let events = if stuck == "events" {
        get(record("events"))
    } else {
        get(listening)
    };
    let router = Router::new()
        .route("/v1/approvals", post(record("create")))
        .route("/v1/approvals/a1", get(record("get")))
        .route("/v1/approvals/a1/cancel", post(record("cancel")))
        .route("/v1/approvals/events", events)
        .with_state(seen.clone());
    let base = serve(router).await;
    (base, seen)
}

/// A call cancelled, whose client left or whose upstream went while the proxy starts
/// to follow its decision (the stream not listening yet, or the first read of the
/// approval on its way) stops at once and withdraws its approval.
#[tokio::test]
async fn a_call_stopped_while_the_proxy_starts_to_follow_its_decision_withdraws_its_approval() {
    for stuck in ["events", "get"] {
        for stop in ["cancelled", "client_gone", "upstream_gone"] {
            let (base, seen) = stand_in_stuck(stuck).await;
            let gate = Arc::new(gate(&base));
            let cancelled = CancellationToken::new();
            let held = decide_in_task(&gate, &cancelled);
            until_seen(&seen, stuck, 1).await;
            match stop {
                "cancelled" => cancelled.cancel(),
                "client_gone" => gate.client_gone.cancel(),
                _ => gate.upstream_gone.cancel(),
            }
            let verdict = tokio::time::timeout(Duration::from_secs(5), held)
                .await
                .expect("it stops at once")
                .unwrap();
            let why = if stop == "upstream_gone" {
                "The MCP server behind signoff proxy has exited"
            } else {
                "Cancelled while waiting for approval; the approval was withdrawn"
            };
            assert!(
                matches!(&verdict, Verdict::Refuse(text) if text.starts_with(why)),
                "{stuck}, {stop}: {verdict:?}"
            );
            assert_eq!(count(&seen, "cancel"), 1, "{stuck}, {stop}: withdrawn");
        }
    }
}

/// An `executed` answer runs the call only when this request executed it: one
/// executed earlier (by a request signoff took for a retry of it) ran then.
#[tokio::test]
async fn an_approval_executed_by_an_earlier_request_does_not_run_again() {
    let executed = |spent: Option<bool>| {
        json!({"approval_id": "a1", "status": "executed", "parameters": {"ids": [1]},
               "spent_by_this_request": spent})
    };
    let live = CancellationToken::new();
    // `None`: a server from before the field, where an executed answer to the
    // proxy (which sends no idempotency key) is its own spend.
    for this_request in [Some(true), None] {
        let (base, seen) = stand_in(executed(this_request)).await;
        let verdict = gate(&base).decide(&call(), &live, None).await;
        assert!(matches!(verdict, Verdict::Run { .. }), "{verdict:?}");
        assert_eq!(*seen.lock().unwrap(), ["create"], "never executed again");
    }
    let (base, _) = stand_in(executed(Some(false))).await;
    let verdict = gate(&base).decide(&call(), &live, None).await;
    assert!(
        matches!(&verdict, Verdict::Refuse(why) if why.contains("already used")),
        "{verdict:?}"
    );
}

/// A call cancelled, or whose client left, while signoff spent its approval (in the
/// create of an auto-approved call, or in the execute of one approved earlier) does
/// not run: the approval is spent, and the refusal says so.
#[tokio::test]
async fn a_call_cancelled_while_its_approval_is_spent_is_not_run() {
    let spent = json!({"approval_id": "a1", "status": "executed", "parameters": {"ids": [1]},
                       "spent_by_this_request": true});
    let approved = json!({"approval_id": "a1", "status": "approved", "parameters": {"ids": [1]}});
    for (created, slow) in [(spent, "create"), (approved, "execute")] {
        for client_left in [false, true] {
            let (base, seen) = stand_in_slow(created.clone(), Some(slow)).await;
            let gate = gate(&base);
            let cancelled = CancellationToken::new();
            let cancel = if client_left {
                gate.client_gone.clone()
            } else {
                cancelled.clone()
            };
            tokio::spawn(async move {
                tokio::time::sleep(SLOW / 3).await;
                cancel.cancel();
            });
            let verdict = gate.decide(&call(), &cancelled, None).await;
            assert!(
                matches!(&verdict, Verdict::Refuse(why) if why.contains("the approval is spent")),
                "{slow}, client left: {client_left}: {verdict:?}"
            );
            assert_eq!(seen.lock().unwrap().last().map(String::as_str), Some(slow));
        }
    }
}

/// A call signoff took but whose decision the proxy cannot follow (its decision stream
/// refused: more streams than the token may open) is told so, not "Not asked", and
/// its approval stays open for the same call again.
#[tokio::test]
async fn a_call_whose_decision_stream_is_refused_says_it_was_asked_and_leaves_its_approval() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pending = json!({"approval_id": "a1", "status": "pending", "parameters": {"ids": [1]}});
    let record = |path: &'static str, body: Value| {
        move |State(seen): State<Arc<Mutex<Vec<String>>>>| {
            seen.lock().unwrap().push(path.to_owned());
            let body = body.clone();
            async move { axum::Json(body) }
        }
    };
    let refused = || async {
        let body = json!({"error": "too_many_streams", "detail": "64 event streams are open"});
        (axum::http::StatusCode::TOO_MANY_REQUESTS, axum::Json(body))
    };
    let router = Router::new()
        .route("/v1/approvals", post(record("create", pending.clone())))
        .route("/v1/approvals/a1/cancel", post(record("cancel", pending)))
        .route("/v1/approvals/events", get(refused))
        .with_state(seen.clone());
    let base = serve(router).await;

    let verdict = gate(&base)
        .decide(&call(), &CancellationToken::new(), None)
        .await;
    let Verdict::Refuse(text) = verdict else {
        panic!("ran: {verdict:?}");
    };
    assert!(
        text.starts_with("Approval a1 was asked for") && text.contains("64 event streams are open"),
        "{text}"
    );
    assert!(text.contains("Call this tool again"), "{text}");
    assert_eq!(count(&seen, "cancel"), 0, "the approval stays open");
}

/// A signoff that approves every new request `a1` and whose execute answers as `how`
/// says: `approved` (200, the approval as its `GET` shows it, not spent), `redirect`
/// (303 to that `GET`) or `another` (200, a different approval executed).
async fn stand_in_executing(how: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::response::IntoResponse;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |path: &'static str| {
        move |State(seen): State<Arc<Mutex<Vec<String>>>>| async move {
            seen.lock().unwrap().push(path.to_owned());
            let (id, status) = match (path, how) {
                ("execute", "redirect") => {
                    return axum::response::Redirect::to("/v1/approvals/a1").into_response();
                }
                ("execute", "another") => ("a2", "executed"),
                _ => ("a1", "approved"),
            };
            let body = json!({"approval_id": id, "status": status, "parameters": {"ids": [1]}});
            axum::Json(body).into_response()
        }
    };
    let router = Router::new()
        .route("/v1/approvals", post(record("create")))
        .route("/v1/approvals/a1/execute", post(record("execute")))
        .route("/v1/approvals/a1", get(record("get")))
        .route("/v1/approvals/events", get(listening))
        .with_state(seen.clone());
    let base = serve(router).await;
    (base, seen)
}

/// Only an execute answer that says this approval is `executed` runs the call: one
/// that answers with the approval merely approved (the call would run without
/// spending it, and a repeat could run it again), a redirect to the approval's `GET`
/// (not followed: it would answer so) or another approval's spend is refused.
#[tokio::test]
async fn an_execute_that_does_not_say_it_spent_the_approval_refuses_the_call() {
    for how in ["approved", "redirect", "another"] {
        let (base, seen) = stand_in_executing(how).await;
        let verdict = gate(&base)
            .decide(&call(), &CancellationToken::new(), None)
            .await;
        assert!(
            matches!(&verdict, Verdict::Refuse(why) if why.starts_with("Approval a1 could not be used")
                && why.ends_with("The call was not run.")),
            "{how}: {verdict:?}"
        );
        assert_eq!(*seen.lock().unwrap(), ["create", "execute"], "{how}");
    }
}
