//! A Slack that answers nothing holds up neither the timers nor the deliveries for
//! long: expiries and audit checkpoints run in a loop of their own, every delivery job
//! has a time limit below half its lease, and a reminder's DMs and an approval's
//! message updates go out a few at a time, each job reporting what Slack took by its
//! deadline. (Callbacks to a receiver that never answers: `slow_callbacks`.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use signoff::approval::{Approval, Status};
use signoff::clock::Clock;
use signoff::jobs::Deliveries;
use signoff::signing::Signer;
use signoff::store::Store;

use crate::common::app::{Options, PATIENT};
use crate::common::fake_slack::Failure;
use crate::common::{TestDb, raw_count, raw_execute, sql_time};
use crate::helpers::*;

/// Five approvers to remind, one approval to decide; other requests expire in an hour.
const FIVE_APPROVERS: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "1h"

[[rules]]
tools = ["remind_*"]
tier = "medium"
approvers = ["U01", "U02", "U03", "U04", "U05"]
remind_after = "30m"
remind_every = "1h"
expires_after = "4h"
"#;

/// [`FIVE_APPROVERS`] with a sixth: one more than a reminder's DMs under way at once
/// and the one answered.
const SIX_APPROVERS: &str = r#"
[defaults]
channel = "C0APPROVALS"

[[rules]]
tools = ["remind_*"]
tier = "medium"
approvers = ["U01", "U02", "U03", "U04", "U05", "U06"]
remind_after = "30m"
remind_every = "1h"
expires_after = "4h"
"#;

/// Slack "never" answers (the replicas' clients give up after 10 s).
const NEVER: Duration = Duration::from_secs(3600);
/// A lease short enough that a job's time limit (2/5 of it) is under a second.
const LEASE: Duration = Duration::from_secs(2);

crate::on_both_backends!(
    expiries_and_checkpoints_do_not_wait_for_a_reminder_slack_never_answers,
    a_reminder_slack_never_answers_ends_within_its_time_limit_and_is_retried,
    a_reminder_slack_hangs_on_for_one_approver_reminds_the_others_once,
    updates_slack_hangs_on_for_one_message_reach_the_others_and_the_last_later,
    a_retry_waits_from_when_its_attempt_ended,
    the_rest_of_an_update_slack_took_in_part_waits_from_when_its_attempt_ended,
    a_reminder_dm_slack_took_as_its_time_ran_out_is_found_and_loses_its_buttons,
    a_reminder_dm_whose_post_timed_out_is_found_and_loses_its_buttons,
    dms_a_reminder_had_no_time_to_send_are_sent_in_the_same_round,
    a_reminder_cut_off_before_any_answer_is_retried_once_its_dms_may_show,
    a_reminder_given_up_for_running_out_of_time_plans_the_next_one,
);

/// The app under [`FIVE_APPROVERS`] with a request asked through the API for `tool`,
/// posted.
async fn posted(db: TestDb, tool: &str) -> (TestApp, Approval) {
    posted_with(db, tool, Options::new(FIVE_APPROVERS).with_slack()).await
}

/// [`posted`], the app started with `options`.
async fn posted_with(db: TestDb, tool: &str, options: Options<'_>) -> (TestApp, Approval) {
    let app = spawn_with(db, options).await;
    let body = json!({ "tool_name": tool, "parameters": {} });
    let approval = asked(&app, &app.token, &body).await;
    app.run_jobs().await;
    (app, approval)
}

/// The reminder, retried once, up to its last attempt and due (2 s on).
async fn to_its_last_attempt(app: &TestApp) {
    let last = "UPDATE jobs SET attempts = 20 WHERE kind = 'slack_remind'";
    assert_eq!(raw_execute(&app.db, last).await, Ok(1));
    app.clock.advance(Duration::from_secs(2));
}

/// Reminders ready and due an hour (the policy's `remind_every`) from now.
async fn next_reminders(app: &TestApp) -> i64 {
    let next = format!(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' AND state = 'ready' \
         AND due_at = {}",
        sql_time(&app.db, app.clock.now() + chrono::Duration::hours(1))
    );
    raw_count(&app.db, &next).await
}

