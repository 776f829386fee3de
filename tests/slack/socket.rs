//! Socket Mode, through the WebSocket: clicks, modals and `/approvals` arrive as
//! envelopes from a fake Socket Mode server, carrying signoff's own message metadata,
//! and are answered on the socket with the same checks, replies and single decision as
//! over HTTP. The connection itself (refresh, drops, garbage, a refused token):
//! `socket_link.rs`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{Approval, Status};

use crate::common::app::{Options, PATIENT};
use crate::common::fake_slack::Failure;
use crate::common::fake_socket::{Conn, FakeSocket, envelope, redelivery};
use crate::common::slack::{SlackMessage, click_on_message};
use crate::common::{self, TestDb};
use crate::helpers::*;

crate::on_both_backends!(
    a_click_over_the_socket_is_acked_at_once_and_counts_once,
    a_redelivered_envelope_is_acked_again_and_never_served_twice,
    deny_with_a_reason_and_edit_and_approve_are_modal_submissions_over_the_socket,
);

/// The app with Socket Mode, its first socket greeted and reported connected.
pub async fn connected(db: TestDb) -> (TestApp, Conn) {
    connected_with(db, Options::new(POLICY).with_socket_mode()).await
}

/// [`connected`], the app started with `options`.
pub async fn connected_with(db: TestDb, options: Options<'_>) -> (TestApp, Conn) {
    let app = spawn_with(db, options).await;
    let conn = fake_socket(&app).accept().await;
    conn.hello();
    wait_for_socket(&app, "connected").await;
    (app, conn)
}

pub fn fake_socket(app: &TestApp) -> &FakeSocket {
    app.socket.as_ref().expect("started with Socket Mode")
}

