//! Callbacks to a receiver that is slow or never answers run in slots of their own
//! (`outbox::CALLBACK_SLOTS`), apart from the passes of Slack's deliveries, so Slack's
//! posts go out beside them, and a backlog of them costs one claim per attempt; a
//! callback is signed when it is sent, however long its host took to resolve.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use signoff::clock::{Clock, ManualClock};
use signoff::egress::Resolver;
use signoff::outbox::{CALLBACK_SLOTS, Outbox};
use signoff::policy::Policy;
use signoff::scheduler::Scheduler;
use tokio::sync::watch;

use crate::common::TestDb;
use crate::common::receiver::Receiver;
use crate::helpers::*;

crate::on_both_backends!(
    a_callback_is_signed_when_it_is_sent_not_when_its_pass_began,
    slack_posts_go_out_while_callbacks_wait_for_a_receiver_that_never_answers,
    a_backlog_of_callbacks_to_a_silent_receiver_costs_one_claim_per_attempt,
    a_slot_that_frees_goes_to_the_requester_holding_none_not_to_the_backlog,
);

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

/// Callbacks to a receiver that takes connections and never answers take none of a
/// pass's delivery slots: a request's Slack post goes out while they wait out their
/// 10 s, in a scheduler pass as the tests run it (`run_once`).
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

/// A receiver that takes connections and never answers: its port, how many
/// connections it took, and the task that holds them (aborted, it closes them all).
async fn silent_receiver() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = taken.clone();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, taken, holding)
}

/// One requester's backlog of callbacks to a receiver that never answers holds every
/// slot; another's callback, due after the whole backlog, takes the first slot that
/// frees a second after it (the requester holding the fewest slots goes first), not
/// the backlog's next.
async fn a_slot_that_frees_goes_to_the_requester_holding_none_not_to_the_backlog(db: TestDb) {
    let app = spawn_on(db).await;
    // Takes connections and never answers; closes the first it took when told to.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = Arc::new(AtomicUsize::new(0));
    let free_one = Arc::new(tokio::sync::Notify::new());
    let silent = tokio::spawn({
        let (taken, free_one) = (taken.clone(), free_one.clone());
        async move {
            let mut held = Vec::new();
            let mut freed = false;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        held.push(accepted.unwrap().0);
                        taken.fetch_add(1, Ordering::SeqCst);
                    }
                    () = free_one.notified(), if !freed => {
                        held.remove(0);
                        freed = true;
                    }
                }
            }
        }
    });
    with_callbacks(&app, port, 12).await;
    let (stop, loops) = running(&app, app.scheduler.clone());
    every_slot_taken(&taken).await;
    let other = crate::common::app::new_token(&app.store, &app.clock, "other-agent").await;
    let (receiver, url) = Receiver::start(vec![]).await;
    app.clock.advance(Duration::from_millis(1));
    let body = json!({"tool_name": "search_docs", "parameters": {}, "callback_url": url});
    asked(&app, &other, &body).await;
    // While one requester alone had callbacks due, the loop reads them in turns once
    // a second (a sort of every one due), the earliest due in between.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    free_one.notify_one();
    let arrived = tokio::time::timeout(Duration::from_secs(3), async {
        while receiver.got().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let backlog_taken = taken.load(Ordering::SeqCst);
    silent.abort();
    stop.send(true).unwrap();
    loops.await.unwrap();
    assert!(
        arrived.is_ok(),
        "the other requester's callback waited behind the backlog ({backlog_taken} of its \
         callbacks started, each holding a slot for 10 s)"
    );
}

/// Waits (5 s at most) until a silent receiver took as many connections as there are
/// callback slots: that many callbacks claimed and under way.
async fn every_slot_taken(taken: &AtomicUsize) {
    let under_way = async {
        while taken.load(Ordering::SeqCst) < CALLBACK_SLOTS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), under_way)
        .await
        .expect("as many callbacks under way as there are slots");
}

/// `count` auto-approved requests whose callbacks go to `port` on a test host.
async fn with_callbacks(app: &TestApp, port: u16, count: usize) {
    let url = format!("http://hooks.test:{port}/cb");
    for id in 0..count {
        let body =
            json!({"tool_name": "search_docs", "parameters": {"id": id}, "callback_url": url});
        asked(app, &app.token, &body).await;
    }
}