fn reminders_retried(app: &TestApp) -> impl Future<Output = i64> + '_ {
    let sql = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' \
               AND locked_until IS NULL AND last_error IS NOT NULL";
    raw_count(&app.db, sql)
}

async fn expiries_and_checkpoints_do_not_wait_for_a_reminder_slack_never_answers(db: TestDb) {
    let (app, _) = posted(db, "remind_rotate").await;
    let body = json!({ "tool_name": "restart_db", "parameters": {} });
    let expiring = asked(&app, &app.token, &body).await;
    app.run_jobs().await;
    // A replica that signs checkpoints runs the scheduler's loops.
    let signer = Signer::generate();
    let deliveries = Deliveries { slack: true };
    let signing = Store::connect_signing(&app.db.url, deliveries, Some(signer))
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack.set_delay(NEVER);
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let clock = Arc::new(app.clock.clone());
    let every = Duration::from_millis(20);
    let running = tokio::spawn(unpaced_on(&app, signing.clone()).run(clock, every, stopping));
    app.slack.wait_for("conversations.open", 1).await;

    // While the reminder waits on Slack, the other request's hour is up.
    app.clock.advance(Duration::from_secs(30 * 60));
    let mut expired = false;
    for _ in 0..100 {
        expired = app.approval(&expiring).await.status == Status::Expired;
        if expired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        expired,
        "expired within two seconds, the reminder still waiting"
    );
    let (head, _) = signing.audit_head().await.unwrap();
    let checkpoint = signing.audit_checkpoints().await.unwrap().pop();
    assert_eq!(
        checkpoint.map(|c| (c.seq, c.at)),
        Some((head, app.clock.now())),
        "the expiry is signed as it happens"
    );
    running.abort();
}

async fn a_reminder_slack_never_answers_ends_within_its_time_limit_and_is_retried(db: TestDb) {
    let (app, _) = posted(db, "remind_rotate").await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack.set_delay(NEVER);
    let replica = unpaced(&app).with_lease(LEASE);
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    assert_eq!(
        app.slack.calls_to("conversations.open").len(),
        4,
        "four DMs under way at once, the fifth not started"
    );
    assert_eq!(reminders_retried(&app).await, 1, "nobody reminded: retried");
}

async fn a_reminder_slack_hangs_on_for_one_approver_reminds_the_others_once(db: TestDb) {
    let (app, _) = posted(db, "remind_rotate").await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack.fail_next("conversations.open", Failure::Hang);
    let replica = unpaced(&app).with_lease(LEASE);
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    assert_eq!(app.slack.dm_posts().len(), 4, "the four others reminded");
    assert_eq!(reminders_retried(&app).await, 0, "not retried");
    // The DM still opening its channel cannot have reached Slack: the job that follows
    // sends it, in the same round, then plans the next reminder.
    let lookup = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind_lookup'";
    assert_eq!(raw_count(&app.db, lookup).await, 1, "the rest of the round");
    replica.run_once(app.clock.now()).await.unwrap();
    app.clock.advance(Duration::from_secs(30));
    replica.run_once(app.clock.now()).await.unwrap();
    assert_eq!(raw_count(&app.db, lookup).await, 0, "done");
    let next = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' AND locked_until IS NULL";
    assert_eq!(raw_count(&app.db, next).await, 1, "the next reminder");
    assert_eq!(
        app.slack.dm_posts().len(),
        5,
        "the fifth reminded in the same round, nobody twice"
    );
}

