//! One backend endpoint inside a pool: its backend client, slots, in-flight count, breaker,
//! probe result, loaded models, a latency average and when output last came — everything load
//! balancing and health look at.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Backend;
use crate::breaker::Breaker;
use crate::capacity::Capacity;
use crate::occupancy::Occupancy;
use crate::pace::Pace;
use crate::routing::config::{BreakerConfig, EndpointConfig};

/// One endpoint and its live state.
#[derive(Debug)]
pub struct Endpoint {
    pub config: EndpointConfig,
    pub backend: Arc<dyn Backend>,
    pub breaker: Breaker,
    /// What its requests take, learned (first token by prompt size, decode per token).
    pub pace: Pace,
    /// How many it takes at once, configured or learned, and whether it is saturated.
    pub capacity: Capacity,
    /// Requests in flight here, now and over time (the batch a generation decoded in).
    pub occupancy: Occupancy,
    probe_ok: AtomicBool,
    loaded: Mutex<HashSet<String>>,
    /// Moving average of time to first token, microseconds (0 = no sample).
    ttft_us: AtomicU64,
    /// When a request here last received output, in ms after `born` plus one (0 = never).
    output_at_ms: AtomicU64,
    born: Instant,
}

impl Endpoint {
    pub fn new(config: EndpointConfig, backend: Arc<dyn Backend>, breaker: BreakerConfig) -> Self {
        let slots = config.slots;
        Self {
            config,
            backend,
            breaker: Breaker::new(breaker),
            pace: Pace::default(),
            capacity: Capacity::new(slots),
            occupancy: Occupancy::default(),
            // Optimistic until the first probe says otherwise (it runs at start).
            probe_ok: AtomicBool::new(true),
            loaded: Mutex::new(HashSet::new()),
            ttft_us: AtomicU64::new(0),
            output_at_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }

    /// Requests being served now.
    pub fn outstanding(&self) -> usize {
        self.occupancy.now()
    }

    /// Answers its probe and its breaker is not open.
    pub fn available(&self) -> bool {
        self.probe_ok.load(Ordering::Relaxed) && self.breaker.counts()
    }

    pub fn probe_ok(&self) -> bool {
        self.probe_ok.load(Ordering::Relaxed)
    }

    pub fn set_probe(&self, ok: bool, loaded: Option<Vec<String>>) {
        self.probe_ok.store(ok, Ordering::Relaxed);
        if let Some(loaded) = loaded {
            *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = loaded.into_iter().collect();
        }
    }

    /// Whether `model` is loaded here (or the endpoint never said).
    pub fn has_loaded(&self, model: &str) -> bool {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let latest = format!("{model}:latest");
        loaded.contains(model) || loaded.contains(&latest)
    }

    /// Requests it takes at once now (configured, or learned from the engine).
    pub fn slots(&self) -> usize {
        self.capacity.limit()
    }

    /// The slots it counts for in its pool's capacity now: none beyond those it holds while
    /// its engine is saturated.
    pub fn usable_slots(&self) -> usize {
        let slots = self.slots();
        if self.capacity.saturated() {
            slots.min(self.outstanding())
        } else {
            slots
        }
    }

    /// Load relative to slots, for least-loaded choice.
    pub fn load(&self) -> f64 {
        self.outstanding() as f64 / self.slots().max(1) as f64
    }

    pub fn ttft_estimate(&self) -> Duration {
        Duration::from_micros(self.ttft_us.load(Ordering::Relaxed))
    }

    pub fn record_ttft(&self, ttft: Duration) {
        let sample = ttft.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.ttft_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 4 + sample / 4
        };
        self.ttft_us.store(new, Ordering::Relaxed);
    }

    fn age_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request here received output (a token, a finish): the engine is working.
    pub fn record_output(&self) {
        self.output_at_ms
            .store(self.age_ms().saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a request here received output within `window`.
    pub fn output_within(&self, window: Duration) -> bool {
        let at = self.output_at_ms.load(Ordering::Relaxed);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        at != 0 && self.age_ms().saturating_add(1).saturating_sub(at) <= window_ms
    }

    /// Counts a request as in flight here until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.occupancy.enter();
        InFlight(Arc::clone(self))
    }
}

/// A request in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.occupancy.leave();
    }
}
