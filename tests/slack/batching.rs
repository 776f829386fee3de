//! Batching (`batch_window`): look-alike requests of one requester arriving within the
//! window are posted as one message listing them, with each item's own buttons and
//! Approve all / Deny all; every item stays its own approval (decision, execute, audit).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{ApprovalId, NewApproval, Status};
use signoff::clock::Clock;
use signoff::jobs::Deliveries;
use signoff::policy::Policy;
use signoff::store::Store;

use crate::common::TestDb;
use crate::common::app::new_token;
use crate::common::slack::{SlackMessage, click_on_message};
use crate::helpers::*;

const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
batch_window = "30s"
max_pending = 100

[[rules]]
tools = ["send_*"]
tier = "medium"
approvers = ["U0ALICE", "U0BOB"]

[[rules]]
tools = ["deploy_*"]
tier = "medium"
batch_window = "off"

[[rules]]
tools = ["notify_*"]
tier = "medium"
approvers = ["U0ALICE", "U0BOB"]
required_approvals = 2
"#;

/// Asks through the API with `token`; the new approval's id.
async fn ask(app: &TestApp, token: &str, tool: &str, parameters: Value) -> ApprovalId {
    let (status, body) = ask_as(app, token, tool, parameters).await;
    assert_eq!(status, StatusCode::CREATED);
    body["approval_id"].as_str().unwrap().parse().unwrap()
}

/// `n` look-alike `send_email` requests from the app's token.
async fn emails(app: &TestApp, n: usize) -> Vec<ApprovalId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let to = format!("user{i}@example.com");
        ids.push(
            ask(
                app,
                &app.token,
                "send_email",
                json!({ "to": to, "body": "hi" }),
            )
            .await,
        );
    }
    ids
}

/// Lets the window pass and runs the jobs until the paced posts (one a second per
/// channel) are out.
async fn post_all(app: &TestApp) {
    app.clock.advance(Duration::from_secs(31));
    for _ in 0..15 {
        app.run_jobs().await;
        app.clock.advance(Duration::from_secs(1));
    }
}

fn posts(app: &TestApp) -> Vec<Value> {
    app.slack
        .calls_to("chat.postMessage")
        .into_iter()
        .map(|call| call.body)
        .collect()
}

/// The items a post's metadata lists (none for a single request's post).
fn items(post: &Value) -> Vec<String> {
    let items = post["metadata"]["event_payload"]["items"].as_array();
    let items = items.into_iter().flatten();
    items.map(|id| id.as_str().unwrap().to_owned()).collect()
}

/// The channel post naming `id` (a batch's leader, or a request posted alone).
fn post_of(app: &TestApp, id: ApprovalId) -> Value {
    let all = posts(app);
    let post = all.into_iter().find(|p| {
        let payload = &p["metadata"]["event_payload"];
        payload["approval_id"] == id.to_string() && payload["kind"] == "main"
    });
    post.expect("posted")
}

/// The batch message `leader` leads, as a click on it reports it.
fn batch_of(app: &TestApp, leader: ApprovalId) -> SlackMessage {
    app.slack.posted_for(&leader.to_string()).expect("posted")
}

