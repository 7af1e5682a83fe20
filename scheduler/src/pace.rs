//! [`Pace`]: how long an engine takes for a request of a given size, learned from the requests
//! it served — a base first-token time, a prefill time per prompt token and a decode time per
//! completion token. Budgets, blame and first-token predictions all read it; nothing here
//! waits or locks.
//!
//! - **Base** is the first-token time of short prompts (under [`SHORT_PROMPT`] tokens): the
//!   engine's fixed overhead.
//! - **Prefill** comes from longer prompts: `(ttft − base) ÷ prompt tokens`. Until one is seen,
//!   the configured `prefill_ms_per_1k_tokens` stands in (or nothing is assumed).
//! - **Decode** is `(generation time − ttft) ÷ (completion tokens − 1)`; an endpoint also
//!   keeps it per batch size (the requests it served at once, on average over the decode),
//!   because a continuous-batching engine's tokens slow down as its batch grows:
//!   time-per-output-token objectives read that. A pace by batch is forgotten after
//!   [`BATCH_PACE_FRESH_FOR`] without a new sample.
//! - **Proven** is the largest prompt that got its first token: a request far beyond it that
//!   times out says more about the request than about the engine.
//! - **Completion** is the average completion length: the estimate for a request that sets no
//!   `max_tokens`.
//!
//! Each is a moving average (weight 1/4) in integer nanoseconds, stored in atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Prompts shorter than this teach the base first-token time, longer ones the prefill rate.
pub const SHORT_PROMPT: u32 = 256;

/// Batch sizes the decode pace is learned for apart; a larger batch counts as this one.
pub const BATCHES_TOLD_APART: usize = 32;

/// How long a decode pace learned at one batch size is believed without a new sample. The
/// requests an objective refuses never run to correct it, so a pace that went stale (an engine
/// that sped up, one slow outlier) must lapse rather than refuse them for ever.
pub const BATCH_PACE_FRESH_FOR: Duration = Duration::from_secs(60);

/// Milliseconds since the first call, plus one (0 means "never" in the atomics).
fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = EPOCH.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// Learned timings of one engine (or a pool's average of them).
#[derive(Debug, Default)]
pub struct Pace {
    base_ns: AtomicU64,
    prefill_ns_per_token: AtomicU64,
    decode_ns_per_token: AtomicU64,
    /// Decode time per token by batch size (index = batch − 1), and when each was last
    /// learned ([`clock_ms`]; 0 = never).
    decode_ns_by_batch: [AtomicU64; BATCHES_TOLD_APART],
    decode_by_batch_at_ms: [AtomicU64; BATCHES_TOLD_APART],
    proven_prompt: AtomicU32,
    /// Average completion tokens, in thousandths of a token.
    completion_milli: AtomicU64,
}

/// A copy of what a [`Pace`] knows; `None` where nothing was learned yet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub base: Option<Duration>,
    pub prefill_per_token: Option<Duration>,
    pub decode_per_token: Option<Duration>,
}

/// Moves the average towards `sample` by a quarter; a sample under an eighth of the average
/// replaces it (the average was learned from an outlier such as a model load).
fn average(cell: &AtomicU64, sample: u64) {
    let sample = sample.max(1);
    let old = cell.load(Ordering::Relaxed);
    let new = if old == 0 || sample < old / 8 {
        sample
    } else {
        old - old / 4 + sample / 4
    };
    cell.store(new, Ordering::Relaxed);
}

