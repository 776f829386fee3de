//! The API's JSON through real HTTP: arbitrary bytes, valid bodies mutated field by
//! field and byte by byte, odd ids in the path and odd query strings, on every
//! endpoint. Each answer is a success of the endpoint's shape or a 4xx with
//! `{"error", "detail"}`; never a 5xx, never a hang; a refusal changes nothing (no
//! approval, no audit event); and the app serves normally afterwards.
//! `SIGNOFF_FUZZ_CASES` or `SIGNOFF_FUZZ_SECONDS` run longer (see `common::fuzz`).

use std::time::Duration;

use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{fuzz, raw_count};
use crate::helpers::*;

/// Cases per target in a plain `cargo test`.
const SHORT: u32 = 64;

/// One request: method, path (with any query) and body.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    path: String,
    body: Vec<u8>,
}

/// The app with an approval of each kind to aim at.
struct Target {
    app: TestApp,
    pending: String,
    approved: String,
}

async fn target() -> Target {
    let app = spawn_app().await;
    let pending = app.request("deploy_api", json!({"service": "api"})).await;
    let approved = app.request("get_user", json!({"id": 5})).await;
    Target {
        app,
        pending,
        approved,
    }
}

/// A valid body for each POST endpoint, with every field it reads.
fn valid_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/v1/approvals",
            json!({
                "tool_name": "deploy_api", "parameters": {"service": "api", "n": [1, 2.5]},
                "server": "ci", "annotations": {"destructiveHint": true},
                "summary": "Deploy", "context": "asked", "requested_by": "agent-1",
                "risk_tier": "medium", "expires_in": 600, "idempotency_key": "k-1",
                "callback_url": "https://hooks.example.com/cb",
            }),
        ),
        (
            "/v1/approvals/{approved}/execute",
            json!({"parameters": {"id": 5}, "tool_name": "get_user"}),
        ),
        ("/v1/approvals/{pending}/cancel", json!({})),
        (
            "/v1/policy/tools",
            json!({"server": "db", "tools": [{"name": "drop_table"}, {"name": "get_row"}]}),
        ),
    ]
}

/// Values of every JSON type, including ones no field expects.
pub fn odd_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        "[a-z_./-]{0,12}".prop_map(Value::from),
        (0usize..3, 100usize..12_000).prop_map(|(c, n)| Value::from(["x", "é", " "][c].repeat(n))),
        Just(json!("javascript:alert(1)")),
        Just(json!("http://127.0.0.1:9/cb")),
        Just(json!("<!channel> <@U0ALICE>")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    })
}

/// JSON tokens serde_json reads but signoff must refuse or keep exactly, and broken ones.
pub fn raw_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("123456789012345678901234567890".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("0.1000000000000000000001".to_owned()),
        Just("1e999".to_owned()),
        Just("-1e-400".to_owned()),
        Just("-0".to_owned()),
        Just("NaN".to_owned()),
        Just("Infinity".to_owned()),
        Just(r#""\ud800""#.to_owned()),
        Just(r#""\u0000""#.to_owned()),
        Just(r#"{"a":1,"a":2}"#.to_owned()),
        (1usize..3000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        "[-+0-9.eE]{1,24}",
        "\"[^\"\\\\]{0,8}",
    ]
}

/// A field of a body changed: set to an odd value, removed, added, or written raw
/// (possibly a second time).
#[derive(Debug, Clone)]
pub enum Change {
    Set(String, Value),
    Remove(String),
    Raw(String, String),
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "tool_name",
            "parameters",
            "server",
            "annotations",
            "summary",
            "context",
            "requested_by",
            "risk_tier",
            "expires_in",
            "idempotency_key",
            "callback_url",
            "tools",
            "approval_id",
            "wait",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}

pub fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (field(), odd_value()).prop_map(|(f, v)| Change::Set(f, v)),
        field().prop_map(Change::Remove),
        (field(), raw_token()).prop_map(|(f, t)| Change::Raw(f, t)),
    ]
}

/// A cut, an inserted byte or a removed range in the body's text.
#[derive(Debug, Clone)]
pub enum Splice {
    None,
    Cut(usize),
    Insert(usize, u8),
    Remove(usize, usize),
}

pub fn splice() -> impl Strategy<Value = Splice> {
    prop_oneof![
        3 => Just(Splice::None),
        1 => any::<usize>().prop_map(Splice::Cut),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Splice::Insert(at, b)),
        1 => (any::<usize>(), 1usize..8).prop_map(|(at, n)| Splice::Remove(at, n)),
    ]
}

