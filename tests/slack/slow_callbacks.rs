//! Callbacks to a receiver that is slow or never answers take at most half of a pass's
//! delivery slots, so Slack's posts go out beside them; a callback is signed when it is
//! sent, however long its host took to resolve.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use signoff::clock::{Clock, ManualClock};
use signoff::egress::Resolver;
use signoff::outbox::Outbox;
use signoff::policy::Policy;
use signoff::scheduler::Scheduler;
use tokio::sync::watch;

use crate::common::TestDb;
use crate::common::receiver::Receiver;
use crate::helpers::*;

crate::on_both_backends!(a_callback_is_signed_when_it_is_sent_not_when_its_pass_began);

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

/// A resolver that takes [`SLOW_DNS`] of the manual clock to answer 127.0.0.1.
struct SlowDns(ManualClock);

/// Within the job's lease (60 s of the manual clock from its pass): longer, the next
/// pass would claim the job again and send it twice.
const SLOW_DNS: Duration = Duration::from_secs(20);

impl Resolver for SlowDns {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        port: u16,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>>
                + Send
                + 'a,
        >,
    > {
        self.0.advance(SLOW_DNS);
        let answer = vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))];
        Box::pin(std::future::ready(Ok(answer)))
    }
}

/// A callback whose host was slow to resolve carries the time it was sent, in its
/// `webhook-timestamp` and its body's `sent_at`, not its pass's (receivers refuse
/// timestamps more than five minutes off, which a long lease could reach).
async fn a_callback_is_signed_when_it_is_sent_not_when_its_pass_began(db: TestDb) {
    let app = spawn_on(db).await;
    let (receiver, url) = Receiver::start(vec![]).await;
    let outbox = Outbox::new(app.store.clone(), None, app.signer.clone())
        .unwrap()
        .with_allow(Policy::from_toml_str(POLICY).unwrap().callbacks)
        .with_resolver(Arc::new(SlowDns(app.clock.clone())));
    let body = json!({"tool_name": "search_docs", "parameters": {}, "callback_url": url});
    asked(&app, &app.token, &body).await;
    let sent = app.clock.now() + SLOW_DNS;
    let (stop, loops) = running(&app, Scheduler::with_outbox(app.store.clone(), outbox));
    for _ in 0..250 {
        if !receiver.got().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    loops.await.unwrap();
    let mut got = receiver.got();
    assert_eq!(got.len(), 1, "the callback arrived, once");
    let (headers, body) = got.remove(0);
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("webhook-timestamp"), sent.timestamp().to_string());
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["sent_at"], json!(sent), "{body}");
    let signed = format!("{}.{}.{body}", header("webhook-id"), sent.timestamp());
    let signature = header("webhook-signature");
    let signature = signature.strip_prefix("v1a,").unwrap();
    assert!(app.signer.public_key().verify(signed.as_bytes(), signature));
}

/// Callbacks to a receiver that takes connections and never answers hold at most half
/// the delivery slots: a request's Slack post goes out while they wait out their 10 s.
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
