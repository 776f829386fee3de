//! Test helpers for the Slack renderers: a ready-made approval and a checker that walks
//! rendered JSON and asserts every Block Kit limit we rely on.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use crate::approval::{Approval, ApprovalId, Decision, Routing, Status, Tier, Vote};

/// 2024-05-01 12:00:00 UTC.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

/// A pending medium-risk deploy needing two approvals, expiring in 2h 5m.
pub fn approval() -> Approval {
    let now = now();
    Approval {
        id: "0123abcd-0000-4000-8000-000000000001".parse().unwrap(),
        tool_name: "deploy_service".into(),
        server: None,
        parameters: json!({"service": "api", "environment": "prod"}),
        original_parameters: None,
        risk_tier: Tier::Medium,
        status: Status::Pending,
        requested_by: Some("agent-session-42".into()),
        token_name: Some("ci-bot".into()),
        summary: None,
        context: None,
        decided_by: None,
        decided_via: None,
        decision_at: None,
        reason: None,
        required_approvals: 2,
        votes: Vec::new(),
        expires_at: now + chrono::Duration::minutes(125),
        created_at: now - chrono::Duration::minutes(5),
        executed_at: None,
        idempotency_key: None,
        callback_url: None,
        routing: Routing::default(),
        version: 1,
    }
}

pub fn vote(user: &str, decision: Decision, minutes_ago: i64) -> Vote {
    Vote {
        user: user.into(),
        decision,
        at: now() - chrono::Duration::minutes(minutes_ago),
        reason: None,
    }
}

/// `send_email`'s parameters: to an attacker, behind 60 attachments (120 lines, more
/// than a section holds, and alphabetically before `to`).
pub fn email_behind_attachments() -> Value {
    let attachments: Vec<Value> = (1..=60)
        .map(|i| json!({"name": format!("f{i}.pdf"), "url": format!("https://files.example/{i}")}))
        .collect();
    json!({"attachments": attachments, "to": "attacker@evil.example"})
}

/// An id that is not the fixture's, for lists.
pub fn other_id(n: u128) -> ApprovalId {
    ApprovalId(uuid::Uuid::from_u128(n))
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn text_len(obj: &Value) -> usize {
    chars(&obj["text"])
}

/// Asserts the Block Kit limits on a message (`text` + `blocks`) or a modal view.
pub fn check_limits(payload: &Value) {
    if let Some(text) = payload.get("text") {
        assert!(chars(text) <= 4000, "fallback text too long");
    }
    let blocks = payload["blocks"].as_array().expect("blocks");
    let max_blocks = if payload["type"] == "modal" { 100 } else { 50 };
    assert!(blocks.len() <= max_blocks, "{} blocks", blocks.len());
    if payload["type"] == "modal" {
        for key in ["title", "submit", "close"] {
            if let Some(obj) = payload.get(key) {
                assert!(text_len(obj) <= 24, "modal {key} too long");
            }
        }
        assert!(chars(&payload["private_metadata"]) <= 3000);
        assert!(chars(&payload["callback_id"]) <= 255);
    }
    for block in blocks {
        if let Some(id) = block.get("block_id") {
            assert!(chars(id) <= 255, "block_id too long");
        }
        match block["type"].as_str().expect("block type") {
            "header" => {
                assert_eq!(block["text"]["type"], "plain_text");
                assert!(text_len(&block["text"]) <= 150, "header too long");
            }
            "section" => {
                assert!(block.get("text").is_some() || block.get("fields").is_some());
                if let Some(text) = block.get("text") {
                    let n = text_len(text);
                    assert!(n > 0 && n <= 3000, "section text {n} chars");
                }
                if let Some(fields) = block.get("fields") {
                    let fields = fields.as_array().expect("fields");
                    assert!(fields.len() <= 10, "{} fields", fields.len());
                    for field in fields {
                        let n = text_len(field);
                        assert!(n > 0 && n <= 2000, "field {n} chars");
                    }
                }
            }
            "context" => {
                let elements = block["elements"].as_array().expect("elements");
                assert!(!elements.is_empty() && elements.len() <= 10);
                for element in elements {
                    assert!(text_len(element) <= 2000, "context element too long");
                }
            }
            "actions" => {
                let elements = block["elements"].as_array().expect("elements");
                assert!(elements.len() <= 25);
                for button in elements {
                    assert!(text_len(&button["text"]) <= 75, "button text too long");
                    assert!(chars(&button["value"]) <= 2000, "button value too long");
                    assert!(chars(&button["action_id"]) <= 255, "action_id too long");
                }
            }
            "input" => {
                assert!(text_len(&block["label"]) <= 2000);
                let element = &block["element"];
                assert!(chars(&element["action_id"]) <= 255);
                let max = element["max_length"].as_u64().unwrap_or(3000) as usize;
                assert!(max <= 3000);
                assert!(
                    chars(&element["initial_value"]) <= max,
                    "initial_value too long"
                );
            }
            "divider" => {}
            other => panic!("unexpected block type {other}"),
        }
    }
}

/// Every string anywhere in `v`, for searching rendered output.
/// The text of every `mrkdwn` object, and the top-level fallback `text` (which Slack
/// reads as mrkdwn too): where requester text must never be.
pub fn mrkdwn_texts(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(text) = v.get("text").and_then(Value::as_str) {
        out.push(text.to_owned());
    }
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                    out.push(
                        map.get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                map.values().for_each(|item| walk(item, out));
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

pub fn all_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(all_text).collect::<Vec<_>>().join("\n"),
        Value::Object(map) => map.values().map(all_text).collect::<Vec<_>>().join("\n"),
        other => other.to_string(),
    }
}

/// The first block of `kind` in a message or view.
pub fn find_block<'a>(message: &'a Value, kind: &str) -> Option<&'a Value> {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == kind)
}
