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
//!    by token-fair queuing between tenants inside a class ([`queue`]): a request moves its
//!    tenant's virtual time by its weighted tokens (prompt and completion, [`FairShare`]), and
//!    its real usage corrects that when it ends ([`SlotPermit::settle`]).
//! 5. **Objective.** A request with a first-token objective (`slo`) is refused at once with
//!    `slo_unattainable` when the work ahead of it (the tokens queued before it and half of the
//!    tokens running, at the pool's learned [`Pace`]) plus its own first token are predicted to
//!    take longer — before it displaces anybody or waits. With nothing ahead, only its prompt's
//!    prefill counts. A time-per-output-token objective (`slo_tpot`) is checked at the
//!    pool's door against the endpoints' decode pace at the batch it would join
//!    ([`crate::generation::admit`]).
//! 6. **Bounded wait.** A waiter that gets no slot within `max_wait` is refused with
//!    `queue_timeout` (UNAVAILABLE → HTTP 503).
//! 7. **Honest back-off.** Refusals carry a retry-after from the live drain rate: (waiting ÷
//!    slots) × the moving average of how long a slot is held, clamped to [1 s, max_wait].
//! 8. **Permit = generation.** The [`SlotPermit`] moves into the response stream; when the
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
use self::queue::{Ahead, Arrival, WaitQueue};
use crate::error::SchedulerError;
use crate::pace::{Pace, Timings};

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
    /// How prompt and completion tokens count towards fair share.
    pub fair_share: FairShare,
    /// Prefill time per prompt token the operator configured, until one is learned.
    pub prefill_per_token: Option<Duration>,
}

/// How much a prompt token and a completion token count in a tenant's virtual time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FairShare {
    pub prompt_weight: f64,
    pub completion_weight: f64,
}

impl Default for FairShare {
    fn default() -> Self {
        Self {
            prompt_weight: 1.0,
            completion_weight: 1.0,
        }
    }
}

impl FairShare {
    /// The weighted tokens of `cost`.
    pub fn work(&self, cost: Cost) -> f64 {
        self.prompt_weight * f64::from(cost.prompt_tokens)
            + self.completion_weight * f64::from(cost.completion_tokens)
    }
}

/// The tokens a request carries: its prompt, and its completion (the cap it asked for, or a
/// default, until the real usage is known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Cost {
    pub fn tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
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
            fair_share: FairShare::default(),
            prefill_per_token: None,
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
    /// Its tokens, for fair share, queue depth and predictions.
    pub cost: Cost,
    /// Its completion tokens are a cap it set (`max_tokens`, or none for embeddings); else an
    /// estimate the pool's average completion replaces.
    pub completion_capped: bool,
    /// Its first-token objective, if any.
    pub slo: Option<Duration>,
    /// Its time-per-output-token objective, if any (checked at the pool's door,
    /// [`crate::generation::admit`], against the endpoints' decode pace by batch).
    pub slo_tpot: Option<Duration>,
}

type Grant = Result<Duration, SchedulerError>;

#[derive(Debug)]
struct State {
    /// Slots of the endpoints that can serve now (health and breakers move it).
    slots: usize,
    running: usize,
    /// Tokens of the requests holding slots (prompt, completion), and how many there are.
    running_work: RunningWork,
    queue: WaitQueue<oneshot::Sender<Grant>>,
    next_id: u64,
    /// Tokens served per tenant (the fairness counter), bounded to [`MAX_TENANTS_COUNTED`].
    served: HashMap<Arc<str>, u64>,
    /// Slots held per tenant (for the status page); a tenant leaves when it holds none.
    running_by_tenant: HashMap<Arc<str>, u32>,
}

impl State {
    /// A request of `tenant` takes a slot.
    fn start(&mut self, tenant: &Arc<str>, cost: Cost) {
        self.running += 1;
        self.running_work.add(cost);
        *self
            .running_by_tenant
            .entry(Arc::clone(tenant))
            .or_default() += 1;
    }

    /// A request of `tenant` gives its slot back.
    fn stop(&mut self, tenant: &str, cost: Cost) {
        self.running = self.running.saturating_sub(1);
        self.running_work.remove(cost);
        if let Some(held) = self.running_by_tenant.get_mut(tenant) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.running_by_tenant.remove(tenant);
            }
        }
    }
}

