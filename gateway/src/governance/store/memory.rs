//! [`MemoryStore`]: counters in this process's memory, a [`Ledger`] per tenant behind one lock.
//! Exact for a single gateway; with several, use Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use super::{LimitStore, Reserve, StoreError};
use crate::governance::ledger::{Decision, Ledger, Limits, Remaining};

/// Counters in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    ledgers: Mutex<HashMap<Arc<str>, Ledger>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Ledger>> {
        // Every ledger operation completes before the lock is released; a panic mid-way
        // cannot leave a half-applied decision worth refusing all tenants over.
        self.ledgers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn reserve_now(&self, ask: &Reserve) -> Decision {
        let mut ledgers = self.lock();
        let ledger = ledgers.entry(Arc::clone(&ask.tenant)).or_default();
        ledger.reserve(&ask.id, ask.tokens, &ask.limits, now_ms(), ask.ttl_ms)
    }

    pub fn settle_now(&self, tenant: &Arc<str>, id: &str, used: u64, limits: &Limits) {
        if let Some(ledger) = self.lock().get_mut(tenant) {
            ledger.settle(id, used, limits, now_ms());
        }
    }

    pub fn cancel_now(&self, tenant: &Arc<str>, id: &str, limits: &Limits, ttl_ms: u64) {
        let mut ledgers = self.lock();
        let ledger = ledgers.entry(Arc::clone(tenant)).or_default();
        ledger.cancel(id, limits, now_ms(), ttl_ms);
    }

    pub fn peek_now(&self, tenant: &Arc<str>, limits: &Limits) -> Remaining {
        let mut ledgers = self.lock();
        let ledger = ledgers.entry(Arc::clone(tenant)).or_default();
        ledger.peek(limits, now_ms())
    }
}

impl LimitStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn reserve(&self, ask: Reserve) -> BoxFuture<'static, Result<Decision, StoreError>> {
        let decision = self.reserve_now(&ask);
        Box::pin(async move { Ok(decision) })
    }

    fn settle(
        &self,
        tenant: Arc<str>,
        id: String,
        used: u64,
        limits: Limits,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.settle_now(&tenant, &id, used, &limits);
        Box::pin(async { Ok(()) })
    }

    fn cancel(
        &self,
        tenant: Arc<str>,
        id: String,
        limits: Limits,
        ttl_ms: u64,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.cancel_now(&tenant, &id, &limits, ttl_ms);
        Box::pin(async { Ok(()) })
    }

    fn peek(
        &self,
        tenant: Arc<str>,
        limits: Limits,
    ) -> BoxFuture<'static, Result<Remaining, StoreError>> {
        let remaining = self.peek_now(&tenant, &limits);
        Box::pin(async move { Ok(remaining) })
    }
}
