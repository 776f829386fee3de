//! What both backends share: the column list, the multi-row insert's start, the main
//! post's link, chunking, id-prefix ranges, and the decoding of stored names, messages,
//! due jobs and a claim's answer.

use crate::approval::ApprovalId;

/// The `pending_approvals` columns every backend writes when it opens an approval, in
/// bind order.
macro_rules! opening_columns {
    () => {
        "id, tool_name, parameters, risk_tier, status, requested_by, decided_by, decision_at, \
         expires_at, created_at, summary, context, reason, original_parameters, token_name, \
         idempotency_key, callback_url, required_approvals, routing, executed_at, version, server"
    };
}

/// The `pending_approvals` columns every backend reads, in order: those written when
/// an approval opens, then `decided_via` (set only by a decision).
macro_rules! approval_columns {
    () => {
        concat!(opening_columns!(), ", decided_via")
    };
}

/// The permalink of the main channel post (the first, if Slack gave one a link) of the
/// approval whose id is `$id` (a parameter, or the id column of the approvals read),
/// as a scalar subquery beside the approval's own read.
macro_rules! main_link_of {
    ($id:literal) => {
        concat!(
            "(SELECT permalink FROM slack_messages WHERE approval_id = ",
            $id,
            " AND kind = 'main' AND permalink IS NOT NULL ORDER BY created_at LIMIT 1)"
        )
    };
}

/// Whether the message in channel `$2` at `$3` is one of approval `$1`'s (a post, a
/// batch's post, an escalation or a reminder DM), as a scalar beside its read.
macro_rules! shown_in_2_3_of_1 {
    () => {
        "(EXISTS (SELECT 1 FROM slack_messages WHERE approval_id = $1 AND channel = $2 AND ts = $3))"
    };
}

/// SQLite: which of the pairs `$2` lists (a JSON array of `[approval_id, channel,
/// ts]`) name one of the approval's recorded messages, as a JSON array of their
/// 0-based positions; a column beside the approvals' read (`Tx::load_many_shown`).
macro_rules! shown_at_json_2 {
    () => {
        "(SELECT json_group_array(k.key) FROM json_each($2) AS k WHERE EXISTS \
         (SELECT 1 FROM slack_messages m WHERE m.channel = k.value ->> 1 \
         AND m.ts = k.value ->> 2 AND m.approval_id = k.value ->> 0))"
    };
}

/// PostgreSQL: the same, per approval row, as an array: `$2` maps each approval's id
/// to the pairs asked about it (`[channel, ts, position]`), each looked up on its own
/// through the primary key behind a `LIMIT 1`, so that a plan kept from a freshly
/// migrated database still reads the key's index.
macro_rules! shown_at_jsonb_2 {
    () => {
        "ARRAY(SELECT (e ->> 2)::bigint \
         FROM jsonb_array_elements($2::jsonb -> pending_approvals.id::text) AS e \
         CROSS JOIN LATERAL (SELECT 1 FROM slack_messages m WHERE m.channel = e ->> 0 \
         AND m.ts = e ->> 1 AND m.approval_id = pending_approvals.id LIMIT 1) AS m)"
    };
}

/// The first and last ids that start with `prefix` (hex digits, dashes where an id
/// has them or nowhere, any case); `None` for anything else.
pub(super) fn prefix_range(prefix: &str) -> Option<(ApprovalId, ApprovalId)> {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let mut digits = String::with_capacity(32);
    for (at, c) in prefix.chars().enumerate() {
        match c {
            '-' if DASHES.contains(&at) => {}
            c if c.is_ascii_hexdigit() => digits.push(c.to_ascii_lowercase()),
            _ => return None,
        }
    }
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    let padded = |fill: char| -> Option<ApprovalId> {
        let hex: String = digits
            .chars()
            .chain(std::iter::repeat(fill))
            .take(32)
            .collect();
        uuid::Uuid::parse_str(&hex).ok().map(ApprovalId)
    };
    Some((padded('0')?, padded('f')?))
}