/// The slot of a batch size in the per-batch arrays.
fn batch_index(batch: usize) -> usize {
    batch.clamp(1, BATCHES_TOLD_APART) - 1
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn known(cell: &AtomicU64) -> Option<Duration> {
    match cell.load(Ordering::Relaxed) {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}

impl Pace {
    /// A request of `prompt_tokens` got its first token after `ttft`.
    pub fn record_first_token(&self, prompt_tokens: u32, ttft: Duration) {
        self.proven_prompt
            .fetch_max(prompt_tokens, Ordering::Relaxed);
        if prompt_tokens < SHORT_PROMPT {
            average(&self.base_ns, nanos(ttft));
            return;
        }
        let base = self.base_ns.load(Ordering::Relaxed);
        let prefill = nanos(ttft).saturating_sub(base) / u64::from(prompt_tokens);
        average(&self.prefill_ns_per_token, prefill);
    }

    /// A request generated `completion_tokens` in `after_first` after its first token.
    pub fn record_decode(&self, completion_tokens: u32, after_first: Duration) {
        average(
            &self.completion_milli,
            u64::from(completion_tokens).saturating_mul(1000),
        );
        if completion_tokens > 1 {
            average(
                &self.decode_ns_per_token,
                nanos(after_first) / u64::from(completion_tokens - 1),
            );
        }
    }

    /// A request decoded `completion_tokens` in `after_first` while `batch` requests (itself
    /// included) were being served at once, on average.
    pub fn record_decode_in_batch(
        &self,
        batch: f64,
        completion_tokens: u32,
        after_first: Duration,
    ) {
        if completion_tokens > 1 {
            let index = batch_index(batch.round().max(1.0) as usize);
            average(
                &self.decode_ns_by_batch[index],
                nanos(after_first) / u64::from(completion_tokens - 1),
            );
            self.decode_by_batch_at_ms[index].store(clock_ms(), Ordering::Relaxed);
        }
    }

    /// The time per output token to expect in a batch of `batch`: what was learned at that
    /// size lately, else the slowest learned lately at a smaller size (a growing batch never
    /// speeds tokens up); `None` when nothing fresh was learned at or below it.
    pub fn decode_in_batch(&self, batch: usize) -> Option<Duration> {
        self.decode_in_batch_at(batch, clock_ms())
    }

    fn decode_in_batch_at(&self, batch: usize, now_ms: u64) -> Option<Duration> {
        let fresh_ms = BATCH_PACE_FRESH_FOR.as_millis() as u64;
        let fresh = |index: usize| {
            let at = self.decode_by_batch_at_ms[index].load(Ordering::Relaxed);
            (at != 0 && now_ms.saturating_sub(at) <= fresh_ms)
                .then(|| known(&self.decode_ns_by_batch[index]))
                .flatten()
        };
        let index = batch_index(batch);
        fresh(index).or_else(|| (0..index).filter_map(fresh).max())
    }

    /// The average completion length of the requests served, once one finished.
    pub fn average_completion(&self) -> Option<u32> {
        match self.completion_milli.load(Ordering::Relaxed) {
            0 => None,
            milli => Some(u32::try_from(milli.div_ceil(1000)).unwrap_or(u32::MAX)),
        }
    }

    /// The largest prompt that got its first token here.
    pub fn proven_prompt(&self) -> u32 {
        self.proven_prompt.load(Ordering::Relaxed)
    }

    pub fn timings(&self) -> Timings {
        Timings {
            base: known(&self.base_ns),
            prefill_per_token: known(&self.prefill_ns_per_token),
            decode_per_token: known(&self.decode_ns_per_token),
        }
    }
}

impl Timings {
    /// Prefill per token: the learned rate, else `configured`.
    pub fn prefill_or(&self, configured: Option<Duration>) -> Option<Duration> {
        self.prefill_per_token.or(configured)
    }

    /// Predicted time to the first token of a `prompt_tokens` prompt on an idle slot.
    pub fn first_token(
        &self,
        prompt_tokens: u32,
        configured_prefill: Option<Duration>,
    ) -> Duration {
        self.base.unwrap_or_default().saturating_add(
            self.prefill_or(configured_prefill)
                .unwrap_or_default()
                .saturating_mul(prompt_tokens),
        )
    }

    /// Predicted time a request holds its slot: first token, then the rest of its completion.
    pub fn service(
        &self,
        prompt_tokens: u64,
        completion_tokens: u64,
        requests: u64,
        configured_prefill: Option<Duration>,
    ) -> Duration {
        let per = |rate: Option<Duration>, tokens: u64| {
            rate.unwrap_or_default()
                .saturating_mul(u32::try_from(tokens).unwrap_or(u32::MAX))
        };
        per(self.base, requests)
            + per(self.prefill_or(configured_prefill), prompt_tokens)
            + per(
                self.decode_per_token,
                completion_tokens.saturating_sub(requests),
            )
    }

    /// Whether anything was learned that can predict a wait.
    pub fn is_known(&self) -> bool {
        self.base.is_some() || self.decode_per_token.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn decode_by_batch_is_what_was_measured_there_else_below() {
        let pace = Pace::default();
        assert_eq!(pace.decode_in_batch(1), None);
        pace.record_decode_in_batch(3.2, 9, 800 * MS);
        assert_eq!(pace.decode_in_batch(1), None, "nothing measured that small");
        assert_eq!(pace.decode_in_batch(3), Some(100 * MS));
        assert_eq!(
            pace.decode_in_batch(8),
            Some(100 * MS),
            "at least as slow as a smaller batch"
        );
        pace.record_decode_in_batch(1.0, 9, 80 * MS);
        assert_eq!(pace.decode_in_batch(2), Some(10 * MS));
        // A batch measured itself says what it is, even if faster than a smaller one was.
        pace.record_decode_in_batch(4.4, 9, 80 * MS);
        assert_eq!(pace.decode_in_batch(4), Some(10 * MS));
        // Beyond the sizes told apart, the largest one's average.
        pace.record_decode_in_batch(500.0, 2, 300 * MS);
        assert_eq!(pace.decode_in_batch(BATCHES_TOLD_APART), Some(300 * MS));
        assert_eq!(pace.decode_in_batch(10_000), Some(300 * MS));
        // A single token has no gap to learn from.
        pace.record_decode_in_batch(1.0, 1, 900 * MS);
        assert_eq!(pace.decode_in_batch(1), Some(10 * MS));
    }

    #[test]
    fn a_pace_by_batch_lapses_without_new_samples() {
        let pace = Pace::default();
        pace.record_decode_in_batch(1.0, 9, 800 * MS);
        let now = clock_ms();
        assert_eq!(pace.decode_in_batch_at(1, now), Some(100 * MS));
        let later = now + BATCH_PACE_FRESH_FOR.as_millis() as u64 + 1;
        assert_eq!(pace.decode_in_batch_at(1, later), None);
        assert_eq!(pace.decode_in_batch_at(4, later), None);
    }

    #[test]
    fn learns_base_then_prefill_then_decode() {
        let pace = Pace::default();
        assert_eq!(pace.timings(), Timings::default());
        pace.record_first_token(10, 20 * MS);
        pace.record_first_token(1000, 520 * MS);
        pace.record_decode(11, 100 * MS);
        let timings = pace.timings();
        assert_eq!(timings.base, Some(20 * MS));
        assert_eq!(timings.prefill_per_token, Some(Duration::from_micros(500)));
        assert_eq!(timings.decode_per_token, Some(10 * MS));
        assert_eq!(timings.first_token(2000, None), 1020 * MS);
        // Two requests of 1000 prompt and 11 completion tokens each.
        assert_eq!(
            timings.service(2000, 22, 2, None),
            2 * 20 * MS + 1000 * MS + 200 * MS
        );
        assert_eq!(pace.proven_prompt(), 1000);
        assert_eq!(pace.average_completion(), Some(11));
        pace.record_decode(3, 20 * MS);
        assert_eq!(pace.average_completion(), Some(9), "11 − 11/4 + 3/4");
        // The first sample was a model load: one ordinary answer replaces it.
        let cold = Pace::default();
        cold.record_first_token(10, Duration::from_secs(20));
        cold.record_first_token(10, 30 * MS);
        assert_eq!(cold.timings().base, Some(30 * MS));
    }

    #[test]
    fn the_configured_prefill_stands_in_until_one_is_learned() {
        let timings = Timings {
            base: Some(10 * MS),
            ..Timings::default()
        };
        assert_eq!(timings.first_token(1000, Some(MS)), 1010 * MS);
        let learned = Timings {
            prefill_per_token: Some(2 * MS),
            ..timings
        };
        assert_eq!(learned.first_token(1000, Some(MS)), 2010 * MS);
    }
}
