//! `signoff audit verify|export`: an altered event named; against signed checkpoints,
//! on both backends, what the newest checkpoint covers, a chain rewritten with fresh
//! hashes, a cut tail, and an export verified offline with the public key alone.

use std::path::{Path, PathBuf};

use chrono::TimeZone;
use signoff::audit::{Draft, GENESIS_HASH, link};
use signoff::signing::Signer;
use signoff::store::Store;

use crate::common::{self, TestDb};
use sqlx::Connection;

use crate::{assert_one_line_error, on_both_backends, signoff, stderr, stdout};

on_both_backends!(
    audit_verify_reports_coverage_and_catches_a_rewritten_chain,
    an_export_verifies_offline_with_the_public_key_alone,
    audit_verify_reports_events_missing_after_a_checkpoint,
    a_chain_rewritten_after_removing_the_newest_checkpoint_is_caught_by_the_one_kept,
    an_export_of_a_cut_log_fails_as_the_log_does,
    a_head_moved_back_over_events_still_there_fails_verify_and_export_alike,
    after_a_key_rotation_both_keys_verify_oldest_first_and_the_old_one_cannot_sign_last,
    audit_verify_names_a_row_put_beside_the_chain_below_or_past_its_head,
    a_checkpoint_signs_events_another_process_appended,
    the_inspecting_commands_take_the_schema_as_found,
    audit_verify_names_an_event_whose_text_reads_the_same_but_is_not_as_written,
    an_export_line_not_as_export_wrote_it_is_named_by_its_number,
    a_failed_export_leaves_the_earlier_one_and_a_file_without_its_head_does_not_verify,
    a_public_key_named_but_unreadable_fails_even_before_the_first_checkpoint,
    parameters_as_deep_as_signoff_keeps_them_export_and_verify,
);

/// Events 2–10 rewritten with fresh hashes and checkpoint 2 deleted: the checkpoint
/// left (1, at event 1) and the chain agree, so a plain verify passes. The newest
/// checkpoint, as an earlier verify printed it (or the server logged it), does not.
async fn a_chain_rewritten_after_removing_the_newest_checkpoint_is_caught_by_the_one_kept(
    db: TestDb,
) {
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    let before = stdout(&signoff(&["audit", "verify"], &db.url));
    let kept = before
        .split_whitespace()
        .find(|word| word.starts_with("2:"))
        .expect("the newest checkpoint printed")
        .to_owned();
    let sql = format!(
        "DELETE FROM audit_checkpoints WHERE n = 2; {}",
        rewrite(&store, 7, "mallory").await
    );
    assert!(!before.contains("warning"), "{before}");
    raw_script(&db, &format!("{} {sql}", unguard(&db))).await;
    // Alone, the checkpoints left verify: the rewritten tail is unsigned, but it runs
    // on ten minutes past the newest checkpoint left, which is warned of.
    let plain = signoff(&["audit", "verify"], &db.url);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(
        stdout(&plain).contains(
            "warning: the newest unsigned event came 10m 9s after the newest checkpoint was signed"
        ),
        "{}",
        stdout(&plain)
    );
    // A scheduled check that fails on such a tail, and one that allows it.
    assert_one_line_error(
        &signoff(&["audit", "verify", "--max-unsigned", "5m"], &db.url),
        "the newest unsigned event came 10m 9s after the newest checkpoint (or the first \
         event), more than --max-unsigned 5m",
    );
    let allowed = signoff(&["audit", "verify", "--max-unsigned", "1h"], &db.url);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_one_line_error(
        &signoff(&["audit", "verify", "--checkpoint", &kept], &db.url),
        "audit checkpoint 2, known from before, is gone or holds another hash",
    );
    let malformed = signoff(&["audit", "verify", "--checkpoint", "2:beef"], &db.url);
    assert!(!malformed.status.success());
    assert!(
        stderr(&malformed).contains("64 hex digits"),
        "{}",
        stderr(&malformed)
    );
}

