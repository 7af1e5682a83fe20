//! [`MemoryResponses`]: stored responses in this gateway's memory, bounded to [`MAX_STORED`]
//! responses and [`MAX_STORED_BYTES`] in all (oldest out first: a client storing large
//! conversations cannot grow the gateway's memory without bound), each tenant to its share
//! ([`PER_TENANT`], [`PER_TENANT_BYTES`]: its own oldest go first, so no tenant pushes out
//! another's), and [`STORED_TTL`] each. A
//! restart forgets them, and behind several gateways a continuation must reach the gateway
//! that stored it (sticky routing by key), or the gateways share `[store]`'s Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::time::Instant;

use super::{MAX_STORED_BYTES, PER_TENANT, PER_TENANT_BYTES, STORED_TTL, Stored};

/// Stored responses kept at most, per gateway.
pub const MAX_STORED: usize = 10_000;

#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<String, (Instant, usize, Stored)>,
    order: VecDeque<(Instant, String)>,
    bytes: usize,
    /// Each tenant's share: no tenant pushes out another's responses.
    tenants: HashMap<String, Share>,
}

/// One tenant's stored responses, oldest first (deleted ids linger until they reach the front).
#[derive(Debug, Default)]
struct Share {
    order: VecDeque<(Instant, String)>,
    count: usize,
    bytes: usize,
}

impl Entries {
    /// Removes `id` if it is still the one stored `at`, keeping every count true.
    fn remove(&mut self, id: &str, at: Instant) {
        if self.by_id.get(id).is_none_or(|(kept, ..)| *kept != at) {
            return;
        }
        if let Some((_, freed, stored)) = self.by_id.remove(id) {
            self.bytes -= freed;
            self.forget(&stored.tenant, freed);
        }
    }

    /// `tenant` holds one response of `freed` bytes fewer; a share holding none goes.
    fn forget(&mut self, tenant: &str, freed: usize) {
        if let Some(share) = self.tenants.get_mut(tenant) {
            share.count -= 1;
            share.bytes -= freed;
            if share.count == 0 {
                self.tenants.remove(tenant);
            }
        }
    }
}

/// The gateway's stored responses, in memory.
#[derive(Debug, Default)]
pub struct MemoryResponses {
    entries: Mutex<Entries>,
}

