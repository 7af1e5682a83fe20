//! [`RecentRefusals`]: the gateway's memory of what it refused or failed lately, for the status
//! page — the last [`LAST_KEPT`] answers of 400 and above (request id, tenant, route, model,
//! status, reason; never a prompt), and per tenant and reason the count over the last
//! [`WINDOW_MINUTES`] minutes. Bounded however hostile the traffic: minute buckets, at most
//! [`MAX_COUNTED`] (tenant, reason) pairs each, the rest counted under `other`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Refusals and failures listed one by one.
pub const LAST_KEPT: usize = 50;
/// Minutes the per-tenant counts cover.
pub const WINDOW_MINUTES: u64 = 5;
/// Distinct (tenant, reason) pairs counted per minute (open mode's tenants are the client's
/// word: a flood of invented tenants lands under `other`).
const MAX_COUNTED: usize = 1024;

/// One refused or failed request.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// RFC 3339, UTC.
    pub at: String,
    pub request_id: String,
    pub tenant: String,
    pub route: String,
    pub model: String,
    pub status: u16,
    pub reason: String,
}

#[derive(Debug)]
struct Minute {
    index: u64,
    counts: HashMap<(String, String), u64>,
}

#[derive(Debug)]
struct Inner {
    last: VecDeque<Refused>,
    minutes: VecDeque<Minute>,
}

/// What the gateway refused lately.
#[derive(Debug)]
pub struct RecentRefusals {
    born: Instant,
    inner: Mutex<Inner>,
}

impl Default for RecentRefusals {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            inner: Mutex::new(Inner {
                last: VecDeque::with_capacity(LAST_KEPT),
                minutes: VecDeque::new(),
            }),
        }
    }
}

impl RecentRefusals {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn minute_now(&self) -> u64 {
        self.born.elapsed().as_secs() / 60
    }

    /// Remembers one refusal or failure.
    pub fn record(&self, refused: Refused) {
        let index = self.minute_now();
        let mut inner = self.inner();
        if inner.last.len() == LAST_KEPT {
            inner.last.pop_front();
        }
        let key = (refused.tenant.clone(), refused.reason.clone());
        inner.last.push_back(refused);
        if inner.minutes.back().is_none_or(|m| m.index != index) {
            inner.minutes.push_back(Minute {
                index,
                counts: HashMap::new(),
            });
        }
        while inner
            .minutes
            .front()
            .is_some_and(|m| m.index + WINDOW_MINUTES <= index)
        {
            inner.minutes.pop_front();
        }
        if let Some(minute) = inner.minutes.back_mut() {
            let key = if minute.counts.len() < MAX_COUNTED || minute.counts.contains_key(&key) {
                key
            } else {
                (llmgw_proto::OVERFLOW_TENANT.to_owned(), key.1)
            };
            *minute.counts.entry(key).or_default() += 1;
        }
    }

    /// The last ones, newest first.
    pub fn last(&self) -> Vec<Refused> {
        self.inner().last.iter().rev().cloned().collect()
    }

    /// Per tenant, per reason, over the last [`WINDOW_MINUTES`] minutes.
    pub fn by_tenant(&self) -> HashMap<String, HashMap<String, u64>> {
        let index = self.minute_now();
        let inner = self.inner();
        let mut totals: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for minute in inner
            .minutes
            .iter()
            .filter(|m| m.index + WINDOW_MINUTES > index)
        {
            for ((tenant, reason), count) in &minute.counts {
                *totals
                    .entry(tenant.clone())
                    .or_default()
                    .entry(reason.clone())
                    .or_default() += count;
            }
        }
        totals
    }
}

/// How long the per-tenant counts look back, for the page.
pub fn window() -> Duration {
    Duration::from_secs(WINDOW_MINUTES * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(tenant: &str, reason: &str) -> Refused {
        Refused {
            at: String::new(),
            request_id: "req_1".into(),
            tenant: tenant.into(),
            route: "/v1/chat/completions".into(),
            model: "m".into(),
            status: 429,
            reason: reason.into(),
        }
    }

    #[test]
    fn keeps_the_last_ones_and_counts_per_tenant_and_reason() {
        let recent = RecentRefusals::default();
        for index in 0..LAST_KEPT + 10 {
            let tenant = if index % 2 == 0 { "a" } else { "b" };
            recent.record(refused(tenant, "rate_limited"));
        }
        recent.record(refused("a", "budget_exhausted"));
        let last = recent.last();
        assert_eq!(last.len(), LAST_KEPT);
        assert_eq!(last[0].reason, "budget_exhausted", "newest first");
        let counts = recent.by_tenant();
        assert_eq!(counts["a"]["rate_limited"], 30);
        assert_eq!(counts["b"]["rate_limited"], 30);
        assert_eq!(counts["a"]["budget_exhausted"], 1);
    }

    #[test]
    fn invented_tenants_cannot_grow_the_counts() {
        let recent = RecentRefusals::default();
        for index in 0..5 * MAX_COUNTED {
            recent.record(refused(&format!("t{index}"), "invalid_request"));
        }
        let counts = recent.by_tenant();
        assert!(counts.len() <= MAX_COUNTED + 1, "{}", counts.len());
        assert_eq!(
            counts.values().flat_map(|r| r.values()).sum::<u64>(),
            5 * MAX_COUNTED as u64,
            "every refusal counted"
        );
    }
}
