//! `signoff proxy`'s flags: values it cannot work with are refused before it starts.

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
