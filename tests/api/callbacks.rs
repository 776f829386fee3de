//! Decision callbacks as a receiver sees them: Standard Webhooks headers, verified by
//! independent implementations (docs/security.md's Python with `cryptography`, and its
//! TypeScript with `node:crypto`) that refuse a changed body, another key's signature
//! and a stale timestamp.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use signoff::signing::Signer;

use crate::common::deps::{doc_block, python, tsx};
use crate::common::receiver::Receiver;
use crate::helpers::*;

/// A real callback: an auto-approved request's, as the receiver got it.
async fn one_callback() -> (TestApp, Value) {
    let app = spawn_app().await;
    let (receiver, url) = Receiver::start(vec![]).await;
    let (status, created) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "get_invoice", "parameters": {"id": 7}, "callback_url": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "approved");
    app.run_jobs().await;
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let case = json!({
        "headers": {
            "webhook-id": header("webhook-id"),
            "webhook-timestamp": header("webhook-timestamp"),
            "webhook-signature": header("webhook-signature"),
        },
        "body": body,
        "public_key": app.signer.public_key().to_string(),
        "url": url,
        "now": header("webhook-timestamp").parse::<i64>().unwrap(),
    });
    (app, case)
}

/// The genuine callback, then forgeries and a replay: what each verifier must answer.
fn cases(genuine: &Value) -> (Value, Vec<bool>) {
    let mut changed = genuine.clone();
    changed["body"] = json!(
        genuine["body"]
            .as_str()
            .unwrap()
            .replace("approved", "denied")
    );
    let mut other_key = genuine.clone();
    let headers = &genuine["headers"];
    let message = format!(
        "{}.{}.{}",
        headers["webhook-id"].as_str().unwrap(),
        headers["webhook-timestamp"].as_str().unwrap(),
        genuine["body"].as_str().unwrap()
    );
    other_key["headers"]["webhook-signature"] = json!(format!(
        "v1a,{}",
        Signer::generate().sign(message.as_bytes())
    ));
    let mut stale = genuine.clone();
    stale["now"] = json!(genuine["now"].as_i64().unwrap() + 301);
    let mut unsigned = genuine.clone();
    unsigned["headers"]["webhook-signature"] = json!("");
    // A digit that is not ASCII: refused, not an exception ("²".isdigit() in Python).
    let mut superscript = genuine.clone();
    superscript["headers"]["webhook-timestamp"] = json!("²");
    (
        json!([genuine, changed, other_key, stale, unsigned, superscript]),
        vec![true, false, false, false, false, false],
    )
}

fn run_verifier(program: &Path, script: &Path, cases: &Path) -> Vec<bool> {
    let output = Command::new(program)
        .arg(script)
        .arg(cases)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON list of booleans")
}

#[tokio::test]
async fn a_callback_names_under_its_signature_the_url_it_was_sent_to() {
    let (_app, genuine) = one_callback().await;
    let body: Value = serde_json::from_str(genuine["body"].as_str().unwrap()).unwrap();
    // So that a receiver can refuse a genuine callback meant for another receiver.
    assert_eq!(body["callback_url"], genuine["url"], "{body}");
    assert_eq!(body["approval_id"], body["approval"]["approval_id"]);
}

const PYTHON_DRIVER: &str = r#"
import json, sys
cases = json.load(open(sys.argv[1]))
print(json.dumps([verify_callback(c["headers"], c["body"].encode(), c["public_key"], now=c["now"]) for c in cases]))
"#;

const TYPESCRIPT_DRIVER: &str = r#"
import { readFileSync } from "node:fs";
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
console.log(JSON.stringify(cases.map((c: any) => verifyCallback(c.headers, Buffer.from(c.body), c.public_key, c.now))));
"#;

#[tokio::test]
async fn callbacks_verify_with_the_documented_python_and_forgeries_do_not() {
    let Some(python) = python("cryptography") else {
        return;
    };
    let (_app, genuine) = one_callback().await;
    let (all, expected) = cases(&genuine);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("verify.py");
    let code = doc_block("docs/security.md", "python", "def verify_callback");
    std::fs::write(&script, code + PYTHON_DRIVER).unwrap();
    let input = dir.path().join("cases.json");
    std::fs::write(&input, all.to_string()).unwrap();
    assert_eq!(run_verifier(&python, &script, &input), expected);
}

#[tokio::test]
async fn callbacks_verify_with_the_documented_typescript_and_forgeries_do_not() {
    let Some(tsx) = tsx() else {
        return;
    };
    let (_app, genuine) = one_callback().await;
    let (all, expected) = cases(&genuine);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("verify.ts");
    let code = doc_block("docs/security.md", "typescript", "function verifyCallback");
    std::fs::write(&script, code + TYPESCRIPT_DRIVER).unwrap();
    let input = dir.path().join("cases.json");
    std::fs::write(&input, all.to_string()).unwrap();
    assert_eq!(run_verifier(&tsx, &script, &input), expected);
}
