//! A replica without the bot token beside ones with it (or this server, restarted
//! without its token for a while): what Slack has to do is left to a replica that can
//! do it, neither lost nor spent.

use std::time::Duration;

use serde_json::json;
use signoff::clock::Clock;
use signoff::jobs::Deliveries;
use signoff::outbox::Outbox;
use signoff::scheduler::Scheduler;
use signoff::store::Store;

use crate::common::{TestDb, raw_count};
use crate::helpers::*;

crate::on_both_backends!(
    a_replica_without_slack_claims_no_post_and_leaves_it_to_one_with_it,
    a_reminder_falling_due_on_a_replica_without_slack_is_sent_by_one_with_it,
    an_escalation_falling_due_on_a_replica_without_slack_is_left_for_one_with_it,
);

/// A replica without Slack runs its deliveries (callbacks) beside one with Slack: it
/// claims none of the Slack posts. Before, it claimed them and failed them ("Slack is
/// not configured"), each claim an attempt and a backoff, until they were given up
/// and the requests were never shown.
async fn a_replica_without_slack_claims_no_post_and_leaves_it_to_one_with_it(db: TestDb) {
    let app = spawn_on(db).await;
    app.request("escalate_payout", json!({"amount": 1})).await;
    let store = Store::connect_with(&app.db.url, Deliveries { slack: false })
        .await
        .unwrap();
    let outbox = Outbox::new(store.clone(), None, app.signer.clone()).unwrap();
    let without_slack = Scheduler::with_outbox(store, outbox);
    let claimed = without_slack.deliver_once(app.clock.now()).await.unwrap();
    assert_eq!(claimed, 0, "no Slack delivery claimed");
    let untouched = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_post' AND state = 'ready' \
                     AND attempts = 0 AND locked_until IS NULL";
    assert_eq!(
        raw_count(&app.db, untouched).await,
        1,
        "the post, untouched"
    );
    // The replica with Slack posts it at once: not held by a lease, nor backed off.
    app.run_jobs().await;
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].body["channel"], "C0APPROVALS");
}

/// A reminder falls due while a replica without Slack runs its passes: it leaves the
/// reminder be, and the replica with Slack sends it. Before, it claimed the reminder at
/// each pass and failed it, until it was given up with nobody reminded.
async fn a_reminder_falling_due_on_a_replica_without_slack_is_sent_by_one_with_it(db: TestDb) {
    let app = spawn_on(db).await;
    app.request("remind_rotate", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(30 * 60));
    let outbox = Outbox::new(app.store.clone(), None, app.signer.clone()).unwrap();
    let without_slack = Scheduler::with_outbox(app.store.clone(), outbox);
    for _ in 0..3 {
        without_slack.run_once(app.clock.now()).await.unwrap();
        app.clock.advance(Duration::from_secs(60));
    }
    let untouched = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' AND state = 'ready' \
                     AND attempts = 0";
    assert_eq!(
        raw_count(&app.db, untouched).await,
        1,
        "the reminder, untouched"
    );
    assert!(app.slack.dm_posts().is_empty(), "nobody reminded yet");
    app.run_jobs().await;
    assert!(
        !app.slack.dm_posts().is_empty(),
        "reminded by the replica with Slack"
    );
}

/// The timers of a replica without Slack (or of this server, restarted without its bot
/// token for a while) leave the first reminder and the escalation to a replica with
/// Slack: they could plan neither, and clearing them lost them for good.
async fn an_escalation_falling_due_on_a_replica_without_slack_is_left_for_one_with_it(db: TestDb) {
    let app = spawn_on(db).await;
    app.request("escalate_payout", json!({"amount": 1})).await;
    app.run_jobs().await;
    let without_slack = Store::connect_with(&app.db.url, Deliveries { slack: false })
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(2 * 3600));
    Scheduler::new(without_slack)
        .fire_timers(app.clock.now())
        .await
        .unwrap();
    app.run_jobs().await;
    let to_managers = app.slack.calls_to("chat.postMessage");
    let escalations = to_managers
        .iter()
        .filter(|c| c.body["channel"] == "C0MANAGERS");
    assert_eq!(escalations.count(), 1, "{to_managers:?}");
}
