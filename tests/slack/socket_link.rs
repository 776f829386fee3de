//! Socket Mode's connection: `disconnect` opens the new socket before the old one
//! closes, a dropped socket or a refused token is retried with backoff while health
//! says `reconnecting`, and garbage is logged, counted and never acked.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use signoff::approval::Status;

use crate::common::app::{Options, PATIENT};
use crate::common::fake_slack::Failure;
use crate::common::fake_socket::{Conn, FakeSocket, Happened, envelope};
use crate::common::{self, TestDb, app::SOCKET_TIMINGS};
use crate::helpers::*;
use crate::socket::{
    click, connected, connected_with, deploy, fake_socket, metric, posted, wait_for_socket,
};

crate::on_both_backends!(
    refresh_requested_opens_the_new_socket_before_the_old_one_closes_and_loses_nothing,
);

async fn refresh_requested_opens_the_new_socket_before_the_old_one_closes_and_loses_nothing(
    db: TestDb,
) {
    let (app, mut old) = connected(db).await;
    let (approval, message) = deploy(&app).await;
    let socket = fake_socket(&app);

    old.disconnect("refresh_requested");
    let mut new = socket.accept().await;
    // The old socket still serves until the new one is up.
    old.send(&click("e-1", &approval, "U0ALICE", "approve", &message));
    old.ack_of("e-1").await;
    assert_eq!(old.number, 1);
    assert_eq!(new.number, 2);
    assert_eq!(
        socket.when(Happened::ClosedByClient(1)),
        None,
        "not closed before hello"
    );
    new.hello();
    for _ in 0..200 {
        if socket.when(Happened::ClosedByClient(1)).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        socket.log(),
        [
            Happened::Opened(1),
            Happened::Opened(2),
            Happened::ClosedByClient(1)
        ],
        "the new socket opened before the old one closed"
    );
    new.send(&click("e-2", &approval, "U0BOB", "approve", &message));
    new.ack_of("e-2").await;
    let decided = app.approval(&approval).await;
    assert_eq!(decided.status, Status::Approved, "no click lost");
    assert_eq!(decided.votes.len(), 2);
    assert_eq!(health(&app).await.1["socket_mode"], "connected");

    // `warning` too.
    new.disconnect("warning");
    let third = socket.accept().await;
    third.hello();
    wait_for_socket(&app, "connected").await;
    assert!(
        socket
            .accept_within(Duration::from_millis(100))
            .await
            .is_none()
    );
}

/// Rotations: approved by the S0OPS user group.
const ROTATE_RULE: &str = r#"
[[rules]]
tools = ["rotate_*"]
tier = "medium"
approvers = ["S0OPS"]
"#;

