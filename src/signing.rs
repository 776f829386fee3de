//! The Ed25519 key that signs decision callbacks and audit checkpoints. It lives in a
//! file outside the database (`SIGNOFF_SIGNING_KEY_FILE`), so whoever can read or
//! write the database can neither forge a callback nor re-sign a rewritten audit log.
//!
//! Formats, those of Standard Webhooks' asymmetric keys:
//! - the key file: one line, `whsk_` + base64 (standard, padded) of the 32-byte
//!   Ed25519 seed (64 bytes, seed then public key, are read too);
//! - the public key (`signoff key public`): `whpk_` + base64 of its 32 raw bytes;
//! - a signature: base64 of its 64 raw bytes.
//!
//! With SQLite the key file defaults to `signoff-signing.key` beside the database
//! and is created (mode 0600) on first start; with PostgreSQL it must be named and
//! exist, so that every replica signs with the same key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rand::RngCore;

/// How a key file's text begins.
pub const SECRET_PREFIX: &str = "whsk_";
/// How a public key's text begins.
pub const PUBLIC_PREFIX: &str = "whpk_";
/// The SQLite default's file name, beside the database file.
pub const DEFAULT_KEY_FILE: &str = "signoff-signing.key";

/// The signing key; cheap to clone.
#[derive(Clone)]
pub struct Signer(Arc<SigningKey>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public_key())
    }
}

impl Signer {
    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Self(Arc::new(key))
    }

    /// Reads a key file's text (`whsk_…`); the error says what is wrong with it.
    pub fn from_text(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.starts_with(PUBLIC_PREFIX) {
            bail!("it holds a public key ({PUBLIC_PREFIX}…), not a signing key");
        }
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let bytes = STANDARD.decode(encoded).map_err(|_| {
            anyhow!("it is not a signing key: expected {SECRET_PREFIX} and base64 of 32 bytes")
        })?;
        let key = match bytes.len() {
            32 | 64 => SigningKey::from_bytes(bytes[..32].try_into().expect("32 bytes")),
            n => bail!("the key is {n} bytes long; an Ed25519 signing key is 32"),
        };
        if bytes.len() == 64 && key.verifying_key().as_bytes() != &bytes[32..] {
            bail!("its last 32 bytes are not the public key of its first 32");
        }
        Ok(Self(Arc::new(key)))
    }

    /// The key file's text: `whsk_` + base64 of the seed, and a newline.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", STANDARD.encode(self.0.to_bytes()))
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "signing key file {} does not exist: create it with `signoff key generate {}`",
                path.display(),
                path.display()
            ),
            Err(error) => bail!("cannot read signing key file {}: {error}", path.display()),
        };
        Self::from_text(&text).with_context(|| format!("signing key file {}", path.display()))
    }

    /// Writes a new key to `path`, readable by its owner only (0600); never replaces
    /// an existing file. The key appears whole or not at all: it is written and synced
    /// to a temporary file beside `path`, then hard-linked into place (which fails if
    /// `path` exists), so that a crash or a second process starting at the same moment
    /// never leaves, nor reads, a partly written key.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let signer = Self::generate();
        let temp = temp_beside(path);
        let written = write_new(&temp, signer.to_text().as_bytes())
            .map_err(|error| anyhow!("cannot write {}: {error}", temp.display()))
            .and_then(|()| {
                std::fs::hard_link(&temp, path).map_err(|error| {
                    if error.kind() == std::io::ErrorKind::AlreadyExists {
                        anyhow!("{} already exists; it was left as it is", path.display())
                    } else {
                        anyhow!("cannot create {}: {error}", path.display())
                    }
                })
            });
        let _ = std::fs::remove_file(&temp);
        written?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            // Best effort: the new name survives a crash once its directory is synced.
            let _ = std::fs::File::open(dir).and_then(|dir| dir.sync_all());
        }
        Ok(signer)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The base64 Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.0.sign(message).to_bytes())
    }
}

/// A public key, to check signatures with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", STANDARD.encode(self.0.as_bytes()))
    }
}

