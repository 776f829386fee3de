//! `GET /v1/approvals/events`: one stream of the decisions on the caller's approvals
//! (what lets `signoff proxy` hold a thousand calls on one connection).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::approval::{Decider, Decision, Event};
use signoff::clock::Clock;

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(
    the_stream_says_ready_then_sends_each_decision_on_the_callers_approvals_only
);

/// A server-sent event stream, read event by event.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The stream `response` carries.
    pub fn from_response(response: reqwest::Response) -> Events {
        Events {
            response,
            buffer: String::new(),
        }
    }

    pub async fn open(app: &TestApp, token: &str) -> Events {
        Events::open_at(app, &app.address, token).await
    }

    /// A stream of the server at `address` (the app's, or a replica's).
    pub async fn open_at(app: &TestApp, address: &str, token: &str) -> Events {
        let response = app
            .http
            .get(format!("{address}/v1/approvals/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a server-sent event stream"
        );
        // Not held back by a reverse proxy (nginx) until it is whole.
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Events::from_response(response)
    }

    /// The next named event (keep-alive comments skipped): its name and data.
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if name.is_empty() {
                    continue;
                }
                return (name, serde_json::from_str(&data).expect("JSON data"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream stays open")
                .expect("the stream did not end");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Waits up to `within` for the server to end the stream: the names of the events
    /// sent before it did, or `None` if it is still open.
    pub async fn end(&mut self, within: Duration) -> Option<Vec<String>> {
        let ended = async {
            while let Some(chunk) = self
                .response
                .chunk()
                .await
                .expect("the stream ends cleanly")
            {
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        };
        tokio::time::timeout(within, ended).await.ok()?;
        let names = self
            .buffer
            .lines()
            .filter_map(|line| line.strip_prefix("event: "))
            .map(str::to_owned)
            .collect();
        Some(names)
    }

    /// Whether an event arrives within `within`.
    async fn quiet_for(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.next()).await.is_err()
    }
}

fn vote(decision: Decision, reason: Option<&str>) -> Event {
    Event::Vote {
        by: Decider::approver("U1"),
        decision,
        reason: reason.map(str::to_owned),
        parameters_shown: None,
    }
}

async fn the_stream_says_ready_then_sends_each_decision_on_the_callers_approvals_only(db: TestDb) {
    let app = spawn_on(db).await;
    let mut events = Events::open(&app, &app.token).await;
    assert_eq!(events.next().await.0, "ready");

    let other = new_token(&app.store, &app.clock, "other-agent").await;
    let (_, theirs) = app
        .post_as(
            &other,
            "/v1/approvals",
            &json!({"tool_name": "delete_repo", "parameters": {"repo": "theirs"}}),
        )
        .await;
    let theirs = theirs["approval_id"].as_str().unwrap().parse().unwrap();
    let denied = vote(Decision::Deny, Some("not theirs to see"));
    app.store
        .apply(theirs, denied, app.clock.now())
        .await
        .unwrap();

    let first = app.request("delete_repo", json!({"repo": "a"})).await;
    let second = app.request("delete_repo", json!({"repo": "b"})).await;
    assert!(
        events.quiet_for(Duration::from_millis(200)).await,
        "nothing for new pending requests, nor for another token's decision"
    );

    app.approve(&second, "U1").await;
    let (name, view) = events.next().await;
    assert_eq!(name, "approval");
    assert_eq!(view["approval_id"], second.as_str());
    assert_eq!(view["status"], "approved");
    assert_eq!(view["parameters"], json!({"repo": "b"}));

    let denied = vote(Decision::Deny, Some("wrong repo"));
    let first_id = first.parse().unwrap();
    app.store
        .apply(first_id, denied, app.clock.now())
        .await
        .unwrap();
    let (_, view) = events.next().await;
    assert_eq!(view["approval_id"], first.as_str());
    assert_eq!(view["status"], "denied");
    assert_eq!(view["reason"], "wrong repo");

    let (status, _) = app
        .post(
            &format!("/v1/approvals/{second}/execute"),
            &json!({"parameters": {"repo": "b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, view) = events.next().await;
    assert_eq!(view["status"], "executed", "every status change is sent");

    let refused = app
        .http
        .get(app.url("/v1/approvals/events"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

/// PostgreSQL only: one process owns a SQLite file, so there is no other replica.
#[tokio::test]
async fn a_decision_made_on_another_replica_reaches_the_stream() {
    let Some(db) = crate::common::postgres("events_from_a_replica").await else {
        return;
    };
    let app = spawn_on(db).await;
    let replica = app.replica().await;
    let mut events = Events::open(&app, &app.token).await;
    assert_eq!(events.next().await.0, "ready");
    let id = app.request("delete_repo", json!({"repo": "c"})).await;
    replica
        .store
        .apply(
            id.parse().unwrap(),
            vote(Decision::Approve, None),
            app.clock.now(),
        )
        .await
        .unwrap();
    let (name, view) = events.next().await;
    assert_eq!(name, "approval");
    assert_eq!(view["approval_id"], id.as_str());
    assert_eq!(view["status"], "approved");
}

/// PostgreSQL only: a decision another replica commits while this replica's LISTEN
/// connection is down never reaches it as a notice. Once it listens again, a long-poll
/// reads the approval again (long before its deadline) and an event stream says
/// `resync`; also when the connection comes back at once (sqlx's own reconnect).
#[tokio::test]
async fn a_decision_missed_while_the_listen_connection_was_down_is_read_again() {
    let Some(db) = crate::common::postgres("missed_while_not_listening").await else {
        return;
    };
    let app = spawn_on(db).await;
    app.store.hearing().await;
    let replica = app.replica().await;
    let id = app.request("delete_repo", json!({"repo": "c"})).await;
    // The replica's writer connects now, to commit later while new connections fail.
    let warm_up = app.request("delete_repo", json!({"repo": "d"})).await;
    let deny = vote(Decision::Deny, None);
    let now = app.clock.now();
    replica
        .store
        .apply(warm_up.parse().unwrap(), deny, now)
        .await
        .unwrap();
    let mut events = Events::open(&app, &app.token).await;
    assert_eq!(events.next().await.0, "ready");
    let waiting = app
        .http
        .get(app.url(&format!("/v1/approvals/{id}?wait=30")))
        .bearer_auth(&app.token)
        .send();
    let waiting = tokio::spawn(async move { read(waiting.await.unwrap()).await });
    // Parked before its notice is lost (started later, it would read the decision).
    app.until_metric("signoff_long_polls_waiting", 1.0).await;

    let name = app.db.url.rsplit('/').next().unwrap().to_owned();
    both_listening(&name).await;
    admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    let listening = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
    );
    assert_eq!(admin(&listening).await, 2, "both replicas' listeners");
    let approve = vote(Decision::Approve, None);
    let committed = replica.store.apply(id.parse().unwrap(), approve, now).await;
    assert_eq!(
        committed.unwrap().status,
        signoff::approval::Status::Approved
    );
    admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;

    let (status, view) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long-poll answers long before its 30 s")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "approved", "{view}");
    // The replica's first decision may come first, heard before the connection dropped.
    loop {
        let (name, view) = events.next().await;
        if name == "resync" {
            break;
        }
        assert_eq!(view["approval_id"], warm_up.as_str(), "{name}: {view}");
    }
    // Dropped and at once connected again (nothing refused): the notices sent in
    // between may be lost all the same. Both listeners first, the replica's too (it
    // reconnects in its own time).
    both_listening(&name).await;
    assert_eq!(admin(&listening).await, 2);
    assert_eq!(events.next().await.0, "resync");
}

/// Waits (up to 10 s) until two connections to database `name` listen: the app's and
/// its replica's, each (re)connecting in its own time.
async fn both_listening(name: &str) {
    let listeners = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
    );
    for _ in 0..200 {
        if admin(&listeners).await == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `sql` as the tests' PostgreSQL administrator (outside the test's database):
/// the rows it returned or changed.
async fn admin(sql: &str) -> u64 {
    use sqlx::Connection;
    let url = std::env::var("SIGNOFF_TEST_POSTGRES_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected()
}

/// A stream holds a connection as long as it lasts: one token has at most
/// `Limits::streams_per_token` open at once (past it, 429 and nothing opened), so that
/// it cannot take every connection of the server; others still open theirs, and one
/// closed makes room for the next.
#[tokio::test]
async fn a_token_has_at_most_streams_per_token_streams_open_at_once() {
    let limits = signoff::http::Limits {
        streams_per_token: 2,
        ..signoff::http::Limits::default()
    };
    let app = spawn_limited(crate::common::sqlite(), limits).await;
    let open = |token: String| {
        let request = app
            .http
            .get(app.url("/v1/approvals/events"))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let mut first = Events::open(&app, &app.token).await;
    assert_eq!(first.next().await.0, "ready");
    let mut second = Events::open(&app, &app.token).await;
    assert_eq!(second.next().await.0, "ready");
    let refused = open(app.token.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let (_, error) = read(refused).await;
    assert_error(&error, "too_many_streams");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("agent has 2 event streams open"),
        "{error}"
    );
    let other = new_token(&app.store, &app.clock, "other-agent").await;
    assert_eq!(open(other).await.status(), StatusCode::OK, "per token");

    drop(first);
    let started = std::time::Instant::now();
    let _third = loop {
        let response = open(app.token.clone()).await;
        if response.status() == StatusCode::OK {
            break response;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a closed stream makes room"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Counted: `second` and the one just opened.
    assert_eq!(
        open(app.token.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