/// A reminder DM Slack took but answered too late for its job: recorded all the same
/// (found in the DM's history by a lookup after the reminder), so that it loses its
/// buttons at the decision like every other message.
async fn a_reminder_dm_slack_took_as_its_time_ran_out_is_found_and_loses_its_buttons(db: TestDb) {
    let (app, approval) = posted(db, "remind_rotate").await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    let replica = unpaced(&app).with_lease(LEASE);
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    assert_eq!(app.slack.dm_posts().len(), 5, "all five sent");
    let recorded = app.store.messages(approval.id).await.unwrap();
    assert_eq!(recorded.len(), 5, "the one Slack hung on not recorded");

    app.click(&approval, "U01", "approve").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);
    app.clock.advance(Duration::from_secs(30));
    for _ in 0..3 {
        replica.run_once(app.clock.now()).await.unwrap();
    }
    found_and_decided(&app, &approval).await;
    let reminders = "SELECT COUNT(*) FROM jobs WHERE kind LIKE 'slack_remind%'";
    assert_eq!(
        raw_count(&app.db, reminders).await,
        0,
        "decided: no next reminder"
    );
}

/// The channel message and five reminder DMs, the one looked up among them, are
/// recorded and show the decision; nobody was reminded twice.
async fn found_and_decided(app: &TestApp, approval: &Approval) {
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages.len(), 6, "found and recorded");
    let live: Vec<Value> = messages
        .iter()
        .filter_map(|m| app.slack.shown(&m.channel, &m.ts))
        .filter(|shown| !action_ids(shown).is_empty())
        .collect();
    assert!(
        live.is_empty(),
        "every message shows the decision: {live:?}"
    );
    assert_eq!(app.slack.dm_posts().len(), 5, "nobody reminded twice");
}

/// A reminder DM Slack took whose `chat.postMessage` timed out on signoff's side (the
/// Slack client gives up long before the job's deadline), the others delivered:
/// looked up and recorded all the same, so that it loses its buttons at the decision.
async fn a_reminder_dm_whose_post_timed_out_is_found_and_loses_its_buttons(db: TestDb) {
    let (app, approval) = posted(db, "remind_rotate").await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    app.run_jobs().await;
    assert_eq!(app.slack.dm_posts().len(), 5, "all five sent");
    let recorded = app.store.messages(approval.id).await.unwrap();
    assert_eq!(recorded.len(), 5, "the one that timed out not recorded");
    let lookup = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind_lookup'";
    assert_eq!(raw_count(&app.db, lookup).await, 1, "it is looked up");

    app.click(&approval, "U01", "approve").await;
    app.clock.advance(Duration::from_secs(30));
    for _ in 0..3 {
        app.run_jobs().await;
    }
    found_and_decided(&app, &approval).await;
}

/// A reminder whose time runs out with DMs in every state: the DM whose post is under
/// way (Slack took it) is looked up and recorded; those that cannot have reached Slack
/// (still opening their DM channel, or not started: a few go out at once) are sent in
/// the same round by the job that follows, rather than looked up for nothing and left
/// for the next reminder. Nobody is reminded twice.
async fn dms_a_reminder_had_no_time_to_send_are_sent_in_the_same_round(db: TestDb) {
    let app = spawn_policy(db, SIX_APPROVERS).await;
    let body = json!({ "tool_name": "remind_rotate", "parameters": {} });
    let approval = asked(&app, &app.token, &body).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(30 * 60));
    // Of the first four DMs, Slack hangs on two as they open their channel, takes one
    // and hangs on the answer, and answers the fourth; then it hangs on the fifth as
    // it opens: at the deadline four are under way and the sixth not started.
    let open = [Failure::Hang, Failure::Hang, Failure::Slow(Duration::ZERO)];
    let open = open
        .into_iter()
        .chain([Failure::Slow(Duration::ZERO), Failure::Hang]);
    for failure in open {
        app.slack.fail_next("conversations.open", failure);
    }
    app.slack
        .fail_next("chat.postMessage", Failure::PostThenHang);
    let replica = unpaced(&app).with_lease(LEASE);
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    assert_eq!(app.slack.calls_to("conversations.open").len(), 5);
    assert_eq!(app.slack.dm_posts().len(), 2, "one answered, one taken");
    assert_eq!(app.store.messages(approval.id).await.unwrap().len(), 2);

    app.clock.advance(Duration::from_secs(30));
    replica.run_once(app.clock.now()).await.unwrap();
    let mut reminded: Vec<String> = app
        .slack
        .dm_posts()
        .iter()
        .map(|dm| dm["channel"].as_str().unwrap_or_default().to_owned())
        .collect();
    reminded.sort();
    let everyone = ["DU01", "DU02", "DU03", "DU04", "DU05", "DU06"];
    assert_eq!(reminded, everyone, "each once, in the same round");
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages.len(), 7, "every DM recorded, the one taken too");
    let lookup = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind_lookup'";
    assert_eq!(raw_count(&app.db, lookup).await, 0, "the round is over");
    let next = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' AND locked_until IS NULL";
    assert_eq!(raw_count(&app.db, next).await, 1, "the next reminder");
}

