//! Approval fatigue: `max_pending` per requester. Past it, a request that would wait
//! for people is refused with 429 and changes nothing but the audit log, and each
//! channel hears once per episode that the requester is throttled.

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::Status;

use crate::common::TestDb;
use crate::common::app::{self, App, Options, new_token};
use crate::helpers::ask_as as ask;

const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
max_pending = 3

[[rules]]
tools = ["search_*"]
tier = "low"

[[rules]]
tools = ["deploy_*"]
tier = "medium"
channel = "C0DEPLOYS"
max_pending = 1
"#;

/// The throttle notices Slack received, by channel.
fn notices(app: &App) -> Vec<(String, String)> {
    let slack = app.slack.as_ref().unwrap();
    slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|call| call.body["metadata"]["event_type"] == "signoff_requester_throttled")
        .map(|call| {
            let channel = call.body["channel"].as_str().unwrap().to_owned();
            (channel, call.body["text"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Runs the jobs until the paced posts (one a second per channel) are all out.
async fn drain(app: &App) {
    for _ in 0..10 {
        app.run_jobs().await;
        app.clock.advance(std::time::Duration::from_secs(1));
    }
}

async fn waiting(app: &App, token_name: &str) -> usize {
    let pending = app.store.list_all(Some(Status::Pending)).await.unwrap();
    pending
        .iter()
        .filter(|a| a.token_name.as_deref() == Some(token_name))
        .count()
}

async fn throttled_events(app: &App) -> Vec<Value> {
    let events = app.store.audit_page(0, 10_000).await.unwrap();
    let throttled = events.into_iter().filter(|e| e.kind == "throttled");
    throttled
        .map(|e| {
            assert_eq!(e.approval_id, None, "a refusal opens no approval");
            assert_eq!(e.actor.as_deref(), Some("agent"));
            e.data
        })
        .collect()
}

/// The app under [`POLICY`] with `agent`'s three waiting requests (its limit) and their
/// ids, then three more `send_email` and one `deploy_api` refused (each 429 checked).
async fn throttled_app(db: TestDb) -> (App, Vec<String>) {
    let app = app::spawn(db, Options::new(POLICY).with_slack()).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = ask(&app, &app.token, "send_email", json!({ "n": n })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["approval_id"].as_str().unwrap().to_owned());
    }
    for n in 3..6 {
        let (status, body) = ask(&app, &app.token, "send_email", json!({ "n": n })).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"], "too_many_pending");
        assert_eq!(
            (body["waiting"].as_i64(), body["max_pending"].as_i64()),
            (Some(3), Some(3))
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("agent has 3 requests waiting") && detail.contains("max_pending is 3"),
            "{detail}"
        );
    }
    // A rule with its own lower limit refuses at once.
    let (status, body) = ask(&app, &app.token, "deploy_api", json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["max_pending"], 1);
    (app, ids)
}

/// Past the limit only new waiting requests are refused: a repeat joins, an
/// auto-approved call runs, another requester is not held up; nothing is written but
/// the audit events.
async fn a_requester_past_max_pending_is_refused_and_audited(db: TestDb) {
    let (app, ids) = throttled_app(db).await;
    let (status, body) = ask(&app, &app.token, "send_email", json!({ "n": 0 })).await;
    assert_eq!(
        (status, body["approval_id"].as_str()),
        (StatusCode::OK, Some(ids[0].as_str()))
    );
    let (status, body) = ask(&app, &app.token, "search_docs", json!({})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::CREATED, Some("approved"))
    );
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let (status, body) = ask(&app, &other, "send_email", json!({ "n": 3 })).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::CREATED, Some("pending"))
    );
    assert_eq!(
        waiting(&app, "agent").await,
        3,
        "refused requests leave no row"
    );

    let events = throttled_events(&app).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0]["tool_name"], "send_email");
    assert_eq!(events[0]["channel"], "C0APPROVALS");
    let counts = (
        events[0]["waiting"].as_i64(),
        events[0]["max_pending"].as_i64(),
    );
    assert_eq!(counts, (Some(3), Some(3)));
    assert_eq!(events[0]["notice"], true);
    assert_eq!(events[1]["notice"], false);
    assert_eq!(events[3]["tool_name"], "deploy_api");
    assert_eq!(events[3]["notice"], true);
}

