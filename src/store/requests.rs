//! Repeated requests, for both backends: a request repeats an open one (pending or
//! approved, and not past its expiry, even before the expiry pass has marked it) when
//! it has the same token, server, tool and canonical parameters, and then answers that
//! one instead of opening another. An MCP client that calls again after its call timed out so joins the
//! approval it is waiting for, also once it is decided, and runs it once.
//!
//! Neither backend keeps a unique index over the pending requests: every decision and
//! expiry would have to delete its entry, on a random page (the key is a hash), and on
//! PostgreSQL such an index also keeps decisions from updating the row in place. The
//! writer looks instead, inside its transaction, at the newest request with the same key
//! (SQLite: by rowid, through an index; PostgreSQL: the one `request_keys` names, with
//! the key locked so that replicas take turns). The newest is the only one that can be
//! open, because a request is inserted only while none with its key is, whatever its
//! own status.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::approval::{Approval, Status};

/// What makes two requests the same: token, tool and the [`request_hash`] of server
/// and canonical parameters.
pub(super) type RequestKey = (String, String, String);

/// The hash stored as `params_sha256`: the SHA-256 of the canonical parameters, and for
/// an MCP call of the server's name too (`server:NAME` and a newline before them, which
/// canonical JSON, starting with `{`, never begins with), so that one tool on two
/// servers makes two different requests.
pub fn request_hash(server: Option<&str>, parameters: &Value) -> String {
    match server {
        None => crate::canonical::value_sha256_hex(parameters),
        Some(server) => {
            let mut hasher = Sha256::new();
            hasher.update(b"server:");
            hasher.update(server.as_bytes());
            hasher.update(b"\n");
            hasher.update(crate::canonical::value_text(parameters).as_bytes());
            hex::encode(hasher.finalize())
        }
    }
}

/// The hash of the request an approval was opened for (its parameters as first asked,
/// before any edit).
pub fn approval_request_hash(approval: &Approval) -> String {
    let asked = approval
        .original_parameters
        .as_ref()
        .unwrap_or(&approval.parameters);
    request_hash(approval.server.as_deref(), asked)
}

/// Whether a request opened as `approval` is open (see the module doc): what a
/// repeat joins.
pub(super) fn opens(status: Status) -> bool {
    matches!(status, Status::Pending | Status::Approved)
}

/// The time a batch of new requests is judged at: the latest of their creations.
pub(super) fn now_of(rows: &[(&Approval, &str)]) -> DateTime<Utc> {
    rows.iter()
        .map(|(approval, _)| approval.created_at)
        .max()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A new approval's [`RequestKey`]; none for rows without a token (the shared table's).
pub(super) fn request_key((approval, params_sha256): &(&Approval, &str)) -> Option<RequestKey> {
    let token = approval.token_name.as_ref()?;
    Some((
        token.clone(),
        approval.tool_name.clone(),
        (*params_sha256).to_owned(),
    ))
}

/// The rows to insert, before the look into the store: those that repeat no open
/// request earlier in `rows` (the insert then drops those whose key is open in the
/// store, and with it every later row of that key).
pub(super) fn unrepeated<'a, 'r>(
    rows: &'r [(&'a Approval, &'a str)],
) -> Vec<&'r (&'a Approval, &'a str)> {
    let mut opened: HashSet<RequestKey> = HashSet::new();
    rows.iter()
        .filter(|row| {
            let Some(key) = request_key(row) else {
                return true;
            };
            if opened.contains(&key) {
                return false;
            }
            if opens(row.0.status) {
                opened.insert(key);
            }
            true
        })
        .collect()
}