impl PublicKey {
    /// Reads `whpk_` + base64 of 32 bytes (the prefix may be left out).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.starts_with(SECRET_PREFIX) {
            bail!(
                "it holds a signing key ({SECRET_PREFIX}…), not a public key: `signoff key public` prints the public key"
            );
        }
        let encoded = text.strip_prefix(PUBLIC_PREFIX).unwrap_or(text);
        let bytes = STANDARD.decode(encoded).map_err(|_| {
            anyhow!("it is not a public key: expected {PUBLIC_PREFIX} and base64 of 32 bytes")
        })?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow!(
                "the key is {} bytes long; an Ed25519 public key is 32",
                bytes.len()
            )
        })?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| anyhow!("it is not a valid Ed25519 public key"))
    }

    /// Reads a public key file (what `signoff key public` printed).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read public key file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("public key file {}", path.display()))
    }

    /// Whether `signature` (base64) is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = STANDARD.decode(signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.0.verify(message, &signature).is_ok()
    }
}

/// A name for a temporary file in `path`'s directory that no other process picks.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || DEFAULT_KEY_FILE.into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let unique = rand::rng().next_u64();
    path.with_file_name(format!(".{name}.{}.{unique:016x}.tmp", std::process::id()))
}

/// The permissions of the file at `path` when they let others than its owner in (a
/// group or other bit set), which the key file must not: it is warned about, not
/// refused, since secrets mounted by an orchestrator are often 0644.
fn open_to_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Writes `bytes` to a new file at `path` (mode 0600) and syncs it.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Where the key file is: the one named, else (SQLite) the default beside the
/// database file, as sqlx reads the URL (`%20` a space, `?mode=rwc` no part of the
/// name): read any other way, the key would be looked for beside another file. The
/// flag says whether it was named.
pub fn key_path(database_url: &str, named: Option<&Path>) -> anyhow::Result<(PathBuf, bool)> {
    if let Some(path) = named {
        return Ok((path.to_path_buf(), true));
    }
    if !database_url.starts_with("sqlite:") {
        bail!(
            "SIGNOFF_SIGNING_KEY_FILE is required with PostgreSQL, so that every replica signs with the same key: create one with `signoff key generate FILE`"
        );
    }
    let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
    if in_memory {
        bail!(
            "SIGNOFF_SIGNING_KEY_FILE is required with an in-memory database: create one with `signoff key generate FILE`"
        );
    }
    let file = crate::store::sqlite_file(database_url).filter(|file| !file.as_os_str().is_empty());
    let Some(file) = file else {
        bail!(
            "the database URL names no SQLite file this key could lie beside (sqlx cannot read it \
             as one): correct DATABASE_URL, or name the key with SIGNOFF_SIGNING_KEY_FILE"
        );
    };
    let dir = file.parent().unwrap_or(Path::new(""));
    Ok((dir.join(DEFAULT_KEY_FILE), false))
}

