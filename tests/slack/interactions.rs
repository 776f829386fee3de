//! Clicks and modals: signature checks, who may decide, refusals, deny and edit.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::Status;
use signoff::clock::Clock;

use crate::common;
use crate::common::app::{Options, PATIENT};
use crate::common::fake_slack::Failure;
use crate::common::slack::click_on_message;
use crate::helpers::*;

crate::on_both_backends!(
    two_simultaneous_clicks_produce_exactly_one_decision,
    approve_is_decided_on_the_writer_where_the_approver_list_answers_alone,
);

#[tokio::test]
async fn forged_stale_tampered_and_unsigned_requests_are_401_and_change_nothing() {
    let app = spawn_app().await;
    let approval = app.request("wipe", json!({"disk": "sda"})).await;
    let body = interaction_body(&click_payload(
        &approval.id.to_string(),
        "U0ALICE",
        "approve",
        "C0APPROVALS",
        "1700000000.000001",
    ));
    let now = app.clock.now().timestamp();
    let cases = [
        (
            "wrong secret",
            app.post_signed("/slack/interactions", &body, "not-the-secret", now)
                .await,
        ),
        (
            "stale by 301 s",
            app.post_signed("/slack/interactions", &body, SECRET, now - 301)
                .await,
        ),
        (
            "from the future",
            app.post_signed("/slack/interactions", &body, SECRET, now + 301)
                .await,
        ),
        (
            "command, wrong secret",
            app.post_signed("/slack/commands", "user_id=U0ALICE&text=", "nope", now)
                .await,
        ),
    ];
    for (what, (status, answer)) in cases {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {answer}");
        assert_eq!(answer, "", "{what}: a bare 401 tells the sender nothing");
    }
    // Signed, then tampered with: the body says deny instead of approve.
    let tampered = body.replace("approve", "deny");
    let response = app
        .http
        .post(format!("{}/slack/interactions", app.address))
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sign(SECRET, now, &body))
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let unsigned = app
        .http
        .post(format!("{}/slack/interactions", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(app.approval(&approval).await, approval, "nothing changed");
    assert_eq!(
        app.store.audit_head().await.unwrap().0,
        2,
        "only the app's token and the request are in the audit log"
    );
    assert!(app.slack.calls_to("chat.postEphemeral").is_empty());
}

#[tokio::test]
async fn malformed_payloads_are_400_after_verification() {
    let app = spawn_app().await;
    let now = app.clock.now().timestamp();
    for body in ["payload=%7Bnot-json", "nothing=here", "payload=%7B%7D"] {
        let (status, answer) = app
            .post_signed("/slack/interactions", body, SECRET, now)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
}

#[tokio::test]
async fn refused_clicks_get_an_ephemeral_reason_and_change_nothing() {
    let app = spawn_app().await;
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    let deploy = app.posted_deploy("prod").await;

    app.click(&deploy, "U0MALLORY", "approve").await;
    let replies = app.ephemerals_to("U0MALLORY", 1).await;
    assert!(replies[0].contains("Only the approvers"), "{replies:?}");

    app.click(&deploy, REQUESTER, "approve").await;
    let replies = app.ephemerals_to(REQUESTER, 2).await;
    assert!(replies[0].contains("someone else"), "{replies:?}");

    app.click(&deploy, "U0ALICE", "approve").await;
    app.click(&deploy, "U0ALICE", "approve").await;
    let replies = app.ephemerals_to("U0ALICE", 3).await;
    assert!(replies[0].contains("already voted"), "{replies:?}");

    let after = app.approval(&deploy).await;
    assert_eq!(after.votes.len(), 1, "only Alice's first vote counts");
    assert_eq!(after.status, Status::Pending);

    // A Deny click from someone who may not decide opens no modal.
    app.click(&deploy, "U0MALLORY", "deny").await;
    app.ephemerals_to("U0MALLORY", 4).await;
    assert!(app.slack.calls_to("views.open").is_empty());
    // Nor from someone who voted already: the form would be refused once written.
    app.click(&deploy, "U0ALICE", "deny").await;
    let replies = app.ephemerals_to("U0ALICE", 5).await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[1].contains("already voted"), "{replies:?}");
    assert!(app.slack.calls_to("views.open").is_empty());
}

/// The requester is whoever the token names as well as whatever `requested_by` says:
/// a token named after Alice's user id is Alice asking, whatever name the agent gives,
/// and `requested_by` is compared without the spaces or letter case a caller adds.
#[tokio::test]
async fn the_token_that_asked_is_the_requester_too_and_cannot_approve() {
    let app = &spawn_app().await;
    let alices = crate::common::app::new_token(&app.store, &app.clock, "U0ALICE").await;
    let ask = |token: &str, requested_by: &str, environment: &str| {
        let body = json!({"tool_name": "deploy_api", "requested_by": requested_by,
                          "parameters": {"service": "api", "environment": environment}});
        let token = token.to_owned();
        async move { asked(app, &token, &body).await }
    };
    let by_alice = ask(&alices, "claude-code", "staging").await;
    let for_bob = ask(&app.token, " u0bob ", "qa").await;
    // As a Slack mention, as programs driven from Slack write the user they act for.
    let mentioned = ask(&app.token, "<@U0BOB|bob>", "dev").await;
    let at = ask(&app.token, "@u0alice", "test").await;
    // One post a second in the channel.
    app.run_jobs().await;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(1));
        app.run_jobs().await;
    }

    app.click(&by_alice, "U0ALICE", "approve").await;
    app.click(&for_bob, "U0BOB", "approve").await;
    app.click(&mentioned, "U0BOB", "approve").await;
    app.click(&at, "U0ALICE", "approve").await;
    for user in ["U0ALICE", "U0BOB"] {
        // Four refusals in all, two each.
        let replies = app.ephemerals_to(user, 4).await;
        assert_eq!(replies.len(), 2, "{user}: {replies:?}");
        for reply in &replies {
            assert!(reply.contains("someone else"), "{user}: {replies:?}");
        }
    }
    for approval in [&by_alice, &for_bob, &mentioned, &at] {
        assert!(app.approval(approval).await.votes.is_empty());
    }
    let posted = app.slack.calls_to("chat.postMessage");
    assert!(
        posted.iter().any(|call| call
            .body
            .to_string()
            .contains("claude-code (token U0ALICE)")),
        "the message names the token beside what the agent says"
    );
}

