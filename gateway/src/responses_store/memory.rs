//! [`MemoryResponses`]: stored responses in this gateway's memory, bounded to [`MAX_STORED`]
//! responses and [`MAX_STORED_BYTES`] in all (oldest out first: a client storing large
//! conversations cannot grow the gateway's memory without bound) and [`STORED_TTL`] each. A
//! restart forgets them, and behind several gateways a continuation must reach the gateway
//! that stored it (sticky routing by key), or the gateways share `[store]`'s Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::time::Instant;

use super::{MAX_STORED_BYTES, STORED_TTL, Stored};

/// Stored responses kept at most, per gateway.
pub const MAX_STORED: usize = 10_000;

#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<String, (Instant, usize, Stored)>,
    order: VecDeque<(Instant, String)>,
    bytes: usize,
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

    /// Stores `stored` (of `size` bytes, at most [`MAX_STORED_BYTES`]) under `id`, dropping
    /// expired and surplus entries, oldest first.
    pub fn put(&self, id: String, stored: Stored, size: usize) {
        let now = Instant::now();
        let mut entries = self.entries();
        while let Some((at, oldest)) = entries.order.front().cloned() {
            // The order also holds deleted ids until they reach its front: it is bounded too.
            let full = entries.by_id.len() >= MAX_STORED
                || entries.order.len() >= 2 * MAX_STORED
                || entries.bytes + size > MAX_STORED_BYTES;
            if !full && now.duration_since(at) < STORED_TTL {
                break;
            }
            entries.order.pop_front();
            if entries
                .by_id
                .get(&oldest)
                .is_some_and(|(kept, ..)| *kept == at)
                && let Some((_, freed, _)) = entries.by_id.remove(&oldest)
            {
                entries.bytes -= freed;
            }
        }
        entries.order.push_back((now, id.clone()));
        entries.bytes += size;
        if let Some((_, replaced, _)) = entries.by_id.insert(id, (now, size, stored)) {
            entries.bytes -= replaced;
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
        if size <= MAX_STORED_BYTES {
            store.put(id, stored, size);
        }
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
