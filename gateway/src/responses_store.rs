//! [`ResponseStore`]: the Responses API's stored responses, so a client can continue a
//! conversation with `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`. In memory,
//! per gateway: bounded to [`MAX_STORED`] responses and [`MAX_STORED_BYTES`] in all (oldest
//! out first: a client storing large conversations cannot grow the gateway's memory without
//! bound) and [`STORED_TTL`] each, and scoped to the tenant that created them (another tenant's id is not found). A restart
//! forgets them, and behind several gateways a continuation must reach the gateway that
//! stored it (sticky routing by key), or the client sends the whole conversation.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use llmgw_proto::v1::Message;
use serde_json::Value;
use tokio::time::Instant;

/// Stored responses kept at most, per gateway.
pub const MAX_STORED: usize = 10_000;
/// How long a stored response is kept.
pub const STORED_TTL: Duration = Duration::from_secs(3600);
/// The most bytes all stored responses take (their texts, images and response objects).
pub const MAX_STORED_BYTES: usize = 256 << 20;

/// One stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The tenant that created it: the only one that may read, continue or delete it.
    pub tenant: String,
    /// The conversation up to and including this response's output (without instructions).
    pub conversation: Vec<Message>,
    /// The response object, as `GET` returns it.
    pub response: Value,
}

impl Stored {
    /// What it holds in memory, roughly: its texts, images and response object.
    fn bytes(&self) -> usize {
        let conversation: usize = self
            .conversation
            .iter()
            .map(|message| {
                message.content.len()
                    + message.images.iter().map(|i| i.data.len()).sum::<usize>()
                    + message
                        .tool_calls
                        .iter()
                        .map(|c| c.arguments_json.len() + c.name.len())
                        .sum::<usize>()
                    + 64
            })
            .sum();
        conversation + self.response.to_string().len()
    }
}

#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<String, (Instant, usize, Stored)>,
    order: VecDeque<(Instant, String)>,
    bytes: usize,
}

/// The gateway's stored responses.
#[derive(Debug, Default)]
pub struct ResponseStore {
    entries: Mutex<Entries>,
}

impl ResponseStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `stored` under `id`, dropping expired and surplus entries, oldest first; one
    /// larger than the whole budget is not stored (a later `previous_response_id` to it is
    /// not found).
    pub fn put(&self, id: String, stored: Stored) {
        let size = stored.bytes();
        if size > MAX_STORED_BYTES {
            tracing::warn!(bytes = size, "a response too large to store was not stored");
            return;
        }
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

    fn stored(tenant: &str) -> Stored {
        Stored {
            tenant: tenant.to_owned(),
            conversation: Vec::new(),
            response: Value::Null,
        }
    }

    #[test]
    fn a_response_is_its_tenants_only_and_the_store_stays_bounded() {
        let store = ResponseStore::default();
        store.put("resp_a".into(), stored("team-a"));
        assert!(store.get("resp_a", "team-a").is_some());
        assert!(
            store.get("resp_a", "team-b").is_none(),
            "another tenant cannot read it"
        );
        assert!(!store.delete("resp_a", "team-b"));
        assert!(store.delete("resp_a", "team-a"));
        assert!(store.get("resp_a", "team-a").is_none());
        for index in 0..MAX_STORED + 5 {
            store.put(format!("resp_{index}"), stored("t"));
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
        let store = ResponseStore::default();
        let big = || Stored {
            conversation: vec![Message {
                content: "x".repeat(MAX_STORED_BYTES / 8),
                ..Default::default()
            }],
            ..stored("t")
        };
        for index in 0..20 {
            store.put(format!("resp_{index}"), big());
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
        store.put("resp_huge".into(), huge);
        assert!(
            store.get("resp_huge", "t").is_none(),
            "larger than the budget: not stored"
        );
        // Stored and deleted at once, again and again: the order stays bounded too.
        for index in 0..3 * MAX_STORED {
            let id = format!("churn_{index}");
            store.put(id.clone(), stored("t"));
            assert!(store.delete(&id, "t"));
        }
        assert!(store.entries().order.len() <= 2 * MAX_STORED);
    }
}