#[tokio::test]
async fn clicks_after_a_decision_or_expiry_or_on_unknown_ids_are_refused() {
    let app = spawn_app().await;
    let decided = app.request("a", json!({})).await;
    let expiring = app.request("b", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    app.click(&decided, "U0ALICE", "approve").await;
    app.click(&decided, "U0BOB", "approve").await;
    let replies = app.ephemerals_to("U0BOB", 1).await;
    assert!(replies[0].contains("already approved"), "{replies:?}");
    assert!(replies[0].contains("not recorded"), "{replies:?}");
    // The vote that decided it, clicked again (or its click served again, as when
    // redelivered to another replica): told it is recorded, not that it was not.
    app.click(&decided, "U0ALICE", "approve").await;
    let replies = app.ephemerals_to("U0ALICE", 1).await;
    assert_eq!(
        replies[0], "Your vote is already recorded: this request is approved.",
        "{replies:?}"
    );

    app.clock.advance(Duration::from_secs(3600));
    app.click(&expiring, "U0ALICE", "approve").await;
    let replies = app.ephemerals_to("U0ALICE", 2).await;
    assert!(replies[1].contains("expired"), "{replies:?}");
    assert_eq!(
        app.approval(&expiring).await.status,
        Status::Pending,
        "the scheduler expires it, not the click"
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, _) = app
        .interact(&click_payload(
            &unknown,
            "U0ALICE",
            "approve",
            "C0APPROVALS",
            "1700000000.000001",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .interact(&click_payload(
            "not-an-id",
            "U0ALICE",
            "approve",
            "C0APPROVALS",
            "1700000000.000001",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let replies = app.ephemerals_to("U0ALICE", 4).await;
    assert!(
        replies
            .iter()
            .filter(|r| r.contains("does not exist"))
            .count()
            == 2,
        "{replies:?}"
    );
}

#[tokio::test]
async fn deny_opens_a_reason_modal_and_the_submission_denies() {
    let app = spawn_app().await;
    let approval = app.request("drop_table", json!({"table": "users"})).await;
    app.run_jobs().await;
    let (status, _) = app.click(&approval, "U0ALICE", "deny").await;
    assert_eq!(status, StatusCode::OK);
    let opened = app.slack.wait_for("views.open", 1).await;
    assert_eq!(opened[0].body["trigger_id"], "12345.98765.abcd");
    assert_eq!(opened[0].body["view"]["callback_id"], "deny_reason");
    let metadata: Value =
        serde_json::from_str(opened[0].body["view"]["private_metadata"].as_str().unwrap()).unwrap();
    let main = app.message(&approval, "main").await;
    let shown = signoff::approval::parameters_fingerprint(&approval.parameters);
    assert_eq!(
        metadata,
        json!({"approval_id": approval.id, "channel": main.channel, "ts": main.ts,
               "shown": shown}),
        "the modal remembers the message it was opened from, and the parameters it showed"
    );
    assert_eq!(
        app.approval(&approval).await.status,
        Status::Pending,
        "the click alone decides nothing"
    );

    // A reason Slack's box would not have let through is refused in the modal.
    for (reason, says) in [
        ("Wrong \u{1b}[8mtable", "control character"),
        (&"x".repeat(3001) as &str, "Keep the reason to"),
    ] {
        let (status, body) = app
            .submit(&approval, "U0ALICE", "deny_reason", reason)
            .await;
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response_action"], "errors", "{body}");
        assert!(
            answer["errors"]["reason"].as_str().unwrap().contains(says),
            "{body}"
        );
        assert_eq!(app.approval(&approval).await.status, Status::Pending);
    }

    let (status, body) = app
        .submit(&approval, "U0ALICE", "deny_reason", "Wrong table")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, ""),
        "an empty 200 closes the modal"
    );
    let denied = app.approval(&approval).await;
    assert_eq!(denied.status, Status::Denied);
    assert_eq!(denied.reason.as_deref(), Some("Wrong table"));
    app.run_jobs().await;
    let update = app.slack.calls_to("chat.update").pop().unwrap();
    assert!(update.body.to_string().contains("Wrong table"));

    // A second submission (a stale modal) is answered in the modal.
    let (status, body) = app
        .submit(&approval, "U0BOB", "deny_reason", "me too")
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response_action"], "errors");
    assert!(
        answer["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("already denied")
    );
}

/// A form Slack would not open (a refusal, an answer that never came) is said to the
/// clicker, who would otherwise see nothing happen; nothing is decided.
#[tokio::test]
async fn a_form_slack_would_not_open_is_said_to_the_clicker() {
    let app = spawn_app().await;
    let approval = app.request("drop_table", json!({"table": "users"})).await;
    app.run_jobs().await;
    for action in ["edit", "deny"] {
        app.slack
            .fail_next("views.open", Failure::NotOk("invalid_arguments"));
        let (status, _) = app.click(&approval, "U0ALICE", action).await;
        assert_eq!(status, StatusCode::OK);
    }
    let told = app.ephemerals_to("U0ALICE", 2).await;
    assert_eq!(told.len(), 2, "{told:?}");
    for text in told {
        assert!(text.contains("Slack would not open the form"), "{text}");
    }
    assert_eq!(app.approval(&approval).await.status, Status::Pending);
}

#[tokio::test]
async fn edit_and_approve_validates_the_json_and_runs_only_the_edited_parameters() {
    let app = spawn_app().await;
    let approval = app
        .request(
            "send_email",
            json!({"recipients": ["a@x.com", "b@x.com"], "subject": "Hi"}),
        )
        .await;
    app.run_jobs().await;
    app.click(&approval, "U0ALICE", "edit").await;
    let opened = app.slack.wait_for("views.open", 1).await;
    assert_eq!(opened[0].body["view"]["callback_id"], "edit_approve");
    assert!(
        opened[0].body["view"].to_string().contains("a@x.com"),
        "the modal shows the parameters"
    );

    for (bad, expected) in [("{not json", "Not valid JSON"), ("[1, 2]", "JSON object")] {
        let (status, body) = app.submit(&approval, "U0ALICE", "edit_approve", bad).await;
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response_action"], "errors", "{body}");
        assert!(
            answer["errors"]["parameters"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{body}"
        );
        assert_eq!(app.approval(&approval).await.status, Status::Pending);
    }

    let (status, body) = app
        .submit(
            &approval,
            "U0ALICE",
            "edit_approve",
            r#"{"recipients": ["a@x.com"], "subject": "Hi"}"#,
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let edited = app.approval(&approval).await;
    assert_eq!(edited.status, Status::Approved);
    assert_eq!(
        edited.parameters,
        json!({"recipients": ["a@x.com"], "subject": "Hi"})
    );
    assert_eq!(
        edited.original_parameters,
        Some(json!({"recipients": ["a@x.com", "b@x.com"], "subject": "Hi"}))
    );
    let execute_original = app
        .store
        .apply(
            approval.id,
            signoff::approval::Event::Execute {
                parameters: approval.parameters.clone(),
                tool_name: None,
                server: None,
                caller: Some("agent".into()),
            },
            app.clock.now(),
        )
        .await;
    assert!(
        execute_original.is_err(),
        "the original parameters may not run"
    );
}

/// A policy whose rules an edit could cross: a denied bulk send, prod deploys that
/// need two named approvers, other deploys, and purges classified by the tool's
/// annotations.
pub(crate) const EDIT_POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "1h"

[tiers]
high = "deny"

[[rules]]
tools = ["send_email"]
when = "size(params.recipients) > 100"
tier = "high"

[[rules]]
tools = ["deploy_*"]
when = "params.environment == 'prod'"
tier = "medium"
required_approvals = 2
approvers = ["U0ALICE", "U0BOB"]

[[rules]]
tools = ["deploy_*"]
tier = "medium"

[[rules]]
tools = ["purge_*"]
when = "annotations.destructiveHint == true"
tier = "medium"
channel = "C0PURGES"
"#;

/// An Edit & approve is classified again: parameters the policy denies, or that another
/// rule (other approvers, more approvals) takes, are refused in the modal and change
/// nothing; an edit the request's own rule still takes, annotations and all, counts.
#[tokio::test]
async fn an_edit_must_stay_within_the_rule_the_request_was_classified_by() {
    let app = spawn_policy(common::sqlite(), EDIT_POLICY).await;
    let app = &app;
    let ask = |body: Value| async move { asked(app, &app.token, &body).await };
    let email =
        ask(json!({"tool_name": "send_email", "parameters": {"recipients": ["a@x.com"]}})).await;
    let deploy = ask(json!({"tool_name": "deploy_api",
                            "parameters": {"service": "api", "environment": "staging"}}))
    .await;
    let purge = ask(
        json!({"tool_name": "purge_cache", "parameters": {"region": "eu"},
                           "server": "ops", "annotations": {"destructiveHint": true}}),
    )
    .await;
    // One post a second per channel: the second in #C0APPROVALS a second later.
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;

    let bulk: Vec<String> = (0..101).map(|n| format!("u{n}@x.com")).collect();
    let bulk = json!({"recipients": bulk}).to_string();
    let prod = r#"{"service": "api", "environment": "prod"}"#;
    for (approval, edited, expected) in [
        (&email, bulk.as_str(), "The policy denies this call"),
        (&deploy, prod, "classified by rules[1]"),
    ] {
        let (status, body) = app
            .submit(approval, "U0CAROL", "edit_approve", edited)
            .await;
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response_action"], "errors", "{body}");
        let why = answer["errors"]["parameters"].as_str().unwrap();
        assert!(why.contains(expected), "{why}");
        let after = app.approval(approval).await;
        assert_eq!(
            (after.status, &after.parameters, after.version),
            (Status::Pending, &approval.parameters, approval.version),
            "nothing changed: {why}"
        );
    }

    for (approval, edited) in [
        (&deploy, r#"{"service": "web", "environment": "staging"}"#),
        (&purge, r#"{"region": "us"}"#),
    ] {
        let (status, body) = app
            .submit(approval, "U0CAROL", "edit_approve", edited)
            .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""), "{edited}");
        let after = app.approval(approval).await;
        assert_eq!(after.status, Status::Approved, "{edited}");
        assert_eq!(
            after.parameters,
            serde_json::from_str::<Value>(edited).unwrap()
        );
    }
}

/// Bob opens Edit & approve, Alice's edit lands first, then Bob submits: his form
/// started from the parameters Alice replaced, so it would undo her edit unseen. It is
/// refused in the modal; her edit stands.
#[tokio::test]
async fn an_edit_from_a_form_opened_before_another_edit_is_refused() {
    let app = spawn_app().await;
    let deploy = app.posted_deploy("staging").await;
    app.click(&deploy, "U0BOB", "edit").await;
    let opened = app.slack.wait_for("views.open", 1).await;
    let bobs_form = opened[0].body["view"]["private_metadata"]
        .as_str()
        .unwrap()
        .to_owned();

    let alices = r#"{"service": "api", "environment": "qa"}"#;
    let (status, body) = app.submit(&deploy, "U0ALICE", "edit_approve", alices).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));

    let bobs = r#"{"service": "web", "environment": "staging"}"#;
    let submitted = view_submission("U0BOB", "edit_approve", &bobs_form, "parameters", bobs);
    let (status, body) = app.interact(&submitted).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&body).unwrap();
    let why = answer["errors"]["parameters"].as_str().unwrap_or_default();
    assert!(why.starts_with("Someone edited the parameters"), "{body}");
    let after = app.approval(&deploy).await;
    assert_eq!(
        after.parameters,
        serde_json::from_str::<Value>(alices).unwrap()
    );
    assert_eq!(after.votes.len(), 1, "Alice's approval of her edit stands");
}

/// Bob's Edit & approve lands while the message still shows the parameters as
/// requested: Alice's Approve on it is for parameters that no longer run, so it is
/// refused until the message shows the edited ones.
#[tokio::test]
async fn an_approve_on_a_message_an_edit_has_overtaken_is_refused_until_it_shows_the_edit() {
    let app = spawn_app().await;
    let deploy = app.posted_deploy("staging").await;
    let edited = r#"{"service": "api", "environment": "prod"}"#;
    let (status, _) = app.submit(&deploy, "U0BOB", "edit_approve", edited).await;
    assert_eq!(status, StatusCode::OK);

    // Not yet updated: the message still shows staging. Clicked as shown, and as a
    // message posted before buttons named their parameters.
    // Carol is an approver through a user group: her click takes the path that asks
    // Slack and reads first, with the same outcome.
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    app.click_shown(&deploy, "U0ALICE", "approve").await;
    app.click(&deploy, "U0ALICE", "approve").await;
    app.click_shown(&deploy, "U0CAROL", "approve").await;
    let mut replies = app.ephemerals_to("U0ALICE", 3).await;
    replies.extend(app.ephemerals_to("U0CAROL", 3).await);
    assert_eq!(replies.len(), 3, "{replies:?}");
    for reply in &replies {
        assert!(
            reply.contains("edited after the message you clicked was shown"),
            "{replies:?}"
        );
    }
    let after = app.approval(&deploy).await;
    assert_eq!(after.status, Status::Pending);
    assert_eq!(
        after.votes.len(),
        1,
        "Bob's edit, not Alice's or Carol's click"
    );

    // Updated, the message shows prod; Alice approves what she now sees.
    app.run_jobs().await;
    let message = app.message(&deploy, "main").await;
    let shown = app.slack.shown(&message.channel, &message.ts).unwrap();
    assert!(shown["blocks"].to_string().contains("prod"), "{shown}");
    let (status, body) = app.click_shown(&deploy, "U0ALICE", "approve").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let approved = app.approval(&deploy).await;
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(
        approved.parameters,
        json!({"service": "api", "environment": "prod"})
    );
}

/// Slack is slow to list a user group: clicks that need it answer in time, failing
/// closed, instead of waiting past Slack's 3 seconds; the group is fetched once for
/// all of them, and a click a moment later finds it cached.
#[tokio::test]
async fn a_slow_user_group_lookup_is_fetched_once_and_clicks_answer_without_waiting_for_it() {
    // Clicks wait 100 ms; Slack answers in 350 ms, well within the client's limit.
    let options = Options::new(POLICY)
        .with_group_wait(Duration::from_millis(100))
        .with_slack_timeout(PATIENT);
    let app = spawn_with(common::sqlite(), options).await;
    app.slack.set_group("S0SRE", &["U0CAROL", "U0DAVE"]);
    let deploy = app.posted_deploy("prod").await;
    app.slack.set_delay(Duration::from_millis(350));
    let (carol, dave) = tokio::join!(
        app.click(&deploy, "U0CAROL", "approve"),
        app.click(&deploy, "U0DAVE", "deny"),
    );
    assert_eq!((carol.0, dave.0), (StatusCode::OK, StatusCode::OK));
    let mut replies = app.ephemerals_to("U0CAROL", 2).await;
    replies.extend(app.ephemerals_to("U0DAVE", 2).await);
    assert_eq!(replies.len(), 2, "{replies:?}");
    for reply in &replies {
        assert!(
            reply.contains("could not check your approver group"),
            "{replies:?}"
        );
    }
    assert!(app.approval(&deploy).await.votes.is_empty());
    assert!(
        app.slack.calls_to("views.open").is_empty(),
        "no modal for Dave"
    );

    // The fetch went on: Carol's next click finds the group without asking again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.slack.set_delay(Duration::ZERO);
    let (status, body) = app.click(&deploy, "U0CAROL", "approve").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(app.approval(&deploy).await.votes.len(), 1, "Carol's");
    assert_eq!(
        app.slack.calls_to("usergroups.users.list").len(),
        1,
        "one fetch for every click"
    );
}

/// Slack refuses to list an approvers group (deleted, or a scope missing): a click that
/// needs it counts for nothing and says what Slack said and who can fix it, not "try
/// again in a minute".
#[tokio::test]
async fn a_user_group_slack_refuses_to_list_is_said_so_and_the_click_counts_for_nothing() {
    let app = spawn_app().await;
    let deploy = app.posted_deploy("prod").await;
    app.slack
        .fail_next("usergroups.users.list", Failure::NotOk("no_such_subteam"));
    let (status, body) = app.click(&deploy, "U0CAROL", "approve").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let reply = app.ephemerals_to("U0CAROL", 1).await;
    assert!(
        reply[0].contains("no_such_subteam") && reply[0].contains("policy's approvers"),
        "{reply:?}"
    );
    assert!(!reply[0].contains("try again"), "{reply:?}");
    assert!(app.approval(&deploy).await.votes.is_empty());

    // An error of Slack's own that passes is to be tried again, not a policy to fix.
    app.slack
        .fail_next("usergroups.users.list", Failure::NotOk("internal_error"));
    app.click(&deploy, "U0CAROL", "approve").await;
    let replies = app.ephemerals_to("U0CAROL", 2).await;
    assert!(replies[1].contains("try again in a minute"), "{replies:?}");
    assert!(app.approval(&deploy).await.votes.is_empty());
}

#[tokio::test]
async fn slack_endpoints_answer_503_when_slack_is_not_configured() {
    let app = common::app::spawn(common::sqlite(), common::app::Options::new(POLICY)).await;
    let response = app
        .http
        .post(app.url("/slack/interactions"))
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Slack's certificate check too: a 200 would tell whoever set the URL up that
    // it works.
    for form in ["ssl_check=1&token=legacy", "command=%2Fapprovals&text=help"] {
        let response = app
            .http
            .post(app.url("/slack/commands"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{form}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body.to_string().contains("Slack is not configured"),
            "{form}: {body}"
        );
    }
}

async fn two_simultaneous_clicks_produce_exactly_one_decision(db: common::TestDb) {
    let app = spawn_on(db).await;
    let approval = app.request("transfer", json!({"amount": 5})).await;
    app.run_jobs().await;
    let (a, b) = tokio::join!(
        app.click(&approval, "U0ALICE", "approve"),
        app.click(&approval, "U0BOB", "approve")
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    let decided = app.approval(&approval).await;
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(decided.votes.len(), 1, "exactly one vote decided it");
    let loser = if decided.decided_by.as_deref() == Some("U0ALICE") {
        "U0BOB"
    } else {
        "U0ALICE"
    };
    let replies = app.ephemerals_to(loser, 1).await;
    assert!(replies[0].contains("already approved"), "{replies:?}");
    let approved_events = app
        .store
        .audit_page(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "approved")
        .count();
    assert_eq!(approved_events, 1);
}

/// Approvers listed by name only: an Approve click is checked on the writer (the
/// message it came from, the list, the state machine) and nobody asks Slack.
async fn approve_is_decided_on_the_writer_where_the_approver_list_answers_alone(
    db: common::TestDb,
) {
    let policy = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "1h"

[[rules]]
tools = ["deploy_*"]
tier = "medium"
approvers = ["U0ALICE", "U0BOB"]
"#;
    let app = spawn_policy(db, policy).await;
    let ask = |tool: &'static str| async {
        let (status, created) = ask_as(&app, &app.token, tool, json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id: signoff::approval::ApprovalId =
            created["approval_id"].as_str().unwrap().parse().unwrap();
        app.store.get(id).await.unwrap().unwrap()
    };
    let deploy = ask("deploy_api").await;
    let other = ask("deploy_web").await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;
    let before = app.approval(&deploy).await;

    // Someone not listed, on the request's own message (no metadata: the recorded
    // message is checked).
    app.click(&deploy, "U0MALLORY", "approve").await;
    let replies = app.ephemerals_to("U0MALLORY", 1).await;
    assert!(replies[0].contains("Only the approvers"), "{replies:?}");
    assert!(replies[0].contains("U0ALICE"), "{replies:?}");
    // An approver, with this request's button on another request's message.
    let elsewhere = app.message(&other, "main").await;
    app.click_on(&deploy, "U0ALICE", "approve", &elsewhere)
        .await;
    let replies = app.ephemerals_to("U0ALICE", 2).await;
    assert!(
        replies[0].contains("not on a request signoff posted"),
        "{replies:?}"
    );
    assert_eq!(app.approval(&deploy).await, before, "nothing changed");

    // An approver on the message whose metadata names it.
    let own = app
        .slack
        .posted_for(&deploy.id.to_string())
        .expect("posted");
    let (status, _) = app
        .interact(&click_on_message(
            &deploy.id.to_string(),
            "U0ALICE",
            "approve",
            &own,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let approved = app.approval(&deploy).await;
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("U0ALICE"));
    // Too late for Bob.
    app.click(&deploy, "U0BOB", "approve").await;
    let replies = app.ephemerals_to("U0BOB", 3).await;
    assert!(replies[0].contains("already approved"), "{replies:?}");
    assert!(
        app.slack.calls_to("usergroups.users.list").is_empty(),
        "the list answered without Slack"
    );
    // The decision reaches the request's message.
    app.run_jobs().await;
    assert_eq!(app.slack.calls_to("chat.update").len(), 1);
}

/// A message signoff posted but has not recorded (its delivery report still on its
/// way, or a post found only by its metadata) counts for Deny as it does for Approve:
/// the form remembers that the message's own metadata named the approval.
#[tokio::test]
async fn a_deny_from_a_message_known_by_its_metadata_alone_counts_as_an_approve_would() {
    let app = spawn_app().await;
    let deploy = app.posted_deploy("prod").await;
    let main = app.message(&deploy, "main").await;
    let mut click = click_payload(
        &deploy.id.to_string(),
        "U0ALICE",
        "deny",
        &main.channel,
        "1700000099.000001",
    );
    click["message"] = json!({"ts": "1700000099.000001", "metadata": {
        "event_type": "signoff_approval_posted",
        "event_payload": {"approval_id": deploy.id.to_string(), "kind": "main", "version": 0}}});
    app.interact(&click).await;
    let opened = app.slack.wait_for("views.open", 1).await;
    let metadata = opened[0].body["view"]["private_metadata"].as_str().unwrap();
    let submitted = view_submission("U0ALICE", "deny_reason", metadata, "reason", "not today");
    let (status, body) = app.interact(&submitted).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""), "{body}");
    let denied = app.approval(&deploy).await;
    assert_eq!(denied.status, Status::Denied);
    assert_eq!(denied.reason.as_deref(), Some("not today"));
}