/// The key `signoff serve` signs with: the named file, which must exist; else (SQLite)
/// the default file, created on first start.
pub fn for_serve(database_url: &str, named: Option<&Path>) -> anyhow::Result<Signer> {
    let (path, named) = key_path(database_url, named)?;
    if named || path.exists() {
        let signer = Signer::load(&path)?;
        if let Some(mode) = open_to_others(&path) {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:04o}"),
                "the signing key file can be read or written by others than its owner, who could then forge callbacks and re-sign a rewritten audit log: chmod 600 it"
            );
        }
        return Ok(signer);
    }
    match Signer::create(&path) {
        Ok(signer) => {
            tracing::info!(file = %path.display(), public_key = %signer.public_key(), "created a signing key");
            Ok(signer)
        }
        // Another process created it first.
        Err(_) if path.exists() => Signer::load(&path),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_text_and_signs_verifiably() {
        let signer = Signer::generate();
        let again = Signer::from_text(&signer.to_text()).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let signature = signer.sign(b"hello");
        assert!(signer.public_key().verify(b"hello", &signature));
        assert!(!signer.public_key().verify(b"hellO", &signature));
        assert!(!Signer::generate().public_key().verify(b"hello", &signature));
        assert!(!signer.public_key().verify(b"hello", "not base64!"));
        let public = signer.public_key().to_string();
        assert!(
            public.starts_with("whpk_") && public.len() == 5 + 44,
            "{public}"
        );
        assert_eq!(PublicKey::parse(&public).unwrap(), signer.public_key());
        assert_eq!(PublicKey::parse(&public[5..]).unwrap(), signer.public_key());
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let error = |r: anyhow::Result<Signer>| r.unwrap_err().to_string();
        assert!(error(Signer::from_text("whsk_AAAA")).contains("3 bytes long"));
        assert!(error(Signer::from_text("whsk_!!")).contains("not a signing key"));
        let public = Signer::generate().public_key().to_string();
        assert!(error(Signer::from_text(&public)).contains("public key"));
        let secret = Signer::generate().to_text();
        assert!(
            PublicKey::parse(&secret)
                .unwrap_err()
                .to_string()
                .contains("signoff key public")
        );
        assert!(
            PublicKey::parse("whpk_AAAA")
                .unwrap_err()
                .to_string()
                .contains("3 bytes")
        );
    }

    #[test]
    fn the_sqlite_default_lies_beside_the_database_and_postgres_needs_a_name() {
        let path = |url| key_path(url, None).map(|(path, _)| path);
        assert_eq!(
            path("sqlite:///var/lib/signoff/db.sqlite?mode=rwc").unwrap(),
            Path::new("/var/lib/signoff/signoff-signing.key")
        );
        assert_eq!(
            path("sqlite://signoff.db").unwrap(),
            Path::new("signoff-signing.key")
        );
        assert_eq!(
            path("sqlite:///srv/my%20data/signoff.db").unwrap(),
            Path::new("/srv/my data/signoff-signing.key"),
            "as sqlx reads the URL"
        );
        let memory = path("sqlite::memory:").unwrap_err().to_string();
        assert!(memory.contains("in-memory"), "{memory}");
        assert!(path("sqlite://").is_err());
        let unreadable = path("sqlite:x.db?journal=wal").unwrap_err().to_string();
        assert!(unreadable.contains("DATABASE_URL"), "{unreadable}");
        assert!(!unreadable.contains("in-memory"), "{unreadable}");
        let pg = path("postgres://db/signoff").unwrap_err().to_string();
        assert!(pg.contains("signoff key generate"), "{pg}");
        assert_eq!(
            key_path("postgres://db", Some(Path::new("k"))).unwrap(),
            (PathBuf::from("k"), true)
        );
    }

    #[test]
    fn create_writes_an_owner_only_file_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let signer = Signer::create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let error = Signer::create(&path).unwrap_err().to_string();
        assert!(error.contains("already exists"), "{error}");
        assert_eq!(
            Signer::load(&path).unwrap().public_key(),
            signer.public_key()
        );
    }

    /// The files in `dir`, by name.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn serves_starting_at_once_share_one_whole_key() {
        for _ in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/db.sqlite", dir.path().display());
            let start = std::sync::Barrier::new(4);
            let keys: Vec<PublicKey> = std::thread::scope(|scope| {
                let starts: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            for_serve(&url, None).unwrap().public_key()
                        })
                    })
                    .collect();
                starts.into_iter().map(|s| s.join().unwrap()).collect()
            });
            assert!(keys.iter().all(|key| *key == keys[0]), "one key for all");
            assert_eq!(
                names(dir.path()),
                [DEFAULT_KEY_FILE],
                "no temporary file left"
            );
        }
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_does_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        // What a start that died before its key was linked into place leaves.
        let left = dir.path().join(".key.1.00000000deadbeef.tmp");
        std::fs::write(&left, "").unwrap();
        let signer = Signer::create(&path).unwrap();
        assert_eq!(
            Signer::load(&path).unwrap().public_key(),
            signer.public_key()
        );
        assert_eq!(names(dir.path()), [".key.1.00000000deadbeef.tmp", "key"]);
    }
}
