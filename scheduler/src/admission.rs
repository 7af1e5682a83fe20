//! Admission: who runs, who waits, who is refused — per backend pool. Read this file as the
//! policy; [`queue`] holds the order in which waiters are served.
//!
//! 1. **Slots.** A pool runs at most `slots` generations at once, sized to the upstream's real
//!    parallelism (Ollama's `OLLAMA_NUM_PARALLEL`, an engine's batch size). A request that finds
//!    a free slot and nobody waiting runs at once.
//! 2. **Bounded queue.** Otherwise it waits, if the queue has room by count (`max_queue`) and by
//!    bytes (`max_queue_bytes`, the encoded request sizes).
//! 3. **Full queue.** A newcomer that outranks a waiter displaces it (see
//!    [`queue::WaitQueue::displaceable`]): the displaced request is refused with
//!    `displaced`. Otherwise the newcomer is refused at once with `queue_full`. Both are
//!    RESOURCE_EXHAUSTED → HTTP 429.
//! 4. **Order.** Free slots go to waiters by class (critical, interactive, batch) with aging, and
//!    by weighted fair queuing between tenants inside a class ([`queue`]).
//! 5. **Bounded wait.** A waiter that gets no slot within `max_wait` is refused with
//!    `queue_timeout` (UNAVAILABLE → HTTP 503).
//! 6. **Honest back-off.** Refusals carry a retry-after from the live drain rate: (waiting ÷
//!    slots) × the moving average of how long a slot is held, clamped to [1 s, max_wait].
//! 7. **Permit = generation.** The [`SlotPermit`] moves into the response stream; when the
//!    stream ends, fails or is dropped, the slot goes straight to the next waiter. A waiter that
//!    is dropped (client gone) leaves the queue without taking a slot; if a slot was granted to
//!    it in that instant, it is passed on at once.

pub mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

pub use self::queue::Class;
use self::queue::WaitQueue;
use crate::error::SchedulerError;

/// Limits and policy knobs of one pool.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Generations at once.
    pub slots: usize,
    /// Waiting requests allowed.
    pub max_queue: usize,
    /// Sum of waiting requests' encoded sizes allowed.
    pub max_queue_bytes: usize,
    /// Longest wait for a slot.
    pub max_wait: Duration,
    /// Waiting time worth one class step (see [`queue`]).
    pub aging: Duration,
    /// Tenant weights for fair sharing; unlisted tenants weigh 1.
    pub weights: HashMap<String, u32>,
}

impl Limits {
    /// `slots` slots, the given queue bound and wait, and the documented defaults otherwise.
    pub fn new(slots: usize, max_queue: usize, max_wait: Duration) -> Self {
        Self {
            slots,
            max_queue,
            max_queue_bytes: 64 << 20,
            max_wait,
            aging: Duration::from_secs(10),
            weights: HashMap::new(),
        }
    }
}

/// What a request asks of admission.
#[derive(Debug, Clone)]
pub struct Ask {
    pub tenant: Arc<str>,
    pub class: Class,
    /// Encoded size of the request, counted against the queue's byte bound.
    pub bytes: usize,
}

type Grant = Result<Duration, SchedulerError>;

#[derive(Debug)]
struct State {
    /// Slots of the endpoints that can serve now (health and breakers move it).
    slots: usize,
    running: usize,
    queue: WaitQueue<oneshot::Sender<Grant>>,
    next_id: u64,
}

/// The admission state of one pool.
#[derive(Debug)]
pub struct Admission {
    pool: String,
    limits: Limits,
    state: Mutex<State>,
    /// Moving average of slot hold time in microseconds (0 = no sample yet).
    average_hold_us: AtomicU64,
}

/// Result of entering the pool.
#[derive(Debug)]
pub enum Entry {
    /// A slot was free.
    Admitted(SlotPermit),
    /// The request waits; [`WaitTicket::wait`] resolves when it gets a slot or is refused.
    Waiting(WaitTicket),
}

impl Admission {
    /// Admission for `pool` with `limits`.
    pub fn new(pool: impl Into<String>, limits: Limits) -> Arc<Self> {
        let queue = WaitQueue::new(limits.aging);
        Arc::new(Self {
            pool: pool.into(),
            state: Mutex::new(State {
                slots: limits.slots,
                running: 0,
                queue,
                next_id: 0,
            }),
            limits,
            average_hold_us: AtomicU64::new(0),
        })
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Requests of `class` waiting now.
    pub fn waiting_in(&self, class: Class) -> usize {
        self.lock().queue.len_of(class)
    }

    /// Slots held now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counts half-updated in a way that
        // matters more than refusing all further work would; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a free slot, joins the queue (possibly displacing a lower-ranked waiter), or
    /// refuses. Never waits.
    pub fn enter(self: &Arc<Self>, ask: Ask) -> Result<Entry, SchedulerError> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.running < state.slots && state.queue.is_empty() {
            state.running += 1;
            return Ok(Entry::Admitted(SlotPermit::new(self, Duration::ZERO)));
        }
        if ask.bytes > self.limits.max_queue_bytes {
            return Err(self.queue_full(&state));
        }
        while state.queue.len() >= self.limits.max_queue
            || state.queue.bytes() + ask.bytes > self.limits.max_queue_bytes
        {
            let Some((id, class, tenant)) = state.queue.displaceable(ask.class, &ask.tenant) else {
                return Err(self.queue_full(&state));
            };
            if let Some(victim) = state.queue.remove(id, class, &tenant) {
                let refusal = SchedulerError::Displaced {
                    pool: self.pool.clone(),
                    by: ask.class.name(),
                    retry_after: self.retry_after(&state),
                };
                // A victim that already left cannot be told; its place is free either way.
                let _ = victim.payload.send(Err(refusal));
            }
        }
        state.next_id += 1;
        let id = state.next_id;
        let (sender, receiver) = oneshot::channel();
        let weight = self.limits.weights.get(&*ask.tenant).copied().unwrap_or(1);
        let position = state.queue.push(
            id,
            Arc::clone(&ask.tenant),
            ask.class,
            weight,
            ask.bytes,
            now,
            sender,
        );
        Ok(Entry::Waiting(WaitTicket {
            admission: Arc::clone(self),
            id,
            ask,
            position,
            entered: now,
            receiver: Some(receiver),
        }))
    }