async fn click(app: &TestApp, id: ApprovalId, user: &str, action: &str, on: &SlackMessage) {
    let (status, _) = app
        .interact(&click_on_message(&id.to_string(), user, action, on))
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn status(app: &TestApp, id: ApprovalId) -> Status {
    app.store.get(id).await.unwrap().unwrap().status
}

/// The newest chat.update of the message `ts`.
fn latest_update(app: &TestApp, ts: &str) -> Value {
    let updates = app.slack.calls_to("chat.update");
    let update = updates.iter().rev().find(|call| call.body["ts"] == ts);
    update.expect("the message was updated").body.clone()
}

/// Three look-alike requests share one message, posted when the window ends and
/// recorded as a message of each; a request alike but for its parameter names, another
/// tool, another requester and a rule without a window are posted alone.
async fn look_alike_requests_in_the_window_are_posted_as_one_message(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let batch = emails(&app, 3).await;
    let more_names = ask(
        &app,
        &app.token,
        "send_email",
        json!({"to": "x", "body": "hi", "cc": "y"}),
    )
    .await;
    let other_tool = ask(
        &app,
        &app.token,
        "send_sms",
        json!({"to": "x", "body": "hi"}),
    )
    .await;
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let other_requester = ask(&app, &other, "send_email", json!({"to": "x", "body": "hi"})).await;
    let unbatched = ask(&app, &app.token, "deploy_api", json!({})).await;
    app.run_jobs().await;
    let early = posts(&app);
    assert_eq!(
        early.len(),
        1,
        "only the rule without a window posts at once"
    );
    assert_eq!(
        early[0]["metadata"]["event_payload"]["approval_id"],
        unbatched.to_string()
    );

    post_all(&app).await;
    let all = posts(&app);
    assert_eq!(
        all.len(),
        5,
        "one message for the three, one each for the rest"
    );
    let listed = items(&post_of(&app, batch[0]));
    let expected: Vec<String> = batch.iter().map(ToString::to_string).collect();
    assert_eq!(listed, expected);
    let message = all.iter().find(|p| !items(p).is_empty()).unwrap();
    let text = message.to_string();
    for n in 0..3 {
        assert!(text.contains(&format!("to: user{n}@example.com")), "{text}");
    }
    assert!(text.contains("Approve all 3") && text.contains("Deny all 3"));
    for alone in [more_names, other_tool, other_requester] {
        assert!(items(&post_of(&app, alone)).is_empty(), "posted alone");
    }
    let ts = batch_of(&app, batch[0]).ts;
    for id in &batch {
        let messages = app.store.messages(*id).await.unwrap();
        assert_eq!(messages.len(), 1, "a message of each item");
        assert_eq!(
            (messages[0].kind.as_str(), messages[0].ts.as_str()),
            ("main", ts.as_str())
        );
    }
    // The window is over: a new look-alike starts a batch of its own.
    let late = ask(
        &app,
        &app.token,
        "send_email",
        json!({"to": "late@example.com", "body": "hi"}),
    )
    .await;
    post_all(&app).await;
    assert_eq!(posts(&app).len(), 6);
    assert!(items(&post_of(&app, late)).is_empty());
}

/// An item's own buttons decide it alone; Approve all then approves the rest, each
/// with its own vote and audit events, and each runs once with its own parameters.
async fn items_are_decided_alone_or_all_at_once_and_each_runs_once(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let batch = emails(&app, 3).await;
    post_all(&app).await;
    let message = batch_of(&app, batch[0]);
    click(&app, batch[1], "U0ALICE", "approve", &message).await;
    assert_eq!(status(&app, batch[1]).await, Status::Approved);
    assert_eq!(status(&app, batch[0]).await, Status::Pending);
    app.run_jobs().await;
    let update = latest_update(&app, &message.ts);
    assert!(update.to_string().contains("Approve all 2"), "{update}");

    click(&app, batch[0], "U0BOB", "approve_all", &message).await;
    for id in &batch {
        let approval = app.store.get(*id).await.unwrap().unwrap();
        assert_eq!(approval.status, Status::Approved);
        assert_eq!(approval.votes.len(), 1, "one vote each");
    }
    let bob = app.store.get(batch[2]).await.unwrap().unwrap();
    assert_eq!(bob.votes[0].user, "U0BOB");
    let events = app.store.audit_page(0, 1000).await.unwrap();
    for id in &batch {
        let approved = events
            .iter()
            .filter(|e| e.approval_id == Some(*id) && e.kind == "approved")
            .count();
        assert_eq!(approved, 1, "its own audit event");
    }
    app.run_jobs().await;
    let settled = latest_update(&app, &message.ts).to_string();
    assert!(
        !settled.contains("\"approve\""),
        "no buttons left: {settled}"
    );

    for (n, id) in batch.iter().enumerate() {
        let to = format!("user{n}@example.com");
        let execute = app.url(&format!("/v1/approvals/{id}/execute"));
        let run = |to: String| {
            let body = json!({ "parameters": { "to": to, "body": "hi" } });
            app.http
                .post(&execute)
                .bearer_auth(&app.token)
                .json(&body)
                .send()
        };
        let other = format!("user{}@example.com", n + 1);
        assert_eq!(
            run(other).await.unwrap().status(),
            StatusCode::CONFLICT,
            "another item's parameters"
        );
        assert_eq!(run(to.clone()).await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            run(to).await.unwrap().status(),
            StatusCode::CONFLICT,
            "once"
        );
    }
}

/// Deny all opens one modal; its reason denies every item still waiting.
async fn deny_all_denies_every_waiting_item_with_one_reason(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let batch = emails(&app, 3).await;
    post_all(&app).await;
    let message = batch_of(&app, batch[0]);
    click(&app, batch[2], "U0ALICE", "approve", &message).await;
    click(&app, batch[0], "U0BOB", "deny_all", &message).await;
    let opened = app.slack.wait_for("views.open", 1).await;
    let view = &opened[0].body["view"];
    assert_eq!(view["callback_id"], "deny_all_reason");
    assert_eq!(view["submit"]["text"], "Deny 2");
    assert_eq!(
        status(&app, batch[0]).await,
        Status::Pending,
        "nothing until submitted"
    );

    let submit = deny_all_submission("U0BOB", view, "not this week");
    let (status_code, body) = app.interact(&submit).await;
    assert_eq!((status_code, body.as_str()), (StatusCode::OK, ""));
    for id in &batch[..2] {
        let approval = app.store.get(*id).await.unwrap().unwrap();
        assert_eq!(approval.status, Status::Denied);
        assert_eq!(approval.reason.as_deref(), Some("not this week"));
        assert_eq!(approval.decided_by.as_deref(), Some("U0BOB"));
    }
    assert_eq!(
        status(&app, batch[2]).await,
        Status::Approved,
        "decided before"
    );
}

/// When Slack would not open the Deny all form (an expired trigger, say), the clicker
/// is told, as for Deny and Edit & approve: the click otherwise did nothing they could
/// see. Nothing is decided.
#[tokio::test]
async fn a_deny_all_form_slack_would_not_open_is_said_to_the_clicker() {
    let app = spawn_policy(crate::common::sqlite(), POLICY).await;
    let batch = emails(&app, 2).await;
    post_all(&app).await;
    let message = batch_of(&app, batch[0]);
    app.slack.fail_next(
        "views.open",
        crate::common::fake_slack::Failure::NotOk("expired_trigger_id"),
    );
    click(&app, batch[0], "U0BOB", "deny_all", &message).await;
    let told = app.ephemerals_to("U0BOB", 1).await;
    assert!(
        told.iter()
            .any(|text| text.contains("Slack would not open the form")),
        "{told:?}"
    );
    for id in &batch {
        assert_eq!(status(&app, *id).await, Status::Pending);
    }
}

/// A Deny all that could not deny every item (here one Bob asked for himself) denies
/// the others and tells Bob which it left, in the message's channel: a submission
/// names no channel of its own.
async fn a_deny_all_that_leaves_an_item_says_which_where_the_message_is(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let mut batch = emails(&app, 2).await;
    let bobs = json!({"tool_name": "send_email", "requested_by": "U0BOB",
                      "parameters": {"to": "bob@example.com", "body": "hi"}});
    batch.push(asked(&app, &app.token, &bobs).await.id);
    post_all(&app).await;
    let message = batch_of(&app, batch[0]);
    click(&app, batch[0], "U0BOB", "deny_all", &message).await;
    let opened = app.slack.wait_for("views.open", 1).await;
    let submit = deny_all_submission("U0BOB", &opened[0].body["view"], "not now");
    let (status_code, body) = app.interact(&submit).await;
    assert_eq!((status_code, body.as_str()), (StatusCode::OK, ""));
    for id in &batch[..2] {
        assert_eq!(status(&app, *id).await, Status::Denied);
    }
    assert_eq!(status(&app, batch[2]).await, Status::Pending, "his own");
    let told = app.ephemerals_to("U0BOB", 1).await;
    assert!(told[0].contains("someone else"), "{told:?}");
    let sent = app.slack.calls_to("chat.postEphemeral");
    assert_eq!(sent[0].body["channel"], message.channel);
}

/// A Deny all from a batch message signoff has not recorded (its post's answer was
/// lost) counts, as Approve all does there: the message's own metadata names the items,
/// and the form carries them to its submission.
async fn a_deny_all_from_a_message_known_by_its_metadata_alone_denies_its_items(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let batch = emails(&app, 2).await;
    post_all(&app).await;
    let mut unrecorded = batch_of(&app, batch[0]);
    unrecorded.ts = "1700000099.000001".into();
    click(&app, batch[0], "U0BOB", "deny_all", &unrecorded).await;
    let opened = app.slack.wait_for("views.open", 1).await;
    let submit = deny_all_submission("U0BOB", &opened[0].body["view"], "not this week");
    let (status_code, body) = app.interact(&submit).await;
    assert_eq!((status_code, body.as_str()), (StatusCode::OK, ""), "{body}");
    for id in &batch {
        let approval = app.store.get(*id).await.unwrap().unwrap();
        assert_eq!(approval.status, Status::Denied);
        assert_eq!(approval.reason.as_deref(), Some("not this week"));
    }
}

/// A Deny all modal's submission, with `reason`, from `view` as opened.
fn deny_all_submission(user: &str, view: &Value, reason: &str) -> Value {
    let field = |name: &str| view[name].as_str().expect("the opened modal's field");
    view_submission(
        user,
        field("callback_id"),
        field("private_metadata"),
        "reason",
        reason,
    )
}

/// Bulk clicks from someone who may not decide, from another message, naming no batch,
/// or on a decided batch change nothing and say why; a forged Deny all form too.
async fn bulk_clicks_that_may_not_decide_change_nothing(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let batch = emails(&app, 2).await;
    let single = ask(&app, &app.token, "deploy_api", json!({})).await;
    post_all(&app).await;
    let message = batch_of(&app, batch[0]);
    click(&app, batch[0], "U0MALLORY", "approve_all", &message).await;
    click(&app, batch[0], "U0MALLORY", "deny_all", &message).await;
    let told = app.ephemerals_to("U0MALLORY", 2).await;
    assert_eq!(told.len(), 2);
    assert!(
        told.iter().all(|t| t.contains("Only the approvers")),
        "{told:?}"
    );
    assert!(app.slack.calls_to("views.open").is_empty());

    let elsewhere = batch_of(&app, single);
    click(&app, batch[0], "U0ALICE", "approve_all", &elsewhere).await;
    click(&app, single, "U0ALICE", "approve_all", &elsewhere).await;
    let told = app.ephemerals_to("U0ALICE", 4).await;
    assert!(
        told.iter()
            .all(|t| t.contains("not on a request signoff posted")),
        "{told:?}"
    );
    for id in batch.iter().chain([&single]) {
        assert_eq!(status(&app, *id).await, Status::Pending);
    }

    let forged = json!({"callback_id": "deny_all_reason", "private_metadata":
        json!({"leader": batch[0], "channel": "C0OTHER", "ts": "1.2"}).to_string()});
    let (code, body) = app
        .interact(&deny_all_submission("U0ALICE", &forged, "x"))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("\"response_action\":\"errors\""), "{body}");
    let stale = json!({"callback_id": "deny_all_reason", "private_metadata": "{}"});
    let (_, body) = app
        .interact(&deny_all_submission("U0ALICE", &stale, "x"))
        .await;
    assert!(body.contains("out of date"), "{body}");
    assert_eq!(status(&app, batch[0]).await, Status::Pending);

    click(&app, batch[0], "U0ALICE", "approve_all", &message).await;
    click(&app, batch[0], "U0BOB", "approve_all", &message).await;
    let told = app.ephemerals_to("U0BOB", 5).await;
    assert!(told[0].contains("decided already"), "{told:?}");
}