/// With the scheduler's loops running as the server runs them, callbacks to a receiver
/// that takes connections and never answers hold up no Slack post: a request made
/// once they are under way has its message posted at once, not after their 10 s.
async fn slack_posts_go_out_while_callbacks_wait_for_a_receiver_that_never_answers(db: TestDb) {
    let app = spawn_on(db).await;
    let (port, taken, silent) = silent_receiver().await;
    with_callbacks(&app, port, 8).await;
    let (stop, loops) = running(&app, app.scheduler.clone());
    every_slot_taken(&taken).await;
    let body = json!({"tool_name": "nudge_me", "parameters": {}});
    asked(&app, &app.token, &body).await;
    let asked_at = std::time::Instant::now();
    let posted = tokio::time::timeout(
        Duration::from_secs(3),
        app.slack.wait_for("chat.postMessage", 1),
    )
    .await;
    let took = asked_at.elapsed();
    // Closed connections end the callbacks under way, so that the loops stop at once.
    silent.abort();
    stop.send(true).unwrap();
    loops.await.unwrap();
    assert!(
        posted.is_ok(),
        "no post within {took:?} while the callbacks wait for their receiver"
    );
}

/// Counts, in `claims_seen`, every claim of a callback (a write that leases its row),
/// whatever becomes of it after: started, or put back.
async fn count_callback_claims(db: &TestDb) {
    let sql = if db.backend == "sqlite" {
        vec![
            "CREATE TABLE claims_seen (job INTEGER)".to_owned(),
            "CREATE TRIGGER claims_seen AFTER UPDATE OF locked_until ON jobs \
             WHEN NEW.locked_until IS NOT NULL AND NEW.kind = 'callback' \
             BEGIN INSERT INTO claims_seen VALUES (NEW.id); END"
                .to_owned(),
        ]
    } else {
        vec![
            "CREATE TABLE claims_seen (job BIGINT)".to_owned(),
            "CREATE FUNCTION claims_seen() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO claims_seen VALUES (NEW.id); RETURN NEW; END $$"
                .to_owned(),
            "CREATE TRIGGER claims_seen AFTER UPDATE OF locked_until ON jobs FOR EACH ROW \
             WHEN (NEW.locked_until IS NOT NULL AND NEW.kind = 'callback') \
             EXECUTE FUNCTION claims_seen()"
                .to_owned(),
        ]
    };
    for sql in sql {
        crate::common::raw_execute(db, &sql).await.unwrap();
    }
}

/// A backlog of callbacks to a receiver that takes connections and never answers,
/// with the scheduler's loops running as the server runs them and the clock moving
/// on (so that the retries come due): each slot claims a callback only when it can
/// start it, so the claims are at most [`CALLBACK_SLOTS`] per callback time limit
/// elapsed, plus those in flight, and none is put back (every claim counted an
/// attempt that was made).
async fn a_backlog_of_callbacks_to_a_silent_receiver_costs_one_claim_per_attempt(db: TestDb) {
    let app = spawn_on(db).await;
    let (port, _, silent) = silent_receiver().await;
    with_callbacks(&app, port, 20).await;
    count_callback_claims(&app.db).await;
    // A short lease, so that a callback's time limit (2/5 of it) comes well before
    // its receiver's 10 s.
    let lease = Duration::from_secs(2);
    let limit = lease * 2 / 5;
    let began = std::time::Instant::now();
    let (stop, loops) = running(&app, app.scheduler.clone().with_lease(lease));
    while began.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.clock.advance(Duration::from_millis(50));
    }
    let claims = crate::common::raw_count(&app.db, "SELECT count(*) FROM claims_seen").await;
    let elapsed = began.elapsed();
    silent.abort();
    stop.send(true).unwrap();
    loops.await.unwrap();
    let most = CALLBACK_SLOTS as f64 * (elapsed.as_secs_f64() / limit.as_secs_f64() + 1.0);
    assert!(
        claims as f64 <= most,
        "{claims} claims in {elapsed:?}: more than {CALLBACK_SLOTS} slots can start"
    );
    let count = |sql| crate::common::raw_count(&app.db, sql);
    let unattempted = count("SELECT count(*) FROM jobs WHERE kind = 'callback' AND attempts = 0");
    assert_eq!(unattempted.await, 0, "every callback was tried");
    // Now that those under way are recorded: one claim per attempt, none put back.
    let claims = count("SELECT count(*) FROM claims_seen").await;
    let attempts = count("SELECT COALESCE(SUM(attempts), 0) FROM jobs WHERE kind = 'callback'");
    assert_eq!(attempts.await, claims, "no claim was put back");
}
