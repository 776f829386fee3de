//! Configuration read once at start: flags and environment (see DESIGN.md), validated
//! into plain values. Nothing reads the environment on a request path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// `SIGNOFF_DELIVERY_LEASE`, from 2 s to an hour: a job runs for 2/5 of it, so a
/// shorter lease leaves a delivery no time (at zero the deliveries' loop would claim
/// and put back its jobs forever, delivering nothing), and a longer one only delays
/// the deliveries a crashed replica held (thousands of years would overflow the
/// lease's time).
pub fn parse_delivery_lease(raw: &str) -> Result<Duration, String> {
    bounded_duration("SIGNOFF_DELIVERY_LEASE", raw, (2, 3600))
}

/// `SIGNOFF_SLACK_POST_INTERVAL`, from 0 (no pacing) to a minute.
pub fn parse_post_interval(raw: &str) -> Result<Duration, String> {
    bounded_duration("SIGNOFF_SLACK_POST_INTERVAL", raw, (0, 60))
}

/// `SLACK_API_URL`: an absolute `http(s)://` URL with a host (a stand-in's, or a proxy's
/// in front of Slack). Anything else would start a server that never reaches Slack, each
/// call failing as if Slack were down; it is refused at the start instead.
pub fn parse_slack_api_url(raw: &str) -> Result<String, String> {
    let refused = |why: &str| {
        format!(
            "SLACK_API_URL must be an http:// or https:// URL, such as https://slack.com/api ({why})"
        )
    };
    let url = reqwest::Url::parse(raw.trim()).map_err(|error| refused(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused(&format!("not {}:", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refused("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refused(
            "a method's name is put after it, so no query or fragment",
        ));
    }
    Ok(raw.trim().trim_end_matches('/').to_owned())
}

/// A duration such as `60s` or `1m`, within `(min, max)` seconds; the message names
/// the setting.
fn bounded_duration(name: &str, raw: &str, (min, max): (u64, u64)) -> Result<Duration, String> {
    let bounds = || {
        let (min, max) = (Duration::from_secs(min), Duration::from_secs(max));
        format!(
            "{} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )
    };
    let value = humantime::parse_duration(raw.trim())
        .map_err(|error| format!("{name} must be a duration from {}: {error}", bounds()))?;
    if value < Duration::from_secs(min) || value > Duration::from_secs(max) {
        return Err(format!("{name} must be from {}", bounds()));
    }
    Ok(value)
}

/// Parses the listen address with a message that names the flag.
pub fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| {
        format!("invalid listen address {raw:?}: expected HOST:PORT such as 127.0.0.1:8080")
    })
}

/// Where a URL's `scheme://` ends, if the text begins with one (RFC 3986: a letter,
/// then letters, digits, `+`, `-` or `.`); a `://` further on, in a password or a
/// query, is none. For the code that hides a URL's credentials.
pub fn scheme_end(text: &str) -> Option<usize> {
    let at = text.find("://")?;
    let mut chars = text[..at].chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(at + 3)
}

/// The policy file's path. An empty one is refused, not taken for the default: that
/// would put a server meant to run under its rules (its deny rules, channels and
/// approvers) on `./signoff.toml` or the built-in defaults, which post nowhere.
pub fn parse_policy_path(raw: &str) -> Result<std::path::PathBuf, String> {
    if raw.trim().is_empty() {
        return Err(
            "SIGNOFF_POLICY (--policy) is empty: name a policy file, or leave it \
                    unset for ./signoff.toml or the built-in defaults"
                .to_owned(),
        );
    }
    Ok(raw.into())
}

/// `SIGNOFF_PUBLIC_URL`, checked, spaces around it aside: an http(s) URL with a host,
/// such as `https://signoff.example.com`, which `signoff manifest` fills in and whose
/// host and origin `/mcp` accepts. One check for both: a URL let through here that
/// `/mcp` could not read would leave every remote call refused (403), silently.
pub fn parse_public_url(raw: &str) -> Result<&str, String> {
    let url = raw.trim();
    let has_host = || {
        let Some(authority) = url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|uri| uri.authority().cloned())
        else {
            return false;
        };
        // A port, if any, is a number that fits (`http` reads any other as none).
        !authority.host().is_empty()
            && (authority.as_str().ends_with(authority.host()) || authority.port().is_some())
    };
    // signoff's paths are appended to it (`signoff manifest`): a query or fragment would
    // swallow them, and credentials have no place in a URL shown to Slack.
    if (url.starts_with("https://") || url.starts_with("http://"))
        && !url.contains(char::is_whitespace)
        && !url.contains(['?', '#', '@'])
        && has_host()
    {
        Ok(url)
    } else {
        Err(format!(
            "SIGNOFF_PUBLIC_URL must be an http(s) URL such as https://signoff.example.com \
             (no user, query or fragment), not {url:?}"
        ))
    }
}

