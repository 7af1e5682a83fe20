//! Admission: who runs, who waits, who is refused — per backend pool.
//!
//! The policy, in order:
//! 1. **Slots.** A pool runs at most `slots` generations at once (a semaphore sized to the
//!    upstream's real parallelism, e.g. `OLLAMA_NUM_PARALLEL`). A request that finds a free slot
//!    runs at once.
//! 2. **Bounded queue.** Otherwise it waits in FIFO order, but only if fewer than `max_queue`
//!    requests already wait; if the queue is full it is refused at once (`QueueFull` →
//!    RESOURCE_EXHAUSTED → HTTP 429), never left to hang.
//! 3. **Bounded wait.** A waiter that gets no slot within `max_wait` is refused
//!    (`QueueTimeout` → UNAVAILABLE → HTTP 503).
//! 4. **Honest back-off.** Refusals carry a retry-after estimated from the live drain rate:
//!    (waiting ÷ slots) × the moving average of how long a slot is held.
//! 5. **Permit = generation.** The [`SlotPermit`] moves into the response stream and frees the
//!    slot when the stream ends, fails or is dropped; a waiter that is dropped (client gone)
//!    leaves the queue without ever taking a slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::SchedulerError;

/// Limits of one pool.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub slots: usize,
    pub max_queue: usize,
    pub max_wait: Duration,
}

/// The admission state of one pool.
#[derive(Debug)]
pub struct Admission {
    pool: String,
    limits: Limits,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Moving average of slot hold time in microseconds (0 = no sample yet).
    average_hold_us: AtomicU64,
}

/// Result of entering the pool.
#[derive(Debug)]
pub enum Entry {
    /// A slot was free.
    Admitted(SlotPermit),
    /// The request must wait; [`WaitTicket::wait`] resolves when it gets a slot.
    Waiting(WaitTicket),
}

impl Admission {
    /// Admission for `pool` with `limits`.
    pub fn new(pool: impl Into<String>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            pool: pool.into(),
            slots: Arc::new(Semaphore::new(limits.slots.max(1))),
            limits,
            waiting: AtomicUsize::new(0),
            average_hold_us: AtomicU64::new(0),
        })
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Slots held now.
    pub fn running(&self) -> usize {
        self.limits.slots.max(1) - self.slots.available_permits()
    }

    /// Takes a free slot, joins the queue, or refuses (queue full). Never waits.
    pub fn enter(self: &Arc<Self>) -> Result<Entry, SchedulerError> {
        let entered = Instant::now();
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Entry::Admitted(self.permit(permit, entered)));
        }
        let mut waiting = self.waiting.load(Ordering::SeqCst);
        loop {
            if waiting >= self.limits.max_queue {
                return Err(SchedulerError::QueueFull {
                    pool: self.pool.clone(),
                    limit: self.limits.max_queue,
                    retry_after: self.retry_after(waiting),
                });
            }
            match self.waiting.compare_exchange(
                waiting,
                waiting + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => waiting = now,
            }
        }
        Ok(Entry::Waiting(WaitTicket {
            admission: Arc::clone(self),
            position: waiting + 1,
            entered,
        }))
    }

    fn permit(self: &Arc<Self>, permit: OwnedSemaphorePermit, entered: Instant) -> SlotPermit {
        SlotPermit {
            _permit: permit,
            admission: Arc::clone(self),
            queued: entered.elapsed(),
            started: Instant::now(),
        }
    }

    /// When a refused client should try again: the time the queue ahead of it needs to drain.
    fn retry_after(&self, waiting: usize) -> Duration {
        let hold = Duration::from_micros(self.average_hold_us.load(Ordering::Relaxed));
        let drain = hold.mul_f64((waiting as f64 + 1.0) / self.limits.slots.max(1) as f64);
        drain.clamp(
            Duration::from_secs(1),
            self.limits.max_wait.max(Duration::from_secs(1)),
        )
    }

    fn record_hold(&self, held: Duration) {
        let sample = held.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.average_hold_us.load(Ordering::Relaxed);
        // EWMA with weight 1/8: follows a changing service time within a few requests.
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.average_hold_us.store(new, Ordering::Relaxed);
    }
}