/// Each channel a refused request was for hears once that the requester is throttled,
/// however many refusals follow.
async fn each_channel_hears_of_a_throttled_requester_once(db: TestDb) {
    let (app, _) = throttled_app(db).await;
    drain(&app).await;
    let mut heard = notices(&app);
    heard.sort();
    let channels: Vec<&str> = heard.iter().map(|(channel, _)| channel.as_str()).collect();
    assert_eq!(
        channels,
        ["C0APPROVALS", "C0DEPLOYS"],
        "one notice per channel"
    );
    let (main, deploys) = (&heard[0].1, &heard[1].1);
    assert!(
        main.contains("Requests from agent are being refused"),
        "{main}"
    );
    assert!(main.contains("max_pending = 3"), "{main}");
    assert!(
        deploys.contains("3 of its requests already wait"),
        "{deploys}"
    );
    assert!(deploys.contains("max_pending = 1"), "{deploys}");
}

/// One request withdrawn: the next is accepted, which ends the episode; the one after
/// that starts a new one, and the channel hears it again, once.
async fn an_accepted_request_ends_the_episode_and_the_next_refusal_notices_again(db: TestDb) {
    let (app, ids) = throttled_app(db).await;
    drain(&app).await;
    let cancel = app
        .http
        .post(app.url(&format!("/v1/approvals/{}/cancel", ids[1])))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    let (status, _) = ask(&app, &app.token, "send_email", json!({ "n": 10 })).await;
    assert_eq!(status, StatusCode::CREATED);
    for n in 11..13 {
        let (status, _) = ask(&app, &app.token, "send_email", json!({ "n": n })).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    drain(&app).await;
    let again: Vec<_> = notices(&app)
        .into_iter()
        .filter(|(channel, _)| channel == "C0APPROVALS")
        .collect();
    assert_eq!(again.len(), 2, "a new episode, one more notice: {again:?}");
    assert_eq!(waiting(&app, "agent").await, 3);
}

/// Two servers on one database (replicas) take a burst from one requester at once:
/// together they open exactly `max_pending`, never more.
async fn replicas_together_never_let_a_requester_past_max_pending(db: TestDb) {
    let app = app::spawn(db, Options::new(POLICY)).await;
    let replica = app.replica().await;
    let mut asking = tokio::task::JoinSet::new();
    for n in 0..60 {
        let address = if n % 2 == 0 {
            app.address.clone()
        } else {
            replica.address.clone()
        };
        let (http, token) = (app.http.clone(), app.token.clone());
        asking.spawn(async move {
            let response = http
                .post(format!("{address}/v1/approvals"))
                .bearer_auth(token)
                .json(&json!({ "tool_name": "send_email", "parameters": { "n": n } }))
                .send()
                .await
                .unwrap();
            response.status()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = asking.join_next().await {
        statuses.push(status.unwrap());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, refused), (3, 57), "{statuses:?}");
    assert_eq!(waiting(&app, "agent").await, 3);
    assert_eq!(throttled_events(&app).await.len(), 57);
}

const FLOOD_POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
max_pending = 1000
"#;

/// A flood from one requester does not bury another's request: the channel's posts
/// take turns, and the newcomer is posted within the pacing horizon (20 s), not after
/// the flood's 60 posts; every request is still posted exactly once.
async fn a_flood_from_one_requester_does_not_hold_up_another(db: TestDb) {
    let app = app::spawn(db, Options::new(FLOOD_POLICY).with_slack()).await;
    for n in 0..60 {
        let (status, _) = ask(&app, &app.token, "send_email", json!({ "n": n })).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    app.run_jobs().await;
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let (_, body) = ask(&app, &other, "refund", json!({})).await;
    let theirs = body["approval_id"].as_str().unwrap().to_owned();
    let slack = app.slack.as_ref().unwrap();
    let mut seconds = 0;
    while app
        .store
        .messages(theirs.parse().unwrap())
        .await
        .unwrap()
        .is_empty()
    {
        assert!(seconds < 25, "not posted within the horizon");
        app.clock.advance(std::time::Duration::from_secs(1));
        app.run_jobs().await;
        seconds += 1;
    }
    let posted = slack.calls_to("chat.postMessage").len();
    assert!(posted < 30, "posted after {posted} of the flood's posts");
    for _ in 0..80 {
        app.clock.advance(std::time::Duration::from_secs(1));
        app.run_jobs().await;
    }
    assert_eq!(
        slack.posts_and_approvals(),
        (61, 61),
        "each request posted once"
    );
}

const SHORT_POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "30s"
max_pending = 1000
"#;

async fn health(app: &App) -> (StatusCode, Value) {
    let response = app
        .http
        .get(app.url("/health/approvals"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Health turns degraded, naming the channel, when its queued posts (one a second)
/// would reach an approval only after it expired; a short queue is fine.
async fn health_names_a_channel_whose_queue_outlasts_its_approvals(db: TestDb) {
    let app = app::spawn(db, Options::new(SHORT_POLICY).with_slack()).await;
    for n in 0..5 {
        ask(&app, &app.token, "send_email", json!({ "n": n })).await;
    }
    app.run_jobs().await;
    let (status, body) = health(&app).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{body}"
    );
    assert_eq!(body["behind"], json!([]));

    for n in 5..45 {
        ask(&app, &app.token, "send_email", json!({ "n": n })).await;
    }
    app.run_jobs().await;
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["undelivered"], 0, "waiting its turn is no failure");
    let behind = &body["behind"][0];
    assert_eq!(behind["channel"], "C0APPROVALS", "{body}");
    assert_eq!(behind["queued_posts"], 44, "{body}");
    assert_eq!(behind["drains_in_secs"], 44);
    assert_eq!(body["behind"].as_array().unwrap().len(), 1);
}

crate::on_both_backends!(
    health_names_a_channel_whose_queue_outlasts_its_approvals,
    a_requester_past_max_pending_is_refused_and_audited,
    each_channel_hears_of_a_throttled_requester_once,
    an_accepted_request_ends_the_episode_and_the_next_refusal_notices_again,
    replicas_together_never_let_a_requester_past_max_pending,
    a_flood_from_one_requester_does_not_hold_up_another,
    health_counts_a_deferred_backlog_but_no_escalation_due_later,
);

const ESCALATING_POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
max_pending = 1000

[[rules]]
tools = ["escalate_*"]
tier = "medium"
escalate_after = "45s"
escalation_channel = "C0MANAGERS"
expires_after = "60s"
"#;

/// A channel's queue is its main posts waiting, however far ahead pacing deferred them
/// (a backlog comes back in waves, a horizon apart), but escalations due later are
/// timers, not a queue: 70 requests that will escalate leave their channel 69 posts
/// behind (70 s to drain, the first expiry in 60 s) and the managers' channel, whose
/// 70 escalations are due in 45 s, unnamed.
async fn health_counts_a_deferred_backlog_but_no_escalation_due_later(db: TestDb) {
    let app = app::spawn(db, Options::new(ESCALATING_POLICY).with_slack()).await;
    for n in 0..70 {
        ask(&app, &app.token, "escalate_refund", json!({ "n": n })).await;
    }
    app.run_jobs().await;
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let behind = body["behind"].as_array().unwrap();
    assert_eq!(behind.len(), 1, "{body}");
    assert_eq!(behind[0]["channel"], "C0APPROVALS", "{body}");
    assert_eq!(behind[0]["queued_posts"], 69, "{body}");
}