/// `--public-url` (`SIGNOFF_PUBLIC_URL`) for clap: blank is unset (the empty string,
/// left to the command), anything else the URL [`parse_public_url`] answers, so that
/// one `/mcp` could not accept is refused before anything runs, as clap refuses a
/// setting (exit code 2).
pub fn parse_public_url_setting(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    parse_public_url(raw).map(str::to_owned)
}

/// The variables signoff reads that count as unset when set to the empty string, as
/// container and compose files leave them (`SIGNOFF_POLICY=`): each has a default or
/// is optional. `DATABASE_URL` and `SIGNOFF_POLICY` are not among them: an empty one
/// is refused rather than taken for the default, which would put a server meant for
/// PostgreSQL on a file of its own, or one meant for its rules on none
/// ([`parse_policy_path`]).
pub const BLANK_IS_UNSET: [&str; 17] = [
    "RUST_LOG",
    "SIGNOFF_LISTEN",
    "SIGNOFF_PUBLIC_URL",
    "SIGNOFF_SIGNING_KEY_FILE",
    "SIGNOFF_LOG_FORMAT",
    "SIGNOFF_URL",
    "SIGNOFF_TOKEN",
    "SIGNOFF_TOKEN_FILE",
    "SIGNOFF_DELIVERY_LEASE",
    "SIGNOFF_SLACK_POST_INTERVAL",
    "SLACK_API_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_BOT_TOKEN_FILE",
    "SLACK_SIGNING_SECRET_FILE",
    "SLACK_APP_TOKEN_FILE",
];

/// Which of [`BLANK_IS_UNSET`] are set to the empty string, for `main` to unset
/// before anything reads the environment.
pub fn blank_variables(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<&'static str> {
    BLANK_IS_UNSET
        .into_iter()
        .filter(|name| var(name).is_some_and(|value| value.is_empty()))
        .collect()
}

/// Secrets that may come from a file instead, as containers hand them over: `NAME_FILE`
/// names the file, whose contents (less a final line break) become `NAME`.
pub const FILE_SECRETS: [&str; 4] = [
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "DATABASE_URL",
];

/// Why the secrets given as files cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretsError {
    /// `NAME` and `NAME_FILE` both set: a setting refused before anything runs, as clap
    /// refuses one (exit code 2).
    GivenTwice(String),
    /// A file that cannot be read, or is empty (exit code 1).
    File(String),
}

impl SecretsError {
    /// The process's exit code for it.
    pub fn exit_code(&self) -> u8 {
        match self {
            SecretsError::GivenTwice(_) => 2,
            SecretsError::File(_) => 1,
        }
    }
}

impl std::fmt::Display for SecretsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretsError::GivenTwice(why) | SecretsError::File(why) => f.write_str(why),
        }
    }
}

/// The first of [`FILE_SECRETS`] given both as `NAME` and as `NAME_FILE` (a blank one
/// is unset), as the error that names both.
fn secret_given_twice(var: &impl Fn(&str) -> Option<String>) -> Option<String> {
    FILE_SECRETS.into_iter().find_map(|name| {
        let file_var = format!("{name}_FILE");
        (var(&file_var).is_some_and(|path| !path.is_empty()) && var(name).is_some())
            .then(|| format!("set {name} or {file_var}, not both"))
    })
}

