//! Percentiles over latency samples, in milliseconds.

use std::time::Duration;

/// The `p` quantile (0..=1) of `samples` in ms, nearest rank; NaN when empty.
pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}
