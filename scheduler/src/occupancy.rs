//! [`Occupancy`]: how many requests an endpoint serves at once — now (read without a lock, as
//! load balancing does for every pick) and over time. It keeps the integral of the in-flight
//! count, so the average batch a generation decoded in is the difference of two [`Reading`]s
//! divided by the time between them — however many requests came and went in between, which
//! two samples of the count at its ends would miss.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

/// The in-flight count of one endpoint and its integral over time.
#[derive(Debug)]
pub struct Occupancy {
    /// In flight now; changed only under `inner`'s lock, so the integral sees every step.
    requests: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    since: Instant,
    /// Requests × nanoseconds up to `since`.
    request_ns: u128,
}

/// The integral at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    at: Instant,
    request_ns: u128,
}

impl Default for Occupancy {
    fn default() -> Self {
        Self {
            requests: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                since: Instant::now(),
                request_ns: 0,
            }),
        }
    }
}

impl Occupancy {
    /// A request begins here.
    pub fn enter(&self) {
        self.step(|requests| requests + 1);
    }

    /// A request here ended.
    pub fn leave(&self) {
        self.step(|requests| requests.saturating_sub(1));
    }

    /// Requests in flight now.
    pub fn now(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// The integral now.
    pub fn reading(&self) -> Reading {
        let mut inner = self.lock();
        let at = inner.advance(self.now());
        Reading {
            at,
            request_ns: inner.request_ns,
        }
    }

    fn step(&self, change: impl FnOnce(usize) -> usize) {
        let mut inner = self.lock();
        let requests = self.now();
        inner.advance(requests);
        self.requests.store(change(requests), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Adds the time since the last change at `requests`, the count since then; returns now.
    fn advance(&mut self, requests: usize) -> Instant {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.since).as_nanos();
        self.request_ns += elapsed * requests as u128;
        self.since = now;
        now
    }
}

impl Reading {
    /// The average number of requests in flight from `earlier` to this reading; `None` when no
    /// time passed between them.
    pub fn average_since(&self, earlier: &Reading) -> Option<f64> {
        let elapsed = self.at.saturating_duration_since(earlier.at).as_nanos();
        (elapsed > 0)
            .then(|| self.request_ns.saturating_sub(earlier.request_ns) as f64 / elapsed as f64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_average_counts_requests_that_came_and_went_in_between() {
        let occupancy = Occupancy::default();
        occupancy.enter();
        let start = occupancy.reading();
        tokio::time::advance(Duration::from_millis(100)).await;
        // Three more for the middle half only: at both ends the count is one.
        for _ in 0..3 {
            occupancy.enter();
        }
        tokio::time::advance(Duration::from_millis(200)).await;
        for _ in 0..3 {
            occupancy.leave();
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        let end = occupancy.reading();
        assert_eq!(occupancy.now(), 1);
        let average = end.average_since(&start).unwrap();
        assert!((average - 2.5).abs() < 1e-9, "average {average}");
        assert_eq!(end.average_since(&end), None);
    }
}
