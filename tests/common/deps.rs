//! Programs some tests run besides Rust (Python, tsx), found as `.ci/run` provides
//! them: a test skips when one is missing, unless `SIGNOFF_REQUIRE_TEST_DEPS` is set
//! (as `.ci/run` does), when that is a failure.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `program`, if running it with `works` succeeds; else `None` (skipped), or a panic
/// when `SIGNOFF_REQUIRE_TEST_DEPS` is set.
pub fn tool(what: &str, program: PathBuf, works: &[&str]) -> Option<PathBuf> {
    let ok = Command::new(&program)
        .args(works)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if ok {
        Some(program)
    } else {
        missing(what, &program)
    }
}

/// A file the tests' packages install (such as a server's entry point in
/// `tests/node/node_modules/.bin`), if it is there.
pub fn installed(what: &str, file: PathBuf) -> Option<PathBuf> {
    if file.exists() {
        Some(file)
    } else {
        missing(what, &file)
    }
}

/// `None` (the test is skipped), or a panic when `SIGNOFF_REQUIRE_TEST_DEPS` is set.
fn missing(what: &str, program: &std::path::Path) -> Option<PathBuf> {
    if std::env::var_os("SIGNOFF_REQUIRE_TEST_DEPS").is_some() {
        panic!(
            "{what} is required (SIGNOFF_REQUIRE_TEST_DEPS) but {} cannot run it",
            program.display()
        );
    }
    eprintln!("skipped: {what} is not installed ({})", program.display());
    None
}

/// `SIGNOFF_TEST_PYTHON` (the virtual environment `.ci/run` makes from
/// `tests/python/requirements.txt`), else `python3`, if it can import `module`.
pub fn python(module: &str) -> Option<PathBuf> {
    let program = std::env::var_os("SIGNOFF_TEST_PYTHON")
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    tool(
        &format!("Python with {module}"),
        program,
        &["-c", &format!("import {module}")],
    )
}

/// tsx from `tests/node` (`npm ci` there).
pub fn tsx() -> Option<PathBuf> {
    let program = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/node_modules/.bin/tsx"
    ));
    tool("tsx (npm ci in tests/node)", program, &["--version"])
}

/// The first fenced block of `language` in the repository's `file` (such as
/// `docs/security.md`) that contains `marker`.
pub fn doc_block(file: &str, language: &str, marker: &str) -> String {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fence = format!("```{language}\n");
    text.split(&fence)
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("no ```{language} block with {marker} in {file}"))
        .to_owned()
}