/// `body` with `changes` applied, as text, then spliced.
pub fn mutate(body: &Value, changes: &[Change], splice: &Splice) -> Vec<u8> {
    let mut body = body.clone();
    let mut raw = Vec::new();
    for change in changes {
        match (change, body.as_object_mut()) {
            (Change::Set(field, value), Some(map)) => {
                map.insert(field.clone(), value.clone());
            }
            (Change::Remove(field), Some(map)) => {
                map.remove(field);
            }
            (Change::Raw(field, token), _) => raw.push(format!("{}:{token}", json!(field))),
            (_, None) => {}
        }
    }
    let text = body.to_string();
    let text = match (raw.is_empty(), text.strip_prefix('{')) {
        (false, Some("}")) => format!("{{{}}}", raw.join(",")),
        (false, Some(rest)) => format!("{{{},{rest}", raw.join(",")),
        _ => text,
    };
    spliced(text.into_bytes(), splice)
}

/// `bytes` cut, with a byte inserted or a few removed (positions wrap around).
pub fn spliced(mut bytes: Vec<u8>, splice: &Splice) -> Vec<u8> {
    let at = |i: usize, len: usize| i % (len + 1);
    match *splice {
        Splice::None => {}
        Splice::Cut(i) => bytes.truncate(at(i, bytes.len())),
        Splice::Insert(i, b) => bytes.insert(at(i, bytes.len()), b),
        Splice::Remove(i, n) => {
            let start = at(i, bytes.len());
            bytes.drain(start..(start + n).min(bytes.len()));
        }
    }
    bytes
}

impl Target {
    /// `{pending}` and `{approved}` in a path are those approvals' ids.
    fn path(&self, path: &str) -> String {
        path.replace("{pending}", &self.pending)
            .replace("{approved}", &self.approved)
    }

    /// Sends `sent` and checks the answer's shape; a refusal must have changed nothing.
    async fn check(&self, sent: &Sent) -> Result<(), TestCaseError> {
        let approvals = "SELECT COUNT(*) FROM pending_approvals";
        let count_before = raw_count(&self.app.db, approvals).await;
        let audit_before = self.app.store.audit_head().await.unwrap();
        let request = self
            .app
            .http
            .request(sent.method.clone(), self.app.url(&sent.path))
            .bearer_auth(&self.app.token)
            .header("content-type", "application/json")
            .body(sent.body.clone());
        let answer = async { read(request.send().await.expect("request sent")).await };
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("answered in time");
        let shown = format!("{status} {body} for {} {}", sent.method, sent.path);
        prop_assert!(status.is_success() || status.is_client_error(), "{}", shown);
        if status.is_success() {
            let served = if sent.path.starts_with("/v1/policy/tools") {
                body["denied"].is_array()
            } else {
                body["approval_id"].is_string() && body["status"].is_string()
            };
            prop_assert!(served, "{}", shown);
            return Ok(());
        }
        let fields = body.as_object().map(|map| map.keys().collect::<Vec<_>>());
        prop_assert!(
            body["error"].is_string() && body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            shown
        );
        prop_assert!(fields.is_some_and(|keys| keys.len() <= 3), "{}", shown);
        prop_assert_eq!(raw_count(&self.app.db, approvals).await, count_before);
        let audit_after = self.app.store.audit_head().await.unwrap();
        if audit_after != audit_before {
            // A refused execute is on record, and nothing else is.
            let added = self.app.store.audit_page(audit_before.0, 10).await.unwrap();
            let kinds: Vec<&str> = added.iter().map(|event| event.kind.as_str()).collect();
            prop_assert!(
                sent.path
                    .split('?')
                    .next()
                    .is_some_and(|path| path.ends_with("/execute"))
                    && kinds == ["execute_refused"],
                "a refusal changed nothing but its record: {:?} {}",
                kinds,
                shown
            );
        }
        Ok(())
    }

