//! A scheduler told to stop in the middle of a delivery backlog: the deliveries under
//! way finish and are recorded, the ones claimed but not started go back to the queue
//! at once (not after their lease), and it returns without draining the backlog.

use std::sync::Arc;
use std::time::Duration;

use signoff::clock::Clock;

use crate::common::TestDb;
use crate::helpers::*;

/// Posts taking this long each, 8 at a time: the backlog would take about 10 s.
const BACKLOG: usize = 200;
const SLOW: Duration = Duration::from_millis(200);

async fn a_shutdown_mid_backlog_finishes_what_runs_and_hands_back_the_rest(db: TestDb) {
    let app = spawn_policy(db, BACKLOG_POLICY).await;
    backlog(&app, BACKLOG).await;
    app.slack.set_delay(SLOW);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(unpaced(&app).run(
        Arc::new(app.clock.clone()),
        Duration::from_secs(3600),
        stopping,
    ));
    app.slack.wait_for("chat.postMessage", 1).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3), running)
        .await
        .expect("the scheduler returns without draining the backlog")
        .unwrap();
    let before = app.slack.calls_to("chat.postMessage").len();
    assert!(
        (1..BACKLOG / 2).contains(&before),
        "{before} posts before it stopped"
    );

    // Another scheduler at the same moment (no lease has run out) posts the rest,
    // and nothing twice: what was under way at the stop was recorded as posted.
    app.slack.set_delay(Duration::ZERO);
    let again = unpaced(&app);
    while again.run_once(app.clock.now()).await.unwrap() > 0 {}
    assert_eq!(
        app.slack.posts_and_approvals(),
        (BACKLOG, BACKLOG),
        "each approval posted once"
    );
}

crate::on_both_backends!(a_shutdown_mid_backlog_finishes_what_runs_and_hands_back_the_rest);
