//! The live OpenAPI document as a checker: [`Spec::check`] finds the response the
//! document gives for an answer's path, method and status, checks the answer's media
//! type and validates its body against that response's schema (`$ref`s resolved into
//! the document's components), and records the answer as exercised, so that a test can
//! ask whether every documented answer was seen ([`Spec::unexercised`]).

use std::collections::BTreeSet;
use std::sync::Mutex;

use jsonschema::Registry;
use serde_json::{Value, json};

/// Where the document is registered for `$ref`s.
const DOC_URI: &str = "urn:signoff:openapi";

/// The method under which a path's `405` (any method it does not list) is recorded.
pub const OTHER_METHOD: &str = "other";

/// One answer as it came over the wire.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        let body = response.text().await.expect("body");
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// An HTTP/1.1 answer read straight off a socket (a body of `Content-Length`).
    pub fn parse(raw: &[u8]) -> Answer {
        let raw = String::from_utf8_lossy(raw);
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        let content_type = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.trim().to_owned());
        Answer {
            status: status.expect("a status line"),
            content_type: content_type.unwrap_or_default(),
            body: body.to_owned(),
        }
    }
}

fn content_type(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A media type without its parameters, lower case.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `segment` as one JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The document, and the (path, method, status) answers checked against it.
pub struct Spec {
    pub doc: Value,
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl Spec {
    pub fn new(doc: Value) -> Spec {
        assert_eq!(doc["openapi"], "3.1.0", "an OpenAPI 3.1 document");
        Spec {
            doc,
            seen: Mutex::default(),
        }
    }

    /// Checks `answer` to `method path` (`path` as the document writes it) against the
    /// document, records it, and returns its body (JSON, or the text as a string).
    pub fn check(&self, path: &str, method: &str, answer: &Answer) -> Value {
        let pointer = format!(
            "/paths/{}/{method}/responses/{}",
            escape(path),
            answer.status
        );
        let body = self.check_response(&pointer, answer, &format!("{method} {path}"));
        self.record(path, method, answer.status);
        body
    }

    /// Checks a `405` to a method `path` does not list against the `MethodNotAllowed`
    /// response, and records it.
    pub fn check_other_method(&self, path: &str, answer: &Answer) {
        assert_eq!(answer.status, 405, "{path}: {}", answer.body);
        self.check_response(
            "/components/responses/MethodNotAllowed",
            answer,
            &format!("another method on {path}"),
        );
        self.record(path, OTHER_METHOD, 405);
    }

    /// Validates a request body the app accepted against the operation's documented
    /// one: what the app takes is documented (no field it reads is left out).
    pub fn check_request(&self, path: &str, method: &str, body: &Value) {
        let pointer = format!(
            "/paths/{}/{method}/requestBody/content/application~1json/schema",
            escape(path)
        );
        let schema = self
            .doc
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("{method} {path} took a body the document does not list"));
        self.validate(schema, body, &format!("the body of {method} {path}"));
    }

    /// Validates `value` against the component schema `name` (such as an event's data).
    pub fn validate_component(&self, name: &str, value: &Value) {
        let pointer = format!("/components/schemas/{name}");
        assert!(self.doc.pointer(&pointer).is_some(), "no schema {name}");
        self.validate(&json!({ "$ref": format!("#{pointer}") }), value, name);
    }

    /// Validates every example the document gives (of a component schema, of a
    /// response's body) against its schema; how many there were.
    pub fn check_examples(&self) -> usize {
        let mut checked = 0;
        for (name, schema) in self.doc["components"]["schemas"]
            .as_object()
            .expect("schemas")
        {
            if let Some(example) = schema.get("example") {
                self.validate_component(name, example);
                checked += 1;
            }
        }
        let operations = self.doc["paths"].as_object().expect("paths").values();
        let responses = operations
            .flat_map(|item| item.as_object().expect("a path item").values())
            .flat_map(|operation| {
                operation["responses"]
                    .as_object()
                    .expect("responses")
                    .values()
            })
            .chain(
                self.doc["components"]["responses"]
                    .as_object()
                    .expect("responses")
                    .values(),
            );
        for response in responses {
            for (media_type, media) in response["content"].as_object().into_iter().flatten() {
                if let Some(example) = media.get("example") {
                    self.validate(
                        &media["schema"],
                        example,
                        &format!("example of {media_type}"),
                    );
                    checked += 1;
                }
            }
        }
        checked
    }

    fn record(&self, path: &str, method: &str, status: u16) {
        self.seen
            .lock()
            .unwrap()
            .insert((path.to_owned(), method.to_owned(), status));
    }

    /// The response object at `pointer` (a `$ref` into `components.responses`
    /// followed): the answer's media type must be one it lists, and its body must
    /// match that media type's schema.
    fn check_response(&self, pointer: &str, answer: &Answer, what: &str) -> Value {
        let mut response = self.doc.pointer(pointer).unwrap_or_else(|| {
            panic!(
                "{what} answered {}, which the document does not list: {}",
                answer.status, answer.body
            )
        });
        if let Some(target) = response["$ref"].as_str() {
            response = self.doc.pointer(&target[1..]).expect("the $ref resolves");
        }
        let content = response["content"].as_object().expect("a documented body");
        let live = essence(&answer.content_type);
        let (_, media) = content
            .iter()
            .find(|(media_type, _)| essence(media_type) == live)
            .unwrap_or_else(|| {
                let documented: Vec<_> = content.keys().collect();
                panic!("{what} answered {live}, documented as {documented:?}")
            });
        let body = if live == "application/json" {
            serde_json::from_str(&answer.body)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", answer.body))
        } else {
            Value::String(answer.body.clone())
        };
        let what = format!("{what} → {}", answer.status);
        self.validate(&media["schema"], &body, &what);
        body
    }

    /// Validates `value` against `schema` (a part of the document, its `$ref`s into the
    /// document), formats included. A schema that names a component also allows no
    /// property the component does not declare: an answer cannot carry an undocumented
    /// field.
    fn validate(&self, schema: &Value, value: &Value, what: &str) {
        let mut schema = absolute(schema);
        if schema.get("$ref").is_some() {
            schema["unevaluatedProperties"] = json!(false);
        }
        let registry = Registry::new()
            .add(DOC_URI, self.doc.clone())
            .expect("the document is a resource")
            .prepare()
            .expect("the document's references resolve");
        let validator = jsonschema::options()
            .with_registry(&registry)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{what}: schema {schema}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|error| format!("{error} (at {})", error.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{what}: {value}\n{errors:#?}");
    }

    /// Every (path, method, status) the document lists, with a `405` for each path.
    pub fn documented(&self) -> BTreeSet<(String, String, u16)> {
        let mut all = BTreeSet::new();
        let paths = self.doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            all.insert((path.clone(), OTHER_METHOD.to_owned(), 405));
            for (method, operation) in item.as_object().expect("a path item") {
                for status in operation["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                {
                    let status = status.parse().expect("a numeric status");
                    all.insert((path.clone(), method.clone(), status));
                }
            }
        }
        all
    }

    /// The documented answers no check has seen.
    pub fn unexercised(&self) -> Vec<(String, String, u16)> {
        let seen = self.seen.lock().unwrap();
        self.documented()
            .into_iter()
            .filter(|key| !seen.contains(key))
            .collect()
    }
}

/// `schema` with its `$ref`s (`#/components/…`) made absolute, into the document.
fn absolute(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| match (key.as_str(), value) {
                    ("$ref", Value::String(target)) if target.starts_with('#') => {
                        (key.clone(), json!(format!("{DOC_URI}{target}")))
                    }
                    _ => (key.clone(), absolute(value)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(absolute).collect()),
        other => other.clone(),
    }
}
