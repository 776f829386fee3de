//! A slow Slack and a delivery backlog longer than the lease: a replica starts its
//! claimed deliveries only in the first half of their lease and hands the rest back,
//! so another replica that claims after the lease has run out never sends one twice.
//! A holder that overran its lease anyway is fenced out: its report changes nothing
//! of the job the other replica holds. A report that fails cuts off no delivery under
//! way, and the deliveries not started go back at once.

use std::time::Duration;

use serde_json::json;
use signoff::clock::Clock;

use crate::common::app::{Options, PATIENT};
use crate::common::fake_slack::Failure;
use crate::common::{TestDb, raw_count, refuse};
use crate::helpers::*;

/// Posts taking this long each, 8 at a time: the backlog would take about 1.8 s, and
/// its last jobs would start after their lease.
const BACKLOG: usize = 96;
const SLOW: Duration = Duration::from_millis(150);
const LEASE: Duration = Duration::from_secs(1);

async fn a_backlog_longer_than_the_lease_is_never_posted_twice_by_two_replicas(db: TestDb) {
    let app = spawn_policy(db, BACKLOG_POLICY).await;
    backlog(&app, BACKLOG).await;
    let replica = || unpaced(&app).with_lease(LEASE);
    app.slack.set_delay(SLOW);
    let first = {
        let (scheduler, now) = (replica(), app.clock.now());
        tokio::spawn(async move { scheduler.run_once(now).await })
    };

    // Well after the first replica's lease has run out (on the clock both read, and
    // in real time), the second claims what is due: what the first had not started
    // by half its lease, not what it started and is still sending.
    tokio::time::sleep(LEASE + LEASE / 2).await;
    app.clock.advance(LEASE * 2);
    let second = replica();
    let claimed = second.run_once(app.clock.now()).await.unwrap();
    assert_eq!(
        first.await.unwrap().unwrap(),
        BACKLOG,
        "the first replica claimed the whole backlog"
    );
    assert!(
        (1..BACKLOG).contains(&claimed),
        "the first replica handed back {claimed} of {BACKLOG} it had not started"
    );
    app.slack.set_delay(Duration::ZERO);
    while second.run_once(app.clock.now()).await.unwrap() > 0 {}
    assert_eq!(
        app.slack.posts_and_approvals(),
        (BACKLOG, BACKLOG),
        "each approval posted once"
    );
}

crate::on_both_backends!(a_backlog_longer_than_the_lease_is_never_posted_twice_by_two_replicas);

/// Each Slack call of the reminder takes this long, and the lease is this short (on
/// the manual clock, which the test moves past it while the first holder sends).
const SENDING: Duration = Duration::from_millis(300);
const SHORT_LEASE: Duration = Duration::from_secs(6);

async fn a_reminder_whose_holder_overran_its_lease_plans_one_next_reminder(db: TestDb) {
    let app = spawn_on(db).await;
    app.request("remind_rotate", json!({})).await;
    app.run_jobs().await;
    app.clock.advance(Duration::from_secs(30 * 60));
    app.slack.set_delay(SENDING);
    let replica = || unpaced(&app).with_lease(SHORT_LEASE);
    let first = {
        let (scheduler, now) = (replica(), app.clock.now());
        tokio::spawn(async move { scheduler.run_once(now).await })
    };
    app.slack.wait_for("conversations.open", 1).await;
    // While the first holder sends, its lease runs out on the clock and another
    // replica claims the reminder and sends it too (the first cannot be stopped).
    app.clock.advance(SHORT_LEASE + Duration::from_secs(1));
    let second = replica().run_once(app.clock.now()).await.unwrap();
    assert_eq!(second, 1, "the second replica claimed the reminder");
    first.await.unwrap().unwrap();
    let reminders = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind'";
    assert_eq!(
        raw_count(&app.db, reminders).await,
        1,
        "one next reminder, from the report of the lease's holder"
    );

    // An hour on, the approvers are reminded once each, not twice.
    app.slack.set_delay(Duration::ZERO);
    let opened = app.slack.calls_to("conversations.open").len();
    app.clock.advance(Duration::from_secs(3600));
    app.run_jobs().await;
    assert_eq!(
        app.slack.calls_to("conversations.open").len() - opened,
        2,
        "Alice and Bob, once each"
    );
}

crate::on_both_backends!(a_reminder_whose_holder_overran_its_lease_plans_one_next_reminder);

async fn a_report_that_fails_cuts_off_no_delivery_and_hands_back_those_not_started(db: TestDb) {
    let options = Options::new(BACKLOG_POLICY).with_slack_timeout(PATIENT);
    let app = spawn_with(db, options).await;
    backlog(&app, 20).await;
    // Eight posts start at once: the first answered at once, its report refused by
    // the database; the seven others answered a moment later.
    let first_ts = format!("1700000000.{:06}", app.slack.calls().len() + 1);
    let refused = format!("NEW.ts = '{first_ts}'");
    refuse(&app.db, "INSERT", "slack_messages", &refused, "disk full").await;
    app.slack
        .fail_next("chat.postMessage", Failure::Slow(Duration::ZERO));
    for _ in 0..7 {
        let slow = Failure::Slow(Duration::from_millis(300));
        app.slack.fail_next("chat.postMessage", slow);
    }
    let replica = unpaced(&app);
    let pass = replica.run_once(app.clock.now()).await;
    assert!(pass.is_err(), "the failed report is the pass's error");
    let recorded = "SELECT COUNT(*) FROM slack_messages";
    assert_eq!(
        raw_count(&app.db, recorded).await,
        7,
        "the seven under way were recorded, not cut off"
    );

    // At the same moment (no lease has run out), the twelve not started are free.
    replica.run_once(app.clock.now()).await.unwrap();
    assert_eq!(
        app.slack.posts_and_approvals(),
        (20, 20),
        "each posted once"
    );
    assert_eq!(
        raw_count(&app.db, recorded).await,
        19,
        "the refused one waits out its lease"
    );
}

crate::on_both_backends!(a_report_that_fails_cuts_off_no_delivery_and_hands_back_those_not_started);
