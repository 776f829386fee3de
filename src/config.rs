//! Configuration read once at start: flags and environment (see DESIGN.md), validated
//! into plain values. Nothing reads the environment on a request path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::policy::Policy;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://signoff.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Used when `--policy` is not given and this file exists in the working directory.
pub const DEFAULT_POLICY_FILE: &str = "signoff.toml";

/// Where the policy came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    File(PathBuf),
    Builtin,
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::File(path) => write!(f, "{}", path.display()),
            PolicySource::Builtin => f.write_str("built-in defaults"),
        }
    }
}

/// Loads the policy: the given file (which must exist), else `signoff.toml` if it
/// exists, else the built-in defaults.
pub fn load_policy(explicit: Option<&Path>) -> anyhow::Result<(Policy, PolicySource)> {
    let path = match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_POLICY_FILE)).filter(|path| path.exists()),
    };
    match path {
        Some(path) => {
            let policy = Policy::load(&path)?;
            Ok((policy, PolicySource::File(path)))
        }
        None => Ok((Policy::builtin(), PolicySource::Builtin)),
    }
}

/// Parses the listen address with a message that names the flag.
pub fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| {
        format!("invalid listen address {raw:?}: expected HOST:PORT such as 127.0.0.1:8080")
    })
}