/// Approve all approves the parameters as requested: an item Alice edited is passed
/// over, said so, and approved with its own button on the updated message.
async fn approve_all_leaves_an_edited_item_to_its_own_button(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let mut batch = Vec::new();
    for team in ["sre", "data", "web"] {
        let parameters = json!({ "team": team, "text": "deploy at 5" });
        batch.push(ask(&app, &app.token, "notify_team", parameters).await);
    }
    post_all(&app).await;
    let message = batch_of(&app, batch[0]);
    let edited = app.store.get(batch[1]).await.unwrap().unwrap();
    let on = app.message(&edited, "main").await;
    assert_eq!(on.ts, message.ts, "the batch's message");
    let edit = r#"{"team": "data", "text": "deploy at 6"}"#;
    let (code, body) = app
        .interact(&submission(&edited, "U0ALICE", "edit_approve", edit, &on))
        .await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, ""));

    click(&app, batch[0], "U0BOB", "approve_all", &message).await;
    let told = app.ephemerals_to("U0BOB", 1).await;
    assert_eq!(
        told,
        [
            "2 of 3 approved. It was edited after the request: approve it with its own \
          Approve button."
        ]
    );
    for id in [batch[0], batch[2]] {
        let votes = app.store.get(id).await.unwrap().unwrap().votes;
        assert_eq!(votes.len(), 1, "Bob's");
    }
    let votes = app.store.get(batch[1]).await.unwrap().unwrap().votes;
    assert_eq!(votes.len(), 1, "Alice's edit only");

    app.run_jobs().await;
    let (code, _) = app.click_shown(&edited, "U0BOB", "approve").await;
    assert_eq!(code, StatusCode::OK);
    let approved = app.store.get(batch[1]).await.unwrap().unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(approved.parameters["text"], "deploy at 6");
}

