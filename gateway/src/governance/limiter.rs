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

/// Waits between retries of a settlement or a compensation that failed: a blip in the store
/// must not hold a tenant's concurrency slot and tokens until the reservation's TTL. The last
/// wait repeats until the reservation's TTL has passed (then the store has expired it anyway).
const RETRY_BACKOFF_MS: [u64; 5] = [50, 200, 1000, 2000, 5000];

/// Settlements and compensations retrying in the background at once: with the store down
/// under load, each failed call would otherwise add a task for up to the reservation's TTL.
/// Beyond it a reservation is left to expire after its TTL (charged what it reserved).
const MAX_RETRYING: usize = 1024;

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
    retrying: Arc<tokio::sync::Semaphore>,
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
            retrying: Arc::new(tokio::sync::Semaphore::new(MAX_RETRYING)),
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

    /// Reserves against the store, or (store down, `allow`) locally. A store call that failed
    /// may still have reserved (a timed-out script runs when the store wakes up): it is
    /// compensated in the background — cancelled by its id, which the store remembers, so a
    /// reservation that lands after its cancellation reserves nothing.
    pub async fn reserve(
        self: &Arc<Self>,
        ask: Reserve,
    ) -> Result<(Decision, Ledgered), Unavailable> {
        let failed = match self.timed("reserve", self.store.reserve(ask.clone())).await {
            Ok(decision) => return Ok((decision, Ledgered::Store)),
            Err(err) => err,
        };
        self.compensate(&ask);
        match self.on_error {
            OnError::Deny => Err(Unavailable(failed.0)),
            OnError::Allow => Ok((self.local.reserve_now(&ask), Ledgered::Local)),
        }
    }

    /// Cancels `ask` in the store, retrying in the background until the store answers.
    fn compensate(self: &Arc<Self>, ask: &Reserve) {
        let Ok(slot) = Arc::clone(&self.retrying).try_acquire_owned() else {
            tracing::warn!(tenant = %ask.tenant, "too many store retries at once; the reservation will expire after its TTL");
            return;
        };
        let this = Arc::clone(self);
        let ask = ask.clone();
        let give_up = Instant::now() + Duration::from_millis(ask.ttl_ms);
        tokio::spawn(async move {
            let _slot = slot;
            let cancel = || {
                this.store.cancel(
                    Arc::clone(&ask.tenant),
                    ask.id.clone(),
                    ask.limits,
                    ask.ttl_ms,
                )
            };
            if this.retry("cancel", give_up, cancel).await {
                tracing::info!(tenant = %ask.tenant, "reservation of a failed store call compensated");
            } else {
                tracing::warn!(tenant = %ask.tenant, "compensation failed; the reservation will expire after its TTL");
            }
        });
    }

    /// Calls `op` until it succeeds (true) or `give_up` passes (false), backing off.
    async fn retry(
        &self,
        name: &'static str,
        give_up: Instant,
        op: impl Fn() -> BoxFuture<'static, Result<(), StoreError>>,
    ) -> bool {
        let mut backoff = RETRY_BACKOFF_MS.iter().copied().chain(std::iter::repeat(
            RETRY_BACKOFF_MS[RETRY_BACKOFF_MS.len() - 1],
        ));
        loop {
            if self.timed(name, op()).await.is_ok() {
                return true;
            }
            let wait = Duration::from_millis(backoff.next().unwrap_or(5000));
            if Instant::now() + wait >= give_up {
                return false;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Settles where the reservation was made. One attempt is awaited (the caller's answer
    /// waits for it, so its next request finds the budget settled); if the store fails, the
    /// settlement is retried in the background (it is idempotent by id) until the
    /// reservation's TTL, after which the store has expired it, charged what it reserved.
    pub async fn settle(
        self: &Arc<Self>,
        place: Ledgered,
        tenant: Arc<str>,
        id: String,
        used: u64,
        limits: Limits,
        ttl_ms: u64,
    ) {
        if place == Ledgered::Local {
            self.local.settle_now(&tenant, &id, used, &limits);
            return;
        }
        let give_up = Instant::now() + Duration::from_millis(ttl_ms);
        let settle = {
            let (store, tenant, id) = (Arc::clone(&self.store), Arc::clone(&tenant), id.clone());
            move || store.settle(Arc::clone(&tenant), id.clone(), used, limits)
        };
        if self.timed("settle", settle()).await.is_ok() {
            return;
        }
        let Ok(slot) = Arc::clone(&self.retrying).try_acquire_owned() else {
            tracing::warn!(tenant = %tenant, "too many store retries at once; the reservation will expire after its TTL");
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _slot = slot;
            if !this.retry("settle", give_up, settle).await {
                tracing::warn!(tenant = %tenant, "settlement failed; the reservation will expire after its TTL");
            }
        });
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
