//! The statements whose text is the same on both backends (each binds its own column
//! types: SQLite keeps times and JSON as text, PostgreSQL as TIMESTAMPTZ and JSONB).

/// API tokens.
pub(super) mod tokens {
    /// A new token, or a new secret under the name of a revoked one (so that a token
    /// can be replaced and keep its identity); nothing when an active one has the name.
    pub const INSERT: &str = "INSERT INTO api_tokens (name, token_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, \
         created_at = excluded.created_at, revoked_at = NULL \
         WHERE api_tokens.revoked_at IS NOT NULL";
    /// A new secret for the active token `$1`: the old one stops working.
    pub const ROTATE: &str = "UPDATE api_tokens SET token_hash = $2, created_at = $3 \
         WHERE name = $1 AND revoked_at IS NULL";
    pub const REVOKE: &str =
        "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL";
    pub const LIST: &str = "SELECT name, created_at, revoked_at FROM api_tokens ORDER BY name";
    /// The name of the active token with hash `$1`.
    pub const LOOKUP: &str =
        "SELECT name FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL";
}

/// A vote taken back (an edit resets earlier approvals).
pub(super) const DELETE_VOTE: &str = "DELETE FROM votes WHERE approval_id = $1 AND user_id = $2";

/// Whether `$1` is a row another program inserted that nobody classified yet.
pub(super) const UNCLASSIFIED_ROW: &str =
    "SELECT EXISTS (SELECT 1 FROM pending_approvals WHERE id = $1 AND routing IS NULL)";

/// Classifies a row another program inserted, if nobody did yet (`$12`: its first
/// nudge, [`crate::jobs::first_nudge`]).
pub(super) const ADOPT: &str = "UPDATE pending_approvals SET risk_tier = $2, status = $3, \
     decided_by = $4, decision_at = $5, reason = $6, summary = $7, required_approvals = $8, \
     routing = $9, expires_at = $10, version = $11, nudge_at = $12 \
     WHERE id = $1 AND routing IS NULL AND status = 'pending'";

/// Jobs.
pub(super) mod jobs {
    pub const INSERT: &str = "INSERT INTO jobs (approval_id, kind, payload, due_at, created_at) ";
    /// After `INSERT` and `SELECT s.id, kind, payload`: one job per approval newer
    /// than the oldest version the rows `(id, shown, at)` (between the two parts) say
    /// its messages show, due at its first row's `at`.
    pub const IF_NEWER: (&str, &str) = (
        ", s.at, s.at FROM (SELECT id, min(shown) AS shown, min(at) AS at FROM ",
        " GROUP BY id) AS s JOIN pending_approvals a ON a.id = s.id \
         WHERE a.version > s.shown ORDER BY s.id",
    );
    /// SQLite: deletes the finished jobs of `$1`, a JSON array of `[id, lease]`
    /// pairs, whose rows still hold the lease of the claim that ran them (see
    /// [`crate::jobs::DueJob::lease_until`]), and answers their ids.
    pub const FINISH_JSON: &str = "DELETE FROM jobs \
         WHERE id IN (SELECT value ->> 0 FROM json_each($1)) \
         AND (id, locked_until) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1)) \
         RETURNING id";
    /// Schedules job `$1` again at `$2` after a failed attempt, if its row still
    /// holds the lease `$4` of the claim that ran it.
    pub const RETRY: &str = "UPDATE jobs SET due_at = $2, locked_until = NULL, last_error = $3 \
         WHERE id = $1 AND locked_until = $4";
    /// Gives job `$1` up at `$4`, if its row still holds the lease `$3`: a dead job's
    /// `due_at` is when it was given up (`/health/approvals` counts the recent ones).
    pub const KILL: &str = "UPDATE jobs SET state = 'dead', locked_until = NULL, last_error = $2, \
         due_at = $4 WHERE id = $1 AND locked_until = $3";
    /// A ready job due and not leased at `$1`.
    macro_rules! due_and_free {
        () => {
            "jobs.state = 'ready' AND jobs.due_at <= $1 \
             AND (jobs.locked_until IS NULL OR jobs.locked_until <= $1)"
        };
    }
    /// The jobs due and free at `$1` for which `$kinds` holds, `$2` at most, earliest
    /// first: read, not leased (the writer claims them with `CLAIM_JSON` or
    /// `CLAIM_ARRAYS`).
    macro_rules! due {
        ($kinds:literal) => {
            concat!(
                "SELECT id, approval_id, kind, payload, attempts FROM jobs WHERE ",
                due_and_free!(),
                $kinds,
                " ORDER BY due_at LIMIT $2"
            )
        };
    }
    /// Every kind due (`jobs_due`, migration 0001).
    pub const DUE: &str = due!("");
    /// Every kind due but callbacks (`jobs_due_deliveries`: the condition is the
    /// index's, word for word, so that the planners see the index answers it).
    pub const DUE_DELIVERIES: &str = due!(" AND jobs.kind <> 'callback'");
    /// The callbacks due (`jobs_due_callbacks`).
    pub const DUE_CALLBACKS: &str = due!(" AND jobs.kind = 'callback'");
    /// The callbacks due, `$2` at most, in turns across
    /// requesters: each one's earliest, then each one's second, and so on (earliest
    /// first within a turn), so that a backlog of one requester's does not hide
    /// another's first (`outbox::slots` picks among them).
    pub const DUE_CALLBACKS_IN_TURNS: &str = concat!(
        "SELECT id, approval_id, kind, payload, attempts FROM (SELECT jobs.id, \
         jobs.approval_id, jobs.kind, jobs.payload, jobs.attempts, jobs.due_at, \
         ROW_NUMBER() OVER (PARTITION BY jobs.payload ->> 'requester' \
         ORDER BY jobs.due_at, jobs.id) AS turn FROM jobs WHERE ",
        due_and_free!(),
        " AND jobs.kind = 'callback') AS due ORDER BY turn, due_at, id LIMIT $2"
    );