/// A batch holds ten requests at most: the eleventh starts the next one.
async fn the_eleventh_look_alike_starts_a_new_batch(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let ids = emails(&app, 11).await;
    post_all(&app).await;
    let all = posts(&app);
    assert_eq!(all.len(), 2);
    assert_eq!(items(&post_of(&app, ids[0])).len(), 10);
    assert!(items(&post_of(&app, ids[10])).is_empty());
    let message = &all[0];
    assert!(message["blocks"].as_array().unwrap().len() <= 50);
}

/// A batch's post that Slack took but whose answer was lost is found in the history
/// and recorded for every item, then brought up to date, never posted twice; its items
/// expire one by one.
async fn a_lost_batch_post_is_found_and_recorded_for_every_item(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let batch = emails(&app, 2).await;
    app.slack.fail_next(
        "chat.postMessage",
        crate::common::fake_slack::Failure::PostThenHang,
    );
    post_all(&app).await;
    assert_eq!(posts(&app).len(), 1, "not posted again");
    let ts = app.slack.post_ts(0);
    for id in &batch {
        let messages = app.store.messages(*id).await.unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].ts, ts);
    }
    let update = latest_update(&app, &ts);
    assert!(update.to_string().contains("Approve all 2"), "{update}");

    // Each item expires on its own, and the message says so.
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    app.run_jobs().await;
    for id in &batch {
        assert_eq!(status(&app, *id).await, Status::Expired);
    }
    let expired = latest_update(&app, &ts).to_string();
    assert!(
        expired.contains("Expired") && !expired.contains("approve_all"),
        "{expired}"
    );
}