#[tokio::test]
async fn a_replaced_socket_stays_open_until_an_envelope_it_took_late_is_acked() {
    let policy = format!("{POLICY}{ROTATE_RULE}");
    let drain = Duration::from_millis(600);
    let timings = signoff::http::slack::socket::Timings {
        drain,
        ..SOCKET_TIMINGS
    };
    let options = Options::new(&policy)
        .with_socket_timings(timings)
        .with_slack_timeout(PATIENT);
    let app = spawn_with(common::sqlite(), options).await;
    let socket = fake_socket(&app);
    let mut old = socket.accept().await;
    old.hello();
    wait_for_socket(&app, "connected").await;
    let (deploy, deploy_message) = deploy(&app).await;
    let rotate = json!({"tool_name": "rotate_keys", "parameters": {"key": "api"}});
    let rotate = asked(&app, &app.token, &rotate).await;
    let rotate_message = posted(&app, &rotate).await;
    // Each click waits 400 ms for Slack to list its group's members.
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    app.slack.set_group("S0OPS", &["U0DAVE"]);
    for _ in 0..2 {
        let slow = Failure::Slow(Duration::from_millis(400));
        app.slack.fail_next("usergroups.users.list", slow);
    }

    // A click is being served when Slack asks for a new socket...
    let first = Instant::now();
    old.send(&click(
        "e-1",
        &deploy,
        "U0CAROL",
        "approve",
        &deploy_message,
    ));
    app.slack.wait_for("usergroups.users.list", 1).await;
    old.disconnect("refresh_requested");
    let new = socket.accept().await;
    new.hello();
    // ...and another comes on the old socket after the new one took over, when less
    // is left of the old socket's 600 ms `drain` (counted from then) than the 400 ms
    // it takes to serve.
    tokio::time::sleep_until((first + Duration::from_millis(350)).into()).await;
    old.send(&click("e-2", &rotate, "U0DAVE", "approve", &rotate_message));
    old.ack_of("e-1").await;
    old.ack_of("e-2").await;
    assert_eq!(app.approval(&deploy).await.votes.len(), 1);
    assert_eq!(app.approval(&rotate).await.status, Status::Approved);
    // Closed once acked, not at the end of the drain.
    let acked = Instant::now();
    for _ in 0..100 {
        if socket.when(Happened::ClosedByClient(1)).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed = socket
        .when(Happened::ClosedByClient(1))
        .expect("the old socket closed");
    assert!(
        closed - acked < drain / 2,
        "closed {:?} after the last ack",
        closed - acked
    );
}

/// An envelope that reaches a socket after signoff queued its close is left for
/// Slack to deliver again (its ack could not go out): it takes effect only from the
/// copy on the new socket, which is acked there.
#[tokio::test]
async fn an_envelope_that_comes_after_the_sockets_close_is_left_to_its_redelivery() {
    let app = spawn_socket_on(common::sqlite()).await;
    let socket = fake_socket(&app);
    let old = socket.accept().await;
    old.hello();
    wait_for_socket(&app, "connected").await;
    let (deploy, deploy_message) = deploy(&app).await;
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    // Slack has not read the close signoff sends the idle socket once replaced...
    old.deafen();
    old.disconnect("refresh_requested");
    let mut new = socket.accept().await;
    new.hello();
    // The close is queued once the new socket is up: until then an envelope on the old
    // one is served and acked. Slack's events need nothing, so they probe it.
    let left = |kind: &str| {
        format!("signoff_socket_mode_envelopes_total{{type=\"{kind}\",outcome=\"left\"}}")
    };
    let acked = r#"signoff_socket_mode_envelopes_total{type="events_api",outcome="acked"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0.0;
    while metric(&app, &left("events_api")).await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the old socket's close was never queued"
        );
        sent += 1.0;
        old.send(&envelope(
            &format!("probe-{sent}"),
            "events_api",
            &json!({}),
            false,
        ));
        // Each probe read (served, or left) before the next.
        while metric(&app, acked).await + metric(&app, &left("events_api")).await < sent {
            assert!(Instant::now() < deadline, "probe {sent} was never read");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // ...and sends a click on it meanwhile, left like the probe before it.
    let approve = click("e-late", &deploy, "U0CAROL", "approve", &deploy_message);
    old.send(&approve);
    app.until_metric(&left("interactive"), 1.0).await;
    assert!(
        app.approval(&deploy).await.votes.is_empty(),
        "served on a socket that could not ack it"
    );
    new.send(&approve);
    new.ack_of("e-late").await;
    let decided = app.approval(&deploy).await;
    assert_eq!(decided.votes.len(), 1);
}

/// The app with Socket Mode and `drain`, its first socket greeted, and a click on a
/// deploy being served on it: Carol approves as a member of S0SRE, which Slack takes
/// `listing` to list.
async fn serving_a_click(drain: Duration, listing: Duration) -> (TestApp, FakeSocket, Conn) {
    let timings = signoff::http::slack::socket::Timings {
        drain,
        ..SOCKET_TIMINGS
    };
    let options = Options::new(POLICY)
        .with_socket_timings(timings)
        .with_slack_timeout(PATIENT);
    let (app, conn) = connected_with(common::sqlite(), options).await;
    let socket = fake_socket(&app).clone();
    let (approval, message) = deploy(&app).await;
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    let slow = Failure::Slow(listing);
    app.slack.fail_next("usergroups.users.list", slow);
    conn.send(&click("e-1", &approval, "U0CAROL", "approve", &message));
    app.slack.wait_for("usergroups.users.list", 1).await;
    (app, socket, conn)
}

#[tokio::test]
async fn a_shutdown_acks_what_the_socket_is_serving_before_the_server_returns() {
    let (app, socket, mut conn) =
        serving_a_click(Duration::from_secs(5), Duration::from_millis(400)).await;
    let store = app.store.clone();
    let stopping = Instant::now();
    app.stop().await;
    let took = stopping.elapsed();
    // Sent before the server returned: here at once, not when the click is served.
    let ack = conn.next_frame(Duration::from_millis(150)).await;
    assert_eq!(ack, Some(json!({"envelope_id": "e-1"})), "after {took:?}");
    let mut closed = None;
    for _ in 0..50 {
        closed = socket.when(Happened::ClosedByClient(1));
        if closed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed.is_some(), "the socket was closed");
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    let pending = store.list_all(Some(Status::Pending)).await.unwrap();
    assert_eq!(pending[0].votes.len(), 1, "the vote counted");
}

#[tokio::test]
async fn a_shutdown_waits_no_longer_than_the_drain_for_an_envelope_being_served() {
    let drain = Duration::from_millis(150);
    // Served in 2 s: a stop well before that did not wait for it.
    let (app, _socket, _conn) = serving_a_click(drain, Duration::from_secs(2)).await;
    let stopping = Instant::now();
    app.stop().await;
    let took = stopping.elapsed();
    assert!(took >= drain, "stopped in {took:?}, before the drain");
    assert!(took < Duration::from_millis(1500), "stopped in {took:?}");
}

#[tokio::test]
async fn a_dropped_socket_reconnects_with_backoff_and_health_follows() {
    let (app, first) = connected(common::sqlite()).await;
    let socket = fake_socket(&app);
    first.drop_connection();
    let mut second = socket.accept().await;
    let dropped = socket.when(Happened::Dropped(1)).unwrap();
    let reopened = socket.when(Happened::Opened(2)).unwrap();
    assert!(
        reopened - dropped >= SOCKET_TIMINGS.backoff_min / 2,
        "reconnected after {:?}, before the backoff",
        reopened - dropped
    );
    // Connected again only once the new socket said hello.
    wait_for_socket(&app, "reconnecting").await;
    second.hello();
    wait_for_socket(&app, "connected").await;

    let approval = app.request("wipe", json!({"disk": "sda"})).await;
    let message = posted(&app, &approval).await;
    second.send(&click("e-1", &approval, "U0ALICE", "approve", &message));
    second.ack_of("e-1").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
}

/// Sockets that end right after their `hello`, whether Slack asks for a new one or
/// they drop, are reopened with a backoff that keeps doubling, not in a tight loop.
#[tokio::test]
async fn sockets_that_end_right_after_their_hello_are_reopened_with_a_growing_backoff() {
    let app = spawn_socket_on(common::sqlite()).await;
    let socket = fake_socket(&app);
    // Kept open (a replaced socket stays up until Slack closes it).
    let mut replaced = Vec::new();
    for n in 0..5 {
        let conn = socket.accept().await;
        conn.hello();
        if n % 2 == 0 {
            conn.disconnect("refresh_requested");
        } else {
            conn.drop_connection();
        }
        replaced.push(conn);
    }
    let _sixth = socket.accept().await;
    let opened = |n| socket.when(Happened::Opened(n)).unwrap();
    // After k short-lived sockets in a row, at least half of 20 ms doubled k - 1 times.
    for k in 1..=5 {
        let least = SOCKET_TIMINGS.backoff_min * (1 << (k - 1)) / 2;
        let gap = opened(k + 1) - opened(k);
        assert!(
            gap >= least,
            "socket {} opened {gap:?} after socket {k}",
            k + 1
        );
    }
}

/// A socket that stayed up is replaced at once when Slack asks; the backoff is for
/// sockets that end right after their `hello`.
#[tokio::test]
async fn a_socket_that_stayed_up_is_replaced_at_once_when_slack_asks() {
    let timings = signoff::http::slack::socket::Timings {
        backoff_min: Duration::from_secs(4),
        backoff_max: Duration::from_secs(8),
        stable: Duration::from_millis(100),
        ..SOCKET_TIMINGS
    };
    let options = Options::new(POLICY).with_socket_timings(timings);
    let (app, first) = connected_with(common::sqlite(), options).await;
    let socket = fake_socket(&app);
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.disconnect("refresh_requested");
    let second = socket
        .accept_within(Duration::from_millis(1500))
        .await
        .expect("a socket that stayed up is replaced at once");
    second.hello();
    second.disconnect("refresh_requested");
    // At least half of the 4 s backoff, and the old socket serves meanwhile.
    assert!(
        socket
            .accept_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "a socket replaced right after its hello was reopened at once"
    );
    assert_eq!(health(&app).await.1["socket_mode"], "connected");
}

#[tokio::test]
async fn garbage_and_unreadable_envelopes_are_logged_counted_and_never_acked() {
    let (app, mut conn) = connected(common::sqlite()).await;
    conn.send_text("this is not json {");
    conn.send_binary(&[0xde, 0xad]);
    conn.send(&json!({"type": "surprise", "envelope_id": "e-0", "payload": {}}));
    conn.send(&json!({"type": "interactive", "payload": {"type": "block_actions"}}));
    conn.send(&envelope(
        "e-1",
        "interactive",
        &json!({"type": "block_actions"}),
        false,
    ));
    conn.send(&envelope(
        "e-2",
        "slash_commands",
        &json!({"text": "help"}),
        true,
    ));
    conn.expect_nothing(Duration::from_millis(300)).await;
    let unparsed =
        |reason: &str| format!("signoff_socket_mode_unparsed_total{{reason=\"{reason}\"}}");
    assert_eq!(metric(&app, &unparsed("not_json")).await, 2.0);
    assert_eq!(metric(&app, &unparsed("not_a_frame")).await, 2.0);
    assert_eq!(metric(&app, &unparsed("bad_payload")).await, 2.0);

    // The socket is still up and serves the next envelope.
    assert_eq!(health(&app).await.1["socket_mode"], "connected");
    let approval = app.request("wipe", json!({"disk": "sda"})).await;
    let message = posted(&app, &approval).await;
    conn.send(&click("e-3", &approval, "U0ALICE", "approve", &message));
    conn.ack_of("e-3").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
}

#[tokio::test]
async fn an_app_token_slack_refuses_is_retried_with_backoff_while_health_says_reconnecting() {
    let app = spawn_socket_on(common::sqlite()).await;
    // The client is already asking; refuse its next three asks.
    let started = Instant::now();
    for _ in 0..3 {
        app.slack
            .fail_next("apps.connections.open", Failure::NotOk("invalid_auth"));
    }
    let mut conn = None;
    for _ in 0..4 {
        match fake_socket(&app)
            .accept_within(Duration::from_secs(5))
            .await
        {
            Some(next) if app.slack.calls_to("apps.connections.open").len() >= 4 => {
                conn = Some(next);
                break;
            }
            // The very first ask may have got through before the failures were queued.
            Some(early) => early.drop_connection(),
            None => break,
        }
    }
    let conn = conn.expect("connected after the refusals");
    let opens = app.slack.calls_to("apps.connections.open");
    assert!(opens.len() >= 4, "{} asks", opens.len());
    assert!(
        opens
            .iter()
            .all(|call| call.authorization.as_deref() == Some("Bearer xapp-1-A0APP-test")),
        "asked with the app-level token"
    );
    // 3 failures in a row: at least half of 20 + 40 + 80 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(70),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(health(&app).await.1["socket_mode"], "reconnecting");
    conn.hello();
    wait_for_socket(&app, "connected").await;
}

#[tokio::test]
async fn a_silent_socket_is_pinged_then_given_up_and_replaced() {
    let timings = signoff::http::slack::socket::Timings {
        ping_every: Duration::from_millis(150),
        ..SOCKET_TIMINGS
    };
    let options = Options::new(POLICY).with_socket_timings(timings);
    let (app, first) = connected_with(common::sqlite(), options).await;
    let socket = fake_socket(&app);
    // Answered pings keep a quiet socket up.
    assert!(
        socket
            .accept_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    let frozen = Instant::now();
    first.freeze();
    let second = socket.accept().await;
    let gone = frozen.elapsed();
    assert!(
        gone >= Duration::from_millis(150),
        "given up after {gone:?}, before a ping"
    );
    assert!(gone < Duration::from_secs(2), "given up after {gone:?}");
    second.hello();
    wait_for_socket(&app, "connected").await;
}

#[tokio::test]
async fn health_says_off_without_an_app_token() {
    let app = spawn_app().await;
    assert_eq!(health(&app).await.1["socket_mode"], "off");
}

/// Slack rate-limiting `apps.connections.open` is asked again no sooner than its
/// `Retry-After` says, not at the next step of the backoff (20 ms here): replicas
/// asking on the backoff would keep the limit up.
#[tokio::test]
async fn a_rate_limited_ask_for_a_socket_waits_out_its_retry_after() {
    let (app, first) =
        connected_with(common::sqlite(), Options::new(POLICY).with_socket_mode()).await;
    let socket = fake_socket(&app);
    app.slack.fail_next(
        "apps.connections.open",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    let dropped = Instant::now();
    first.drop_connection();
    let second = socket
        .accept_within(Duration::from_secs(5))
        .await
        .expect("connected again");
    assert!(
        dropped.elapsed() >= Duration::from_millis(950),
        "asked again after {:?}",
        dropped.elapsed()
    );
    assert_eq!(app.slack.calls_to("apps.connections.open").len(), 3);
    second.hello();
    wait_for_socket(&app, "connected").await;
}

/// With Socket Mode, a socket that cannot be opened for longer than `down_after` (a
/// minute; 1 s here) means Slack's clicks cannot reach signoff: health degrades
/// (503) until one is up again.
#[tokio::test]
async fn health_degrades_when_no_socket_can_be_opened_for_long() {
    let timings = signoff::http::slack::socket::Timings {
        down_after: Duration::from_secs(1),
        ..SOCKET_TIMINGS
    };
    let options = Options::new(POLICY).with_socket_timings(timings);
    let (app, first) = connected_with(common::sqlite(), options).await;
    let socket = fake_socket(&app);
    assert_eq!(health(&app).await.0, StatusCode::OK);
    for _ in 0..40 {
        app.slack
            .fail_next("apps.connections.open", Failure::NotOk("invalid_auth"));
    }
    first.drop_connection();
    wait_for_socket(&app, "reconnecting").await;
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK, "within its grace: {body}");
    let mut degraded = None;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (status, body) = health(&app).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            degraded = Some(body);
            break;
        }
    }
    let body = degraded.expect("degraded once no socket was up for a second");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["socket_mode"], "reconnecting", "{body}");
    app.slack.clear_failures("apps.connections.open");
    let second = socket
        .accept_within(Duration::from_secs(5))
        .await
        .expect("connected again");
    second.hello();
    wait_for_socket(&app, "connected").await;
    assert_eq!(health(&app).await.0, StatusCode::OK);
}