/// A reminder whose every DM was cut off at its deadline, Slack having taken them: its
/// retry waits as long as a lookup would (30 s), so that the DMs show in Slack's
/// history by then and are found there, not sent again.
async fn a_reminder_cut_off_before_any_answer_is_retried_once_its_dms_may_show(db: TestDb) {
    let (app, approval) = posted(db, "remind_rotate").await;
    app.clock.advance(Duration::from_secs(30 * 60));
    for _ in 0..4 {
        app.slack
            .fail_next("chat.postMessage", Failure::PostThenHang);
    }
    let replica = unpaced(&app).with_lease(LEASE);
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    assert_eq!(
        app.slack.dm_posts().len(),
        4,
        "four under way, none answered"
    );
    assert_eq!(reminders_retried(&app).await, 1, "nobody reminded: retried");

    app.clock.advance(Duration::from_secs(29));
    replica.run_once(app.clock.now()).await.unwrap();
    assert_eq!(
        app.slack.calls_to("conversations.open").len(),
        4,
        "not retried before its DMs may show in Slack's history"
    );
    app.clock.advance(Duration::from_secs(1));
    replica.run_once(app.clock.now()).await.unwrap();
    assert_eq!(
        app.slack.dm_posts().len(),
        5,
        "the fifth reminded, nobody twice"
    );
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages.len(), 6, "every DM recorded");
}

