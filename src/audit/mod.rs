//! The tamper-evident audit log: every event carries the SHA-256 of the previous
//! event's hash and its own canonical JSON, so altering, removing or reordering any
//! row breaks the chain from there on. This module is the pure part (hashing and
//! verification); the store appends rows in the same transaction as the change.
//! [`checkpoint`] signs the chain now and then, so that even a database writer cannot
//! rewrite or cut it unseen.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub mod checkpoint;

use crate::approval::{Approval, ApprovalId, Happening};
use crate::canonical;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event about to be appended (the chain fields are filled in at append time).
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub approval_id: Option<ApprovalId>,
    pub kind: &'static str,
    pub actor: Option<String>,
    pub at: DateTime<Utc>,
    pub data: Value,
}

impl Draft {
    /// The event of `happening` to `approval`. Its data carries the approval's `server`
    /// (null outside MCP), as every audit event of an approval does.
    pub fn from_happening(approval: &Approval, at: DateTime<Utc>, happening: Happening) -> Self {
        let mut data = happening.data;
        if let Value::Object(fields) = &mut data {
            fields
                .entry("server")
                .or_insert_with(|| Value::from(approval.server.clone()));
        }
        Self {
            approval_id: Some(approval.id),
            kind: happening.kind.as_str(),
            actor: happening.actor,
            at,
            data,
        }
    }
}

/// One stored audit event; also the line format of `signoff audit export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub approval_id: Option<ApprovalId>,
    pub kind: String,
    pub actor: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub at: DateTime<Utc>,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

fn serialize_time<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(at))
}