/// The Slack messages of the approval `$1`, oldest first, with the columns
/// [`posted_message`] reads and, optionally, more (`", … AS name"`).
macro_rules! select_messages {
    () => {
        select_messages!("")
    };
    ($more:literal) => {
        concat!(
            "SELECT channel, ts, kind, permalink, rendered_version",
            $more,
            " FROM slack_messages WHERE approval_id = $1 ORDER BY created_at, channel"
        )
    };
}

/// The start of a multi-row `INSERT` of every approval column plus `params_sha256`
/// and `nudge_at` ([`crate::jobs::first_nudge`]); the backend pushes the rows, then
/// what to do with a reused idempotency key and what to answer.
macro_rules! insert_approvals_sql {
    () => {
        concat!(
            "INSERT INTO pending_approvals (",
            opening_columns!(),
            ", params_sha256, nudge_at) "
        )
    };
}

/// Binds the idempotency key `$2` of token `$1`, which came with a repeat that joined
/// approval `$3`, to that approval, unless the token has used the key already: for a
/// request of its own (that row's `idempotency_key`) or another join (the key's row).
macro_rules! bind_key_sql {
    () => {
        "INSERT INTO joined_idempotency_keys (token_name, idempotency_key, approval_id) \
         SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM pending_approvals \
           WHERE token_name = $1 AND idempotency_key = $2) \
         ON CONFLICT DO NOTHING"
    };
}

/// The approval token `$1`'s idempotency key `$2` names: the one opened with it, else
/// the one a repeat joined with it (see [`bind_key_sql`]).
macro_rules! named_by_key_sql {
    () => {
        "SELECT COALESCE( \
           (SELECT id FROM pending_approvals WHERE token_name = $1 AND idempotency_key = $2), \
           (SELECT approval_id FROM joined_idempotency_keys \
            WHERE token_name = $1 AND idempotency_key = $2))"
    };
}

/// Splits `rows` into chunks whose sizes are powers of two, largest first, none over
/// `max` (itself a power of two). A multi-row statement then has at most
/// `log2(max) + 1` shapes, so the prepared-statement cache holds few of them: on
/// SQLite each shape is a compiled program in this process's memory.
pub(crate) fn pow2_chunks<T>(mut rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = max.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// Decodes the JSON array of votes a backend's approval query aggregates.
pub(super) fn decode_votes(json: &str) -> sqlx::Result<Vec<crate::approval::Vote>> {
    serde_json::from_str(json).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// Decodes a message's `kind` column.
pub(super) fn decode_kind(text: &str) -> sqlx::Result<crate::jobs::MessageKind> {
    crate::jobs::MessageKind::parse(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown message kind {text:?}").into()))
}

/// The key-value arguments of a JSON object of one `slack_messages` row, with
/// `select_messages!`'s columns (PostgreSQL's `json_build_object`, SQLite's
/// `json_object`): what [`decode_messages`] reads.
macro_rules! message_object_fields {
    () => {
        "'channel', channel, 'ts', ts, 'kind', kind, 'permalink', permalink, \
         'rendered_version', rendered_version"
    };
}

/// An approval's messages aggregated as one JSON array of objects of
/// [`message_object_fields!`], in `select_messages!`'s order (`None`: PostgreSQL's
/// aggregate of no rows), as messages of approval `id`.
pub(super) fn decode_messages(
    id: crate::approval::ApprovalId,
    json: Option<&str>,
) -> sqlx::Result<Vec<crate::jobs::PostedMessage>> {
    #[derive(serde::Deserialize)]
    struct Row {
        channel: String,
        ts: String,
        kind: String,
        permalink: Option<String>,
        rendered_version: i64,
    }
    let rows: Vec<Row> = match json {
        Some(json) => {
            serde_json::from_str(json).map_err(|error| sqlx::Error::Decode(Box::new(error)))?
        }
        None => Vec::new(),
    };
    rows.into_iter()
        .map(|row| {
            Ok(crate::jobs::PostedMessage {
                approval_id: id,
                channel: row.channel,
                ts: row.ts,
                kind: decode_kind(&row.kind)?,
                permalink: row.permalink,
                rendered_version: row.rendered_version,
            })
        })
        .collect()
}

/// One row of `select_messages!` as a message of approval `id`, on either backend.
fn posted_message<'r, R>(
    id: crate::approval::ApprovalId,
    row: &'r R,
) -> sqlx::Result<crate::jobs::PostedMessage>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::jobs::PostedMessage {
        approval_id: id,
        channel: row.try_get("channel")?,
        ts: row.try_get("ts")?,
        kind: decode_kind(row.try_get("kind")?)?,
        permalink: row.try_get("permalink")?,
        rendered_version: row.try_get("rendered_version")?,
    })
}

