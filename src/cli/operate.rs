//! Commands for an operator with access to the database: `signoff list` (what waits,
//! as `/approvals` shows it), `signoff decide` (a break-glass decision outside Slack)
//! and `signoff policy init` (a starting policy file).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::approval::{Approval, ApprovalId, Decision, Event, Status};
use crate::jobs::Deliveries;
use crate::slack::text::{duration_short, relative};
use crate::store::{Store, StoreError};
use crate::wire::ApprovalView;

/// The example policy, every key commented: what `signoff policy init` writes.
pub const EXAMPLE_POLICY: &str = include_str!("../../signoff.example.toml");

/// Fewest hex digits of an id prefix (as `/approvals status` takes).
const MIN_PREFIX: usize = 4;
/// Candidates named when a prefix is ambiguous.
const SHOWN_CANDIDATES: i64 = 10;
/// Longest `--as` name and `--reason`.
const NAME_MAX: usize = 100;
const REASON_MAX: usize = 2000;

/// `approve` or `deny`, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecisionArg {
    Approve,
    Deny,
}

/// `--status`: one status, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusArg {
    Pending,
    Approved,
    Denied,
    Expired,
    Executed,
    Cancelled,
    All,
}

impl StatusArg {
    fn status(self) -> Option<Status> {
        match self {
            StatusArg::Pending => Some(Status::Pending),
            StatusArg::Approved => Some(Status::Approved),
            StatusArg::Denied => Some(Status::Denied),
            StatusArg::Expired => Some(Status::Expired),
            StatusArg::Executed => Some(Status::Executed),
            StatusArg::Cancelled => Some(Status::Cancelled),
            StatusArg::All => None,
        }
    }
}

/// The one approval `raw` names: a full id, or a prefix of at least [`MIN_PREFIX`] hex
/// digits that only one id starts with.
pub async fn resolve(store: &Store, raw: &str) -> anyhow::Result<ApprovalId> {
    let raw = raw.trim();
    if let Ok(id) = raw.parse::<ApprovalId>() {
        return Ok(id);
    }
    let hex = raw.chars().filter(char::is_ascii_hexdigit).count();
    let allowed = raw.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if !allowed || hex < MIN_PREFIX || raw.len() > 36 {
        bail!(
            "{raw:?} is not an approval id: give the id, or its first {MIN_PREFIX} or more hex digits (`signoff list` shows them)"
        );
    }
    let found = store.find_by_prefix(raw, SHOWN_CANDIDATES + 1).await?;
    match found.as_slice() {
        [] => bail!("no approval id starts with {raw}"),
        [id] => Ok(*id),
        many => {
            let shown: Vec<String> = many
                .iter()
                .take(SHOWN_CANDIDATES as usize)
                .map(ToString::to_string)
                .collect();
            let more = if many.len() as i64 > SHOWN_CANDIDATES {
                ", …"
            } else {
                ""
            };
            bail!(
                "{raw} is ambiguous: it starts {} ids ({}{more}); give more of the id",
                if more.is_empty() {
                    many.len().to_string()
                } else {
                    format!("more than {SHOWN_CANDIDATES}")
                },
                shown.join(", ")
            )
        }
    }
}

/// A name or reason from the command line: trimmed, not empty, no control
/// characters, at most `max` characters.
fn operator_text(what: &str, text: &str, max: usize) -> anyhow::Result<String> {
    let text = text.trim();
    if text.is_empty() {
        bail!("{what} must not be empty");
    }
    if text.chars().any(char::is_control) {
        bail!("{what} must be one line without control characters");
    }
    if text.chars().count() > max {
        bail!("{what} is longer than {max} characters");
    }
    Ok(text.to_owned())
}