/// Sums over the requests that hold slots.
#[derive(Debug, Default, Clone, Copy)]
struct RunningWork {
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl RunningWork {
    fn add(&mut self, cost: Cost) {
        self.prompt_tokens += u64::from(cost.prompt_tokens);
        self.completion_tokens += u64::from(cost.completion_tokens);
    }

    fn remove(&mut self, cost: Cost) {
        self.prompt_tokens = self
            .prompt_tokens
            .saturating_sub(u64::from(cost.prompt_tokens));
        self.completion_tokens = self
            .completion_tokens
            .saturating_sub(u64::from(cost.completion_tokens));
    }
}

/// A pool's admission as the status page shows it.
#[derive(Debug, Clone)]
pub struct AdmissionStatus {
    pub capacity: usize,
    pub running: usize,
    /// Per class, best first.
    pub waiting: Vec<ClassStatus>,
    pub tenants: Vec<(Arc<str>, TenantStatus)>,
}

/// The requests of one class waiting in a pool.
#[derive(Debug, Clone, Copy)]
pub struct ClassStatus {
    pub class: Class,
    pub requests: usize,
    pub tokens: u64,
    pub oldest_wait: Duration,
}

/// One tenant in a pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantStatus {
    pub running: u32,
    pub waiting: u32,
    pub served_tokens: u64,
}

/// Tenants beyond this many are counted under `other` in the served-tokens counter.
const MAX_TENANTS_COUNTED: usize = 1024;