/// The one time format in hashes and exports: RFC 3339, UTC, microseconds
/// (`2026-11-23T12:00:00.000000Z`).
pub fn format_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The canonical JSON text hashed for an event: the object `{"actor", "approval_id",
/// "at", "data", "kind", "seq"}` (keys in canonical order), written straight out.
fn hashed_text(
    seq: i64,
    approval_id: Option<ApprovalId>,
    kind: &str,
    actor: Option<&str>,
    at: &DateTime<Utc>,
    data: &Value,
) -> String {
    let mut out = String::with_capacity(200);
    out.push_str("{\"actor\":");
    match actor {
        Some(actor) => canonical::write_str(actor, &mut out),
        None => out.push_str("null"),
    }
    out.push_str(",\"approval_id\":");
    match approval_id {
        Some(id) => {
            out.push('"');
            out.push_str(id.0.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"at\":\"");
    out.push_str(&format_time(at));
    out.push_str("\",\"data\":");
    canonical::write(data, &mut out);
    out.push_str(",\"kind\":");
    canonical::write_str(kind, &mut out);
    out.push_str(",\"seq\":");
    out.push_str(&seq.to_string());
    out.push('}');
    out
}

/// `hex(sha256(prev_hash || canonical_json(event)))`, the event given as its
/// canonical text.
fn chain_hash(prev_hash: &str, text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

/// Links drafts onto a chain whose head is (`seq`, `hash`), returning the new entries.
pub fn link(head_seq: i64, head_hash: &str, drafts: Vec<Draft>) -> Vec<Entry> {
    let mut prev = head_hash.to_owned();
    let mut seq = head_seq;
    drafts
        .into_iter()
        .map(|draft| {
            seq += 1;
            let text = hashed_text(
                seq,
                draft.approval_id,
                draft.kind,
                draft.actor.as_deref(),
                &draft.at,
                &draft.data,
            );
            let hash = chain_hash(&prev, &text);
            Entry {
                seq,
                approval_id: draft.approval_id,
                kind: draft.kind.to_owned(),
                actor: draft.actor,
                at: draft.at,
                data: draft.data,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect()
}

/// Where the chain breaks. `Display` names the first bad event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// A sequence number is missing or out of order (a row was removed or inserted).
    Gap { expected: i64, found: i64 },
    /// The stored `prev_hash` is not the previous event's hash.
    Unlinked { seq: i64 },
    /// The event's content no longer matches its hash (the row was altered).
    Altered { seq: i64 },
    /// The chain head no longer matches the last event (rows were cut off the end).
    Head { head_seq: i64, last_seq: i64 },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Gap { expected, found } => {
                write!(
                    f,
                    "audit chain broken at event {expected}: found event {found} instead (events removed or inserted)"
                )
            }
            Break::Unlinked { seq } => {
                write!(
                    f,
                    "audit chain broken at event {seq}: prev_hash does not match event {}",
                    seq - 1
                )
            }
            Break::Altered { seq } => write!(
                f,
                "audit chain broken at event {seq}: its content does not match its hash (altered)"
            ),
            Break::Head { head_seq, last_seq } => {
                write!(
                    f,
                    "audit chain head says {head_seq} events but the log ends at event {last_seq} (events removed)"
                )
            }
        }
    }
}

/// Checks entries in `seq` order, one at a time, so a huge log verifies in constant memory.
#[derive(Debug)]
pub struct Verifier {
    last_seq: i64,
    last_hash: String,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl Verifier {
    pub fn check(&mut self, entry: &Entry) -> Result<(), Break> {
        let expected = self.last_seq + 1;
        if entry.seq != expected {
            return Err(Break::Gap {
                expected,
                found: entry.seq,
            });
        }
        if entry.prev_hash != self.last_hash {
            return Err(Break::Unlinked { seq: entry.seq });
        }
        let text = hashed_text(
            entry.seq,
            entry.approval_id,
            &entry.kind,
            entry.actor.as_deref(),
            &entry.at,
            &entry.data,
        );
        if chain_hash(&entry.prev_hash, &text) != entry.hash {
            return Err(Break::Altered { seq: entry.seq });
        }
        self.last_seq = entry.seq;
        self.last_hash = entry.hash.clone();
        Ok(())
    }

    /// After the last entry: the stored head must point at it.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<i64, Break> {
        if head_seq != self.last_seq || head_hash != self.last_hash {
            return Err(Break::Head {
                head_seq,
                last_seq: self.last_seq,
            });
        }
        Ok(self.last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn drafts(n: usize) -> Vec<Draft> {
        (0..n)
            .map(|i| Draft {
                approval_id: Some(ApprovalId::new()),
                kind: "vote",
                actor: Some(format!("U{i}")),
                at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, i as u32).unwrap(),
                data: json!({"decision": "approve", "n": i}),
            })
            .collect()
    }

    fn verify(entries: &[Entry]) -> Result<i64, Break> {
        let mut v = Verifier::default();
        for e in entries {
            v.check(e)?;
        }
        let last = entries.last().unwrap();
        v.finish(last.seq, &last.hash)
    }

    #[test]
    fn a_linked_chain_verifies_and_continues_across_appends() {
        let mut entries = link(0, GENESIS_HASH, drafts(3));
        let last = entries.last().unwrap().clone();
        entries.extend(link(last.seq, &last.hash, drafts(2)));
        assert_eq!(verify(&entries), Ok(5));
        assert_eq!(entries[0].prev_hash, GENESIS_HASH);
    }

    #[test]
    fn altering_any_field_names_that_event() {
        let entries = link(0, GENESIS_HASH, drafts(4));
        let mut altered = entries.clone();
        altered[2].data = json!({"decision": "deny", "n": 2});
        assert_eq!(verify(&altered), Err(Break::Altered { seq: 3 }));
        let mut altered = entries.clone();
        altered[1].actor = Some("U9".into());
        assert_eq!(verify(&altered), Err(Break::Altered { seq: 2 }));
        let mut altered = entries;
        altered[0].at += chrono::Duration::microseconds(1);
        assert_eq!(verify(&altered), Err(Break::Altered { seq: 1 }));
    }

    #[test]
    fn removing_or_rehashing_an_event_is_detected() {
        let entries = link(0, GENESIS_HASH, drafts(4));
        let mut removed = entries.clone();
        removed.remove(1);
        assert_eq!(
            verify(&removed),
            Err(Break::Gap {
                expected: 2,
                found: 3
            })
        );

        // Recomputing the altered row's own hash does not help: the next row still
        // points at the old one.
        let mut rehashed = entries.clone();
        rehashed[1].data = json!({"forged": true});
        let text = hashed_text(
            2,
            rehashed[1].approval_id,
            "vote",
            rehashed[1].actor.as_deref(),
            &rehashed[1].at,
            &rehashed[1].data,
        );
        rehashed[1].hash = chain_hash(&rehashed[1].prev_hash, &text);
        assert_eq!(verify(&rehashed), Err(Break::Unlinked { seq: 3 }));

        let mut v = Verifier::default();
        for e in &entries[..3] {
            v.check(e).unwrap();
        }
        assert_eq!(
            v.finish(4, &entries[3].hash),
            Err(Break::Head {
                head_seq: 4,
                last_seq: 3
            })
        );
    }

    /// What the hash covers, built the long way: the event as a JSON value, then its
    /// canonical text. `hashed_text` must write exactly this, or every stored chain
    /// would stop verifying.
    fn hashed_body_as_value(
        seq: i64,
        approval_id: Option<ApprovalId>,
        kind: &str,
        actor: Option<&str>,
        at: &DateTime<Utc>,
        data: &Value,
    ) -> String {
        canonical::to_string(&json!({
            "seq": seq,
            "approval_id": approval_id,
            "kind": kind,
            "actor": actor,
            "at": at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "data": data,
        }))
    }

    proptest::proptest! {
        #[test]
        fn the_hashed_text_is_the_canonical_json_of_the_event(
            seq in 1i64..i64::MAX,
            with_id in proptest::bool::ANY,
            kind in "[a-z_]{1,20}",
            actor in proptest::option::of("\\PC{0,30}"),
            micros in 0i64..4_102_444_800_000_000,
            data in proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4),
        ) {
            let approval_id = with_id.then(ApprovalId::new);
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let data = json!(data);
            proptest::prop_assert_eq!(
                hashed_text(seq, approval_id, &kind, actor.as_deref(), &at, &data),
                hashed_body_as_value(seq, approval_id, &kind, actor.as_deref(), &at, &data)
            );
        }
    }

    #[test]
    fn break_messages_name_the_event() {
        assert!(Break::Altered { seq: 7 }.to_string().contains("event 7"));
    }
}