/// Each row of `select_messages!` as a message of approval `id`.
pub(super) fn posted_messages<R>(
    id: crate::approval::ApprovalId,
    rows: &[R],
) -> sqlx::Result<Vec<crate::jobs::PostedMessage>>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter().map(|row| posted_message(id, row)).collect()
}

/// Due job rows (`id, approval_id, kind, payload, attempts`) as jobs, on either
/// backend (each decodes its own approval id and payload); a row of a kind this
/// version cannot read is set apart (`DueJobs::foreign`).
pub(super) fn due_jobs<R>(
    rows: &[R],
    approval_id: impl Fn(&R) -> sqlx::Result<ApprovalId>,
    payload: impl Fn(&R) -> sqlx::Result<serde_json::Value>,
) -> sqlx::Result<crate::jobs::DueJobs>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut due = crate::jobs::DueJobs::default();
    for row in rows {
        let id = row.try_get("id")?;
        let Some(job) = crate::jobs::Job::from_columns(row.try_get("kind")?, payload(row)?) else {
            due.foreign.push(id); // written by a newer signoff: it waits for that version
            continue;
        };
        due.jobs.push(crate::jobs::DueJob {
            id,
            approval_id: approval_id(row)?,
            job,
            attempts: row.try_get("attempts")?,
            lease_until: None,
        });
    }
    Ok(due)
}

/// Decodes a column stored as a name (status, tier, decision).
pub(super) fn decode<T>(text: &str) -> sqlx::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error: T::Err| sqlx::Error::Decode(error.to_string().into()))
}

/// The URL without its passwords, for error messages and logs: the userinfo's
/// (`postgres://u:secret@h/db`) and a query's (`?password=secret`, which the
/// PostgreSQL driver takes too). Written without percent-escapes, a user may hold an
/// `@` (`user@server`) and a password any of `/?#@`, and a query may hold an `@`: the
/// userinfo ends at the last `@` followed by a host (or, with no host, the last `@`
/// before the query: `postgres://u:pw@/db?host=/run/postgresql`), and its password
/// runs from its first `:`. Text that is no URL (a mistyped scheme, libpq's
/// `host=h password=pw`) has its `password=` values hidden and everything from its
/// first `:` to its last `@`. Where that is ambiguous, more is hidden, never less.
pub fn redact(url: &str) -> String {
    let url = redact_query(url);
    let Some(start) = crate::config::scheme_end(&url) else {
        return redact_bare(&url);
    };
    let rest = &url[start..];
    // Before any `?` if it can be (the query's `@`s are no end), else the last.
    let mut ends = rest
        .rmatch_indices('@')
        .map(|(at, _)| at)
        .filter(|at| is_host(&rest[at + 1..]))
        .peekable();
    let query = rest.find('?').unwrap_or(rest.len());
    let last = ends.peek().copied();
    // With no host: the last `@` before the query, or past it while the authority has
    // not ended (no `/` yet), as the query's `?` may then be the password's.
    let open = !rest[..query].contains('/');
    let userinfo_end = ends
        .find(|at| *at < query)
        .or(last)
        .or_else(|| rest[..query].rfind('@'))
        .or_else(|| rest.rfind('@').filter(|_| open));
    let password = userinfo_end.and_then(|at| Some((rest[..at].find(':')?, at)));
    match password {
        Some((colon, at)) => format!("{}:***{}", &url[..start + colon], &rest[at..]),
        None => url,
    }
}

