//! The `/approvals` slash command.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use signoff::clock::Clock;

use crate::common::fake_slack::Failure;
use crate::helpers::*;

#[tokio::test]
async fn approvals_lists_what_the_caller_may_decide_and_shows_one_by_short_id() {
    let app = spawn_app().await;
    let open = app.request("a", json!({"x": 1})).await;
    let deploy = app
        .request(
            "deploy_api",
            json!({"service": "api", "environment": "prod"}),
        )
        .await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(1));
    app.run_jobs().await;

    let (status, reply) = app.command("U0MALLORY", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["response_type"], "ephemeral");
    let text = reply.to_string();
    assert!(text.contains(&open.id.short()), "{text}");
    assert!(
        !text.contains(&deploy.id.short()),
        "Mallory may not decide deploys: {text}"
    );
    assert!(
        text.contains("https://example.slack.com/archives/"),
        "links to the message: {text}"
    );

    let (_, reply) = app.command("U0ALICE", "pending").await;
    assert!(reply.to_string().contains(&deploy.id.short()));

    let (_, reply) = app
        .command("U0ALICE", &format!("status {}", deploy.id.short()))
        .await;
    let text = reply.to_string();
    assert!(
        text.contains("deploy_api") && text.contains("pending"),
        "{text}"
    );

    let (_, reply) = app.command("U0ALICE", "status 0000dead").await;
    assert!(reply.to_string().contains("No approval matches"));
    let (_, reply) = app.command("U0ALICE", "help").await;
    assert!(reply.to_string().contains("/approvals"));
    let (_, reply) = app.command("U0ALICE", "frobnicate").await;
    assert!(reply.to_string().contains("Usage"), "{reply}");
}

/// A backlog longer than any page: `/approvals` counts every request the caller may
/// decide, not the oldest few hundred, and lists the oldest first.
/// 620 waiting: read in two chunks, the first 20 shown, every one counted.
#[tokio::test]
async fn approvals_counts_a_backlog_of_any_length() {
    let app = spawn_app().await;
    let policy = signoff::policy::Policy::from_toml_str(
        "[defaults]\nchannel = \"C0APPROVALS\"\nmax_pending = 0\n",
    )
    .unwrap();
    let mut creating = tokio::task::JoinSet::new();
    for n in 0..620 {
        let (store, now) = (app.store.clone(), signoff::clock::Clock::now(&app.clock));
        let mut request = signoff::approval::NewApproval::new("purge", json!({ "n": n }));
        request.token_name = Some("agent".into());
        let class = policy.classify("purge", &request.parameters, None);
        creating.spawn(async move { store.create(request, class, now).await.unwrap() });
    }
    while let Some(created) = creating.join_next().await {
        assert!(created.unwrap().created);
    }
    let (status, reply) = app.command("U0ALICE", "").await;
    assert_eq!(status, StatusCode::OK);
    let text = reply.to_string();
    assert!(text.contains("620 requests are waiting for you"), "{text}");
    assert!(text.contains("… and 600 more"), "{text}");
}

/// A request listed for the reader through a user group, when Slack does not list the
/// group's members: not shown (fail closed), but the reply says it could not be checked
/// rather than that nothing waits; once Slack answers, it is listed.
#[tokio::test]
async fn approvals_says_when_a_user_group_could_not_be_checked() {
    let app = spawn_app().await;
    app.slack.set_group("S0SRE", &["U0CAROL"]);
    app.posted_deploy("prod").await;
    app.slack
        .fail_next("usergroups.users.list", Failure::NotOk("internal_error"));
    let (status, reply) = app.command("U0CAROL", "").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let text = reply.to_string();
    assert!(
        text.contains("1 request could not be checked just now"),
        "{text}"
    );
    assert!(!text.contains("deploy_api"), "{text}");
    let (_, reply) = app.command("U0CAROL", "").await;
    let text = reply.to_string();
    assert!(text.contains("1 request is waiting for you"), "{text}");
    assert!(!text.contains("could not be checked"), "{text}");
}

/// A prefix that starts more ids than are looked at (50) is too short to say which one
/// is meant, whether or not one of those looked at may be seen.
#[tokio::test]
async fn approvals_status_asks_for_more_of_an_id_that_starts_too_many() {
    let app = spawn_app().await;
    let expires = crate::common::sql_time(&app.db, app.clock.now() + chrono::Duration::hours(1));
    let now = crate::common::sql_time(&app.db, app.clock.now());
    let rows = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60) \
         INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, requested_by, \
         expires_at, created_at) SELECT printf('0000%04x-0000-4000-8000-%012x', i, i), \
         'bulk_tool', '{{}}', 'medium', 'agent-7', {expires}, {now} FROM n"
    );
    crate::common::raw_execute(&app.db, &rows).await.unwrap();
    let (status, reply) = app.command("U0ALICE", "status 0000").await;
    assert_eq!(status, StatusCode::OK);
    let text = reply.to_string();
    assert!(
        text.contains("`0000` is too short to say which approval it names"),
        "{text}"
    );
    let (_, reply) = app.command("U0ALICE", "status 00000001").await;
    let text = reply.to_string();
    assert!(text.contains("No approval matches `00000001`"), "{text}");
}

/// A store that cannot be read (here its table renamed away) is answered in words the
/// typist sees, not a 503 Slack would show as its own failure.
#[tokio::test]
async fn approvals_says_so_when_the_store_cannot_be_read() {
    let app = spawn_app().await;
    app.request("deploy", json!({"env": "prod"})).await;
    crate::common::raw_execute(&app.db, "ALTER TABLE pending_approvals RENAME TO moved")
        .await
        .unwrap();
    let (status, reply) = app.command("U0ALICE", "").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let text = reply.to_string();
    assert!(
        text.contains("could not read the approvals just now"),
        "{text}"
    );
    assert_eq!(reply["response_type"], "ephemeral", "{reply}");
}

/// Slack's certificate check of the command URL (`ssl_check=1`, no command) gets the
/// 200 Slack asks for, signed or not, and does nothing; a command is still refused
/// unsigned, `ssl_check` or not.
#[tokio::test]
async fn slacks_certificate_check_gets_a_bare_200_and_commands_still_need_a_signature() {
    let app = spawn_app().await;
    let post = |body: &'static str| {
        app.http
            .post(format!("{}/slack/commands", app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let check = post("ssl_check=1&token=legacy").await.unwrap();
    assert_eq!(check.status(), StatusCode::OK);
    assert_eq!(check.text().await.unwrap(), "");
    let (status, body) = app
        .post_signed(
            "/slack/commands",
            "ssl_check=1&token=legacy",
            SECRET,
            app.clock.now().timestamp(),
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));

    let sneaked = post("ssl_check=1&command=%2Fapprovals&user_id=U0ALICE&text=pending");
    assert_eq!(sneaked.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let unsigned = post("command=%2Fapprovals&user_id=U0ALICE&text=pending");
    assert_eq!(unsigned.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert!(app.slack.calls().is_empty(), "nothing sent to Slack");
}