    /// The read of the jobs `which` takes.
    pub fn due(which: crate::jobs::Due) -> &'static str {
        match which {
            crate::jobs::Due::Deliveries => DUE_DELIVERIES,
            crate::jobs::Due::Callbacks => DUE_CALLBACKS,
            crate::jobs::Due::CallbacksInTurns => DUE_CALLBACKS_IN_TURNS,
            crate::jobs::Due::All => DUE,
        }
    }
    /// A claim, for each row of `v` (`at`: null to lease): leased until `$2`, the
    /// attempt counted; or moved to wait until `at` (pacing: no lease, no attempt).
    macro_rules! claim_set {
        () => {
            "UPDATE jobs SET due_at = COALESCE(v.at, jobs.due_at), \
             locked_until = CASE WHEN v.at IS NULL THEN $2 END, \
             attempts = jobs.attempts + CASE WHEN v.at IS NULL THEN 1 ELSE 0 END FROM "
        };
    }
    /// What a claim answers: each job written, and whether it was leased.
    macro_rules! claim_returning {
        () => {
            " RETURNING jobs.id, jobs.attempts, jobs.locked_until IS NOT NULL AS leased"
        };
    }
    /// SQLite: claims the jobs of `$3`, a JSON array of `[id, at]` pairs, that are
    /// still due and free at `$1`, one write each (one writer: nothing to skip).
    pub const CLAIM_JSON: &str = concat!(
        claim_set!(),
        "(SELECT value ->> 0 AS id, value ->> 1 AS at FROM json_each($3)) AS v \
         WHERE jobs.id = v.id AND ",
        due_and_free!(),
        claim_returning!()
    );
    /// PostgreSQL: claims the jobs `$3` (with `$4` their times) that are still due
    /// and free at `$1`, one write each, skipping the rows another replica is claiming
    /// right now. Each is found and locked through the key, then written through the
    /// row it locked: a plain join back on the key would hash the whole table.
    pub const CLAIM_ARRAYS: &str = concat!(
        "WITH v AS MATERIALIZED (SELECT j.ctid AS row, a.at \
         FROM unnest($3::bigint[], $4::timestamptz[]) AS a(id, at) \
         CROSS JOIN LATERAL (SELECT ctid FROM jobs WHERE jobs.id = a.id AND ",
        due_and_free!(),
        " FOR UPDATE SKIP LOCKED) AS j) ",
        claim_set!(),
        "v WHERE jobs.ctid = v.row",
        claim_returning!()
    );
}

/// Slack messages signoff posted.
pub(super) mod messages {
    /// Records posted messages, read from `$rows` (each backend's table of bound rows
    /// with these column names); a message recorded already is left as it is.
    macro_rules! insert {
        ($rows:literal) => {
            concat!(
                "INSERT INTO slack_messages (approval_id, channel, ts, kind, permalink, \
                 rendered_version, created_at) SELECT approval_id, channel, ts, kind, \
                 permalink, rendered_version, created_at FROM ",
                $rows,
                // `WHERE true`: SQLite otherwise reads `ON` as a join's.
                " WHERE true ON CONFLICT DO NOTHING"
            )
        };
    }
    /// SQLite: `$1` a JSON array of rows, each an array in the columns' order.
    pub const INSERT_JSON: &str = insert!(
        "(SELECT value ->> 0 AS approval_id, value ->> 1 AS channel, value ->> 2 AS ts, \
         value ->> 3 AS kind, value ->> 4 AS permalink, value ->> 5 AS rendered_version, \
         value ->> 6 AS created_at FROM json_each($1))"
    );
    /// PostgreSQL: `$1`…`$7` one array per column.
    pub const INSERT_ARRAYS: &str = insert!(
        "UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
         $7::timestamptz[]) AS v(approval_id, channel, ts, kind, permalink, \
         rendered_version, created_at)"
    );
    pub const SET_PERMALINK: &str =
        "UPDATE slack_messages SET permalink = $3 WHERE channel = $1 AND ts = $2";
    /// Moves approvals' rows of messages (a batch message has one row per approval)
    /// up to the versions the rows `v` pair them with (`channel, ts, approval_id,
    /// version`), never backwards: the statement before `v`, and after it. Kept back
    /// by the writer (see each backend's `deferred`), so the rows are bound in between.
    pub const MARK_RENDERED: (&str, &str) = (
        "UPDATE slack_messages SET rendered_version = v.version FROM ",
        " WHERE slack_messages.channel = v.channel AND slack_messages.ts = v.ts \
         AND slack_messages.approval_id = v.approval_id \
         AND slack_messages.rendered_version < v.version",
    );
    /// SQLite's rows `v` of [`MARK_RENDERED`], around a bound JSON array of rows, each
    /// `[channel, ts, approval_id, version]`.
    pub const RENDERED_JSON: (&str, &str) = (
        "(SELECT value ->> 0 AS channel, value ->> 1 AS ts, value ->> 2 AS approval_id, \
         value ->> 3 AS version FROM json_each(",
        ")) AS v",
    );
}

