//! Slot emulation: a fixed number of parallel generations, FIFO waiting or refusal beyond them,
//! and the counters that `GET /sim/stats` reports so tests can watch slots come free.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Overflow;

/// Live counters; cheap to update from every request.
#[derive(Debug, Default)]
pub struct Stats {
    active: AtomicU64,
    queued: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    last_traceparent: std::sync::Mutex<Option<String>>,
    last_images: std::sync::Mutex<Vec<String>>,
}

/// A point-in-time copy of [`Stats`], as served by `GET /sim/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Generations holding a slot now.
    pub active: u64,
    /// Requests waiting for a slot now.
    pub queued: u64,
    /// Generations that got a slot, ever.
    pub started: u64,
    /// Generations that ran to their natural end.
    pub completed: u64,
    /// Generations whose client left (or that a fault cut) before the end.
    pub cancelled: u64,
    /// Requests refused because every slot and queue place was taken.
    pub rejected: u64,
    /// Chat requests received, whatever became of them.
    pub requests: u64,
    /// The W3C `traceparent` header of the last chat request, if it had one.
    pub last_traceparent: Option<String>,
    /// The images of the last chat request (see `images::in_messages`).
    #[serde(default)]
    pub last_images: Vec<String>,
}

impl Stats {
    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active: self.active.load(Ordering::SeqCst),
            queued: self.queued.load(Ordering::SeqCst),
            started: self.started.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::SeqCst),
            cancelled: self.cancelled.load(Ordering::SeqCst),
            rejected: self.rejected.load(Ordering::SeqCst),
            requests: self.requests.load(Ordering::SeqCst),
            last_traceparent: self
                .last_traceparent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last_images: self
                .last_images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Remembers the images of a chat request.
    pub(crate) fn saw_images(&self, images: Vec<String>) {
        *self.last_images.lock().unwrap_or_else(|p| p.into_inner()) = images;
    }

    /// Counts a chat request and remembers its trace context.
    pub(crate) fn count_request(&self, headers: &axum::http::HeaderMap) {
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self
            .last_traceparent
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = traceparent;
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

/// The simulator's generation slots.
#[derive(Debug, Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    overflow: Overflow,
    max_queue: u64,
    stats: Arc<Stats>,
}

/// Every slot and queue place is taken.
#[derive(Debug)]
pub struct Busy;

impl Slots {
    /// `count` slots with the given overflow behaviour.
    pub fn new(count: usize, overflow: Overflow, max_queue: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(count.max(1))),
            overflow,
            max_queue: max_queue as u64,
            stats: Arc::new(Stats::default()),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Takes a slot, waiting in FIFO order if the overflow mode allows.
    pub async fn acquire(&self) -> Result<SlotGuard, Busy> {
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            return Ok(self.started(permit));
        }
        if self.overflow == Overflow::Reject
            || self.stats.queued.load(Ordering::SeqCst) >= self.max_queue
        {
            self.stats.rejected.fetch_add(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let waiting = QueuedGuard::enter(&self.stats);
        let permit = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        drop(waiting);
        Ok(self.started(permit))
    }

    fn started(&self, permit: OwnedSemaphorePermit) -> SlotGuard {
        self.stats.active.fetch_add(1, Ordering::SeqCst);
        self.stats.started.fetch_add(1, Ordering::SeqCst);
        SlotGuard {
            _permit: permit,
            stats: Arc::clone(&self.stats),
            completed: false,
        }
    }
}

struct QueuedGuard<'a>(&'a Stats);

impl<'a> QueuedGuard<'a> {
    fn enter(stats: &'a Stats) -> Self {
        stats.queued.fetch_add(1, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A held slot. Dropping it frees the slot; it counts as cancelled unless [`SlotGuard::complete`]
/// was called first.
#[derive(Debug)]
pub struct SlotGuard {
    _permit: OwnedSemaphorePermit,
    stats: Arc<Stats>,
    completed: bool,
}

impl SlotGuard {
    /// Marks the generation as having run to its natural end.
    pub fn complete(&mut self) {
        self.completed = true;
    }

    /// Generations holding a slot now, this one included: the batch it decodes in.
    pub fn batch(&self) -> u64 {
        self.stats.active.load(Ordering::SeqCst).max(1)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let outcome = if self.completed {
            &self.stats.completed
        } else {
            &self.stats.cancelled
        };
        outcome.fetch_add(1, Ordering::SeqCst);
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reject_mode_refuses_beyond_slots_and_frees_on_drop() {
        let slots = Slots::new(1, Overflow::Reject, 0);
        let mut held = slots.acquire().await.unwrap();
        assert!(slots.acquire().await.is_err());
        held.complete();
        drop(held);
        let again = slots.acquire().await.unwrap();
        drop(again);
        let stats = slots.stats().snapshot();
        assert_eq!(
            (
                stats.active,
                stats.started,
                stats.completed,
                stats.cancelled,
                stats.rejected
            ),
            (0, 2, 1, 1, 1)
        );
    }

    #[tokio::test]
    async fn queue_mode_waits_in_order_and_bounds_the_queue() {
        let slots = Slots::new(1, Overflow::Queue, 1);
        let held = slots.acquire().await.unwrap();
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire().await.map(|_| ()) })
        };
        while slots.stats().snapshot().queued == 0 {
            tokio::task::yield_now().await;
        }
        assert!(slots.acquire().await.is_err(), "queue of one is full");
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(slots.stats().snapshot().queued, 0);
    }
}
