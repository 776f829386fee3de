//! `SIGNOFF_SLACK_POST_INTERVAL`: a server pointed at a Slack fake that sets it to `0s`
//! posts a burst to one channel at once instead of one message a second.

use std::time::Duration;

use crate::common;
use crate::common::fake_slack::FakeSlack;
use crate::common::server::{Server, eventually, signoff};

const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
max_pending = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_post_interval_posts_a_burst_to_one_channel_at_once() {
    let db = common::sqlite();
    let token = signoff(&["token", "create", "agent"], &db.url);
    let slack = FakeSlack::start().await;
    let server = Server::start_with_slack(
        &db.url,
        &slack.url,
        POLICY,
        &[("SIGNOFF_SLACK_POST_INTERVAL", "0s")],
    );
    const BURST: usize = 25;
    for n in 0..BURST {
        let body = serde_json::json!({"tool_name": "delete_records", "parameters": {"n": n}});
        assert_eq!(server.ask(&token, &body).await.status(), 201);
    }
    // Paced, the burst would take 25 s; unpaced it is posted within a few ticks.
    let posted = eventually(Duration::from_secs(8), || {
        slack.calls_to("chat.postMessage").len() >= BURST
    })
    .await;
    assert!(
        posted,
        "posted {} of {BURST}",
        slack.calls_to("chat.postMessage").len()
    );
}