/// Batches of look-alike requests posted as one message (see `ops::batching`).
pub(super) mod batches {
    /// The open batch with key `$1` that a request expiring at `$3` may join at `$2`:
    /// its window still open, its post before that expiry, and room for one more.
    macro_rules! open {
        ($lock:literal) => {
            concat!(
                "SELECT leader_id, size FROM slack_batches WHERE batch_key = $1 \
                 AND closes_at > $2 AND closes_at < $3 AND size < $4 \
                 ORDER BY closes_at LIMIT 1",
                $lock
            )
        };
    }
    pub const OPEN: &str = open!("");
    /// Locked until commit: the post that closes it waits for this join, or this
    /// join sees it closed.
    pub const OPEN_LOCKED: &str = open!(" FOR UPDATE");
    pub const START: &str =
        "INSERT INTO slack_batches (leader_id, batch_key, closes_at, size) VALUES ($1, $2, $3, 1)";
    pub const GROW: &str = "UPDATE slack_batches SET size = size + 1 WHERE leader_id = $1";
    pub const MEMBER: &str =
        "INSERT INTO slack_batch_members (approval_id, leader_id, position) VALUES ($1, $2, $3)";
    pub const CLOSE: &str = "DELETE FROM slack_batches WHERE leader_id = $1";
    /// The members of the batch `$1` leads, in order.
    pub const MEMBERS_OF_LEADER: &str =
        "SELECT approval_id FROM slack_batch_members WHERE leader_id = $1 ORDER BY position";
    /// The members of the batch `$1` belongs to, in order (none when it is not in one).
    pub const MEMBERS: &str = "SELECT approval_id FROM slack_batch_members WHERE leader_id = \
         (SELECT leader_id FROM slack_batch_members WHERE approval_id = $1) ORDER BY position";
}

/// Requesters refused for having `max_pending` requests waiting (see `ops::throttle`).
pub(super) mod throttles {
    /// `$4` refusals of `$1`'s requests for channel `$2`, the first at `$3`:
    /// `refused` is `$4` when they start an episode.
    pub const REFUSED: &str = "INSERT INTO throttles (token_name, channel, since, refused) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (token_name, channel) \
         DO UPDATE SET refused = throttles.refused + excluded.refused RETURNING refused";
    /// `$1` was accepted again: its episodes end.
    pub const END: &str = "DELETE FROM throttles WHERE token_name = $1";
}

/// The chain's head with the lowest and highest `seq` of any event, in one statement
/// (one snapshot): `audit verify`'s look for rows beside the chain.
pub(super) const AUDIT_BOUNDS: &str = "SELECT h.seq, (SELECT min(seq) FROM audit_events), \
     (SELECT max(seq) FROM audit_events) FROM audit_head h WHERE h.id = 1";

/// Signed audit checkpoints.
pub(super) mod checkpoints {
    pub const ALL: &str = "SELECT n, seq, hash, at, signature FROM audit_checkpoints ORDER BY n";
    pub const NEWEST: &str =
        "SELECT n, seq, hash, at, signature FROM audit_checkpoints ORDER BY n DESC LIMIT 1";
    pub const INSERT: &str =
        "INSERT INTO audit_checkpoints (n, seq, hash, at, signature) VALUES ($1, $2, $3, $4, $5)";
}

#[cfg(test)]
mod tests {
    use crate::approval::Status;
    use crate::jobs::{CALLBACK_KIND, Job};

    #[test]
    fn the_reads_by_kind_name_the_callbacks_kind() {
        let kind = Job::Callback {
            status: Status::Approved,
            requester: None,
        }
        .kind();
        assert_eq!(kind, CALLBACK_KIND);
        let named = format!("jobs.kind = '{kind}'");
        assert!(super::jobs::DUE_CALLBACKS.contains(&named));
        let other = format!("jobs.kind <> '{kind}'");
        assert!(super::jobs::DUE_DELIVERIES.contains(&other));
        for backend in ["sqlite", "postgres"] {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/");
            let indexes = std::fs::read_dir(format!("{dir}{backend}"))
                .unwrap()
                .map(|file| std::fs::read_to_string(file.unwrap().path()).unwrap())
                .collect::<String>();
            assert!(indexes.contains(&format!("kind = '{kind}'")), "{backend}");
            assert!(indexes.contains(&format!("kind <> '{kind}'")), "{backend}");
        }
    }
}
