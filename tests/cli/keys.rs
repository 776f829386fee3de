//! The signing key: `signoff key generate|public`, the SQLite default made on first
//! start, and the refusals (PostgreSQL without a key file, a missing or bad file).

use crate::common::server::Server;
use crate::common::{self};
use crate::{assert_one_line_error, signoff, stderr, stdout};

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_generate_writes_an_owner_only_key_once_and_key_public_prints_it() {
    let db = common::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing.key");
    let file_arg = file.to_str().unwrap();
    let generated = signoff(&["key", "generate", file_arg], &db.url);
    assert!(generated.status.success(), "{}", stderr(&generated));
    let public = stdout(&generated).trim().to_owned();
    assert!(
        public.starts_with("whpk_") && public.len() == 49,
        "{public}"
    );
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let written = std::fs::read_to_string(&file).unwrap();

    assert_one_line_error(
        &signoff(&["key", "generate", file_arg], &db.url),
        "already exists",
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        written,
        "untouched"
    );

    let shown = crate::common::server::command(&["key", "public"], &db.url)
        .env("SIGNOFF_SIGNING_KEY_FILE", &file)
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert_eq!(stdout(&shown).trim(), public);
}

#[test]
fn serve_on_sqlite_creates_the_default_key_beside_the_database_on_first_start() {
    let db = common::sqlite();
    let path = db.url.strip_prefix("sqlite://").unwrap();
    let key = std::path::Path::new(path).with_file_name("signoff-signing.key");
    assert!(!key.exists());
    let server = Server::start(&db.url, &[]);
    drop(server);
    assert!(key.exists(), "created on first start");
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);
    let before = std::fs::read_to_string(&key).unwrap();
    let again = Server::start(&db.url, &[]);
    drop(again);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), before, "kept");
    let public = stdout(&signoff(&["key", "public"], &db.url));
    assert!(public.trim().starts_with("whpk_"), "{public}");
}

/// The default key lies beside the database as sqlx reads its URL: in a directory
/// whose name has a space, written `%20`, the key is made and found in that directory,
/// not in one named with the `%20` itself.
#[test]
fn the_default_key_lies_beside_a_database_whose_url_is_percent_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("my data");
    std::fs::create_dir(&data).unwrap();
    let url = format!("sqlite://{}/my%20data/signoff.db", dir.path().display());
    drop(Server::start(&url, &[]));
    assert!(data.join("signoff.db").exists(), "the database sqlx opened");
    let key = data.join("signoff-signing.key");
    assert!(key.exists(), "created beside the database");
    assert!(!dir.path().join("my%20data").exists());
    let public = signoff(&["key", "public"], &url);
    assert!(public.status.success(), "{}", stderr(&public));
    let signer = signoff::signing::Signer::load(&key).unwrap();
    assert_eq!(stdout(&public).trim(), signer.public_key().to_string());
}

/// A key file others may read is served with, and warned about, naming the file and
/// its mode; an owner-only one is not.
#[cfg(unix)]
#[test]
fn serve_warns_of_a_key_file_that_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let db = common::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");
    let generated = signoff(&["key", "generate", key.to_str().unwrap()], &db.url);
    assert!(generated.status.success(), "{}", stderr(&generated));
    let served_log = |name: &str| {
        let log = dir.path().join(name);
        let env = [
            ("RUST_LOG", "warn"),
            ("SIGNOFF_SIGNING_KEY_FILE", key.to_str().unwrap()),
        ];
        drop(Server::start_logging(
            &db.url,
            &env,
            std::fs::File::create(&log).unwrap(),
        ));
        std::fs::read_to_string(&log).unwrap()
    };
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = served_log("open.log");
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("chmod 600")).collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains(key.to_str().unwrap()) && warned[0].contains("0644"),
        "{log}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = served_log("closed.log");
    assert!(!log.contains("chmod 600"), "{log}");
}

#[test]
fn postgres_needs_a_key_file_and_bad_files_are_one_line_errors() {
    // Refused before any connection is tried: no database is needed.
    let pg = "postgres://nobody@127.0.0.1:1/signoff";
    let serve = |key: Option<&std::path::Path>| {
        let mut command = crate::common::server::command(&["serve"], pg);
        command.env_remove("SIGNOFF_SIGNING_KEY_FILE");
        if let Some(key) = key {
            command.env("SIGNOFF_SIGNING_KEY_FILE", key);
        }
        command.output().unwrap()
    };
    assert_one_line_error(&serve(None), "signoff key generate");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    assert_one_line_error(&serve(Some(&missing)), "signoff key generate");

    let short = dir.path().join("short.key");
    std::fs::write(&short, "whsk_AAAA\n").unwrap();
    assert_one_line_error(&serve(Some(&short)), "3 bytes long");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "hello world\n").unwrap();
    assert_one_line_error(&serve(Some(&garbage)), "not a signing key");
    let public = dir.path().join("public.key");
    let generated = dir.path().join("real.key");
    let printed = signoff(&["key", "generate", generated.to_str().unwrap()], pg);
    std::fs::write(&public, stdout(&printed)).unwrap();
    assert_one_line_error(&serve(Some(&public)), "holds a public key");
    std::fs::create_dir(dir.path().join("a-dir")).unwrap();
    assert_one_line_error(&serve(Some(&dir.path().join("a-dir"))), "cannot read");
}
