//! Repeated requests, for both backends: a request repeats a pending one when it has
//! the same token, tool and canonical parameters, and then answers that one instead of
//! opening another.
//!
//! Neither backend keeps a unique index over the pending requests: every decision and
//! expiry would have to delete its entry, on a random page (the key is a hash), and on
//! PostgreSQL such an index also keeps decisions from updating the row in place. The
//! writer looks instead, inside its transaction, at the newest request with the same key
//! (SQLite: by rowid, through an index; PostgreSQL: the one `request_keys` names, with
//! the key locked so that replicas take turns). The newest is the only one that can be
//! pending, because a request is inserted only while none with its key is, whatever its
//! own status.

use std::collections::HashSet;

use crate::approval::{Approval, Status};

/// What makes two requests the same: token, tool and canonical parameters.
pub(super) type RequestKey = (String, String, String);

/// A new approval's [`RequestKey`]; none for rows without a token (the shared table's).
pub(super) fn request_key((approval, params_sha256): &(&Approval, &str)) -> Option<RequestKey> {
    let token = approval.token_name.as_ref()?;
    Some((
        token.clone(),
        approval.tool_name.clone(),
        (*params_sha256).to_owned(),
    ))
}

/// The rows to insert: those that repeat no request pending in the store (`pending`,
/// the keys whose newest request is pending) nor a pending one earlier in `rows`.
pub(super) fn unrepeated<'a, 'r>(
    rows: &'r [(&'a Approval, &'a str)],
    pending: &HashSet<RequestKey>,
) -> Vec<&'r (&'a Approval, &'a str)> {
    let mut opened: HashSet<RequestKey> = HashSet::new();
    rows.iter()
        .filter(|row| {
            let Some(key) = request_key(row) else {
                return true;
            };
            if pending.contains(&key) || opened.contains(&key) {
                return false;
            }
            if row.0.status == Status::Pending {
                opened.insert(key);
            }
            true
        })
        .collect()
}
