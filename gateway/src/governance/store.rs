//! [`LimitStore`]: where limit counters live — one trait, two implementations, each limit
//! decision one round trip: [`memory::MemoryStore`] (the embedded default, exact for one
//! gateway) and [`redis::RedisStore`] (exact across any number of gateways). Both run the same
//! arithmetic ([`super::ledger`]) and pass the same conformance tests.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use futures::future::BoxFuture;

use super::ledger::{Decision, Limits, Remaining};

/// One reservation to make.
#[derive(Debug, Clone)]
pub struct Reserve {
    pub tenant: Arc<str>,
    /// The request id: settlement and retries are idempotent by it.
    pub id: String,
    pub tokens: u64,
    pub limits: Limits,
    /// How long an unsettled reservation lives (its gateway may have died).
    pub ttl_ms: u64,
}

/// The store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("limit store: {0}")]
pub struct StoreError(pub String);

/// Where counters live.
pub trait LimitStore: Send + Sync + std::fmt::Debug {
    /// `memory` or `redis`, for logs and metrics.
    fn kind(&self) -> &'static str;
    /// Reserves atomically against every limit, or refuses naming the limit.
    fn reserve(&self, ask: Reserve) -> BoxFuture<'static, Result<Decision, StoreError>>;
    /// Settles a reservation to what was actually used; unknown ids change nothing.
    fn settle(
        &self,
        tenant: Arc<str>,
        id: String,
        used: u64,
        limits: Limits,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Cancels a reservation whose `reserve` call failed (it may or may not have been made):
    /// a held one is refunded whole; an unknown id is remembered for `ttl_ms`, so a `reserve`
    /// of it that arrives later reserves nothing.
    fn cancel(
        &self,
        tenant: Arc<str>,
        id: String,
        limits: Limits,
        ttl_ms: u64,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// What remains now.
    fn peek(
        &self,
        tenant: Arc<str>,
        limits: Limits,
    ) -> BoxFuture<'static, Result<Remaining, StoreError>>;
}
