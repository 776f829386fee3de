use serde_json::json;

use super::*;

fn now() -> Instant {
    Instant::now()
}

/// A click envelope as Slack sends it over the socket, on a message signoff posted:
/// its metadata carries the approval's `version`, a number.
fn click_envelope() -> Value {
    json!({
        "envelope_id": "e-1",
        "type": "interactive",
        "accepts_response_payload": false,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": {
            "type": "block_actions",
            "team": {"id": "T0TEAM", "domain": "test"},
            "user": {"id": "U0ALICE", "username": "alice", "team_id": "T0TEAM"},
            "api_app_id": "A0APP",
            "trigger_id": "1.2.3",
            "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": "C0APPROVALS", "is_ephemeral": false},
            "channel": {"id": "C0APPROVALS", "name": "approvals"},
            "message": {"type": "message", "ts": "1700000000.000001", "text": "x",
                "metadata": {"event_type": "signoff_approval_posted",
                    "event_payload": {"approval_id": "0193b2f4-0000-7000-8000-000000000001", "kind": "main", "version": 0}}},
            "actions": [{"type": "button", "action_id": "approve", "block_id": "b", "value": "0193b2f4-0000-7000-8000-000000000001", "action_ts": "1700000001.000200"}]
        }
    })
}

#[test]
fn slack_morphism_cannot_read_a_click_on_signoffs_message() {
    // Why the client is not slack-morphism's listener (see the module doc): it reads an
    // interactive envelope's payload as this typed model, which fails on the metadata
    // signoff attaches to every post.
    type Typed = slack_morphism::prelude::SlackInteractionEvent;
    let typed = serde_json::from_value::<Typed>(click_envelope()["payload"].clone());
    let error = typed.expect_err("slack-morphism now reads it: reconsider its listener");
    assert!(error.to_string().contains("string"), "{error}");
    // The same payload without the number parses, so it is the metadata.
    let mut without = click_envelope()["payload"].clone();
    without["message"]["metadata"]["event_payload"]["version"] = json!("0");
    assert!(serde_json::from_value::<Typed>(without).is_ok());
}

#[test]
fn frames_are_read_whole_and_the_payload_is_kept_as_sent() {
    assert_eq!(
        parse(r#"{"type":"hello","num_connections":1}"#),
        Ok(Frame::Hello)
    );
    assert_eq!(
        parse(r#"{"type":"disconnect","reason":"refresh_requested"}"#),
        Ok(Frame::Disconnect {
            reason: "refresh_requested".into()
        })
    );
    let Ok(Frame::Envelope(envelope)) = parse(&click_envelope().to_string()) else {
        panic!("a click envelope");
    };
    assert_eq!(envelope.id, "e-1");
    assert_eq!(envelope.kind, Kind::Interactive);
    assert!(!envelope.accepts_response_payload);
    assert_eq!(envelope.payload, click_envelope()["payload"]);
    assert_eq!(
        envelope.payload["message"]["metadata"]["event_payload"]["version"],
        0
    );
}

#[test]
fn garbage_and_strangers_are_unreadable_not_guessed_at() {
    assert_eq!(parse("not json"), Err(Unreadable::NotJson));
    assert_eq!(parse(""), Err(Unreadable::NotJson));
    for frame in [
        json!({}),
        json!([1, 2]),
        json!({"type": "surprise", "envelope_id": "e"}),
        json!({"type": "interactive", "payload": {}}),
        json!({"type": "interactive", "envelope_id": "", "payload": {}}),
        json!({"type": "slash_commands", "envelope_id": "e", "payload": "text"}),
        json!({"type": "events_api", "envelope_id": "e"}),
    ] {
        assert_eq!(
            parse(&frame.to_string()),
            Err(Unreadable::NotAFrame),
            "{frame}"
        );
    }
}

#[test]
fn an_ack_names_the_envelope_and_carries_the_payload_only_when_there_is_one() {
    let bare: Value = serde_json::from_str(&ack("e-1", None)).unwrap();
    assert_eq!(bare, json!({"envelope_id": "e-1"}));
    let reply = json!({"response_type": "ephemeral", "text": "hi"});
    let full: Value = serde_json::from_str(&ack("e-2", Some(&reply))).unwrap();
    assert_eq!(full, json!({"envelope_id": "e-2", "payload": reply}));
}

#[test]
fn a_redelivered_envelope_is_answered_with_its_first_ack_and_a_failed_one_afresh() {
    let mut recent = Recent::default();
    let Seen::New(serving) = recent.begin("a", now()) else {
        panic!("a is new");
    };
    let Seen::InFlight(waiting) = recent.begin("a", now()) else {
        panic!("a is being served");
    };
    assert!(waiting.has_changed().is_ok(), "still being served");
    recent.answered("a", "ack-a");
    drop(serving);
    assert!(waiting.has_changed().is_err(), "the waiting copy is told");
    assert!(matches!(recent.begin("a", now()), Seen::Answered(ack) if ack == "ack-a"));

    let Seen::New(serving) = recent.begin("b", now()) else {
        panic!("b is new");
    };
    recent.forget("b");
    drop(serving);
    assert!(matches!(recent.begin("b", now()), Seen::New(_)));
}

#[test]
fn an_envelope_whose_serving_was_dropped_unanswered_is_served_by_the_next_copy() {
    let mut recent = Recent::default();
    let Seen::New(serving) = recent.begin("a", now()) else {
        panic!("a is new");
    };
    drop(serving);
    assert!(matches!(recent.begin("a", now()), Seen::New(_)));
    assert_eq!(recent.order.len(), 1, "remembered once");
}

#[test]
fn the_memory_is_bounded_and_forgets_the_oldest_first() {
    let mut recent = Recent::default();
    let mut newest = None;
    for i in 0..Recent::CAPACITY + 10 {
        let Seen::New(serving) = recent.begin(&i.to_string(), now()) else {
            panic!("{i} is new");
        };
        newest = Some(serving);
    }
    assert_eq!(recent.acks.len(), Recent::CAPACITY);
    assert!(
        matches!(recent.begin("0", now()), Seen::New(_)),
        "the oldest was forgotten"
    );
    let newest_id = (Recent::CAPACITY + 9).to_string();
    assert!(matches!(recent.begin(&newest_id, now()), Seen::InFlight(_)));
    drop(newest);
}

#[test]
fn an_envelope_id_is_forgotten_ten_minutes_after_it_came() {
    let mut recent = Recent::default();
    let came = Instant::now();
    let Seen::New(serving) = recent.begin("a", came) else {
        panic!("a is new");
    };
    recent.answered("a", "ack-a");
    drop(serving);
    let later = came + Recent::MAX_AGE;
    assert!(
        matches!(recent.begin("a", later), Seen::Answered(_)),
        "still remembered at ten minutes"
    );
    let Seen::New(_b) = recent.begin("b", later + Duration::from_millis(1)) else {
        panic!("b is new");
    };
    assert!(!recent.acks.contains_key("a"), "a was forgotten");
    assert_eq!(recent.order.len(), 1, "only b is remembered");
    assert!(matches!(recent.begin("a", later), Seen::New(_)));
}
