//! `signoff audit verify|export`: the hash chain and its signed checkpoints, checked in
//! the database or in an export (offline, with the public key alone).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::{Database, connect_existing};
use crate::audit::checkpoint::{Checkpoint, Flaw, LogVerifier};
use crate::audit::{self, Entry};
use crate::signing::{self, PublicKey};
use crate::store::Schema;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub(super) enum AuditAction {
    /// Verify the hash chain and every signed checkpoint; exits non-zero and names the
    /// first bad event or checkpoint. Reports how many events the newest checkpoint
    /// covers.
    Verify {
        /// A public key file (`signoff key public`'s output) to check checkpoints with;
        /// after a key rotation, repeat it for every key used, oldest first: no
        /// checkpoint may be signed with an older key than the one before it, and the
        /// newest must be signed with the last. Default: the signing key's own.
        #[arg(long = "public-key", value_name = "FILE")]
        public_keys: Vec<PathBuf>,
        /// Verify an export (`signoff audit export`) instead of the database.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// A checkpoint known from before, as an earlier verify or the server's log
        /// gave it: it must still be there with this hash (removing the newest
        /// checkpoints is how a chain is rewritten unseen). Repeatable.
        #[arg(long = "checkpoint", value_name = "N:HASH", value_parser = known_checkpoint)]
        known: Vec<(i64, String)>,
        /// Fail (exit 1) when the newest event no checkpoint signs came more than this
        /// long after the newest checkpoint was signed (or after the first event, with
        /// none), instead of only warning past 2 minutes: for scheduled checks of a
        /// log a server always runs beside. E.g. 10m.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        max_unsigned: Option<std::time::Duration>,
    },
    /// Write every event, and after each event the checkpoint that signs it, as JSON
    /// lines (stdout, or --output FILE); the last line is the chain's head.
    Export {
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Audit pages are read in this size, so verifying a long log takes constant memory.
const AUDIT_PAGE: i64 = 5000;

pub(super) async fn run(action: AuditAction, db: &Database) -> anyhow::Result<ExitCode> {
    match action {
        AuditAction::Verify {
            public_keys,
            file,
            known,
            max_unsigned,
        } => {
            let keys = Keys {
                named: &public_keys,
                known: &known,
            };
            let verified = match file {
                Some(file) => verify_file(&file, keys, db)?,
                None => {
                    verify_store(&connect_existing(db, Schema::AsFound).await?, keys, db).await?
                }
            };
            match verified {
                Ok(report) => {
                    println!("{report}");
                    if let Some(error) = unsigned_too_long(&report, max_unsigned) {
                        eprintln!("error: {error}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
                Err(flaw) => {
                    eprintln!("error: {flaw}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        AuditAction::Export { output } => {
            export(
                &connect_existing(db, Schema::AsFound).await?,
                output.as_deref(),
            )
            .await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why `report` fails `--max-unsigned` (`most`), if it does: its unsigned tail runs on
/// longer than that.
fn unsigned_too_long(
    report: &audit::checkpoint::Report,
    most: Option<std::time::Duration>,
) -> Option<String> {
    let (most, span) = (most?, report.unsigned_for?.to_std().ok()?);
    (span > most).then(|| {
        format!(
            "the newest unsigned event came {} after the newest checkpoint (or the first \
             event), more than --max-unsigned {}",
            humantime::format_duration(span),
            humantime::format_duration(most)
        )
    })
}

/// The keys checkpoints are checked with: those named, else the signing key's public
/// key.
fn public_keys(named: &[PathBuf], db: &Database) -> anyhow::Result<Vec<PublicKey>> {
    if !named.is_empty() {
        return named.iter().map(|path| PublicKey::load(path)).collect();
    }
    let own = signing::key_path(&db.database_url, db.signing_key_file.as_deref())
        .and_then(|(path, _)| signing::Signer::load(&path));
    match own {
        Ok(signer) => Ok(vec![signer.public_key()]),
        Err(error) => {
            bail!(
                "cannot check the signed checkpoints ({error:#}); name the public key with --public-key FILE"
            )
        }
    }
}

/// `N:HASH`, a checkpoint's number and chain hash.
fn known_checkpoint(text: &str) -> Result<(i64, String), String> {
    let (n, hash) = text
        .split_once(':')
        .ok_or("expected N:HASH, as `signoff audit verify` prints the newest checkpoint")?;
    let n = n
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or("N must be a checkpoint number, 1 or more")?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("HASH must be a chain hash: 64 hex digits".into());
    }
    Ok((n, hash.to_ascii_lowercase()))
}

/// What checkpoints are checked with: the public keys named (else the signing key's)
/// and the checkpoints known from before.
#[derive(Clone, Copy)]
struct Keys<'a> {
    named: &'a [PathBuf],
    known: &'a [(i64, String)],
}

fn verifier(
    checkpoints: Vec<Checkpoint>,
    keys: Keys<'_>,
    db: &Database,
) -> anyhow::Result<Result<LogVerifier, Flaw>> {
    // A key the operator named is read even with no checkpoint to check: a mistyped
    // path is an error, not a pass. The signing key's own is looked for only when
    // there are checkpoints (a log verifies before its first one, with no key at all).
    let public = if checkpoints.is_empty() && keys.named.is_empty() {
        Vec::new()
    } else {
        public_keys(keys.named, db)?
    };
    let verifier = LogVerifier::new(checkpoints, &public).and_then(|verifier| {
        for (n, hash) in keys.known {
            verifier.expect(*n, hash)?;
        }
        Ok(verifier)
    });
    Ok(verifier)
}

async fn verify_store(
    store: &Store,
    keys: Keys<'_>,
    db: &Database,
) -> anyhow::Result<Result<audit::checkpoint::Report, Flaw>> {
    // Checkpoints before the head: every checkpoint read is then within the head.
    let checkpoints = store.audit_checkpoints().await?;
    let mut verifier = match verifier(checkpoints, keys, db)? {
        Ok(verifier) => verifier,
        Err(flaw) => return Ok(Err(flaw)),
    };
    // Events appended while we verify are past the head and checked next time.
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut after = 0;
    'pages: loop {
        let page = store.audit_page(after, AUDIT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            if entry.seq > head_seq {
                break 'pages;
            }
            if let Err(flaw) = verifier.check(entry) {
                return Ok(Err(flaw));
            }
        }
    }
    let report = verifier.finish(Some((head_seq, &head_hash)));
    if report.is_ok()
        && let Some(flaw) = store.audit_bounds().await?.outside()
    {
        // Read after the walk: events appended meanwhile are within the head it reads.
        return Ok(Err(flaw));
    }
    Ok(report)
}

/// One line of an export.
enum Line {
    Event(Box<Entry>),
    Checkpoint(Checkpoint),
    /// The head when it was exported: its last line, which every export has.
    Head(Head),
}

/// The chain's head, as an export's last line records it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Head {
    head: i64,
    hash: String,
}

/// Reads an export line by line (twice: checkpoints first, then the events). Each
/// line must be exactly what `audit export` wrote, or the line is named.
fn read_lines(path: &Path, mut each: impl FnMut(Line) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read audit export {}", path.display()))?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read audit export {}", path.display()))?;
        let parsed =
            parse_line(&line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        each(parsed)?;
    }
    Ok(())
}

/// One line of an export, which must read back as the very text `audit export` writes:
/// parsing alone takes a key given twice (by its last), fields export never writes, or
/// a time in another form, so that the line would read one way to the hash and another
/// to whoever reads the file.
fn parse_line(text: &str) -> anyhow::Result<Line> {
    let value: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let not_ours = "not an audit event or checkpoint";
    let (line, written) = if value.get("checkpoint").is_some() {
        let checkpoint: Checkpoint = serde_json::from_value(value).context(not_ours)?;
        let written = serde_json::to_string(&checkpoint)?;
        (Line::Checkpoint(checkpoint), written)
    } else if value.get("head").is_some() {
        let head: Head = serde_json::from_value(value).context(not_ours)?;
        let written = serde_json::to_string(&head)?;
        (Line::Head(head), written)
    } else {
        let mut entry: Entry = serde_json::from_value(value).context(not_ours)?;
        // As export has it: `data` read from the canonical text the store keeps.
        entry.data = serde_json::from_str(&crate::canonical::to_string(&entry.data))?;
        let written = serde_json::to_string(&entry)?;
        (Line::Event(Box::new(entry)), written)
    };
    if written != text {
        bail!("not as `signoff audit export` writes it (altered)");
    }
    Ok(line)
}

fn verify_file(
    path: &Path,
    keys: Keys<'_>,
    db: &Database,
) -> anyhow::Result<Result<audit::checkpoint::Report, Flaw>> {
    let mut checkpoints = Vec::new();
    let mut head = None;
    read_lines(path, |line| {
        if head.is_some() {
            bail!(
                "{}: a line after the head, which ends an export",
                path.display()
            );
        }
        match line {
            Line::Checkpoint(checkpoint) => checkpoints.push(checkpoint),
            Line::Head(at) => head = Some(at),
            Line::Event(_) => {}
        }
        Ok(())
    })?;
    // Without its head a file cut anywhere (or empty) would verify as the events left.
    let Some(head) = head else {
        bail!(
            "{}: no head line, so not a complete `signoff audit export` (its last line is the chain's head)",
            path.display()
        );
    };
    let mut verifier = match verifier(checkpoints, keys, db)? {
        Ok(verifier) => verifier,
        Err(flaw) => return Ok(Err(flaw)),
    };
    let mut flaw = None;
    read_lines(path, |line| {
        if let (Line::Event(entry), None) = (line, &flaw) {
            flaw = verifier.check(&entry).err();
        }
        Ok(())
    })?;
    Ok(match flaw {
        Some(flaw) => Err(flaw),
        None => verifier.finish(Some((head.head, head.hash.as_str()))),
    })
}

/// Writes the export to stdout, or to `output` whole or not at all: it is written to
/// a file beside it and renamed over it once complete, so an export that fails (an
/// event altered, the database gone) leaves an earlier export as it was, never a cut
/// one in its place. A symlink is written through (the file it names is replaced),
/// an earlier export's permissions are kept (a new one is the owner's alone), and
/// what is not a regular file (a pipe, `/dev/stdout`) is written as it is.
async fn export(store: &Store, output: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = output else {
        return write_export(store, std::io::BufWriter::new(std::io::stdout().lock())).await;
    };
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let earlier = std::fs::metadata(&target).ok();
    if earlier.as_ref().is_some_and(|meta| !meta.is_file()) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .with_context(|| format!("cannot write {}", path.display()))?;
        return write_export(store, std::io::BufWriter::new(file)).await;
    }
    let name = target
        .file_name()
        .with_context(|| format!("cannot write {}: not a file name", path.display()))?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Removed if the export fails or panics; created readable by its owner alone.
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write {}: the export is written beside it and renamed over it once \
                 whole, so its directory must be writable",
                path.display()
            )
        })?;
    if let Some(earlier) = earlier {
        std::fs::set_permissions(partial.path(), earlier.permissions())
            .with_context(|| format!("cannot write {}", partial.path().display()))?;
    }
    write_export(store, std::io::BufWriter::new(partial.as_file())).await?;
    partial.as_file().sync_all()?;
    partial
        .persist(&target)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn write_export(store: &Store, mut out: impl Write) -> anyhow::Result<()> {
    // Checkpoints, then the head: the events up to the head are written, each
    // checkpoint after the event it signs, and any pointing past the last event at the
    // end (so that a log cut in the database shows in its export too), then the head.
    let checkpoints = store.audit_checkpoints().await?;
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut next = checkpoints.iter().peekable();
    let mut after = 0;
    'pages: loop {
        let page = store.audit_page(after, AUDIT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            if entry.seq > head_seq {
                break 'pages;
            }
            serde_json::to_writer(&mut out, entry)?;
            out.write_all(b"\n")?;
            while let Some(checkpoint) = next.next_if(|c| c.seq <= entry.seq) {
                serde_json::to_writer(&mut out, checkpoint)?;
                out.write_all(b"\n")?;
            }
        }
    }
    // A row numbered outside 1 to the head is in no export: not one left out in
    // silence, so that a log that fails `audit verify` never exports as a clean file
    // (the head moved back over events still there reads as a shorter log).
    if let Some(flaw) = store.audit_bounds().await?.outside() {
        anyhow::bail!("{flaw}; nothing was exported (run `signoff audit verify`)");
    }
    for checkpoint in next {
        serde_json::to_writer(&mut out, checkpoint)?;
        out.write_all(b"\n")?;
    }
    let head = Head {
        head: head_seq,
        hash: head_hash,
    };
    serde_json::to_writer(&mut out, &head)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