/// `signoff decide ID approve|deny --as NAME [--reason TEXT]`: decides through the
/// state machine and the store's writer, as a click would, recorded as break-glass.
/// The approval's Slack messages are updated by the outbox of a running `serve`.
pub async fn decide(
    store: &Store,
    raw_id: &str,
    decision: DecisionArg,
    name: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Approval> {
    let name = operator_text("--as NAME", name, NAME_MAX)?;
    if crate::ids::UserId::parse(&name).is_ok() {
        bail!(
            "--as {name} is a Slack user id, which messages would show as that user's own \
             decision in Slack: give the name of the person deciding outside Slack"
        );
    }
    let reason = reason
        .map(|reason| operator_text("--reason", reason, REASON_MAX))
        .transpose()?;
    let decision = match decision {
        DecisionArg::Approve => Decision::Approve,
        DecisionArg::Deny => Decision::Deny,
    };
    let id = resolve(store, raw_id).await?;
    // A row another program inserted is classified by a running server; approving it
    // before would skip the policy (a tier it denies, its expiry cap) and leave no
    // `requested` event. Denying it is always safe.
    if decision == Decision::Approve && store.unclassified_row(id).await? {
        bail!(
            "approval {id} was not decided: no signoff server has classified it yet (another \
             program inserted it into the table): deny it now, or approve it once `signoff \
             serve` has applied the policy to it"
        );
    }
    // Its messages are updated when a server with Slack posted it or is to post it
    // (an update that finds no message yet is a no-op, and a post that lands after
    // the decision is brought up to date by the server).
    let deliveries = Deliveries {
        slack: store.slack_planned(id).await?,
    };
    let event = Event::BreakGlass {
        by: name,
        decision,
        reason,
    };
    match store.apply_delivering(id, event, now, deliveries).await {
        Ok(approval) => Ok(approval),
        Err(StoreError::Rejected { rejection, current }) => bail!(
            "approval {} ({}) was not decided: {rejection}",
            current.id,
            terminal_safe(&current.tool_name, 60)
        ),
        Err(StoreError::NotFound(id)) => bail!("no approval with id {id}"),
        Err(error) => Err(error.into()),
    }
}

/// `signoff list`: every approval with the status (however many), oldest first, as
/// a table or as a JSON array of the API's view.
pub async fn list(
    store: &Store,
    status: StatusArg,
    json: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    // As a read shows them: one past its expiry is expired before a server's pass
    // records it (or while no server runs), so `expired` looks at the open ones too.
    let wanted = status.status();
    let stored = match wanted {
        Some(Status::Expired) => vec![wanted, Some(Status::Pending), Some(Status::Approved)],
        _ => vec![wanted],
    };
    let mut approvals = Vec::new();
    for status in stored {
        approvals.extend(store.list_all(status).await?);
    }
    approvals.sort_by_key(|approval| approval.created_at);
    let approvals: Vec<Approval> = approvals
        .into_iter()
        .map(|approval| approval.as_seen_at(now))
        .filter(|approval| wanted.is_none_or(|wanted| approval.status == wanted))
        .collect();
    let mut links = std::collections::HashMap::new();
    if json {
        for chunk in approvals.chunks(500) {
            let ids: Vec<ApprovalId> = chunk.iter().map(|a| a.id).collect();
            links.extend(store.main_permalinks(&ids).await?);
        }
    }
    match print_list(&approvals, &links, status, json, now) {
        // A reader that stopped early (`| head`) is not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

fn print_list(
    approvals: &[Approval],
    links: &std::collections::HashMap<ApprovalId, String>,
    status: StatusArg,
    json: bool,
    now: DateTime<Utc>,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let views: Vec<ApprovalView> = approvals
            .iter()
            .map(|a| ApprovalView::new(a, links.get(&a.id).map(String::as_str)))
            .collect();
        serde_json::to_writer_pretty(&mut out, &views)?;
        return writeln!(out);
    }
    let what = match status.status() {
        Some(status) => status.as_str(),
        None => "in all",
    };
    if approvals.is_empty() {
        writeln!(out, "no approvals {what}")?;
        return Ok(());
    }
    write!(out, "{}", table(approvals, status == StatusArg::All, now))?;
    let count = match approvals.len() {
        1 => "1 approval".to_owned(),
        n => format!("{n} approvals"),
    };
    writeln!(out, "{count} {what}")
}

/// The rows `/approvals` shows, one line each: short id, tool (and server), who asked,
/// risk tier, age, expiry, channel (and status, when listing every status).
fn table(approvals: &[Approval], with_status: bool, now: DateTime<Utc>) -> String {
    let mut rows = vec![
        vec![
            "ID",
            "STATUS",
            "TOOL",
            "REQUESTED BY",
            "TIER",
            "AGE",
            "EXPIRES",
            "CHANNEL",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>(),
    ];
    for a in approvals {
        let tool = match &a.server {
            Some(server) => format!("{}/{}", server, a.tool_name),
            None => a.tool_name.clone(),
        };
        let requester = a.requested_by.as_deref().or(a.token_name.as_deref());
        let expires = if a.is_expired_at(now) {
            "passed".to_owned()
        } else {
            relative(a.expires_at, now)
        };
        rows.push(vec![
            a.id.short(),
            a.status.to_string(),
            terminal_safe(&tool, 60),
            terminal_safe(requester.unwrap_or("-"), 40),
            a.risk_tier.as_str().to_owned(),
            duration_short((now - a.created_at).num_seconds().max(0)),
            expires,
            a.routing
                .channel
                .as_ref()
                .map_or("-".to_owned(), |c| c.as_str().to_owned()),
        ]);
    }
    if !with_status {
        for row in &mut rows {
            row.remove(1);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A caller's text for a terminal: control characters escaped, cut to `max` chars.
pub(super) fn terminal_safe(text: &str, max: usize) -> String {
    let pieces: Vec<String> = text
        .chars()
        .map(|c| {
            if c.is_control() || crate::slack::text::hidden(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    let total: usize = pieces.iter().map(|piece| piece.chars().count()).sum();
    if total <= max {
        return pieces.concat();
    }
    // Cut between whole pieces: an escape is shown whole or not at all.
    let mut cut = String::new();
    let mut used = 0;
    for piece in pieces {
        let len = piece.chars().count();
        if used + len > max.saturating_sub(1) {
            break;
        }
        cut.push_str(&piece);
        used += len;
    }
    cut.push('…');
    cut
}

/// `signoff policy init [FILE]`: writes the example policy to `file` (mode 0644),
/// never over an existing file.
pub fn policy_init(file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(file)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists: it was left as it is (remove it, or name another file)",
                file.display()
            ),
            _ => anyhow::Error::new(error).context(format!("cannot create {}", file.display())),
        })?;
    out.write_all(EXAMPLE_POLICY.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))?;
    // Whatever the umask: a policy holds no secret, and others may read it.
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_text_is_one_trimmed_line() {
        assert_eq!(operator_text("n", "  alice ", 10).unwrap(), "alice");
        assert!(operator_text("n", "  ", 10).is_err());
        assert!(operator_text("n", "a\nb", 10).is_err());
        assert!(operator_text("n", "a\u{1b}[31m", 10).is_err());
        assert!(operator_text("n", "abcdefghijk", 10).is_err());
    }

    #[test]
    fn terminal_text_is_escaped_and_cut() {
        assert_eq!(terminal_safe("a\nb", 10), "a\\u{a}b");
        assert_eq!(terminal_safe("abcdef", 4), "abc…");
        assert_eq!(terminal_safe("x\u{202E}cod", 20), "x\\u{202e}cod");
        assert_eq!(
            terminal_safe("x\u{202E}cod", 8),
            "x…",
            "never half an escape"
        );
    }

    #[test]
    fn the_example_policy_loads() {
        crate::policy::Policy::from_toml_str(EXAMPLE_POLICY).unwrap();
    }
}