/// For each of [`FILE_SECRETS`] given as `NAME_FILE`, the value its file holds. Both
/// `NAME` and `NAME_FILE` (for any of them, before any file is read), an unreadable
/// file or an empty one is an error naming the variable (never the value).
pub fn secrets_from_files(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String)>, SecretsError> {
    if let Some(twice) = secret_given_twice(&var) {
        return Err(SecretsError::GivenTwice(twice));
    }
    let mut found = Vec::new();
    for name in FILE_SECRETS {
        let file_var = format!("{name}_FILE");
        let Some(path) = var(&file_var) else {
            continue;
        };
        if path.is_empty() {
            // Left blank, as compose files leave a variable: unset, but for the
            // database's when nothing else names one: then the URL is empty, refused
            // where a command opens the database (the SQLite default would put a server
            // meant for PostgreSQL on a file of its own), and `--database-url` or a
            // command that opens none is not held up.
            if name == "DATABASE_URL" && var(name).is_none() {
                found.push((name, String::new()));
            }
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|error| {
            SecretsError::File(format!("{file_var}: cannot read {path}: {error}"))
        })?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(SecretsError::File(format!("{file_var}: {path} is empty")));
        }
        found.push((name, value.to_owned()));
    }
    Ok(found)
}

#[cfg(test)]
mod secret_file_tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_its_file_less_the_final_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "xoxb-1\r\n").unwrap();
        let path = file.to_str().unwrap().to_owned();
        let env = |name: &str| (name == "SLACK_BOT_TOKEN_FILE").then(|| path.clone());
        assert_eq!(
            secrets_from_files(env),
            Ok(vec![("SLACK_BOT_TOKEN", "xoxb-1".to_owned())])
        );
    }

    #[test]
    fn both_forms_a_missing_or_empty_file_are_errors_that_never_show_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let empty = empty.to_str().unwrap().to_owned();
        let both = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://u:hunter2@db/x".to_owned()),
            "DATABASE_URL_FILE" => Some("/nonexistent".to_owned()),
            _ => None,
        };
        let error = secrets_from_files(both).unwrap_err();
        assert_eq!(
            error,
            SecretsError::GivenTwice("set DATABASE_URL or DATABASE_URL_FILE, not both".into())
        );
        assert_eq!(error.exit_code(), 2);
        let missing =
            |name: &str| (name == "SLACK_SIGNING_SECRET_FILE").then(|| "/nonexistent/s".to_owned());
        let unread = secrets_from_files(missing).unwrap_err();
        assert!(
            unread
                .to_string()
                .starts_with("SLACK_SIGNING_SECRET_FILE: cannot read /nonexistent/s")
        );
        let blank = |name: &str| (name == "SLACK_APP_TOKEN_FILE").then(|| empty.clone());
        let emptied = secrets_from_files(blank).unwrap_err();
        assert!(emptied.to_string().ends_with("is empty"));
        // A file that cannot be read, or is empty, is not a setting given twice.
        assert!(matches!(unread, SecretsError::File(_)), "{unread:?}");
        assert!(matches!(emptied, SecretsError::File(_)), "{emptied:?}");
    }
}

#[cfg(test)]
mod slack_api_url_tests {
    use super::*;

    #[test]
    fn a_slack_api_url_is_an_http_url_with_a_host_and_loses_its_last_slash() {
        assert_eq!(
            parse_slack_api_url("http://127.0.0.1:9/api/"),
            Ok("http://127.0.0.1:9/api".to_owned())
        );
        for raw in [
            "slack.com/api",
            "htps://slack.com/api",
            "file:///tmp/slack",
            "https://",
            "https://slack.com/api?x=1",
            "",
        ] {
            let error = parse_slack_api_url(raw).unwrap_err();
            assert!(error.starts_with("SLACK_API_URL must be"), "{raw}: {error}");
        }
    }
}
