//! [`Reservation`]: the tokens and the request slot a request holds against its tenant's
//! limits, settled exactly once on every exit path:
//!
//! | how the request ends | charged |
//! |---|---|
//! | finished (usage reported by the backend, counted by the scheduler where missing) | prompt + completion tokens as reported |
//! | refused or failed before the first token (scheduler refusal, backend down) | nothing: refunded |
//! | client gone or failure after the first token, streamed | prompt estimate + the chunks delivered |
//! | client gone after the first token, not streamed | the whole reservation (what was generated is unknown) |
//! | the gateway died | the whole reservation, when it expires after `reservation_ttl_ms` |
//!
//! Settlement runs on a spawned task so no response waits for it; it is idempotent by
//! request id in the store.

use std::sync::Arc;

use super::ledger::Limits;
use super::limiter::{Ledgered, Limiter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No token yet: leaving now costs nothing.
    Pending,
    /// The backend produced its first token.
    Generating { streamed: bool },
}

/// One request's hold on its tenant's limits.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<Limiter>,
    place: Ledgered,
    tenant: Arc<str>,
    id: String,
    limits: Limits,
    reserved: u64,
    prompt_estimate: u64,
    phase: Phase,
    delivered: u64,
    settled: bool,
}

impl Reservation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        limiter: Arc<Limiter>,
        place: Ledgered,
        tenant: Arc<str>,
        id: String,
        limits: Limits,
        reserved: u64,
        prompt_estimate: u64,
    ) -> Self {
        Self {
            limiter,
            place,
            tenant,
            id,
            limits,
            reserved,
            prompt_estimate,
            phase: Phase::Pending,
            delivered: 0,
            settled: false,
        }
    }

    /// The backend produced its first token.
    pub fn generating(&mut self, streamed: bool) {
        self.phase = Phase::Generating { streamed };
    }

    /// One more content chunk reached the client.
    pub fn delivered_chunk(&mut self) {
        self.delivered += 1;
    }

    /// The request finished with the backend's usage.
    pub fn finish(mut self, prompt_tokens: u32, completion_tokens: u32) {
        self.settle(u64::from(prompt_tokens) + u64::from(completion_tokens));
    }

    /// What leaving now, without usage, is charged.
    fn charge_without_usage(&self) -> u64 {
        match self.phase {
            Phase::Pending => 0,
            Phase::Generating { streamed: true } => self.prompt_estimate + self.delivered,
            Phase::Generating { streamed: false } => self.reserved,
        }
    }

    fn settle(&mut self, used: u64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (process teardown): the reservation expires after its TTL.
            return;
        };
        let limiter = Arc::clone(&self.limiter);
        let (place, tenant, id, limits) = (
            self.place,
            Arc::clone(&self.tenant),
            std::mem::take(&mut self.id),
            self.limits,
        );
        tracing::debug!(tenant = %tenant, reserved = self.reserved, used, "settling reservation");
        // Not tracked: a settlement lost at shutdown leaves the reservation to expire after
        // its TTL, charged what it reserved — never less than was used.
        runtime.spawn(async move { limiter.settle(place, tenant, id, used, limits).await });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let charge = self.charge_without_usage();
        self.settle(charge);
    }
}