/// Waits (up to 5 s) until `/health/approvals` reports the socket as `want`.
pub async fn wait_for_socket(app: &TestApp, want: &str) {
    let mut last = Value::Null;
    for _ in 0..500 {
        last = health(app).await.1;
        if last["socket_mode"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("socket_mode never became {want}: {last}");
}

/// Posts the approval's message (the outbox runs) and returns it as a click reports
/// it: with the metadata signoff attached, whose `version` is a number.
pub async fn posted(app: &TestApp, approval: &Approval) -> SlackMessage {
    // Past the channel's pacing (one post a second).
    app.clock.advance(Duration::from_secs(2));
    app.run_jobs().await;
    let message = app
        .slack
        .posted_for(&approval.id.to_string())
        .expect("signoff posted the approval");
    assert!(message.metadata["event_payload"]["version"].is_number());
    message
}

/// A `deploy_*` request (two of its approvers must approve) and its posted message.
pub async fn deploy(app: &TestApp) -> (Approval, SlackMessage) {
    let approval = app
        .request(
            "deploy_api",
            json!({"service": "api", "environment": "prod"}),
        )
        .await;
    let message = posted(app, &approval).await;
    (approval, message)
}

/// `user` clicks Approve on `message` over HTTP (signed); Slack gets its 200.
async fn http_approve(app: &TestApp, approval: &Approval, user: &str, message: &SlackMessage) {
    let payload = click_on_message(&approval.id.to_string(), user, "approve", message);
    assert_eq!(app.interact(&payload).await.0, StatusCode::OK);
}

/// `user` clicks `action` on `message`, as an interactive envelope `id`.
pub fn click(
    id: &str,
    approval: &Approval,
    user: &str,
    action: &str,
    message: &SlackMessage,
) -> Value {
    let payload = click_on_message(&approval.id.to_string(), user, action, message);
    envelope(id, "interactive", &payload, false)
}

/// One series of `/metrics` (e.g. `signoff_socket_mode_unparsed_total{reason="not_json"}`),
/// 0 when absent.
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn a_click_over_the_socket_is_acked_at_once_and_counts_once(db: TestDb) {
    let (app, mut conn) = connected(db).await;
    let (approval, message) = deploy(&app).await;

    let sent = Instant::now();
    conn.send(&click("e-1", &approval, "U0ALICE", "approve", &message));
    let ack = conn.ack_of("e-1").await;
    let took = sent.elapsed();
    assert_eq!(ack, json!({"envelope_id": "e-1"}), "a bare ack");
    // Acked once served (the vote written), within Slack's 3 s.
    assert!(took < Duration::from_secs(3), "acked in {took:?}");
    let after = app.approval(&approval).await;
    assert_eq!(after.votes.len(), 1);
    assert_eq!(after.votes[0].user, "U0ALICE");
    assert_eq!(after.status, Status::Pending, "two approvals are required");

    conn.send(&click("e-2", &approval, "U0BOB", "approve", &message));
    conn.ack_of("e-2").await;
    let decided = app.approval(&approval).await;
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(decided.votes.len(), 2);
    assert_eq!(
        metric(
            &app,
            r#"signoff_socket_mode_envelopes_total{type="interactive",outcome="acked"}"#
        )
        .await,
        2.0
    );
}

async fn a_redelivered_envelope_is_acked_again_and_never_served_twice(db: TestDb) {
    let (app, mut conn) = connected(db).await;
    let (approval, message) = deploy(&app).await;
    let first = click("e-1", &approval, "U0ALICE", "approve", &message);
    conn.send(&first);
    let ack = conn.ack_of("e-1").await;
    for attempt in 1..=2 {
        conn.send(&redelivery(&first, attempt));
        assert_eq!(conn.ack_of("e-1").await, ack, "the same ack again");
    }
    let after = app.approval(&approval).await;
    assert_eq!(after.votes.len(), 1, "counted once");
    assert_eq!(after.status, Status::Pending);

    // A refused click, redelivered: one ephemeral reply, not two.
    let refused = click("e-2", &approval, "U0MALLORY", "approve", &message);
    conn.send(&refused);
    conn.ack_of("e-2").await;
    app.ephemerals_to("U0MALLORY", 1).await;
    conn.send(&redelivery(&refused, 1));
    conn.ack_of("e-2").await;
    // Served again, it would have been counted before this ack (and replied to).
    assert_eq!(
        metric(
            &app,
            r#"signoff_socket_mode_envelopes_total{type="interactive",outcome="acked"}"#
        )
        .await,
        2.0,
        "e-1 and e-2, each served once"
    );
    assert_eq!(app.slack.calls_to("chat.postEphemeral").len(), 1);
    assert_eq!(
        metric(
            &app,
            r#"signoff_socket_mode_envelopes_total{type="interactive",outcome="redelivered"}"#
        )
        .await,
        3.0
    );
}

#[tokio::test]
async fn a_copy_redelivered_on_a_new_socket_while_the_first_is_served_is_acked_there() {
    let options = Options::new(POLICY)
        .with_socket_mode()
        .with_slack_timeout(PATIENT);
    let (app, old) = connected_with(common::sqlite(), options).await;
    let (approval, message) = deploy(&app).await;
    // Carol may approve as a member of S0SRE, which Slack takes a second to list (the
    // reconnection below happens meanwhile; a click waits up to 2 s for a group).
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    let slow = Failure::Slow(Duration::from_millis(1000));
    app.slack.fail_next("usergroups.users.list", slow);
    let first = click("e-1", &approval, "U0CAROL", "approve", &message);
    old.send(&first);
    app.slack.wait_for("usergroups.users.list", 1).await;

    // The socket the click came on is lost while it is being served, and Slack
    // redelivers the click on the next one: there is nowhere else to ack it.
    old.drop_connection();
    let mut new = fake_socket(&app).accept().await;
    new.hello();
    let before = app.approval(&approval).await;
    assert!(
        before.votes.is_empty(),
        "the first copy is still being served"
    );
    new.send(&redelivery(&first, 1));
    assert_eq!(new.ack_of("e-1").await, json!({"envelope_id": "e-1"}));
    let after = app.approval(&approval).await;
    assert_eq!(after.votes.len(), 1, "counted once");
    assert_eq!(after.votes[0].user, "U0CAROL");
    assert_eq!(app.slack.calls_to("usergroups.users.list").len(), 1);
}

async fn deny_with_a_reason_and_edit_and_approve_are_modal_submissions_over_the_socket(db: TestDb) {
    let (app, mut conn) = connected(db).await;
    let approval = app.request("wipe", json!({"disk": "sda"})).await;
    let message = posted(&app, &approval).await;
    conn.send(&click("e-1", &approval, "U0ALICE", "deny", &message));
    assert_eq!(conn.ack_of("e-1").await, json!({"envelope_id": "e-1"}));
    let opened = app.slack.wait_for("views.open", 1).await;
    assert_eq!(opened[0].body["view"]["callback_id"], "deny_reason");
    assert_eq!(opened[0].body["trigger_id"], "12345.98765.abcd");

    let main = app.message(&approval, "main").await;
    let deny = submission(&approval, "U0ALICE", "deny_reason", "Wrong disk", &main);
    conn.send(&envelope("e-2", "interactive", &deny, true));
    assert_eq!(
        conn.ack_of("e-2").await,
        json!({"envelope_id": "e-2"}),
        "closes the modal"
    );
    let denied = app.approval(&approval).await;
    assert_eq!(denied.status, Status::Denied);
    assert_eq!(denied.reason.as_deref(), Some("Wrong disk"));

    let email = app
        .request("send_email", json!({"recipients": ["a@x.com", "b@x.com"]}))
        .await;
    posted(&app, &email).await;
    let main = app.message(&email, "main").await;
    let bad = submission(&email, "U0ALICE", "edit_approve", "{not json", &main);
    conn.send(&envelope("e-3", "interactive", &bad, true));
    let ack = conn.ack_of("e-3").await;
    assert_eq!(ack["payload"]["response_action"], "errors", "{ack}");
    assert!(
        ack["payload"]["errors"]["parameters"]
            .as_str()
            .unwrap()
            .contains("Not valid JSON")
    );
    assert_eq!(app.approval(&email).await.status, Status::Pending);

    let good = submission(
        &email,
        "U0ALICE",
        "edit_approve",
        r#"{"recipients": ["a@x.com"]}"#,
        &main,
    );
    conn.send(&envelope("e-4", "interactive", &good, true));
    assert_eq!(conn.ack_of("e-4").await, json!({"envelope_id": "e-4"}));
    let edited = app.approval(&email).await;
    assert_eq!(edited.status, Status::Approved);
    assert_eq!(edited.parameters, json!({"recipients": ["a@x.com"]}));
}

#[tokio::test]
async fn approvals_command_replies_in_the_ack_as_over_http() {
    let (app, mut conn) = connected(common::sqlite()).await;
    let approval = app
        .request(
            "deploy_api",
            json!({"service": "api", "environment": "prod"}),
        )
        .await;
    posted(&app, &approval).await;
    for (i, (user, text)) in [("U0ALICE", ""), ("U0ALICE", "help"), ("U0MALLORY", "")]
        .into_iter()
        .enumerate()
    {
        let fields: serde_json::Map<String, Value> = command_fields("C0DEPLOYS", user, text)
            .into_iter()
            .map(|(name, value)| (name.to_owned(), json!(value)))
            .collect();
        let id = format!("c-{i}");
        conn.send(&envelope(
            &id,
            "slash_commands",
            &Value::Object(fields),
            true,
        ));
        let ack = conn.ack_of(&id).await;
        let (status, over_http) = app.command_in("C0DEPLOYS", user, text).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ack["payload"], over_http, "{user} /approvals {text}");
    }
    let (_, alice) = app.command_in("C0DEPLOYS", "U0ALICE", "").await;
    assert!(alice.to_string().contains("Deploy api to prod"), "{alice}");
}

#[tokio::test]
async fn a_click_by_someone_who_may_not_vote_is_refused_with_the_http_reply() {
    let (app, mut conn) = connected(common::sqlite()).await;
    let (approval, message) = deploy(&app).await;
    // Over HTTP first, for the reply to compare with.
    http_approve(&app, &approval, "U0EVE", &message).await;
    let over_http = app.ephemerals_to("U0EVE", 1).await;
    assert!(
        over_http[0].starts_with("Only the approvers"),
        "{over_http:?}"
    );

    conn.send(&click("e-1", &approval, "U0MALLORY", "approve", &message));
    conn.ack_of("e-1").await;
    assert_eq!(app.ephemerals_to("U0MALLORY", 2).await, over_http);
    conn.send(&click("e-2", &approval, REQUESTER, "approve", &message));
    conn.ack_of("e-2").await;
    let to_requester = app.ephemerals_to(REQUESTER, 3).await;
    assert!(
        to_requester[0].starts_with("You asked for this one"),
        "{to_requester:?}"
    );

    // A user id that is no Slack user id: refused, counted, not acked.
    conn.send(&click("e-3", &approval, "alice; DROP", "approve", &message));
    conn.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(
        metric(
            &app,
            r#"signoff_socket_mode_unparsed_total{reason="bad_payload"}"#
        )
        .await,
        1.0
    );
    let after = app.approval(&approval).await;
    assert!(after.votes.is_empty(), "{:?}", after.votes);
    assert_eq!(after.status, Status::Pending);
}

#[tokio::test]
async fn the_http_endpoints_keep_working_beside_the_socket() {
    let (app, mut conn) = connected(common::sqlite()).await;
    let (approval, message) = deploy(&app).await;
    http_approve(&app, &approval, "U0ALICE", &message).await;
    conn.send(&click("e-1", &approval, "U0BOB", "approve", &message));
    conn.ack_of("e-1").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    let (status, reply) = app.command("U0ALICE", "help").await;
    assert_eq!(status, StatusCode::OK);
    assert!(reply.to_string().contains("/approvals"), "{reply}");
    assert_eq!(health(&app).await.1["socket_mode"], "connected");
}
