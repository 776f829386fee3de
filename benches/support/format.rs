//! Figures as the benches print them, shared by `benches/load` and `benches/scale`
//! (each includes this file with `#[path]`).

use std::time::Duration;

/// The `quantile` (0..=1) of sorted durations, nearest-rank; zero when empty.
pub fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn verdict(met: bool) -> &'static str {
    if met { "**MET**" } else { "**NOT MET**" }
}

pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// `12345` as `12,345`.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