/// A reminder that runs out of its job's time limit at every attempt (Slack hangs on
/// its user group) is given up at the last one, and plans the next reminder all the
/// same, as a reminder given up for any other reason does.
async fn a_reminder_given_up_for_running_out_of_time_plans_the_next_one(db: TestDb) {
    let app = spawn_on(db).await;
    app.request("remind_rotate", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack.fail_next("usergroups.users.list", Failure::Hang);
    let replica = unpaced(&app).with_lease(LEASE);
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    assert_eq!(reminders_retried(&app).await, 1, "out of time: retried");
    // Up to its last attempt, the group still not answered.
    to_its_last_attempt(&app).await;
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    let dead = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' AND state = 'dead'";
    assert_eq!(raw_count(&app.db, dead).await, 1, "given up");
    assert_eq!(next_reminders(&app).await, 1, "the next reminder");
}

/// An update Slack takes in part, answering late (the manual clock moves on while it
/// is under way) and refusing one message with a 429: the update of the rest waits
/// Slack's `Retry-After` from the answer, not from when the attempt began.
async fn the_rest_of_an_update_slack_took_in_part_waits_from_when_its_attempt_ended(db: TestDb) {
    let options = Options::new(FIVE_APPROVERS).with_slack_timeout(PATIENT);
    let (app, approval) = posted_with(db, "remind_rotate", options).await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    assert_eq!(app.store.messages(approval.id).await.unwrap().len(), 6);
    app.click(&approval, "U01", "approve").await;
    let began = app.clock.now();
    app.slack.set_delay(Duration::from_millis(300));
    let limited = Failure::RateLimited {
        retry_after_secs: 30,
    };
    app.slack.fail_next("chat.update", limited);
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let clock = Arc::new(app.clock.clone());
    let every = Duration::from_secs(3600);
    let running = tokio::spawn(unpaced(&app).run(clock, every, stopping));
    app.slack.wait_for("chat.update", 1).await;
    app.clock.advance(Duration::from_secs(20));

    let rest = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_update' AND locked_until IS NULL";
    let mut reported = false;
    for _ in 0..100 {
        reported = raw_count(&app.db, rest).await == 1;
        if reported {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reported, "the rest follows in an update of its own");
    assert_eq!(app.slack.calls_to("chat.update").len(), 6);
    let due = began + chrono::Duration::seconds(50);
    let sql = format!(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_update' AND due_at = {}",
        sql_time(&app.db, due)
    );
    assert_eq!(
        raw_count(&app.db, &sql).await,
        1,
        "due 30 s after the answer"
    );
    running.abort();
}

async fn updates_slack_hangs_on_for_one_message_reach_the_others_and_the_last_later(db: TestDb) {
    let (app, approval) = posted(db, "remind_rotate").await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.run_jobs().await;
    let messages = app.store.messages(approval.id).await.unwrap();
    assert_eq!(messages.len(), 6, "its channel message and five reminders");
    app.click(&approval, "U01", "approve").await;
    assert_eq!(app.approval(&approval).await.status, Status::Approved);

    app.slack.fail_next("chat.update", Failure::Hang);
    let replica = unpaced(&app).with_lease(LEASE);
    let pass = tokio::time::timeout(LEASE / 2, replica.run_once(app.clock.now())).await;
    assert!(pass.is_ok(), "the pass ended within half the lease");
    let live = |app: &TestApp| -> Vec<Value> {
        messages
            .iter()
            .filter_map(|m| app.slack.shown(&m.channel, &m.ts))
            .filter(|shown| !action_ids(shown).is_empty())
            .collect()
    };
    assert_eq!(app.slack.calls_to("chat.update").len(), 6);
    assert_eq!(
        live(&app).len(),
        1,
        "the message Slack hung on keeps its buttons"
    );
    app.clock.advance(Duration::from_secs(1));
    replica.run_once(app.clock.now()).await.unwrap();
    assert_eq!(
        app.slack.calls_to("chat.update").len(),
        7,
        "that one, again"
    );
    assert!(live(&app).is_empty(), "every message shows the decision");
}

/// A post that Slack answers only after a long wait (the manual clock moves on while
/// it is under way), and then with a 429: the retry waits Slack's `Retry-After` from
/// the answer, not from when the attempt began.
async fn a_retry_waits_from_when_its_attempt_ended(db: TestDb) {
    let options = Options::new(FIVE_APPROVERS).with_slack_timeout(PATIENT);
    let app = spawn_with(db, options).await;
    let began = app.clock.now();
    app.slack.set_delay(Duration::from_millis(300));
    let limited = Failure::RateLimited {
        retry_after_secs: 30,
    };
    app.slack.fail_next("chat.postMessage", limited);
    let body = json!({ "tool_name": "restart_db", "parameters": {} });
    asked(&app, &app.token, &body).await;
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let clock = Arc::new(app.clock.clone());
    let every = Duration::from_secs(3600);
    let running = tokio::spawn(unpaced(&app).run(clock, every, stopping));
    app.slack.wait_for("chat.postMessage", 1).await;
    app.clock.advance(Duration::from_secs(20));

    let retried = "SELECT COUNT(*) FROM jobs WHERE last_error IS NOT NULL";
    let mut reported = false;
    for _ in 0..100 {
        reported = raw_count(&app.db, retried).await == 1;
        if reported {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reported, "the refusal is recorded");
    let due = began + chrono::Duration::seconds(50);
    let sql = format!(
        "SELECT COUNT(*) FROM jobs WHERE due_at = {}",
        sql_time(&app.db, due)
    );
    assert_eq!(
        raw_count(&app.db, &sql).await,
        1,
        "due 30 s after the answer"
    );
    running.abort();
}