/// A place in the queue. Dropping it leaves the queue.
#[derive(Debug)]
pub struct WaitTicket {
    admission: Arc<Admission>,
    position: usize,
    entered: Instant,
}

impl WaitTicket {
    /// 1-based place in the queue at entry.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Waits for a slot, at most the pool's maximum wait.
    pub async fn wait(self) -> Result<SlotPermit, SchedulerError> {
        let admission = Arc::clone(&self.admission);
        let acquired = tokio::time::timeout(
            admission.limits.max_wait,
            Arc::clone(&admission.slots).acquire_owned(),
        )
        .await;
        match acquired {
            Ok(Ok(permit)) => Ok(admission.permit(permit, self.entered)),
            Ok(Err(_closed)) => Err(SchedulerError::ShuttingDown),
            Err(_elapsed) => Err(SchedulerError::QueueTimeout {
                pool: admission.pool.clone(),
                waited_ms: self.entered.elapsed().as_millis() as u64,
                retry_after: admission.retry_after(admission.waiting()),
            }),
        }
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        self.admission.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A held slot: lives exactly as long as the generation.
#[derive(Debug)]
pub struct SlotPermit {
    _permit: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    queued: Duration,
    started: Instant,
}

impl SlotPermit {
    /// Time spent waiting before the slot was granted.
    pub fn queued(&self) -> Duration {
        self.queued
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.admission.record_hold(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(slots: usize, max_queue: usize, max_wait_ms: u64) -> Arc<Admission> {
        Admission::new(
            "test",
            Limits {
                slots,
                max_queue,
                max_wait: Duration::from_millis(max_wait_ms),
            },
        )
    }

    fn admitted(entry: Entry) -> SlotPermit {
        match entry {
            Entry::Admitted(permit) => permit,
            Entry::Waiting(_) => panic!("expected a free slot"),
        }
    }

    fn waiting(entry: Entry) -> WaitTicket {
        match entry {
            Entry::Waiting(ticket) => ticket,
            Entry::Admitted(_) => panic!("expected to wait"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn free_slot_runs_at_once_then_queue_then_refusal() {
        let pool = admission(1, 1, 1000);
        let running = admitted(pool.enter().unwrap());
        let ticket = waiting(pool.enter().unwrap());
        assert_eq!(ticket.position(), 1);
        let refused = pool.enter().unwrap_err();
        assert_eq!(refused.reason(), "queue_full");
        let waiter = tokio::spawn(ticket.wait());
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(running);
        let permit = waiter.await.unwrap().unwrap();
        assert_eq!(permit.queued(), Duration::from_millis(300));
        assert_eq!(pool.waiting(), 0);
        assert_eq!(pool.running(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_expires_with_queue_timeout_and_leaves_the_queue() {
        let pool = admission(1, 4, 500);
        let _running = admitted(pool.enter().unwrap());
        let ticket = waiting(pool.enter().unwrap());
        let err = ticket.wait().await.unwrap_err();
        assert_eq!(err.reason(), "queue_timeout");
        assert_eq!(pool.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_waiter_never_takes_a_slot() {
        let pool = admission(1, 4, 10_000);
        let running = admitted(pool.enter().unwrap());
        let first = tokio::spawn(waiting(pool.enter().unwrap()).wait());
        let second = tokio::spawn(waiting(pool.enter().unwrap()).wait());
        tokio::task::yield_now().await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(pool.waiting(), 1);
        drop(running);
        let permit = second.await.unwrap().unwrap();
        assert_eq!(pool.running(), 1);
        drop(permit);
        assert_eq!(pool.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_follows_the_observed_hold_time() {
        let pool = admission(2, 0, 60_000);
        for _ in 0..2 {
            let permit = admitted(pool.enter().unwrap());
            tokio::time::sleep(Duration::from_secs(4)).await;
            drop(permit);
        }
        let _a = admitted(pool.enter().unwrap());
        let _b = admitted(pool.enter().unwrap());
        let SchedulerError::QueueFull { retry_after, .. } = pool.enter().unwrap_err() else {
            panic!()
        };
        // (0 waiting + 1) / 2 slots × 4 s hold = 2 s.
        assert_eq!(retry_after, Duration::from_secs(2));
    }
}
