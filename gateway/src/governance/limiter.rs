//! [`Limiter`]: the store behind a time bound and the `on_error` rule. A store that does not
//! answer within `store.timeout_ms` is treated as down: `deny` refuses (503
//! `limits_unavailable`), `allow` serves and counts in this gateway's memory instead — a
//! warning and `llmgw_limit_store_errors_total` say so. Every decision is counted and timed.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::config::OnError;
use super::ledger::{Decision, Limits, Remaining};
use super::store::memory::MemoryStore;
use super::store::{LimitStore, Reserve, StoreError};
use crate::metrics::GatewayMetrics;

/// Waits between settlement attempts: a blip in the store must not hold a tenant's
/// concurrency slot and tokens until the reservation's TTL.
const SETTLE_BACKOFF_MS: [u64; 4] = [50, 200, 1000, 5000];

/// Where a reservation was made, so its settlement goes to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledgered {
    Store,
    /// The store was down and `on_error = "allow"`: counted in this gateway's memory.
    Local,
}

/// The store could not decide and `on_error = "deny"`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("limit store unavailable: {0}")]
pub struct Unavailable(pub String);

/// Store + fallback + policy on errors.
#[derive(Debug)]
pub struct Limiter {
    store: Arc<dyn LimitStore>,
    local: MemoryStore,
    on_error: OnError,
    timeout: Duration,
    metrics: Arc<GatewayMetrics>,
}

impl Limiter {
    pub fn new(
        store: Arc<dyn LimitStore>,
        on_error: OnError,
        timeout: Duration,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            store,
            local: MemoryStore::default(),
            on_error,
            timeout,
            metrics,
        }
    }

    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: BoxFuture<'static, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        let kind = self.store.kind();
        self.metrics
            .store_round_trip(kind, op, started.elapsed().as_secs_f64());
        if let Err(err) = &outcome {
            self.metrics.store_error(kind, op);
            tracing::warn!(store = kind, op, error = %err, on_error = ?self.on_error, "limit store failed");
        }
        outcome
    }

    /// Reserves against the store, or (store down, `allow`) locally.
    pub async fn reserve(&self, ask: Reserve) -> Result<(Decision, Ledgered), Unavailable> {
        match self.timed("reserve", self.store.reserve(ask.clone())).await {
            Ok(decision) => Ok((decision, Ledgered::Store)),
            Err(err) => match self.on_error {
                OnError::Deny => Err(Unavailable(err.0)),
                OnError::Allow => Ok((self.local.reserve_now(&ask), Ledgered::Local)),
            },
        }
    }

    /// Settles where the reservation was made, retrying a failed store call a few times
    /// (settlement is idempotent by id). If all fail, the reservation expires after its TTL,
    /// charged what it reserved (never less than was used).
    pub async fn settle(
        &self,
        place: Ledgered,
        tenant: Arc<str>,
        id: String,
        used: u64,
        limits: Limits,
    ) {
        if place == Ledgered::Local {
            self.local.settle_now(&tenant, &id, used, &limits);
            return;
        }
        for backoff_ms in SETTLE_BACKOFF_MS {
            let call = self
                .store
                .settle(Arc::clone(&tenant), id.clone(), used, limits);
            if self.timed("settle", call).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        }
        tracing::warn!(tenant = %tenant, "settlement failed; the reservation will expire after its TTL");
    }

    /// What remains for `tenant`.
    pub async fn peek(&self, tenant: Arc<str>, limits: Limits) -> Result<Remaining, Unavailable> {
        match self
            .timed("peek", self.store.peek(Arc::clone(&tenant), limits))
            .await
        {
            Ok(remaining) => Ok(remaining),
            Err(err) => match self.on_error {
                OnError::Deny => Err(Unavailable(err.0)),
                OnError::Allow => Ok(self.local.peek_now(&tenant, &limits)),
            },
        }
    }
}
