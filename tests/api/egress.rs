//! Callbacks cannot be aimed inward: a URL that cannot work, or names an internal
//! address outright, is refused with 422; a host that resolves inward is refused when
//! the callback is sent, and dead-lettered with the reason. The tests' resolver
//! (`common::app::TestResolver`) answers 127.0.0.1 for `*.test` and nothing else, so no
//! test reaches an address it did not choose.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

async fn create_with(app: &TestApp, url: &str) -> (StatusCode, serde_json::Value) {
    app.post(
        "/v1/approvals",
        &json!({"tool_name": "get_invoice", "parameters": {}, "callback_url": url}),
    )
    .await
}

#[tokio::test]
async fn callback_urls_that_cannot_work_or_name_internal_addresses_are_refused_at_once() {
    let app = spawn_app().await;
    let refused = [
        ("ftp://hooks.example.com/", "http(s)"),
        ("https://user:secret@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/a\u{1}b", "control"),
        ("https:///nothing", ""),
        ("https://1.2.3.4.5/", "not a valid address"),
        ("http://127.0.0.1:9/cb", "loopback"),
        ("http://[::1]/cb", "loopback"),
        ("http://[::ffff:127.0.0.1]/cb", "loopback"),
        ("http://2130706433/cb", "loopback"),
        ("http://0x7f000001/cb", "loopback"),
        ("http://0177.0.0.1/cb", "loopback"),
        ("http://10.0.0.1/cb", "private"),
        ("http://172.16.5.4/cb", "private"),
        ("http://192.168.0.10/cb", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[fd12::1]/", "unique-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
    ];
    for (url, why) in refused {
        let (status, body) = create_with(&app, url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{url}: {detail}");
    }
    let (status, body) = create_with(&app, "https://hooks.example.com/signoff").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_host_that_resolves_inward_is_dead_lettered_with_the_reason() {
    let app = spawn_app().await;
    // Resolves to 127.0.0.1, and only hooks.test is allowed.
    let (status, body) = create_with(&app, "http://inward.test:9/cb").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.run_jobs().await;
    let (_, health) = app.get("/health/approvals").await;
    assert_eq!(health["undelivered"], 1, "{health}");
    let (error, attempts): (String, i64) = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query_as("SELECT last_error, attempts FROM jobs WHERE state = 'dead'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    assert!(
        error.contains("inward.test is a loopback address (127.0.0.1)"),
        "{error}"
    );
    assert_eq!(attempts, 1, "dead at once, not retried 14 times");
}