/// [`redact`] for text without a scheme: each `…password=value` (a libpq keyword, its
/// value quoted or not) hidden, then everything from the first `:` to the last `@`.
fn redact_bare(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("password") {
        let after = &rest[at + "password".len()..];
        let value = after.trim_start();
        let Some(value) = value.strip_prefix('=') else {
            shown.push_str(&rest[..at + "password".len()]);
            rest = after;
            continue;
        };
        let value = value.trim_start();
        let len = match value.strip_prefix('\'') {
            // Up to the closing quote (`\'` escapes one), or to the end.
            Some(quoted) => quoted
                .char_indices()
                .scan(false, |escaped, (n, c)| {
                    let end = c == '\'' && !*escaped;
                    *escaped = c == '\\' && !*escaped;
                    Some((n, end))
                })
                .find(|(_, end)| *end)
                .map_or(value.len(), |(n, _)| n + 2),
            None => value.find(char::is_whitespace).unwrap_or(value.len()),
        };
        shown.push_str(&rest[..rest.len() - value.len()]);
        shown.push_str("***");
        rest = &value[len..];
    }
    shown.push_str(rest);
    match (shown.find(':'), shown.rfind('@')) {
        (Some(colon), Some(at)) if colon < at => {
            format!("{}:***{}", &shown[..colon], &shown[at..])
        }
        _ => shown,
    }
}

/// Whether `text` begins with what could be a host (and port) ending the authority:
/// then the end, a path, a query or a fragment. A query's `name=value&…` could not.
fn is_host(text: &str) -> bool {
    let host = text.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty()
        && !host.contains(|c: char| c.is_whitespace() || c.is_control() || "@&=*".contains(c))
}

/// `url` with the value of each query parameter named `…password` hidden.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().ends_with("password") => {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// What a batch lookup found, each at the 0-based position of the row it was found
/// for, into one entry per row (`None` where nothing was found).
pub(super) fn by_position<T: Clone>(
    rows: usize,
    found: impl IntoIterator<Item = (i64, T)>,
) -> Vec<Option<T>> {
    let mut placed = vec![None; rows];
    for (n, value) in found {
        if let Some(slot) = usize::try_from(n).ok().and_then(|n| placed.get_mut(n)) {
            *slot = Some(value);
        }
    }
    placed
}

/// The 0-based positions a batch lookup found, as one flag per row.
pub(super) fn found_at(rows: usize, found: impl IntoIterator<Item = i64>) -> Vec<bool> {
    by_position(rows, found.into_iter().map(|n| (n, ())))
        .into_iter()
        .map(|slot| slot.is_some())
        .collect()
}