/// Requests from two stores race the leader's post closing the batch: each either
/// joined before the close (and is listed) or is in another batch, never in this one
/// unlisted.
async fn a_request_joins_only_a_batch_whose_post_lists_it(db: TestDb) {
    let app = spawn_policy(db, POLICY).await;
    let leader = emails(&app, 1).await[0];
    let slack = Deliveries { slack: true };
    let replica = Store::connect_with(&app.db.url, slack).await.unwrap();
    let policy = Policy::from_toml_str(POLICY).unwrap();
    let mut asking = tokio::task::JoinSet::new();
    // Fewer than a batch holds: a join after the close would find room.
    for n in 0..6 {
        let store = if n % 2 == 0 {
            app.store.clone()
        } else {
            replica.clone()
        };
        let mut request = NewApproval::new(
            "send_email",
            json!({ "to": format!("racer{n}"), "body": "hi" }),
        );
        request.token_name = Some("agent".into());
        let class = policy.classify("send_email", &request.parameters, None);
        let now = app.clock.now();
        asking.spawn(async move { store.create(request, class, now).await.unwrap().approval.id });
    }
    let closed = app.store.close_batch(leader).await.unwrap();
    let mut racers = Vec::new();
    while let Some(id) = asking.join_next().await {
        racers.push(id.unwrap());
    }
    let late = ask(
        &app,
        &app.token,
        "send_email",
        json!({"to": "late", "body": "hi"}),
    )
    .await;
    let members = app.store.batch_members(leader).await.unwrap();
    assert_eq!(members, closed, "nobody joined after the close");
    assert_eq!(members[0], leader);
    for id in racers.iter().chain([&late]) {
        let batch = app.store.batch_members(*id).await.unwrap();
        assert!(!batch.is_empty(), "every look-alike is batched");
        assert!(
            batch[0] == leader || !members.contains(id),
            "in one batch only"
        );
    }
}

crate::on_both_backends!(
    a_request_joins_only_a_batch_whose_post_lists_it,
    look_alike_requests_in_the_window_are_posted_as_one_message,
    items_are_decided_alone_or_all_at_once_and_each_runs_once,
    deny_all_denies_every_waiting_item_with_one_reason,
    a_deny_all_that_leaves_an_item_says_which_where_the_message_is,
    a_deny_all_from_a_message_known_by_its_metadata_alone_denies_its_items,
    bulk_clicks_that_may_not_decide_change_nothing,
    the_eleventh_look_alike_starts_a_new_batch,
    a_lost_batch_post_is_found_and_recorded_for_every_item,
    approve_all_leaves_an_edited_item_to_its_own_button,
);