    fn queue_full(&self, state: &State) -> SchedulerError {
        SchedulerError::QueueFull {
            pool: self.pool.clone(),
            limit: self.limits.max_queue,
            retry_after: self.retry_after(state),
        }
    }

    /// Gives free slots to waiters, best first. Called with the lock held.
    fn dispatch(&self, state: &mut State) {
        while state.running < state.slots {
            let Some(next) = state.queue.pop_next() else {
                break;
            };
            state.running += 1;
            if next.payload.send(Ok(next.enqueued.elapsed())).is_err() {
                // The waiter vanished between leaving the queue and now: reuse the slot.
                state.running -= 1;
            }
        }
    }

    /// Frees one slot and hands it on.
    fn release(&self) {
        let mut state = self.lock();
        state.running = state.running.saturating_sub(1);
        self.dispatch(&mut state);
    }

    /// Slots the pool has now.
    pub fn slots(&self) -> usize {
        self.lock().slots
    }

    /// Changes the pool's capacity (endpoints came or went); extra slots go to waiters at once.
    /// With no capacity left (every endpoint down or its breaker open), the waiters are refused
    /// with `no_healthy_backend` at once, as a newcomer would be, instead of waiting out the
    /// queue timeout for a pool that cannot serve.
    pub fn set_slots(&self, slots: usize) {
        let mut state = self.lock();
        if state.slots != slots {
            state.slots = slots;
            self.dispatch(&mut state);
        }
        if slots == 0 {
            while let Some(waiter) = state.queue.pop_next() {
                // A waiter that already left cannot be told.
                let _ = waiter.payload.send(Err(SchedulerError::NoHealthyBackend {
                    pool: self.pool.clone(),
                }));
            }
        }
    }

    /// When a refused client should try again: the time the queue ahead of it needs to drain.
    fn retry_after(&self, state: &State) -> Duration {
        let hold = Duration::from_micros(self.average_hold_us.load(Ordering::Relaxed));
        let drain = hold.mul_f64((state.queue.len() as f64 + 1.0) / state.slots.max(1) as f64);
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

/// A place in the queue. Dropping it leaves the queue (or passes on a slot granted meanwhile).
#[derive(Debug)]
pub struct WaitTicket {
    admission: Arc<Admission>,
    id: u64,
    ask: Ask,
    position: usize,
    entered: Instant,
    /// `None` once the outcome has been taken.
    receiver: Option<oneshot::Receiver<Grant>>,
}

impl WaitTicket {
    /// 1-based place in service order when it entered.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Waits for a slot, at most the pool's maximum wait.
    pub async fn wait(mut self) -> Result<SlotPermit, SchedulerError> {
        let admission = Arc::clone(&self.admission);
        let deadline = self.entered + admission.limits.max_wait;
        let Some(receiver) = self.receiver.as_mut() else {
            return Err(SchedulerError::ShuttingDown);
        };
        let outcome = match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(grant)) => grant,
            Ok(Err(_sender_gone)) => Err(SchedulerError::ShuttingDown),
            Err(_elapsed) => {
                let mut state = admission.lock();
                if state
                    .queue
                    .remove(self.id, self.ask.class, &self.ask.tenant)
                    .is_some()
                {
                    Err(SchedulerError::QueueTimeout {
                        pool: admission.pool.clone(),
                        waited_ms: self.entered.elapsed().as_millis() as u64,
                        retry_after: admission.retry_after(&state),
                    })
                } else {
                    // Granted (or displaced) in the same instant the wait expired: take it.
                    drop(state);
                    match self.receiver.as_mut().map(|r| r.try_recv()) {
                        Some(Ok(grant)) => grant,
                        Some(Err(_)) | None => Err(SchedulerError::ShuttingDown),
                    }
                }
            }
        };
        self.receiver = None;
        outcome.map(|queued| SlotPermit::new(&admission, queued))
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        let mut state = self.admission.lock();
        if state
            .queue
            .remove(self.id, self.ask.class, &self.ask.tenant)
            .is_some()
        {
            return;
        }
        if let Ok(Ok(_granted)) = receiver.try_recv() {
            state.running = state.running.saturating_sub(1);
            self.admission.dispatch(&mut state);
        }
    }
}

/// A held slot: lives exactly as long as the generation.
#[derive(Debug)]
pub struct SlotPermit {
    admission: Arc<Admission>,
    queued: Duration,
    started: Instant,
}

impl SlotPermit {
    fn new(admission: &Arc<Admission>, queued: Duration) -> Self {
        Self {
            admission: Arc::clone(admission),
            queued,
            started: Instant::now(),
        }
    }

    /// Time spent waiting before the slot was granted.
    pub fn queued(&self) -> Duration {
        self.queued
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.admission.record_hold(self.started.elapsed());
        self.admission.release();
    }
}

#[cfg(test)]
mod tests;
