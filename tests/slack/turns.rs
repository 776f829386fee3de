//! A delivery claimed in a pass may wait for its turn (eight run at a time) up to half
//! its lease: it runs at the time it starts, not at its pass's.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use signoff::clock::Clock;

use crate::common::{TestDb, raw_count, sql_time};
use crate::helpers::*;

crate::on_both_backends!(a_post_that_waited_for_its_turn_is_recorded_at_the_time_it_started);

/// Nine posts in one pass, Slack slow to answer: the ninth starts once the manual
/// clock has moved ten minutes on, and its message is recorded then.
async fn a_post_that_waited_for_its_turn_is_recorded_at_the_time_it_started(db: TestDb) {
    let app = spawn_on(db).await;
    for n in 0..9 {
        let body = json!({"tool_name": "nudge_me", "parameters": {"n": n}});
        asked(&app, &app.token, &body).await;
    }
    let claimed = app.clock.now();
    app.slack.set_delay(Duration::from_millis(500));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let clock = Arc::new(app.clock.clone());
    let every = Duration::from_millis(20);
    let running = tokio::spawn(unpaced(&app).run(clock, every, stopping));
    app.slack.wait_for("chat.postMessage", 8).await;
    let waited = Duration::from_secs(600);
    app.clock.advance(waited);
    app.slack.wait_for("chat.postMessage", 9).await;
    let recorded = "SELECT COUNT(*) FROM slack_messages";
    for _ in 0..250 {
        if raw_count(&app.db, recorded).await == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    running.await.unwrap();
    let at = |time| format!("SELECT COUNT(*) FROM slack_messages WHERE created_at = {time}");
    let started = claimed + chrono::Duration::from_std(waited).unwrap();
    let late = raw_count(&app.db, &at(sql_time(&app.db, started))).await;
    assert_eq!(late, 1, "the ninth, at the time it started");
    let first = raw_count(&app.db, &at(sql_time(&app.db, claimed))).await;
    assert_eq!(first, 8, "the first eight, at their pass's time");
}