/// The admission state of one pool.
#[derive(Debug)]
pub struct Admission {
    pool: String,
    limits: Limits,
    state: Mutex<State>,
    /// Moving average of slot hold time in microseconds (0 = no sample yet).
    average_hold_us: AtomicU64,
    /// The pool's learned timings (every endpoint's samples).
    pace: Pace,
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
                running_work: RunningWork::default(),
                queue,
                next_id: 0,
                served: HashMap::new(),
                running_by_tenant: HashMap::new(),
            }),
            limits,
            average_hold_us: AtomicU64::new(0),
            pace: Pace::default(),
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

    /// Tokens of the requests of `class` waiting now.
    pub fn waiting_tokens_in(&self, class: Class) -> u64 {
        self.lock().queue.tokens_of(class)
    }

    /// Whether a request entering now would run at once (a slot is free and nobody waits),
    /// and otherwise when to come back: the queue's drain estimate.
    pub fn runs_at_once(&self) -> Result<(), Duration> {
        let state = self.lock();
        if state.running < state.slots && state.queue.is_empty() {
            Ok(())
        } else {
            Err(self.retry_after(&state))
        }
    }

    /// The longest a request waits for a slot.
    pub fn max_wait(&self) -> Duration {
        self.limits.max_wait
    }

    /// Slots held now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Tokens served so far per tenant (prompt and completion as reported, else estimated).
    pub fn served_tokens(&self) -> Vec<(Arc<str>, u64)> {
        let state = self.lock();
        state
            .served
            .iter()
            .map(|(tenant, tokens)| (Arc::clone(tenant), *tokens))
            .collect()
    }

    /// What the status page shows of this pool's admission, read under one lock.
    pub fn status(&self) -> AdmissionStatus {
        let state = self.lock();
        let now = Instant::now();
        let waiting = Class::ALL
            .iter()
            .map(|&class| ClassStatus {
                class,
                requests: state.queue.len_of(class),
                tokens: state.queue.tokens_of(class),
                oldest_wait: state
                    .queue
                    .oldest_of(class)
                    .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
            })
            .collect();
        let mut tenants: HashMap<Arc<str>, TenantStatus> = HashMap::new();
        for (tenant, served) in &state.served {
            tenants.entry(Arc::clone(tenant)).or_default().served_tokens = *served;
        }
        for (tenant, running) in &state.running_by_tenant {
            tenants.entry(Arc::clone(tenant)).or_default().running = *running;
        }
        for (tenant, waiting) in state.queue.waiting_by_tenant() {
            tenants.entry(tenant).or_default().waiting = waiting;
        }
        AdmissionStatus {
            capacity: state.slots,
            running: state.running,
            waiting,
            tenants: tenants.into_iter().collect(),
        }
    }

    /// The pool's learned timings, fed by every endpoint.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    /// The prefill rate the operator configured, if any.
    pub fn configured_prefill(&self) -> Option<Duration> {
        self.limits.prefill_per_token
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
        let timings = self.pace.timings();
        let first_token =
            timings.first_token(ask.cost.prompt_tokens, self.limits.prefill_per_token);
        let mut state = self.lock();
        let weight = self.limits.weights.get(&*ask.tenant).copied().unwrap_or(1);
        let arrival = Arrival {
            id: state.next_id + 1,
            tenant: Arc::clone(&ask.tenant),
            class: ask.class,
            weight,
            bytes: ask.bytes,
            cost: ask.cost,
            work: self.limits.fair_share.work(ask.cost),
            enqueued: now,
        };
        if state.running < state.slots && state.queue.is_empty() {
            // Nothing ahead: only the prompt's own prefill can miss the objective. The engine's
            // base time is left out here, so a pace learned from an outlier (a model load)
            // can never refuse every request: one that runs teaches the real pace.
            let prefill = timings
                .prefill_or(self.limits.prefill_per_token)
                .unwrap_or_default()
                .saturating_mul(ask.cost.prompt_tokens);
            self.check_objective(&ask, prefill)?;
            state.start(&ask.tenant, ask.cost);
            let permit = SlotPermit::new(self, &ask, None, first_token);
            return Ok(Entry::Admitted(permit));
        }
        let mut ahead = state.queue.place_of(&arrival);
        let predicted = self.predicted_wait(&state, &timings, ahead) + first_token;
        self.check_objective(&ask, predicted)?;
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
            ahead = state.queue.place_of(&arrival);
        }
        state.next_id += 1;
        let id = state.next_id;
        let (sender, receiver) = oneshot::channel();
        state.queue.push(Arrival { id, ..arrival }, sender);
        let position = ahead.requests as usize + 1;
        Ok(Entry::Waiting(WaitTicket {
            admission: Arc::clone(self),
            id,
            ask,
            position,
            predicted,
            entered: now,
            receiver: Some(receiver),
        }))
    }

    /// Refuses a request whose objective the prediction says it would miss.
    fn check_objective(&self, ask: &Ask, predicted: Duration) -> Result<(), SchedulerError> {
        let Some(slo) = ask.slo else {
            return Ok(());
        };
        if predicted <= slo {
            return Ok(());
        }
        // Back when the work ahead has drained enough for the objective to hold.
        let retry_after = (predicted - slo)
            .max(Duration::from_secs(1))
            .min(self.limits.max_wait.max(Duration::from_secs(1)));
        Err(SchedulerError::SloUnattainable {
            pool: self.pool.clone(),
            slo_ms: slo.as_millis() as u64,
            predicted_ms: predicted.as_millis() as u64,
            retry_after,
        })
    }

    /// How long a request placed behind `ahead` would wait for its slot: the service time of
    /// the work queued before it and of half the work running, shared by the pool's slots.
    /// Without any learned timing, the moving average of slot hold times stands in.
    fn predicted_wait(&self, state: &State, timings: &Timings, ahead: Ahead) -> Duration {
        let slots = state.slots.max(1) as u32;
        if !timings.is_known() {
            let hold = Duration::from_micros(self.average_hold_us.load(Ordering::Relaxed));
            return hold.saturating_mul(ahead.requests as u32 + 1) / slots;
        }
        let running = state.running_work;
        let queued = timings.service(
            ahead.prompt_tokens,
            ahead.completion_tokens,
            ahead.requests,
            self.limits.prefill_per_token,
        );
        let in_service = if state.running < state.slots {
            Duration::ZERO
        } else {
            timings.service(
                running.prompt_tokens,
                running.completion_tokens,
                state.running as u64,
                self.limits.prefill_per_token,
            ) / 2
        };
        (queued + in_service) / slots
    }

    fn queue_full(&self, state: &State) -> SchedulerError {
        SchedulerError::QueueFull {
            pool: self.pool.clone(),
            limit: self.limits.max_queue,
            retry_after: self.retry_after(state),
        }
    }

    /// Gives free slots to waiters, best first. Called with the lock held. The granted
    /// waiter's tokens count as running from here; its ticket takes them back if it left.
    fn dispatch(&self, state: &mut State) {
        while state.running < state.slots {
            let Some(next) = state.queue.pop_next() else {
                break;
            };
            state.start(&next.tenant, next.cost);
            if next.payload.send(Ok(next.enqueued.elapsed())).is_err() {
                // The waiter vanished between leaving the queue and now: reuse the slot.
                state.stop(&next.tenant, next.cost);
            }
        }
    }

    /// Frees one slot held by a request of `cost` (estimated) that really used `used`, and
    /// hands the slot on. A request that waited in the queue moved its tenant's virtual time
    /// by its estimate: the difference is corrected (one admitted at once moved nothing).
    fn release(&self, tenant: &Arc<str>, class: Class, cost: Cost, used: Cost, waited: bool) {
        let mut state = self.lock();
        state.stop(tenant, cost);
        let extra = self.limits.fair_share.work(used) - self.limits.fair_share.work(cost);
        if waited && extra != 0.0 {
            let weight = self.limits.weights.get(&**tenant).copied().unwrap_or(1);
            state.queue.charge(tenant, class, extra, weight);
        }
        let counted =
            if state.served.len() < MAX_TENANTS_COUNTED || state.served.contains_key(tenant) {
                Arc::clone(tenant)
            } else {
                Arc::from(llmgw_proto::OVERFLOW_TENANT)
            };
        *state.served.entry(counted).or_default() += used.tokens();
        self.dispatch(&mut state);
    }

    /// Slots the pool has now.
    pub fn slots(&self) -> usize {
        self.lock().slots
    }

    /// Changes the pool's capacity (endpoints came or went, an engine reported its load);
    /// extra slots go to waiters at once. When no endpoint is `serving` (every one down or its
    /// breaker open), the waiters are refused with `no_healthy_backend` at once, as a newcomer
    /// would be, instead of waiting out the queue timeout for a pool that cannot serve. A pool
    /// whose engines are all saturated serves: its waiters wait.
    pub fn set_slots(&self, slots: usize, serving: bool) {
        let mut state = self.lock();
        if state.slots != slots {
            state.slots = slots;
            self.dispatch(&mut state);
        }
        if !serving {
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
    /// Predicted time from entering to the first token.
    predicted: Duration,
    entered: Instant,
    /// `None` once the outcome has been taken.
    receiver: Option<oneshot::Receiver<Grant>>,
}

impl WaitTicket {
    /// 1-based place in service order when it entered.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Predicted time from entering to the first token.
    pub fn predicted(&self) -> Duration {
        self.predicted
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
        outcome.map(|queued| SlotPermit::new(&admission, &self.ask, Some(queued), self.predicted))
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
            state.stop(&self.ask.tenant, self.ask.cost);
            self.admission.dispatch(&mut state);
        }
    }
}