/// A log cut in the database (events after 3 gone, the head moved back) fails as an
/// export too: the checkpoint past its end is written at the end; and an export cut
/// at its own tail no longer reaches the head its last line names.
async fn an_export_of_a_cut_log_fails_as_the_log_does(db: TestDb) {
    let (store, _dir, public, export) = ten_events_to_export(&db).await;
    let verify_export = || signoff(&verify_file(&export, &public), &db.url);
    let text = export_to(&db, &export);
    assert!(
        text.lines().last().unwrap().starts_with(r#"{"head":10,"#),
        "{text}"
    );
    assert!(verify_export().status.success());
    let cut: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(r#""seq":10,"#))
        .collect();
    std::fs::write(&export, cut.join("\n")).unwrap();
    assert_one_line_error(&verify_export(), "audit chain");

    let third = store.audit_page(2, 1).await.unwrap().remove(0);
    let sql = format!(
        "{} DELETE FROM audit_events WHERE seq > 3; UPDATE audit_head SET seq = 3, hash = '{}' WHERE id = 1;",
        unguard(&db),
        third.hash
    );
    raw_script(&db, &sql).await;
    export_to(&db, &export);
    assert_one_line_error(
        &verify_export(),
        "checkpoint 2 signed event 6, but the log ends at event 3",
    );
}

/// The head moved back over events 9 and 10, which no checkpoint signed, with no
/// guard lifted (the head is no append-only row): `audit verify` names the events
/// past it, and `audit export` refuses rather than write events 1 to 8 as a clean log.
async fn a_head_moved_back_over_events_still_there_fails_verify_and_export_alike(db: TestDb) {
    let (store, _dir, public, export) = ten_events_to_export(&db).await;
    export_to(&db, &export);
    let eighth = store.audit_page(7, 1).await.unwrap().remove(0);
    raw_script(
        &db,
        &format!(
            "UPDATE audit_head SET seq = 8, hash = '{}' WHERE id = 1;",
            eighth.hash
        ),
    )
    .await;
    let says = "audit event 10 lies outside the chain, whose events are numbered 1 to 8: \
                a row put beside the log, or the chain's head moved back over events still there";
    assert_one_line_error(&signoff(&["audit", "verify"], &db.url), says);
    let exported = signoff(
        &["audit", "export", "-o", export.to_str().unwrap()],
        &db.url,
    );
    assert_one_line_error(&exported, says);
    let kept = signoff(&verify_file(&export, &public), &db.url);
    assert!(
        kept.status.success(),
        "the earlier export is left: {}",
        stderr(&kept)
    );
}

/// Checkpoint 1 signed with a key since rotated out, checkpoint 2 with the key the
/// binary signs with: verified with both keys oldest first; named newest first, the
/// old key reads as signing after the new one; the new key alone cannot check
/// checkpoint 1.
async fn after_a_key_rotation_both_keys_verify_oldest_first_and_the_old_one_cannot_sign_last(
    db: TestDb,
) {
    let dir = tempfile::tempdir().unwrap();
    let old = Signer::generate();
    let store = Store::connect_signing(&db.url, Default::default(), Some(old.clone()))
        .await
        .unwrap();
    let noon = chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .unwrap();
    let policy = signoff::policy::Policy::builtin();
    let create = |store: Store, i: i64, at| {
        let policy = policy.clone();
        async move {
            let mut request =
                signoff::approval::NewApproval::new("t", serde_json::json!({ "i": i }));
            request.token_name = Some("agent".into());
            let class = policy.classify("t", &request.parameters, None);
            store.create(request, class, at).await.unwrap();
        }
    };
    create(store.clone(), 0, noon).await;
    drop(store);
    let (store, new) = signing_store(&db).await;
    create(store.clone(), 1, noon + chrono::TimeDelta::minutes(10)).await;
    let [old_pub, new_pub] = [("old.pub", &old), ("new.pub", &new)].map(|(name, signer)| {
        let path = dir.path().join(name);
        std::fs::write(&path, signer.public_key().to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    });
    let verify = |keys: &[&str]| {
        let mut args = vec!["audit", "verify"];
        for key in keys {
            args.extend(["--public-key", key]);
        }
        signoff(&args, &db.url)
    };
    let both = verify(&[&old_pub, &new_pub]);
    assert!(both.status.success(), "{}", stderr(&both));
    assert!(
        stdout(&both).contains("2 signed checkpoints"),
        "{}",
        stdout(&both)
    );
    assert_one_line_error(
        &verify(&[&new_pub, &old_pub]),
        "audit checkpoint 2 is signed with key 1 of the --public-key list, older than the \
         key that signed checkpoint 1",
    );
    assert_one_line_error(
        &verify(&[&new_pub]),
        "audit checkpoint 1: its signature does not verify",
    );
}

/// An export verifies only as `audit export` wrote it, line for line: a key given
/// twice (the first what a reader sees, the last what the hash reads), a field export
/// never writes, or a time written another way (`+00:00`, nanoseconds) reads the same
/// to the hash and to the signature, so under a signed checkpoint too it would pass.
async fn an_export_line_not_as_export_wrote_it_is_named_by_its_number(db: TestDb) {
    let (_store, _dir, public, export) = ten_events_to_export(&db).await;
    let text = export_to(&db, &export);
    let lines: Vec<&str> = text.lines().collect();
    let find = |start: &str| lines.iter().position(|l| l.starts_with(start)).unwrap();
    let event = find(r#"{"seq":2,"#);
    let checkpoint = find(r#"{"checkpoint":1,"#);
    let head = find(r#"{"head":"#);
    let evil = r#""data":{"tool_name":"evil_tool","#;
    let altered = [
        (event, lines[event].replacen(r#""data":{"#, evil, 1)),
        (
            event,
            lines[event].replacen('{', r#"{"note":"harmless","#, 1),
        ),
        (
            event,
            lines[event].replacen(r#"Z","data""#, r#"+00:00","data""#, 1),
        ),
        (
            event,
            lines[event].replacen(r#"Z","data""#, r#"000Z","data""#, 1),
        ),
        (
            checkpoint,
            lines[checkpoint].replacen(r#"Z","signature""#, r#"+00:00","signature""#, 1),
        ),
        (head, lines[head].replacen('{', r#"{"head":0,"#, 1)),
    ];
    let verify = verify_file(&export, &public);
    for (at, line) in altered {
        assert_ne!(line, lines[at], "the alteration applies");
        let mut copy = lines.clone();
        copy[at] = &line;
        std::fs::write(&export, copy.join("\n") + "\n").unwrap();
        assert_one_line_error(
            &signoff(&verify, &db.url),
            &format!("line {}: not as `signoff audit export` writes it", at + 1),
        );
    }
    std::fs::write(&export, &text).unwrap();
    let ok = signoff(&verify, &db.url);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// `audit export -o FILE` replaces FILE only with a whole export: one that fails (an
/// event altered in the database) exits non-zero and leaves the earlier export byte
/// for byte, with nothing left beside it. And a file without its head line (an empty
/// one too) is not a complete export: verify refuses it rather than pass the events
/// left.
async fn a_failed_export_leaves_the_earlier_one_and_a_file_without_its_head_does_not_verify(
    db: TestDb,
) {
    let (_store, dir, public, export) = ten_events_to_export(&db).await;
    let text = export_to(&db, &export);
    let sql = "UPDATE audit_events SET data = 'not json' WHERE seq = 4;";
    raw_script(&db, &format!("{} {sql}", unguard(&db))).await;
    let failed = signoff(
        &["audit", "export", "-o", export.to_str().unwrap()],
        &db.url,
    );
    assert!(!failed.status.success(), "{}", stdout(&failed));
    assert_eq!(std::fs::read_to_string(&export).unwrap(), text);
    let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(beside.len(), 2, "the key and the export alone: {beside:?}");

    let verify = verify_file(&export, &public);
    let headless = text.lines().filter(|l| !l.starts_with(r#"{"head":"#));
    let headless = headless.map(|l| format!("{l}\n")).collect::<String>();
    for file in ["", &headless] {
        std::fs::write(&export, file).unwrap();
        assert_one_line_error(
            &signoff(&verify, &db.url),
            "no head line, so not a complete `signoff audit export`",
        );
    }
}

/// A public key the operator names must be readable even when the log has no
/// checkpoint yet to check it with: a mistyped path is an error, never a pass, in the
/// database and in an export alike.
async fn a_public_key_named_but_unreadable_fails_even_before_the_first_checkpoint(db: TestDb) {
    let store = Store::connect(&db.url).await.unwrap();
    ten_events(&store).await;
    assert!(store.audit_checkpoints().await.unwrap().is_empty());
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    export_to(&db, &export);
    let typo = dir.path().join("signof.pub");
    let (export, typo) = (export.to_str().unwrap(), typo.to_str().unwrap());
    let plain = signoff(&["audit", "verify"], &db.url);
    assert!(plain.status.success(), "{}", stderr(&plain));
    for args in [
        &["audit", "verify", "--public-key", typo][..],
        &["audit", "verify", "--file", export, "--public-key", typo],
    ] {
        assert_one_line_error(&signoff(args, &db.url), "cannot read public key file");
    }
}

/// Parameters as deep as signoff keeps them (100 levels): the export's line wraps them
/// twice (`{"data": {"parameters": …}}`) and still reads back, so the export verifies.
async fn parameters_as_deep_as_signoff_keeps_them_export_and_verify(db: TestDb) {
    let (store, _dir, public, export) = ten_events_to_export(&db).await;
    let levels = signoff::exact_json::MAX_PARAMETERS_DEPTH;
    let deep = format!("{}1{}", r#"{"a": "#.repeat(levels), "}".repeat(levels));
    let deep = signoff::exact_json::parse_parameters(&deep).unwrap();
    let mut request = signoff::approval::NewApproval::new("t", deep);
    request.token_name = Some("agent".into());
    let class = signoff::policy::Policy::builtin().classify("t", &request.parameters, None);
    store
        .create(request, class, chrono::Utc::now())
        .await
        .unwrap();
    let text = export_to(&db, &export);
    assert!(text.contains(r#"{"a":{"a":"#), "{text}");
    let verified = signoff(&verify_file(&export, &public), &db.url);
    assert!(verified.status.success(), "{}", stderr(&verified));
}

/// Ten events in `db`, signed with the key the binary signs with, that key's public
/// half in a file, and where an export goes, in a directory of their own: the store,
/// the directory, the public key file and the export file.
async fn ten_events_to_export(db: &TestDb) -> (Store, tempfile::TempDir, PathBuf, PathBuf) {
    let (store, signer) = signing_store(db).await;
    ten_events(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("signoff.pub");
    std::fs::write(&public, signer.public_key().to_string()).unwrap();
    let export = dir.path().join("audit.jsonl");
    (store, dir, public, export)
}

/// `signoff audit verify --file EXPORT --public-key PUBLIC`.
fn verify_file<'a>(export: &'a Path, public: &'a Path) -> [&'a str; 6] {
    let (export, public) = (export.to_str().unwrap(), public.to_str().unwrap());
    ["audit", "verify", "--file", export, "--public-key", public]
}

/// The key the binary signs with for `db`, and a signing store on it.
async fn signing_store(db: &TestDb) -> (Store, Signer) {
    let signer = if db.backend == "sqlite" {
        let file = db.url.strip_prefix("sqlite://").unwrap();
        let key = std::path::Path::new(file).with_file_name("signoff-signing.key");
        Signer::create(&key).unwrap()
    } else {
        Signer::load(common::server::postgres_key_file()).unwrap()
    };
    let store = Store::connect_signing(&db.url, Default::default(), Some(signer.clone()))
        .await
        .unwrap();
    (store, signer)
}

/// Ten events: five at noon, five ten minutes later, so checkpoints sign events 1 and 6.
async fn ten_events(store: &Store) {
    let policy = signoff::policy::Policy::builtin();
    let noon = chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .unwrap();
    for i in 0..10 {
        let mut request = signoff::approval::NewApproval::new("t", serde_json::json!({ "i": i }));
        request.token_name = Some("agent".into());
        let class = policy.classify("t", &request.parameters, None);
        let at = noon + chrono::TimeDelta::seconds(if i < 5 { i } else { 600 + i });
        store.create(request, class, at).await.unwrap();
    }
}

/// Runs several statements straight on the database, as its owner could.
async fn raw_script(db: &TestDb, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

/// The statements that change event `seq`'s actor to `actor` and recompute every hash
/// from it on, the head too: a chain consistent again, as its owner could make it.
async fn rewrite(store: &Store, seq: i64, actor: &str) -> String {
    let entries = store.audit_page(0, 100).await.unwrap();
    let drafts = entries
        .iter()
        .map(|e| Draft {
            approval_id: e.approval_id,
            kind: Box::leak(e.kind.clone().into_boxed_str()),
            actor: if e.seq == seq {
                Some(actor.into())
            } else {
                e.actor.clone()
            },
            at: e.at,
            data: e.data.clone(),
        })
        .collect();
    let rewritten = link(0, GENESIS_HASH, drafts);
    let mut sql = String::new();
    for e in rewritten.iter().filter(|e| e.seq >= seq) {
        sql += &format!(
            "UPDATE audit_events SET actor = {}, prev_hash = '{}', hash = '{}' WHERE seq = {};",
            e.actor
                .as_deref()
                .map_or("NULL".into(), |a| format!("'{a}'")),
            e.prev_hash,
            e.hash,
            e.seq
        );
    }
    let last = rewritten.last().unwrap();
    sql + &format!("UPDATE audit_head SET hash = '{}' WHERE id = 1;", last.hash)
}

/// `signoff audit export -o FILE` of `db`, which must succeed: the file's text.
/// `-o` through a symlink replaces the file it names and keeps the link; an earlier
/// export's permissions are kept, and a new export is its owner's alone.
#[tokio::test]
async fn an_export_writes_through_a_symlink_and_keeps_the_earlier_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let db = common::sqlite();
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.jsonl");
    export_to(&db, &fresh);
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o600, "a new export is its owner's alone");

    let archived = dir.path().join("archived.jsonl");
    std::fs::write(&archived, "last night's\n").unwrap();
    std::fs::set_permissions(&archived, std::fs::Permissions::from_mode(0o640)).unwrap();
    let latest = dir.path().join("latest.jsonl");
    std::os::unix::fs::symlink(&archived, &latest).unwrap();
    let text = export_to(&db, &latest);
    assert!(
        std::fs::symlink_metadata(&latest)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is kept"
    );
    assert_eq!(std::fs::read_to_string(&archived).unwrap(), text);
    assert_eq!(text, std::fs::read_to_string(&fresh).unwrap());
    assert_eq!(mode(&archived), 0o640, "the earlier file's permissions");
    let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(beside.len(), 3, "nothing left beside them: {beside:?}");
}

fn export_to(db: &TestDb, file: &std::path::Path) -> String {
    let exported = signoff(&["audit", "export", "-o", file.to_str().unwrap()], &db.url);
    assert!(exported.status.success(), "{}", stderr(&exported));
    std::fs::read_to_string(file).unwrap()
}

/// Statements that lift the append-only guards, as a database owner could.
fn unguard(db: &TestDb) -> &'static str {
    if db.backend == "sqlite" {
        "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; \
         DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;"
    } else {
        "ALTER TABLE audit_events DISABLE TRIGGER USER; \
         ALTER TABLE audit_checkpoints DISABLE TRIGGER USER;"
    }
}

async fn audit_verify_reports_coverage_and_catches_a_rewritten_chain(db: TestDb) {
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    let ok = signoff(&["audit", "verify"], &db.url);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let sixth = store.audit_page(5, 1).await.unwrap().remove(0);
    assert_eq!(
        stdout(&ok).trim(),
        format!(
            "audit chain ok: 10 events; 2 signed checkpoints, the newest covers 6 of them (4 newer events are not signed yet)\n\
             newest checkpoint 2:{0} (keep it: a later `signoff audit verify --checkpoint 2:{0}` fails if it is removed)",
            sixth.hash
        )
    );

    // Whoever can write the database changes event 2 and recomputes every hash after
    // it: the chain is consistent again, but no longer what checkpoint 2 signed.
    let sql = rewrite(&store, 2, "mallory").await;
    raw_script(&db, &format!("{} {sql}", unguard(&db))).await;
    assert_one_line_error(
        &signoff(&["audit", "verify"], &db.url),
        "audit chain rewritten: event 6 no longer has the hash signed checkpoint 2 recorded",
    );
}

async fn an_export_verifies_offline_with_the_public_key_alone(db: TestDb) {
    let (store, signer) = signing_store(&db).await;
    ten_events(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    let text = export_to(&db, &export);
    assert_eq!(
        text.lines().count(),
        13,
        "10 events, 2 checkpoints and the head"
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with(r#"{"checkpoint":1,"seq":1,"#)
    );
    let public = dir.path().join("signoff.pub");
    std::fs::write(&public, signer.public_key().to_string()).unwrap();
    let offline = verify_file(&export, &public);
    let nowhere = "sqlite:///nonexistent-dir/none.db";
    let checked = signoff(&offline, nowhere);
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(
        stdout(&checked).contains("covers 6"),
        "{}",
        stdout(&checked)
    );
    std::fs::write(&public, Signer::generate().public_key().to_string()).unwrap();
    assert_one_line_error(&signoff(&offline, nowhere), "checkpoint 1: its signature");
    // Bad public key files are one-line errors saying what is wrong.
    std::fs::write(&public, Signer::generate().to_text()).unwrap();
    assert_one_line_error(&signoff(&offline, nowhere), "holds a signing key");
    std::fs::write(&public, "whpk_AAAA").unwrap();
    assert_one_line_error(&signoff(&offline, nowhere), "3 bytes long");
    std::fs::remove_file(&public).unwrap();
    assert_one_line_error(&signoff(&offline, nowhere), "cannot read public key file");
}

async fn audit_verify_reports_events_missing_after_a_checkpoint(db: TestDb) {
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    let third = store.audit_page(2, 1).await.unwrap().remove(0);
    let sql = format!(
        "{} DELETE FROM audit_events WHERE seq > 3; UPDATE audit_head SET seq = 3, hash = '{}' WHERE id = 1;",
        unguard(&db),
        third.hash
    );
    raw_script(&db, &sql).await;
    assert_one_line_error(
        &signoff(&["audit", "verify"], &db.url),
        "events missing after checkpoint 1 (event 1): checkpoint 2 signed event 6, but the log ends at event 3",
    );
}

#[tokio::test]
async fn audit_verify_passes_then_names_the_altered_event() {
    let db = common::sqlite();
    assert!(signoff(&["migrate"], &db.url).status.success());
    // Record some history through the store.
    let store = signoff::store::Store::connect(&db.url).await.unwrap();
    let policy = signoff::policy::Policy::builtin();
    let now = chrono::Utc::now();
    for i in 0..5 {
        let request = {
            let mut request =
                signoff::approval::NewApproval::new("t", serde_json::json!({ "i": i }));
            request.token_name = Some("agent".into());
            request
        };
        let class = policy.classify("t", &request.parameters, None);
        store.create(request, class, now).await.unwrap();
    }
    let ok = signoff(&["audit", "verify"], &db.url);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("5 events"));

    let export = signoff(&["audit", "export"], &db.url);
    let lines: Vec<serde_json::Value> = stdout(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "5 events and the head");
    assert_eq!(lines[5]["head"], 5);
    assert_eq!(lines[2]["seq"], 3);
    assert_eq!(lines[0]["kind"], "requested");
    assert!(lines[1]["hash"].as_str().unwrap().len() == 64);

    // An attacker with database access drops the guard and edits event 3.
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("DROP TRIGGER audit_events_no_update; UPDATE audit_events SET data = '{\"i\":99}' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let broken = signoff(&["audit", "verify"], &db.url);
    assert_one_line_error(&broken, "event 3");
}

#[tokio::test]
async fn audit_verify_catches_tampering_on_postgres_too() {
    let Some(db) = common::postgres("cli_audit_verify").await else {
        return;
    };
    let token = signoff(&["token", "create", "agent"], &db.url);
    assert!(token.status.success(), "{}", stderr(&token));
    let store = signoff::store::Store::connect(&db.url).await.unwrap();
    let policy = signoff::policy::Policy::builtin();
    for i in 0..3 {
        let request = {
            let mut request =
                signoff::approval::NewApproval::new("t", serde_json::json!({ "i": i }));
            request.token_name = Some("agent".into());
            request
        };
        let class = policy.classify("t", &request.parameters, None);
        store
            .create(request, class, chrono::Utc::now())
            .await
            .unwrap();
    }
    assert!(signoff(&["audit", "verify"], &db.url).status.success());
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only; \
         UPDATE audit_events SET actor = 'mallory' WHERE seq = 2",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_one_line_error(&signoff(&["audit", "verify"], &db.url), "event 2");
}

/// An event's text must be as signoff wrote it, on either backend: one that reads the
/// same to the hash but not to whoever reads the table (a key given twice, the first
/// read by SQLite's `json_extract` and by anyone reading the text, the last by the
/// hash), or on SQLite, where times are text, a time in another form, is named
/// altered. (PostgreSQL keeps `data` as TEXT for this; its times are typed.)
async fn audit_verify_names_an_event_whose_text_reads_the_same_but_is_not_as_written(db: TestDb) {
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    let data: String = common::raw_value(&db, "SELECT data FROM audit_events WHERE seq = 2").await;
    let doubled = format!(r#"{{"tool_name":"evil_tool",{}"#, &data[1..]);
    let mut altered = vec![("data", doubled.clone(), data)];
    if db.backend == "sqlite" {
        let shown = format!("SELECT json_extract('{doubled}', '$.tool_name')");
        assert_eq!(
            common::raw_value::<String>(&db, &shown).await,
            "evil_tool",
            "what a reader sees"
        );
        let at =
            common::raw_value::<String>(&db, "SELECT at FROM audit_events WHERE seq = 2").await;
        altered.push(("at", at.replace('Z', "+00:00"), at));
    }
    raw_script(&db, unguard(&db)).await;
    for (column, value, original) in altered {
        let set =
            |value: &str| format!("UPDATE audit_events SET {column} = '{value}' WHERE seq = 2;");
        raw_script(&db, &set(&value)).await;
        let broken = signoff(&["audit", "verify"], &db.url);
        assert!(!broken.status.success());
        assert!(
            stderr(&broken).contains(&format!(
                "audit event 2: its {column} is not as signoff wrote it"
            )),
            "{}",
            stderr(&broken)
        );
        raw_script(&db, &set(&original)).await;
    }
    let ok = signoff(&["audit", "verify"], &db.url);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// A copy of event 1 numbered `seq`, inserted straight into the table as whoever can
/// write it could: the chain's walk from 1 to the head never reads it.
fn beside(seq: i64) -> String {
    format!(
        "INSERT INTO audit_events (seq, approval_id, kind, actor, at, data, prev_hash, hash) \
         SELECT {seq}, approval_id, kind, 'mallory', at, data, prev_hash, hash \
         FROM audit_events WHERE seq = 1;"
    )
}

async fn audit_verify_names_a_row_put_beside_the_chain_below_or_past_its_head(db: TestDb) {
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    // So that each row put beside can be taken away again.
    raw_script(&db, unguard(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    for (seq, says) in [
        (
            0,
            "audit event 0 lies outside the chain, whose events are numbered 1 to 10",
        ),
        (-7, "audit event -7 lies outside the chain"),
        (
            11,
            "audit event 11 lies outside the chain, whose events are numbered 1 to 10",
        ),
    ] {
        raw_script(&db, &beside(seq)).await;
        assert_one_line_error(&signoff(&["audit", "verify"], &db.url), says);
        // Not left out of an export in silence: it would verify as a clean log.
        let export = dir.path().join("beside.jsonl");
        let exported = signoff(
            &["audit", "export", "-o", export.to_str().unwrap()],
            &db.url,
        );
        assert_one_line_error(&exported, says);
        assert!(stderr(&exported).contains("nothing was exported"));
        raw_script(&db, &format!("DELETE FROM audit_events WHERE seq = {seq};")).await;
        let ok = signoff(&["audit", "verify"], &db.url);
        assert!(ok.status.success(), "{}", stderr(&ok));
    }
}

/// `audit verify`, `audit export`, `list` and `decide` read what is there: a
/// mistyped SQLite path is an error, not a new empty database found in order (a
/// PostgreSQL database is never created by connecting).
#[test]
fn the_inspecting_commands_refuse_a_sqlite_file_that_is_not_there() {
    let db = common::sqlite();
    let file = db.url.strip_prefix("sqlite://").unwrap();
    let missing = std::path::Path::new(file).with_file_name("typo.db");
    let url = format!("sqlite://{}", missing.display());
    for args in [
        &["audit", "verify"][..],
        &["audit", "export"],
        &["list"],
        &["decide", "abcd", "approve", "--as", "alice"],
    ] {
        assert_one_line_error(&signoff(args, &url), "no database at");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
}

/// The server's scheduler signs the chain's tail within a minute, also when that tail
/// is another process's (`signoff token create`, `signoff decide`): on SQLite the
/// server's writer used to sign the head its own last commit left, so the other
/// process's events stayed unsigned until the server appended one of its own.
async fn a_checkpoint_signs_events_another_process_appended(db: TestDb) {
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    run_ok_cli(&["token", "create", "ops-bot"], &db.url);
    let (head, _) = store.audit_head().await.unwrap();
    assert_eq!(head, 11, "the token's event is the eleventh");
    store
        .checkpoint(chrono::Utc::now() + chrono::TimeDelta::minutes(2))
        .await
        .unwrap();
    let newest = store.audit_checkpoints().await.unwrap().pop().unwrap();
    assert_eq!((newest.n, newest.seq), (3, 11), "{newest:?}");
    let ok = signoff(&["audit", "verify"], &db.url);
    assert!(
        stdout(&ok).contains("11 events; 3 signed checkpoints, the newest covers 11 of them"),
        "{}{}",
        stdout(&ok),
        stderr(&ok)
    );
}

fn run_ok_cli(args: &[&str], url: &str) {
    let done = signoff(args, url);
    assert!(done.status.success(), "{args:?}: {}", stderr(&done));
}

/// A reader that stops early (`signoff audit verify | head -c0`) ends the command as
/// it ends `cat`, by SIGPIPE, never with a panic.
#[tokio::test]
async fn a_closed_stdout_ends_the_command_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let db = common::sqlite();
    let (store, _) = signing_store(&db).await;
    ten_events(&store).await;
    drop(store);
    for args in [&["audit", "verify"][..], &["audit", "export"], &["list"]] {
        let mut child = common::server::command(args, &db.url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let done = child.wait_with_output().unwrap();
        let said = stderr(&done);
        assert!(!said.contains("panicked"), "{args:?}: {said}");
        assert!(
            done.status.success() || done.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {said}",
            done.status
        );
    }
}

/// `audit verify`, `audit export` and `list` inspect a database as found: one migrated
/// by a newer signoff (a migration this one does not know) or whose schema is older
/// than this signoff's (a migration not applied) is refused, saying which signoff to
/// inspect it with, and is not migrated. The commands that migrate refuse one a newer
/// signoff migrated just as clearly.
async fn the_inspecting_commands_take_the_schema_as_found(db: TestDb) {
    drop(Store::connect(&db.url).await.unwrap());
    let inspecting: [&[&str]; 3] = [&["audit", "verify"], &["audit", "export"], &["list"]];
    let checksum = if db.backend == "sqlite" {
        "X'00'"
    } else {
        "'\\x00'::bytea"
    };
    raw_script(
        &db,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99999999999999, 'from a newer signoff', true, {checksum}, 0);"
        ),
    )
    .await;
    for args in inspecting {
        assert_one_line_error(&signoff(args, &db.url), "a newer signoff migrated it");
    }
    // Nor do the commands that migrate write it by a schema they do not know.
    for args in [&["migrate"][..], &["token", "create", "agent"]] {
        assert_one_line_error(&signoff(args, &db.url), "a newer signoff migrated it");
    }
    raw_script(
        &db,
        "DELETE FROM _sqlx_migrations WHERE version = 99999999999999; \
         DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations);",
    )
    .await;
    let applied = common::raw_count(&db, "SELECT count(*) FROM _sqlx_migrations").await;
    for args in inspecting {
        assert_one_line_error(&signoff(args, &db.url), "older than this signoff's");
    }
    assert_eq!(
        common::raw_count(&db, "SELECT count(*) FROM _sqlx_migrations").await,
        applied,
        "nothing was migrated"
    );
}