    /// The app still serves: a new request is created and read back.
    async fn still_serves(&self) {
        let id = self.app.request("deploy_web", json!({"fresh": true})).await;
        let (status, body) = self.app.get(&format!("/v1/approvals/{id}")).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("pending"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bytes_on_every_post_endpoint_are_refused_clearly_and_change_nothing() {
    let t = target().await;
    let paths: Vec<String> = valid_bodies().iter().map(|(p, _)| t.path(p)).collect();
    let inputs = (
        prop::sample::select(paths),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "[\\[\\]{}\":,0-9a-z.eE+\\- ]{0,64}".prop_map(String::into_bytes),
        ],
    );
    fuzz::run_async(SHORT, &inputs, |(path, body)| {
        let t = &t;
        async move {
            let sent = Sent {
                method: Method::POST,
                path,
                body,
            };
            t.check(&sent).await
        }
    });
    t.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_bodies_mutated_field_by_field_are_served_or_refused_clearly() {
    let t = target().await;
    let bodies: Vec<(String, Value)> = valid_bodies()
        .into_iter()
        .map(|(path, body)| (t.path(path), body))
        .collect();
    let inputs = (
        prop::sample::select(bodies),
        prop::collection::vec(change(), 0..4),
        splice(),
    );
    fuzz::run_async(SHORT, &inputs, |((path, body), changes, splice)| {
        let t = &t;
        async move {
            let body = mutate(&body, &changes, &splice);
            let sent = Sent {
                method: Method::POST,
                path,
                body,
            };
            t.check(&sent).await
        }
    });
    t.still_serves().await;
}

/// An id segment: a known approval, an unknown one, or anything, percent-encoded or raw.
fn id_segment(t: &Target) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(t.approved.clone()),
        Just(t.pending.clone()),
        Just("0b0d3c2e-3f0a-4c1b-9a3e-7d2f5c1e8a90".to_owned()),
        "[0-9a-fA-F-]{0,40}",
        "(%[0-9A-Fa-f]{2}|[a-z0-9.~_-]){0,12}",
        "\\PC{0,12}".prop_map(|s| { url_segment(&s) }),
    ]
}

/// `raw` percent-encoded as one path segment.
fn url_segment(raw: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap();
    url.path_segments_mut().unwrap().push(raw);
    url.path()[1..].to_owned()
}

/// A query string: `wait` with odd values, repeated, or anything.
fn query() -> impl Strategy<Value = String> {
    let wait = prop_oneof![
        Just("0".to_owned()),
        Just("0.01".to_owned()),
        Just("-1".to_owned()),
        Just("1e309".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("%FF".to_owned()),
        Just(String::new()),
        "[-+0-9.eE]{0,10}",
        "\\PC{0,8}".prop_map(|s| url_segment(&s)),
    ];
    prop_oneof![
        Just(String::new()),
        wait.clone().prop_map(|w| format!("?wait={w}")),
        (wait.clone(), wait).prop_map(|(a, b)| format!("?wait={a}&wait={b}")),
        "\\?[a-z=&%0-9A-F;+]{0,24}",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_and_query_strings_are_answered_with_json_at_once() {
    let t = target().await;
    let inputs = (
        0usize..3,
        id_segment(&t),
        query(),
        prop::sample::select(valid_bodies()),
    );
    fuzz::run_async(SHORT, &inputs, |(route, id, query, (_, body))| {
        let t = &t;
        async move {
            // Never a long-poll on the pending approval: it would wait, as it should.
            let (method, path) = match route {
                0 if id != t.pending => (Method::GET, format!("/v1/approvals/{id}{query}")),
                0 | 1 => (Method::POST, format!("/v1/approvals/{id}/execute{query}")),
                _ => (Method::POST, format!("/v1/approvals/{id}/cancel{query}")),
            };
            let sent = Sent {
                method,
                path,
                body: body.to_string().into_bytes(),
            };
            t.check(&sent).await
        }
    });
    t.still_serves().await;
}
