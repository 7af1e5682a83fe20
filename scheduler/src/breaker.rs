//! A three-state circuit breaker per endpoint (passive outlier ejection).
//!
//! - **Closed**: requests flow; `failures` consecutive failures open it.
//! - **Open**: no requests for `open_ms`; the endpoint's slots leave the pool's capacity.
//! - **Half-open**: after that, one trial request at a time; success closes it, failure opens it
//!   again. A trial whose outcome never comes (client left) stops blocking after `open_ms`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::routing::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_since: Option<Instant> },
}

/// The breaker of one endpoint.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            failures: config.failures.max(1),
            open_for: Duration::from_millis(config.open_ms),
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `closed`, `open` or `half_open` (an open breaker whose time is up reads half-open).
    pub fn state_name(&self) -> &'static str {
        match *self.state() {
            State::Closed { .. } => "closed",
            State::Open { until } if Instant::now() < until => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half_open",
        }
    }

    /// Whether the endpoint counts towards capacity (not open).
    pub fn counts(&self) -> bool {
        self.state_name() != "open"
    }

    /// Whether a request may go now; in half-open, this takes the one trial.
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now < until => false,
            State::Open { .. } => {
                *state = State::HalfOpen {
                    trial_since: Some(now),
                };
                true
            }
            State::HalfOpen {
                trial_since: Some(since),
            } if now - since < self.open_for => false,
            State::HalfOpen { .. } => {
                *state = State::HalfOpen {
                    trial_since: Some(now),
                };
                true
            }
        }
    }

    /// The endpoint answered well: close.
    pub fn on_success(&self) {
        *self.state() = State::Closed { failures: 0 };
    }

    /// The endpoint failed; returns true if this opened the breaker.
    pub fn on_failure(&self) -> bool {
        let mut state = self.state();
        let opened = match *state {
            State::Closed { failures } if failures + 1 < self.failures => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } | State::HalfOpen { .. } => true,
            // Failures of requests sent before it opened change nothing.
            State::Open { .. } => false,
        };
        if opened {
            *state = State::Open {
                until: Instant::now() + self.open_for,
            };
        }
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failures: 3,
            open_ms: 1000,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let b = breaker();
        assert!(!b.on_failure() && !b.on_failure());
        b.on_success();
        assert!(!b.on_failure() && !b.on_failure());
        assert!(b.on_failure(), "third consecutive failure opens");
        assert_eq!(b.state_name(), "open");
        assert!(!b.allow() && !b.counts());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_allows_one_trial_then_closes_or_reopens() {
        let b = breaker();
        (0..3).for_each(|_| {
            b.on_failure();
        });
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(b.state_name(), "half_open");
        assert!(b.allow(), "one trial");
        assert!(!b.allow(), "only one at a time");
        assert!(b.on_failure(), "a failed trial opens again");
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(b.allow());
        b.on_success();
        assert_eq!(b.state_name(), "closed");
        assert!(b.allow() && b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_does_not_block_forever() {
        let b = breaker();
        (0..3).for_each(|_| {
            b.on_failure();
        });
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(b.allow());
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(
            b.allow(),
            "the first trial never reported; a new one may go"
        );
    }
}