impl MemoryResponses {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `stored` (of `size` bytes, at most [`PER_TENANT_BYTES`]) under `id`: first its
    /// tenant's oldest go until the tenant is within its share, then expired and surplus
    /// entries of anyone, oldest first.
    pub fn put(&self, id: String, stored: Stored, size: usize) {
        if size > PER_TENANT_BYTES {
            tracing::warn!(bytes = size, "a response too large to store was not stored");
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries();
        let tenant = stored.tenant.clone();
        while let Some(share) = entries.tenants.get_mut(&tenant) {
            let full = share.count >= PER_TENANT
                || share.order.len() >= 2 * PER_TENANT
                || share.bytes + size > PER_TENANT_BYTES;
            if !full {
                break;
            }
            let Some((at, oldest)) = share.order.pop_front() else {
                break;
            };
            entries.remove(&oldest, at);
        }
        while let Some((at, oldest)) = entries.order.front().cloned() {
            // The order also holds deleted ids until they reach its front: it is bounded too.
            let full = entries.by_id.len() >= MAX_STORED
                || entries.order.len() >= 2 * MAX_STORED
                || entries.bytes + size > MAX_STORED_BYTES;
            if !full && now.duration_since(at) < STORED_TTL {
                break;
            }
            entries.order.pop_front();
            entries.remove(&oldest, at);
        }
        entries.order.push_back((now, id.clone()));
        let share = entries.tenants.entry(tenant).or_default();
        share.order.push_back((now, id.clone()));
        share.count += 1;
        share.bytes += size;
        entries.bytes += size;
        if let Some((_, replaced, old)) = entries.by_id.insert(id, (now, size, stored)) {
            entries.bytes -= replaced;
            entries.forget(&old.tenant, replaced);
        }
    }

    /// The response `id` if `tenant` created it and it has not expired.
    pub fn get(&self, id: &str, tenant: &str) -> Option<Stored> {
        let entries = self.entries();
        let (at, _, stored) = entries.by_id.get(id)?;
        (stored.tenant == tenant && at.elapsed() < STORED_TTL).then(|| stored.clone())
    }

    /// Deletes `id` if `tenant` created it; whether it did.
    pub fn delete(&self, id: &str, tenant: &str) -> bool {
        let mut entries = self.entries();
        let owned = entries
            .by_id
            .get(id)
            .is_some_and(|(.., stored)| stored.tenant == tenant);
        if owned && let Some((_, freed, _)) = entries.by_id.remove(id) {
            entries.bytes -= freed;
            entries.forget(tenant, freed);
        }
        owned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::Message;
    use serde_json::Value;

    fn put(store: &MemoryResponses, id: String, stored: Stored) {
        let size = stored.bytes();
        store.put(id, stored, size);
    }

    #[test]
    fn a_tenant_storing_without_end_pushes_out_only_its_own() {
        let store = MemoryResponses::default();
        put(&store, "resp_b".into(), stored("team-b"));
        for index in 0..3 * PER_TENANT {
            put(&store, format!("resp_a{index}"), stored("team-a"));
        }
        assert!(
            store.get("resp_b", "team-b").is_some(),
            "another tenant's stays"
        );
        assert!(
            store.get("resp_a0", "team-a").is_none(),
            "its own oldest went"
        );
        let entries = store.entries();
        assert_eq!(entries.tenants["team-a"].count, PER_TENANT);
        assert!(entries.tenants["team-a"].order.len() <= 2 * PER_TENANT);
        assert_eq!(entries.by_id.len(), PER_TENANT + 1);
    }

    fn stored(tenant: &str) -> Stored {
        Stored {
            tenant: tenant.to_owned(),
            conversation: Vec::new(),
            response: Value::Null,
        }
    }

    #[test]
    fn a_response_is_its_tenants_only_and_the_store_stays_bounded() {
        let store = MemoryResponses::default();
        put(&store, "resp_a".into(), stored("team-a"));
        assert!(store.get("resp_a", "team-a").is_some());
        assert!(
            store.get("resp_a", "team-b").is_none(),
            "another tenant cannot read it"
        );
        assert!(!store.delete("resp_a", "team-b"));
        assert!(store.delete("resp_a", "team-a"));
        assert!(store.get("resp_a", "team-a").is_none());
        for index in 0..MAX_STORED + 5 {
            put(&store, format!("resp_{index}"), stored("t"));
        }
        assert!(store.get("resp_0", "t").is_none(), "the oldest went out");
        assert!(
            store
                .get(&format!("resp_{}", MAX_STORED + 4), "t")
                .is_some()
        );
        assert!(store.entries().by_id.len() <= MAX_STORED);
    }

    #[test]
    fn large_conversations_cannot_grow_the_store_past_its_bytes() {
        let store = MemoryResponses::default();
        let big = || Stored {
            conversation: vec![Message {
                content: "x".repeat(MAX_STORED_BYTES / 8),
                ..Default::default()
            }],
            ..stored("t")
        };
        for index in 0..20 {
            put(&store, format!("resp_{index}"), big());
        }
        {
            let entries = store.entries();
            assert!(entries.bytes <= MAX_STORED_BYTES, "{} bytes", entries.bytes);
            assert!(entries.by_id.len() < 8, "{} kept", entries.by_id.len());
            assert!(entries.by_id.contains_key("resp_19"), "the newest stays");
        }
        let huge = Stored {
            conversation: vec![Message {
                content: "x".repeat(MAX_STORED_BYTES + 1),
                ..Default::default()
            }],
            ..stored("t")
        };
        put(&store, "resp_huge".into(), huge);
        assert!(
            store.get("resp_huge", "t").is_none(),
            "larger than the budget: not stored"
        );
        // Stored and deleted at once, again and again: the order stays bounded too.
        for index in 0..3 * MAX_STORED {
            let id = format!("churn_{index}");
            put(&store, id.clone(), stored("t"));
            assert!(store.delete(&id, "t"));
        }
        assert!(store.entries().order.len() <= 2 * MAX_STORED);
    }
}
