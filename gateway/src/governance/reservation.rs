//! [`Reservation`]: the tokens and the request slot a request holds against its tenant's
//! limits, settled exactly once on every exit path:
//!
//! | how the request ends | charged |
//! |---|---|
//! | finished, usage reported by the backend | prompt + completion tokens as reported |
//! | finished, the engine reported no prompt count | at least the prompt estimate reserved (the scheduler's word count undercounts) + completion |
//! | refused, or failed before any engine worked on it (scheduler refusal, connection refused, an error status at once) | nothing: refunded |
//! | client gone, or failed, after an engine took it and before the first token | the prompt estimate |
//! | client gone or failure after the first token, streamed | prompt estimate + the chunks delivered |
//! | client gone after the first token, not streamed | the whole reservation (what was generated is unknown) |
//! | the gateway died | the whole reservation, when it expires after `reservation_ttl_ms` |
//!
//! A finished request's settlement is awaited before its answer's last byte goes out, so a
//! client that waits for its answer never finds that request still holding its budget;
//! the other exits settle on a spawned task. Settlement is idempotent by request id.

use std::sync::Arc;

use super::ledger::Limits;
use super::limiter::{Ledgered, Limiter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No engine has the request yet: leaving now costs nothing.
    Pending,
    /// An engine is working on the prompt: leaving now costs the prompt.
    Dispatched,
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
    /// The engine did not report the prompt's tokens.
    prompt_unreported: bool,
    ttl_ms: u64,
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
        ttl_ms: u64,
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
            prompt_unreported: false,
            ttl_ms,
            settled: false,
        }
    }

    /// The backend produced its first token.
    pub fn generating(&mut self, streamed: bool) {
        self.phase = Phase::Generating { streamed };
    }

    /// The scheduler handed the request to an engine, which works on its prompt.
    pub fn dispatched(&mut self) {
        if self.phase == Phase::Pending {
            self.phase = Phase::Dispatched;
        }
    }

    /// The call failed before the first token: the prompt is charged if an engine worked on
    /// it (the scheduler says so in `x-llmgw-work`), else nothing.
    pub fn failed(&mut self, status: &tonic::Status) {
        if matches!(self.phase, Phase::Pending | Phase::Dispatched) {
            let worked = status
                .metadata()
                .get(llmgw_proto::WORK_METADATA)
                .is_some_and(|value| value == "prompt");
            self.phase = if worked {
                Phase::Dispatched
            } else {
                Phase::Pending
            };
        }
    }

    /// One more content chunk reached the client.
    pub fn delivered_chunk(&mut self) {
        self.delivered += 1;
    }

    /// The usage the request will finish with: a prompt count the engine did not report is
    /// charged at least the estimate.
    pub fn usage_seen(&mut self, usage: &llmgw_proto::v1::Usage) {
        self.prompt_unreported |= usage.prompt_counted;
    }

    /// The request finished with the backend's usage: settled before the caller answers.
    pub async fn finish(mut self, prompt_tokens: u32, completion_tokens: u32) {
        let mut prompt = u64::from(prompt_tokens);
        if self.prompt_unreported {
            prompt = prompt.max(self.prompt_estimate);
        }
        let used = prompt + u64::from(completion_tokens);
        self.settled = true;
        tracing::debug!(tenant = %self.tenant, reserved = self.reserved, used, "settling reservation");
        let limiter = Arc::clone(&self.limiter);
        let id = std::mem::take(&mut self.id);
        limiter
            .settle(
                self.place,
                Arc::clone(&self.tenant),
                id,
                used,
                self.limits,
                self.ttl_ms,
            )
            .await;
    }

    /// What leaving now, without usage, is charged.
    fn charge_without_usage(&self) -> u64 {
        match self.phase {
            Phase::Pending => 0,
            Phase::Dispatched => self.prompt_estimate,
            Phase::Generating { streamed: true } => self.prompt_estimate + self.delivered,
            Phase::Generating { streamed: false } => self.reserved,
        }
    }

    /// Settles an unfinished request on a spawned task (from `Drop`, which cannot wait).
    fn settle_later(&mut self, used: u64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (process teardown): the reservation expires after its TTL.
            return;
        };
        let limiter = Arc::clone(&self.limiter);
        let (place, tenant, id, limits, ttl_ms) = (
            self.place,
            Arc::clone(&self.tenant),
            std::mem::take(&mut self.id),
            self.limits,
            self.ttl_ms,
        );
        tracing::debug!(tenant = %tenant, reserved = self.reserved, used, "settling reservation");
        // Not tracked: a settlement lost at shutdown leaves the reservation to expire after
        // its TTL, charged what it reserved — never less than was used.
        runtime.spawn(async move {
            limiter
                .settle(place, tenant, id, used, limits, ttl_ms)
                .await
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let charge = self.charge_without_usage();
        self.settle_later(charge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::config::OnError;
    use crate::governance::ledger::Decision;
    use crate::governance::store::Reserve;
    use crate::governance::store::memory::MemoryStore;
    use crate::metrics::GatewayMetrics;

    const LIMITS: Limits = Limits {
        rpm: None,
        tpm: None,
        max_concurrent: Some(1),
        tokens_per_day: Some(10_000),
        tokens_per_month: None,
    };

    /// Reserves `reserved` tokens (of which `prompt` the prompt estimate) for one request.
    async fn reserved(limiter: &Arc<Limiter>, reserved: u64, prompt: u64) -> Reservation {
        let ask = Reserve {
            tenant: "t".into(),
            id: "r1".to_owned(),
            tokens: reserved,
            limits: LIMITS,
            ttl_ms: 60_000,
        };
        let (decision, place) = limiter.reserve(ask).await.unwrap();
        assert!(matches!(decision, Decision::Granted(_)));
        Reservation::new(
            Arc::clone(limiter),
            place,
            "t".into(),
            "r1".to_owned(),
            LIMITS,
            reserved,
            prompt,
            60_000,
        )
    }

    fn limiter() -> Arc<Limiter> {
        Arc::new(Limiter::new(
            Arc::new(MemoryStore::default()),
            OnError::Deny,
            std::time::Duration::from_secs(1),
            Arc::new(GatewayMetrics::new()),
        ))
    }

    async fn used_today(limiter: &Limiter) -> u64 {
        let remaining = limiter.peek("t".into(), LIMITS).await.unwrap();
        assert_eq!(remaining.concurrent, Some(1), "the place is free again");
        10_000 - remaining.today.unwrap_or(0)
    }

    #[tokio::test]
    async fn a_reported_prompt_is_charged_as_reported() {
        let limiter = limiter();
        let reservation = reserved(&limiter, 900, 800).await;
        reservation.finish(3, 5).await;
        assert_eq!(used_today(&limiter).await, 8);
    }

    #[tokio::test]
    async fn an_unreported_prompt_is_charged_at_least_its_estimate() {
        let limiter = limiter();
        let mut reservation = reserved(&limiter, 900, 800).await;
        reservation.usage_seen(&llmgw_proto::v1::Usage {
            prompt_tokens: 1,
            completion_tokens: 5,
            prompt_counted: true,
            cached_tokens: 0,
        });
        // One "word" of a 100 KB prompt without spaces: the estimate is charged instead.
        reservation.finish(1, 5).await;
        assert_eq!(used_today(&limiter).await, 805);
    }
}
