//! [`Sim`]: the shared state of one simulator instance, read by both wire protocols and the
//! control routes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Fault, SimConfig};
use crate::generation::Plan;
use crate::prefix_cache::{PrefixCache, words};
use crate::slots::Slots;

/// Shared state of one simulator instance.
#[derive(Debug, Clone)]
pub struct Sim {
    pub(crate) config: Arc<SimConfig>,
    pub(crate) slots: Slots,
    fault: Arc<Mutex<Fault>>,
    prefix_cache: Arc<Mutex<PrefixCache>>,
    /// Prompt tokens seen, and of those found in the prompt cache (for `/metrics`).
    pub(crate) prompt_tokens: Arc<AtomicU64>,
    pub(crate) cached_tokens: Arc<AtomicU64>,
}

impl Sim {
    pub(crate) fn new(config: SimConfig, slots: Slots) -> Self {
        let fault = Arc::new(Mutex::new(config.fault));
        let prefix_cache = Arc::new(Mutex::new(PrefixCache::new(config.prefix_cache)));
        Self {
            config: Arc::new(config),
            slots,
            fault,
            prefix_cache,
            prompt_tokens: Arc::default(),
            cached_tokens: Arc::default(),
        }
    }

    /// Looks `plan`'s prompt up in the prompt cache (its slot is held: the engine starts on
    /// it now) and keeps the prompt with its completion for the next turn.
    pub(crate) fn cache(&self, plan: &mut Plan) {
        let prompt = words(&plan.prompt);
        let mut sequence = prompt.clone();
        sequence.extend(words(&plan.completion()));
        let cached = self
            .prefix_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(&prompt, sequence);
        plan.cached_tokens = cached.min(plan.prompt_tokens);
        self.prompt_tokens
            .fetch_add(plan.prompt_tokens as u64, Ordering::Relaxed);
        self.cached_tokens
            .fetch_add(plan.cached_tokens as u64, Ordering::Relaxed);
    }

    /// Applies `fault` to requests from now on.
    pub(crate) fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// The fault applied to requests arriving now.
    pub(crate) fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}
