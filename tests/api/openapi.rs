//! `GET /openapi.json` against the live app: every path, method and status the
//! document lists is provoked through HTTP, each answer is checked against what the
//! document says of it (media type, body schema), and every documented answer must
//! have been seen, so the document cannot drift from the code. An independent
//! validator (`openapi-spec-validator`, Python) checks the document itself.

use std::time::Duration;

use serde_json::{Value, json};
use signoff::http::{BODY_LIMIT, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, deps};
use crate::events::Events;
use crate::helpers::*;
use crate::openapi_spec::{Answer, Spec};

const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

/// Sends requests to one app and checks each answer against the document.
struct Driver<'a> {
    app: &'a TestApp,
    spec: &'a Spec,
}

/// What a request sends besides its method and path.
#[derive(Clone, Copy)]
enum With<'b> {
    /// The app's token, no body.
    Token,
    /// The app's token and this body.
    Body(&'b str),
    /// No token, an empty JSON object as the body where one is read.
    NoToken,
    /// Another token, and a body where one is read.
    Other(&'b str, &'b str),
}

impl Driver<'_> {
    /// Sends `method url` (`path`: the document's template for it), expects `status`,
    /// checks the answer against the document and returns its body.
    async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        url: &str,
        with: With<'_>,
    ) -> Value {
        let app = self.app;
        let verb = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = app.http.request(verb, app.url(url));
        let (token, body) = match with {
            With::Token => (Some(app.token.as_str()), None),
            With::Body(body) => (Some(app.token.as_str()), Some(body)),
            With::NoToken => (None, Some("{}")),
            With::Other(token, body) => (Some(token), Some(body)),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body.filter(|_| method == "post") {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let answer = Answer::read(request.send().await.expect("request sent")).await;
        assert_eq!(answer.status, status, "{method} {url}: {}", answer.body);
        let accepted = body.filter(|_| method == "post" && status < 300);
        if let Some(body) = accepted.and_then(|body| serde_json::from_str(body).ok()) {
            self.spec.check_request(path, method, &body);
        }
        self.spec.check(path, method, &answer)
    }

    /// Creates a pending approval of `tool`; its id.
    async fn pending(&self, tool: &str) -> String {
        let body = json!({"tool_name": tool, "parameters": {"n": 1}}).to_string();
        let created = self
            .expect(
                201,
                "post",
                "/v1/approvals",
                "/v1/approvals",
                With::Body(&body),
            )
            .await;
        assert_eq!(created["status"], "pending");
        created["approval_id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn every_answer_matches_the_openapi_document_and_every_documented_answer_is_exercised() {
    let app = spawn_app().await;
    let answer = Answer::read(app.http.get(app.url("/openapi.json")).send().await.unwrap()).await;
    let spec = Spec::new(serde_json::from_str(&answer.body).expect("JSON"));
    spec.check("/openapi.json", "get", &answer);
    let driver = Driver {
        app: &app,
        spec: &spec,
    };

    asking(&driver).await;
    reading(&driver).await;
    executing(&driver).await;
    cancelling(&driver).await;
    policy_tools(&driver).await;
    following(&driver).await;
    refusals_every_body_endpoint_shares(&driver).await;
    other_methods(&driver).await;
    operations(&driver).await;
    slow_bodies(&spec).await;
    crowded_streams(&spec).await;
    crowded_waits(&spec).await;
    store_down(&spec).await;

    let missing = spec.unexercised();
    assert!(
        missing.is_empty(),
        "documented but never provoked: {missing:#?}"
    );
}

async fn asking(d: &Driver<'_>) {
    let (path, ask) = (
        "/v1/approvals",
        json!({"tool_name": "a", "parameters": {"n": 1}}),
    );
    let created = d
        .expect(201, "post", path, path, With::Body(&ask.to_string()))
        .await;
    let joined = d
        .expect(200, "post", path, path, With::Body(&ask.to_string()))
        .await;
    assert_eq!(joined["approval_id"], created["approval_id"]);
    let keyed =
        |n: u32| json!({"tool_name": "a", "parameters": {"n": n}, "idempotency_key": "k-1"});
    d.expect(201, "post", path, path, With::Body(&keyed(2).to_string()))
        .await;
    let reused = d
        .expect(409, "post", path, path, With::Body(&keyed(3).to_string()))
        .await;
    assert_eq!(reused["error"], "idempotency_key_reused");
    let everything = json!({
        "tool_name": "deploy_api", "parameters": {"service": "api", "environment": "prod"},
        "server": "ci", "annotations": {"destructiveHint": true}, "summary": "Deploy",
        "context": "release 42", "requested_by": "agent-7", "risk_tier": "high",
        "expires_in": 600, "callback_url": "https://hooks.test/decided",
        "execute_if_approved": true
    });
    let denied = d
        .expect(201, "post", path, path, With::Body(&everything.to_string()))
        .await;
    assert_eq!(denied["status"], "denied", "high is denied: {denied}");
    too_many_pending(d).await;
    d.expect(400, "post", path, path, With::Body("{")).await;
    d.expect(401, "post", path, path, With::NoToken).await;
    d.expect(
        422,
        "post",
        path,
        path,
        With::Body(r#"{"tool_name": "a", "parameters": []}"#),
    )
    .await;
}

/// `429`: a token with `max_pending` (20 under the tests' policy) requests waiting asks
/// for one more that would wait.
async fn too_many_pending(d: &Driver<'_>) {
    let path = "/v1/approvals";
    let busy = new_token(&d.app.store, &d.app.clock, "busy").await;
    for n in 0..=20 {
        let ask = json!({"tool_name": "a", "parameters": {"n": n}}).to_string();
        let status = if n < 20 { 201 } else { 429 };
        let answer = d
            .expect(status, "post", path, path, With::Other(&busy, &ask))
            .await;
        if status == 429 {
            assert_eq!(
                (answer["waiting"].as_i64(), answer["max_pending"].as_i64()),
                (Some(20), Some(20))
            );
        }
    }
}

async fn reading(d: &Driver<'_>) {
    let path = "/v1/approvals/{id}";
    let id = d.pending("read_me").await;
    let url = format!("/v1/approvals/{id}");
    let shown = d.expect(200, "get", path, &url, With::Token).await;
    assert_eq!(shown["status"], "pending");
    d.app.approve(&id, "U0ALICE").await;
    let waited = d
        .expect(200, "get", path, &format!("{url}?wait=0.5"), With::Token)
        .await;
    assert_eq!(waited["votes"][0]["user"], "U0ALICE");
    d.expect(400, "get", path, &format!("{url}?wait=soon"), With::Token)
        .await;
    d.expect(401, "get", path, &url, With::NoToken).await;
    d.expect(
        404,
        "get",
        path,
        &format!("/v1/approvals/{UNKNOWN_ID}"),
        With::Token,
    )
    .await;
}

async fn executing(d: &Driver<'_>) {
    let path = "/v1/approvals/{id}/execute";
    let run = json!({"tool_name": "search_docs", "parameters": {"q": "x"}}).to_string();
    let approved = d
        .expect(
            201,
            "post",
            "/v1/approvals",
            "/v1/approvals",
            With::Body(&run),
        )
        .await;
    let url = format!(
        "/v1/approvals/{}/execute",
        approved["approval_id"].as_str().unwrap()
    );
    let executed = d.expect(200, "post", path, &url, With::Body(&run)).await;
    assert_eq!(executed["status"], "executed");
    let again = d.expect(409, "post", path, &url, With::Body(&run)).await;
    assert_eq!(
        again["status"], "executed",
        "a conflict says where it stands"
    );
    d.expect(
        400,
        "post",
        path,
        "/v1/approvals/%FF/execute",
        With::Body(&run),
    )
    .await;
    d.expect(401, "post", path, &url, With::NoToken).await;
    let unknown = format!("/v1/approvals/{UNKNOWN_ID}/execute");
    d.expect(404, "post", path, &unknown, With::Body(&run))
        .await;
    d.expect(
        422,
        "post",
        path,
        &url,
        With::Body(r#"{"tool_name": "search_docs"}"#),
    )
    .await;
}

async fn cancelling(d: &Driver<'_>) {
    let path = "/v1/approvals/{id}/cancel";
    let url = format!("/v1/approvals/{}/cancel", d.pending("cancel_me").await);
    let cancelled = d.expect(200, "post", path, &url, With::Token).await;
    assert_eq!(cancelled["status"], "cancelled");
    d.expect(409, "post", path, &url, With::Token).await;
    d.expect(400, "post", path, "/v1/approvals/%FF/cancel", With::Token)
        .await;
    d.expect(401, "post", path, &url, With::NoToken).await;
    let unknown = format!("/v1/approvals/{UNKNOWN_ID}/cancel");
    d.expect(404, "post", path, &unknown, With::Token).await;
}

async fn policy_tools(d: &Driver<'_>) {
    let path = "/v1/policy/tools";
    let tools = json!({"server": "db", "tools": [{"name": "drop_table"}, {"name": "get_row"}]});
    let answer = d
        .expect(200, "post", path, path, With::Body(&tools.to_string()))
        .await;
    assert_eq!(answer["denied"][0]["name"], "drop_table", "{answer}");
    d.expect(400, "post", path, path, With::Body("[")).await;
    d.expect(401, "post", path, path, With::NoToken).await;
    d.expect(422, "post", path, path, With::Body(r#"{"tools": 5}"#))
        .await;
}

/// The event stream: its `200` as the document says, then its events' data.
async fn following(d: &Driver<'_>) {
    let (app, path) = (d.app, "/v1/approvals/events");
    d.expect(401, "get", path, path, With::NoToken).await;
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let head = Answer {
        status: 200,
        content_type: response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned(),
        body: String::new(),
    };
    d.spec.check(path, "get", &head);
    let mut events = Events::from_response(response);
    assert_eq!(events.next().await, ("ready".to_owned(), json!({})));
    let id = d.pending("follow_me").await;
    app.approve(&id, "U0ALICE").await;
    loop {
        let (name, data) = events.next().await;
        assert_eq!(
            (name.as_str(), &data["approval_id"]),
            ("approval", &json!(id))
        );
        d.spec.validate_component("Approval", &data);
        if data["status"] == "approved" {
            break;
        }
    }
}

/// `413` on each endpoint that reads a body (the body is read before the token is
/// used for anything but authentication).
async fn refusals_every_body_endpoint_shares(d: &Driver<'_>) {
    let huge = format!(
        r#"{{"parameters": {{"blob": "{}"}}}}"#,
        "a".repeat(BODY_LIMIT)
    );
    let id = d.pending("too_big").await;
    for (path, url) in [
        ("/v1/approvals", "/v1/approvals".to_owned()),
        (
            "/v1/approvals/{id}/execute",
            format!("/v1/approvals/{id}/execute"),
        ),
        ("/v1/policy/tools", "/v1/policy/tools".to_owned()),
    ] {
        let error = d.expect(413, "post", path, &url, With::Body(&huge)).await;
        assert_eq!(error["error"], "payload_too_large");
    }
}

/// Every documented path answers `405` to a method it does not list.
async fn other_methods(d: &Driver<'_>) {
    let paths: Vec<String> = d.spec.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for path in paths {
        let url = path.replace("{id}", UNKNOWN_ID);
        let response = d
            .app
            .http
            .delete(d.app.url(&url))
            .bearer_auth(&d.app.token)
            .send();
        let answer = Answer::read(response.await.unwrap()).await;
        d.spec.check_other_method(&path, &answer);
    }
}

/// Health, metrics; last, because it lets the app's pending approvals go stale.
async fn operations(d: &Driver<'_>) {
    let healthz = d
        .expect(200, "get", "/healthz", "/healthz", With::NoToken)
        .await;
    assert_eq!(healthz, "ok");
    let metrics = d
        .expect(200, "get", "/metrics", "/metrics", With::NoToken)
        .await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("signoff_http_requests_total")
    );
    let path = "/health/approvals";
    let health = d.expect(200, "get", path, path, With::NoToken).await;
    assert_eq!(health["status"], "ok");
    d.app.clock.advance(Duration::from_secs(2 * 3600));
    let health = d.expect(503, "get", path, path, With::NoToken).await;
    assert_eq!(health["status"], "degraded");
}

/// `408`: a body that does not arrive in time, on each endpoint that reads one.
async fn slow_bodies(spec: &Spec) {
    let limits = Limits {
        body: Duration::from_millis(300),
        ..Limits::default()
    };
    let app = spawn_limited(common::sqlite(), limits).await;
    for (path, url) in [
        ("/v1/approvals", "/v1/approvals".to_owned()),
        (
            "/v1/approvals/{id}/execute",
            format!("/v1/approvals/{UNKNOWN_ID}/execute"),
        ),
        ("/v1/policy/tools", "/v1/policy/tools".to_owned()),
    ] {
        let address = app.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{",
            app.token
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw));
        assert!(
            read.await.is_ok(),
            "{url}: the server kept the connection open"
        );
        let answer = Answer::parse(&raw);
        assert_eq!(answer.status, 408, "{url}: {}", answer.body);
        spec.check(path, "post", &answer);
    }
}

/// `429` on the event stream: the token has `Limits::streams_per_token` open already.
async fn crowded_streams(spec: &Spec) {
    let limits = Limits {
        streams_per_token: 1,
        ..Limits::default()
    };
    let app = spawn_limited(common::sqlite(), limits).await;
    let path = "/v1/approvals/events";
    let mut open = Events::open(&app, &app.token).await;
    assert_eq!(open.next().await.0, "ready");
    let d = Driver { app: &app, spec };
    let refused = d.expect(429, "get", path, path, With::Token);
    let error = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("refused at once, not a stream");
    assert_eq!(error["error"], "too_many_streams");
}

/// `429` on a long-poll: the token has `Limits::waits_per_token` waiting already.
async fn crowded_waits(spec: &Spec) {
    let limits = Limits {
        waits_per_token: 1,
        ..Limits::default()
    };
    let app = spawn_limited(common::sqlite(), limits).await;
    let d = Driver { app: &app, spec };
    let id = d.pending("crowded").await;
    let url = format!("/v1/approvals/{id}?wait=60");
    let waiting = app.http.get(app.url(&url)).bearer_auth(&app.token).send();
    let waiting = tokio::spawn(waiting);
    app.until_metric("signoff_long_polls_waiting", 1.0).await;
    let refused = d.expect(429, "get", "/v1/approvals/{id}", &url, With::Token);
    let error = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("refused at once");
    assert_eq!(error["error"], "too_many_waits");
    waiting.abort();
}

/// `503`: the store fails. A token the app has not seen yet is looked up in a table
/// that is gone, and the health check's counts cannot be read.
async fn store_down(spec: &Spec) {
    let app = spawn_app().await;
    let fresh = new_token(&app.store, &app.clock, "fresh").await;
    for sql in [
        "ALTER TABLE api_tokens RENAME TO api_tokens_gone",
        "ALTER TABLE pending_approvals RENAME TO pending_approvals_gone",
    ] {
        common::raw_execute(&app.db, sql).await.unwrap();
    }
    let d = Driver { app: &app, spec };
    let ask = json!({"tool_name": "a", "parameters": {}}).to_string();
    let unknown = format!("/v1/approvals/{UNKNOWN_ID}");
    for (method, path, url) in [
        ("post", "/v1/approvals", "/v1/approvals".to_owned()),
        ("get", "/v1/approvals/{id}", unknown.clone()),
        (
            "get",
            "/v1/approvals/events",
            "/v1/approvals/events".to_owned(),
        ),
        (
            "post",
            "/v1/approvals/{id}/execute",
            format!("{unknown}/execute"),
        ),
        (
            "post",
            "/v1/approvals/{id}/cancel",
            format!("{unknown}/cancel"),
        ),
        ("post", "/v1/policy/tools", "/v1/policy/tools".to_owned()),
    ] {
        let body = if path.ends_with("tools") {
            r#"{"tools": []}"#
        } else {
            &ask
        };
        let error = d
            .expect(503, method, path, &url, With::Other(&fresh, body))
            .await;
        assert_eq!(error["error"], "unavailable");
    }
    let path = "/health/approvals";
    let health = d.expect(503, "get", path, path, With::NoToken).await;
    assert!(health["error"].is_string(), "{health}");
}

/// The README's HTTP API table (and its Operations endpoints) and the document name
/// the same operations: an endpoint added to the one is added to the other.
#[tokio::test]
async fn the_openapi_document_has_every_endpoint_of_the_readme() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    let doc: Value = response.json().await.unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let readme = readme.unwrap();
    let api = readme.split("## HTTP API").nth(1).unwrap();
    let api = api.split("\n## ").next().unwrap();
    let mut listed: std::collections::BTreeSet<String> = api
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
        .map(|endpoint| endpoint.replace("[?wait=N]", ""))
        .collect();
    listed.extend(["GET /healthz", "GET /health/approvals", "GET /metrics"].map(String::from));
    assert_eq!(listed, documented);
}

#[tokio::test]
async fn every_example_in_the_openapi_document_matches_its_schema() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    let spec = Spec::new(response.json().await.unwrap());
    let checked = spec.check_examples();
    assert!(checked >= 20, "only {checked} examples");
}

#[tokio::test]
async fn the_openapi_document_passes_an_independent_validator() {
    let Some(python) = deps::python("openapi_spec_validator") else {
        return;
    };
    let app = spawn_app().await;
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    let document = response.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &document).unwrap();
    let output = std::process::Command::new(python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
