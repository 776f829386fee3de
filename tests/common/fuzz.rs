//! How long each fuzz target runs, in one place for the integration tests and the
//! library's own tests (`src/lib.rs` includes this file under `cfg(test)`).
//!
//! - unset: the target's short case budget, so `cargo test` stays fast;
//! - `SIGNOFF_FUZZ_CASES=N`: N cases per target;
//! - `SIGNOFF_FUZZ_SECONDS=S`: each target runs for S seconds, whatever the count (the
//!   long mode: `SIGNOFF_FUZZ_SECONDS=600 cargo test fuzz`).
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestError, TestRunner};

/// Cases per runner in the time-budgeted mode; the deadline is checked between cases.
const CHUNK: u32 = 256;

/// What one fuzz target may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Cases(u32),
    Time(Duration),
}

impl Budget {
    /// The budget the environment asks for, else `short` cases.
    pub fn from_env(short: u32) -> Budget {
        Self::read(
            std::env::var("SIGNOFF_FUZZ_SECONDS").ok().as_deref(),
            std::env::var("SIGNOFF_FUZZ_CASES").ok().as_deref(),
            short,
        )
    }

    fn read(seconds: Option<&str>, cases: Option<&str>, short: u32) -> Budget {
        let number = |name: &str, raw: &str| -> u64 {
            raw.trim().parse().unwrap_or_else(|_| {
                panic!("{name} must be a whole number, not {raw:?}");
            })
        };
        if let Some(raw) = seconds {
            return Budget::Time(Duration::from_secs(number("SIGNOFF_FUZZ_SECONDS", raw)));
        }
        match cases {
            Some(raw) => {
                let cases = number("SIGNOFF_FUZZ_CASES", raw);
                Budget::Cases(u32::try_from(cases).unwrap_or(u32::MAX))
            }
            None => Budget::Cases(short),
        }
    }
}

/// Runs `test` on values of `strategy` within the environment's budget (see the module
/// doc); a failure panics with proptest's minimal failing input.
pub fn run<S: Strategy>(short: u32, strategy: &S, test: impl Fn(S::Value) -> TestCaseResult) {
    let started = Instant::now();
    let ran = match Budget::from_env(short) {
        Budget::Cases(cases) => run_cases(cases, strategy, &test, None),
        Budget::Time(budget) => {
            let deadline = started + budget;
            let mut ran = 0;
            while Instant::now() < deadline {
                ran += run_cases(CHUNK, strategy, &test, Some(deadline));
            }
            ran
        }
    };
    eprintln!(
        "fuzz: {ran} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// [`run`] for async tests on a multi-thread runtime: each case is awaited there.
pub fn run_async<S: Strategy, F: Future<Output = TestCaseResult>>(
    short: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> F,
) {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| run(short, strategy, |value| handle.block_on(test(value))));
}

/// One runner of `cases` cases (the ones after `deadline` pass without running); how
/// many ran.
fn run_cases<S: Strategy>(
    cases: u32,
    strategy: &S,
    test: &impl Fn(S::Value) -> TestCaseResult,
    deadline: Option<Instant>,
) -> u64 {
    let config = Config {
        failure_persistence: None,
        ..Config::with_cases(cases)
    };
    let ran = std::cell::Cell::new(0u64);
    let result = TestRunner::new(config).run(strategy, |value| {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(());
        }
        ran.set(ran.get() + 1);
        test(value)
    });
    match result {
        Ok(()) => ran.get(),
        Err(TestError::Fail(why, value)) => {
            panic!("fuzz case failed: {why}\nminimal failing input: {value:#?}")
        }
        Err(TestError::Abort(why)) => panic!("fuzzing aborted: {why}"),
    }
}

#[cfg(test)]
mod tests {
    // Paths in full: a bench including this file (harness = false) drops the tests.
    #[test]
    fn the_budget_is_seconds_over_cases_over_the_short_default() {
        use super::Budget;
        let secs = |s| Budget::Time(super::Duration::from_secs(s));
        assert_eq!(Budget::read(None, None, 7), Budget::Cases(7));
        assert_eq!(Budget::read(None, Some("5000"), 7), Budget::Cases(5000));
        assert_eq!(Budget::read(Some("600"), Some("5000"), 7), secs(600));
        assert_eq!(Budget::read(Some(" 2 "), None, 7), secs(2));
    }

    #[test]
    #[should_panic(expected = "SIGNOFF_FUZZ_SECONDS must be a whole number")]
    fn a_budget_that_is_not_a_number_is_refused() {
        super::Budget::read(Some("10m"), None, 7);
    }
}
