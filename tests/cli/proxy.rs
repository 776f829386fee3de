//! `signoff proxy`'s flags: values it cannot work with are refused before it starts, and
//! its token given where every user of the host can read it is warned about.

use std::process::{Command, Output, Stdio};

use crate::{assert_one_line_error, stderr};

/// `signoff proxy ARGS -- true`, with no token but `env`'s, and nothing on its stdin.
fn proxy(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_signoff"))
        .arg("proxy")
        .args(["--url", "http://127.0.0.1:9"])
        .args(args)
        .args(["--", "true"])
        .env_remove("SIGNOFF_TOKEN")
        .env_remove("SIGNOFF_TOKEN_FILE")
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("signoff runs")
}

/// A duration the proxy would overflow on (a deadline past the clock's end) or spin
/// with (progress every 0 s) is refused as clap refuses a setting: one line, exit 2.
#[test]
fn a_duration_out_of_its_range_is_a_one_line_error_exiting_2() {
    for (flag, value, says) in [
        ("--hold", "300000000000y", "between 100ms and 1h"),
        ("--hold", "0s", "between 100ms and 1h"),
        ("--hold", "soon", "--hold"),
        ("--progress-every", "0s", "between 100ms and 1h"),
        ("--input-within", "0s", "between 100ms and 1day"),
        ("--stop-grace", "300000000000y", "between 0s and 10m"),
        ("--task-ttl", "300000000000y", "between 100ms and 1day"),
    ] {
        let output = proxy(&[flag, value], &[]);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {output:?}");
        assert_one_line_error(
            &output,
            &format!("error: invalid value '{value}' for '{flag} <"),
        );
        assert!(stderr(&output).contains(says), "{flag} {value}: {output:?}");
    }
}

/// `SIGNOFF_TOKEN_FILE` that cannot be read or holds nothing, or given beside
/// `SIGNOFF_TOKEN`, is refused in one line (exit 2), never showing a token.
#[test]
fn a_token_file_that_cannot_be_used_is_a_one_line_error_exiting_2() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank");
    std::fs::write(&blank, " \n").unwrap();
    let blank = blank.to_str().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "so_f1le\n").unwrap();
    let token = token.to_str().unwrap();
    for (env, says) in [
        (
            &[("SIGNOFF_TOKEN_FILE", "/nonexistent/token")][..],
            "cannot read it",
        ),
        (&[("SIGNOFF_TOKEN_FILE", blank)][..], "the file is empty"),
        (
            &[("SIGNOFF_TOKEN_FILE", token), ("SIGNOFF_TOKEN", "so_3nv")][..],
            "cannot be used with",
        ),
    ] {
        let output = proxy(&[], env);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {output:?}");
        assert_one_line_error(&output, says);
        let said = stderr(&output);
        assert!(
            !said.contains("so_f1le") && !said.contains("so_3nv"),
            "{said}"
        );
    }
}

/// `--token` on the command line works, with a warning that every user of the host
/// can read it there; given as `SIGNOFF_TOKEN` or in a file, it gets none.
#[test]
fn a_token_on_the_command_line_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "so_f1le\n").unwrap();
    let token = token.to_str().unwrap();
    let warning = "--token on the command line is visible to every user of this host";
    // The upstream (`true`) exits before its handshake: the proxy ends at once.
    let flagged = proxy(&["--token", "so_fl4g"], &[]);
    assert!(stderr(&flagged).contains(warning), "{flagged:?}");
    assert!(!stderr(&flagged).contains("so_fl4g"), "{flagged:?}");
    for env in [("SIGNOFF_TOKEN", "so_3nv"), ("SIGNOFF_TOKEN_FILE", token)] {
        let quiet = proxy(&[], &[env]);
        assert!(quiet.status.code() != Some(2), "{env:?}: {quiet:?}");
        assert!(!stderr(&quiet).contains(warning), "{env:?}: {quiet:?}");
    }
}
