//! An interaction payload (block_actions, view_submission) read into the few fields
//! signoff uses. Slack sends the clicked message whole with every click (its blocks,
//! its inputs' state), some kilobytes that nothing here reads: they are skipped
//! unread instead of being built into a JSON tree and dropped again, which had been
//! the largest part of the click handler's own CPU under load.
//!
//! A field signoff reads that holds something other than a string (a number, null, an
//! object) counts as missing, as it did when the payload was read as a tree; an object
//! on the path to one (`user`, `actions`, `message`...) that holds a string, a number or
//! a boolean makes the payload unreadable (a 400); null there counts as missing.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The fields of an interaction payload that signoff reads, borrowed from the raw
/// JSON where they need no unescaping.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Payload<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Text<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub user: Named<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub channel: Named<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub container: Container<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub actions: Vec<Action<'a>>,
    #[serde(borrow)]
    pub trigger_id: Text<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub message: Message<'a>,
    /// A submitted modal, read whole: only `view_submission` payloads carry one, and
    /// its inputs' values are what the submission decides.
    pub view: Value,
}

impl<'a> Payload<'a> {
    /// Reads the payload of a signed HTTP form.
    pub fn from_json(raw: &'a str) -> serde_json::Result<Self> {
        serde_json::from_str(raw)
    }

    /// Reads the payload of a Socket Mode envelope, already parsed.
    pub fn from_value(value: &'a Value) -> serde_json::Result<Self> {
        Payload::deserialize(value)
    }
}

/// An object of which only `id` is read (`user`, `channel`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Named<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
}

/// Where the click happened.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Container<'a> {
    #[serde(borrow)]
    pub channel_id: Text<'a>,
    #[serde(borrow)]
    pub message_ts: Text<'a>,
}

/// A button clicked.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Action<'a> {
    #[serde(borrow)]
    pub action_id: Text<'a>,
    #[serde(borrow)]
    pub value: Text<'a>,
}

/// The message clicked: its timestamp and the metadata signoff posted it with.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Message<'a> {
    #[serde(borrow)]
    pub ts: Text<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub metadata: Metadata<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Metadata<'a> {
    #[serde(borrow)]
    pub event_type: Text<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub event_payload: EventPayload<'a>,
}

/// The approvals a message's metadata names: one (`approval_id`), or a batch's
/// (`items`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct EventPayload<'a> {
    #[serde(borrow)]
    pub approval_id: Text<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub items: Vec<Text<'a>>,
}

/// An object or list, or its default when it is `null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string field, or nothing when it is missing or holds anything but a string.
#[derive(Debug, Default)]
pub(super) struct Text<'a>(Option<Cow<'a, str>>);

impl Text<'_> {
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Borrowed(text))))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(text.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(text))))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_click_is_read_into_the_fields_signoff_uses_and_the_message_is_skipped() {
        let raw = json!({
            "type": "block_actions",
            "user": {"id": "U1", "name": "ann"},
            "channel": {"id": "C1", "name": "approvals"},
            "container": {"type": "message", "channel_id": "C1", "message_ts": "1.2"},
            "trigger_id": "9.9.9",
            "message": {"ts": "1.2", "blocks": [{"type": "section", "text": {"text": "a \"b\""}}],
                "metadata": {"event_type": "signoff_approval_posted",
                    "event_payload": {"approval_id": "A1", "items": ["A2", 7, "A3"]}}},
            "actions": [{"action_id": "approve", "value": "A1", "style": "primary"}],
            "state": {"values": {}},
        })
        .to_string();
        let payload = Payload::from_json(&raw).unwrap();
        assert_eq!(payload.kind.as_str(), Some("block_actions"));
        assert_eq!(payload.user.id.as_str(), Some("U1"));
        assert_eq!(payload.channel.id.as_str(), Some("C1"));
        assert_eq!(payload.container.channel_id.as_str(), Some("C1"));
        assert_eq!(payload.container.message_ts.as_str(), Some("1.2"));
        assert_eq!(payload.trigger_id.as_str(), Some("9.9.9"));
        assert_eq!(payload.message.ts.as_str(), Some("1.2"));
        let event = &payload.message.metadata;
        assert_eq!(event.event_type.as_str(), Some("signoff_approval_posted"));
        assert_eq!(event.event_payload.approval_id.as_str(), Some("A1"));
        let items: Vec<_> = event.event_payload.items.iter().map(Text::as_str).collect();
        assert_eq!(items, [Some("A2"), None, Some("A3")]);
        assert_eq!(payload.actions[0].action_id.as_str(), Some("approve"));
        assert_eq!(payload.actions[0].value.as_str(), Some("A1"));
        assert!(
            payload.view.is_null(),
            "a click on a message carries no view"
        );
    }

    #[test]
    fn a_field_holding_anything_but_a_string_counts_as_missing() {
        for odd in [
            json!(null),
            json!(7),
            json!(1.5),
            json!(true),
            json!({"id": "U1"}),
            json!(["U1"]),
        ] {
            let raw = json!({"type": odd, "user": {"id": odd}, "actions": [{"value": odd}]});
            let raw = raw.to_string();
            let payload = Payload::from_json(&raw).unwrap();
            assert_eq!(payload.kind.as_str(), None, "{odd}");
            assert_eq!(payload.user.id.as_str(), None, "{odd}");
            assert_eq!(payload.actions[0].value.as_str(), None, "{odd}");
        }
    }

    #[test]
    fn escaped_text_is_unescaped_and_a_socket_mode_value_reads_the_same() {
        let value = json!({"type": "view_submission", "user": {"id": "U\"1\u{e9}"},
            "view": {"callback_id": "deny", "private_metadata": "x"}});
        let raw = value.to_string();
        for payload in [
            Payload::from_json(&raw).unwrap(),
            Payload::from_value(&value).unwrap(),
        ] {
            assert_eq!(payload.user.id.as_str(), Some("U\"1\u{e9}"));
            assert_eq!(payload.kind.as_str(), Some("view_submission"));
            assert_eq!(payload.view["callback_id"], "deny");
        }
    }

    #[test]
    fn an_object_on_the_way_to_a_field_that_holds_text_or_a_number_is_unreadable() {
        for raw in [
            r#"{"user": "U1"}"#,
            r#"{"actions": {"value": "A1"}}"#,
            r#"{"message": "1.2"}"#,
            r#"{"container": 7}"#,
            r#"{"type": "block_actions""#,
        ] {
            assert!(Payload::from_json(raw).is_err(), "{raw}");
        }
        assert!(
            Payload::from_json("{}").is_ok(),
            "every field may be missing"
        );
        let nulls = r#"{"user": null, "actions": null, "message": {"metadata": null}}"#;
        let payload = Payload::from_json(nulls).expect("null is missing");
        assert!(payload.user.id.as_str().is_none() && payload.actions.is_empty());
    }
}