/// The rows a claim leased, with their attempts (the others it moved to wait).
pub(super) fn leased(rows: Vec<(i64, i32, bool)>) -> Vec<(i64, i32)> {
    rows.into_iter()
        .filter(|(.., leased)| *leased)
        .map(|(id, attempts, _)| (id, attempts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{pow2_chunks, prefix_range, redact};

    #[test]
    fn an_id_prefix_is_the_range_of_ids_it_starts() {
        let range = |prefix: &str| {
            prefix_range(prefix).map(|(first, last)| (first.to_string(), last.to_string()))
        };
        assert_eq!(
            range("1d8a54e1"),
            Some((
                "1d8a54e1-0000-0000-0000-000000000000".into(),
                "1d8a54e1-ffff-ffff-ffff-ffffffffffff".into()
            ))
        );
        assert_eq!(range("1D8A54E1-55"), range("1d8a54e155"));
        let full = "1d8a54e1-55c8-4ba9-9bb1-bf08ca4746b1";
        assert_eq!(range(full), Some((full.into(), full.into())));
        assert_eq!(range(&full.replace('-', "")), range(full));
        for bad in [
            "",
            "-",
            "1d8a-54e1",
            "xyz",
            "1d8a54e1 ",
            &format!("{full}0"),
        ] {
            assert_eq!(range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn chunks_are_powers_of_two_largest_first_and_cover_every_row() {
        let rows: Vec<u32> = (0..300).collect();
        let chunks: Vec<&[u32]> = pow2_chunks(&rows, 128).collect();
        let sizes: Vec<usize> = chunks.iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, [128, 128, 32, 8, 4]);
        assert_eq!(chunks.concat(), rows);
        assert_eq!(pow2_chunks(&rows[..1], 64).count(), 1);
        assert_eq!(pow2_chunks::<u32>(&[], 64).count(), 0);
    }

    #[test]
    fn redact_hides_the_password_of_a_url_without_a_host_or_of_no_url() {
        // No host: a socket's directory in the query, or nothing at all.
        assert_eq!(
            redact("postgres://signoff:hunter2@/signoff?host=/run/postgresql"),
            "postgres://signoff:***@/signoff?host=/run/postgresql"
        );
        assert_eq!(redact("postgres://u:hunter2@"), "postgres://u:***@");
        assert_eq!(redact("postgres://u:hun?ter2@/db"), "postgres://u:***@/db");
        assert_eq!(
            redact("postgres://u:hun?ter2@/db?host=/run/postgresql"),
            "postgres://u:***@/db?host=/run/postgresql"
        );
        // A `://` that is no scheme's.
        assert_eq!(
            redact("host=db password=hun://ter2 dbname=x"),
            "host=db password=*** dbname=x"
        );
        assert_eq!(
            redact("u:hunter2@h/db?next=https://x"),
            "u:***@h/db?next=https://x"
        );
        // No URL: a mistyped scheme, libpq's keywords.
        assert_eq!(redact("postgres:/u:hunter2@h/db"), "postgres:***@h/db");
        assert_eq!(redact("postgres//u:hunter2@h/db"), "postgres//u:***@h/db");
        assert_eq!(
            redact("host=db user=signoff password=hunter2 dbname=x"),
            "host=db user=signoff password=*** dbname=x"
        );
        assert_eq!(
            redact("host=db PASSWORD = 'hun ter\\'2' sslpassword=k dbname=x"),
            "host=db PASSWORD = *** sslpassword=*** dbname=x"
        );
        assert_eq!(redact("password='hunter2"), "password=***");
        assert_eq!(redact("no password here"), "no password here");
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://signoff.db"), "sqlite://signoff.db");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=secret"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact("postgres://u:a@h/db?sslpassword=key-secret&application_name=x"),
            "postgres://u:***@h/db?sslpassword=***&application_name=x"
        );
        assert_eq!(
            redact("sqlite://signoff.db?mode=rwc"),
            "sqlite://signoff.db?mode=rwc"
        );
        // A password written without its escapes.
        for raw in ["p?ss", "p/ss", "p#ss", "p@ss", "p:ss"] {
            let url = format!("postgres://u:{raw}@db/x?sslmode=require&password=two");
            assert_eq!(
                redact(&url),
                "postgres://u:***@db/x?sslmode=require&password=***",
                "{raw}"
            );
        }
        assert_eq!(
            redact("postgres://h:5432/db?password=p&application_name=a"),
            "postgres://h:5432/db?password=***&application_name=a"
        );
        // A user with an `@` of its own (Azure's `user@server`).
        assert_eq!(
            redact("postgres://signoff@myserver:pw@db.example.com/signoff"),
            "postgres://signoff@myserver:***@db.example.com/signoff"
        );
        // An `@` in the query, before or inside a password.
        assert_eq!(
            redact("postgres://db:5432/x?user=svc@corp&password=s3cret"),
            "postgres://db:5432/x?user=svc@corp&password=***"
        );
        assert_eq!(
            redact("postgres://db:5432/x?password=se@cret"),
            "postgres://db:5432/x?password=***"
        );
        assert_eq!(
            redact("postgres://u:pw@db/x?application_name=a@b"),
            "postgres://u:***@db/x?application_name=a@b"
        );
        // Two ends a host could follow: the last is the userinfo's.
        assert_eq!(redact("postgres://u:p@h/x@db/y"), "postgres://u:***@db/y");
        for url in [
            "",
            "://",
            "postgres://@",
            "postgres://:@h",
            "é://ü:ö@ß/?password=ä",
        ] {
            assert!(
                !redact(url).contains('ö') && !redact(url).contains('ä'),
                "{url}"
            );
        }
    }
}