/// A held slot: lives exactly as long as the generation.
#[derive(Debug)]
pub struct SlotPermit {
    admission: Arc<Admission>,
    tenant: Arc<str>,
    class: Class,
    /// The tokens it was admitted with, and what it really used once known.
    cost: Cost,
    used: Option<Cost>,
    predicted: Duration,
    queued: Duration,
    /// It waited in the queue (its estimate moved its tenant's virtual time).
    waited: bool,
    started: Instant,
}

impl SlotPermit {
    /// `queued`: how long it waited in the queue, `None` if it never did.
    fn new(
        admission: &Arc<Admission>,
        ask: &Ask,
        queued: Option<Duration>,
        predicted: Duration,
    ) -> Self {
        Self {
            admission: Arc::clone(admission),
            tenant: Arc::clone(&ask.tenant),
            class: ask.class,
            cost: ask.cost,
            used: None,
            predicted,
            queued: queued.unwrap_or_default(),
            waited: queued.is_some(),
            started: Instant::now(),
        }
    }

    /// Time spent waiting before the slot was granted.
    pub fn queued(&self) -> Duration {
        self.queued
    }

    /// The first-token time predicted when the request entered (from entering).
    pub fn predicted(&self) -> Duration {
        self.predicted
    }

    /// The tokens the request was admitted with.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// The request's real usage: its tenant's virtual time is corrected by the difference
    /// when the slot is released. Without it, the estimate stands.
    pub fn settle(&mut self, used: Cost) {
        self.used = Some(used);
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.admission.record_hold(self.started.elapsed());
        let used = self.used.unwrap_or(self.cost);
        self.admission
            .release(&self.tenant, self.class, self.cost, used, self.waited);
    }
}

#[cfg(test)]
mod tests;
