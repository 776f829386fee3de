//! Callbacks to a receiver that is slow or never answers hold up no Slack delivery:
//! they run apart from the scheduler's passes, a few at a time across passes, and
//! shutdown still waits for those under way and records them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use signoff::approval::Approval;
use signoff::scheduler::Scheduler;
use tokio::sync::{mpsc, watch};

use crate::common::{TestDb, raw_count};
use crate::helpers::*;

crate::on_both_backends!(
    a_callback_a_receiver_never_answers_holds_up_no_later_post_and_shutdown_records_it,
);

/// A receiver on 127.0.0.1 that takes connections, holds them and never answers: the
/// URL of its `/cb` (a name the tests' resolver knows), and a message per connection.
async fn silent() -> (String, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, connections) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted.send(());
        }
    });
    (format!("http://hooks.test:{port}/cb"), connections)
}

async fn cancel(app: &TestApp, approval: &Approval) {
    let cancelled = app
        .http
        .post(app.url(&format!("/v1/approvals/{}/cancel", approval.id)))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
}

/// The scheduler's loops, as the server runs them, at the manual clock's time: the
/// sender that stops them, and the task.
fn running(
    app: &TestApp,
    scheduler: Scheduler,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopping) = watch::channel(false);
    let clock = Arc::new(app.clock.clone());
    let every = Duration::from_millis(20);
    (stop, tokio::spawn(scheduler.run(clock, every, stopping)))
}

/// A request cancelled, its callback under way to a receiver that never answers: a
/// new request's post goes out at once, not once the callback has waited out its
/// 10 s; at shutdown the callback is waited for and recorded, not cut off.
async fn a_callback_a_receiver_never_answers_holds_up_no_later_post_and_shutdown_records_it(
    db: TestDb,
) {
    let app = spawn_on(db).await;
    let (url, mut connections) = silent().await;
    let body = json!({"tool_name": "nudge_me", "parameters": {}, "callback_url": url});
    let approval = asked(&app, &app.token, &body).await;
    app.run_jobs().await;
    cancel(&app, &approval).await;
    let (stop, loops) = running(&app, app.scheduler.clone());
    let under_way = tokio::time::timeout(Duration::from_secs(5), connections.recv()).await;
    assert!(under_way.is_ok(), "the callback is under way");

    // A second on, the channel's next post slot has come.
    app.clock.advance(Duration::from_secs(1));
    let body = json!({"tool_name": "nudge_later", "parameters": {}});
    asked(&app, &app.token, &body).await;
    let posted = app.slack.wait_for("chat.postMessage", 2);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), posted)
            .await
            .is_ok(),
        "the new request is posted while the callback waits for its receiver"
    );

    stop.send(true).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(15), loops).await;
    assert!(stopped.is_ok(), "the scheduler returns once the callback ends");
    let recorded = "SELECT COUNT(*) FROM jobs WHERE kind = 'callback' \
                    AND locked_until IS NULL AND last_error LIKE '%no answer within%'";
    assert_eq!(raw_count(&app.db, recorded).await, 1, "retried, not cut off");
}

/// Callbacks to a receiver that takes connections and never answers, more of them than
/// run at once, take no slot from Slack: a request's Slack post goes out while they
/// wait out their 10 s.
#[tokio::test]
async fn callbacks_a_receiver_never_answers_leave_slots_to_slack() {
    let app = spawn_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    // As many auto-approved requests with a callback as there are delivery slots, then
    // (later, so that its post is claimed after them) one for a person to decide.
    let url = format!("http://hooks.test:{port}/cb");
    for id in 0..8 {
        let body =
            json!({"tool_name": "search_docs", "parameters": {"id": id}, "callback_url": url});
        asked(&app, &app.token, &body).await;
    }
    app.clock.advance(Duration::from_secs(1));
    let body = json!({"tool_name": "nudge_me", "parameters": {}});
    asked(&app, &app.token, &body).await;
    tokio::select! {
        _ = app.run_jobs() => panic!("the pass ended before the post went out"),
        _ = app.slack.wait_for("chat.postMessage", 1) => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {
            panic!("no post while the callbacks wait for their receiver")
        }
    }
}
