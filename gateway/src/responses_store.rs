//! [`ResponseStore`]: the Responses API's stored responses, so a client can continue a
//! conversation with `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`. In memory,
//! per gateway: bounded to [`MAX_STORED`] responses (oldest out) and [`STORED_TTL`] each, and
//! scoped to the tenant that created them (another tenant's id is not found). A restart
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

#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<String, (Instant, Stored)>,
    order: VecDeque<(Instant, String)>,
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

    /// Stores `stored` under `id`, dropping expired and surplus entries, oldest first.
    pub fn put(&self, id: String, stored: Stored) {
        let now = Instant::now();
        let mut entries = self.entries();
        while let Some((at, oldest)) = entries.order.front().cloned() {
            if entries.order.len() < MAX_STORED && now.duration_since(at) < STORED_TTL {
                break;
            }
            entries.order.pop_front();
            if entries
                .by_id
                .get(&oldest)
                .is_some_and(|(kept, _)| *kept == at)
            {
                entries.by_id.remove(&oldest);
            }
        }
        entries.order.push_back((now, id.clone()));
        entries.by_id.insert(id, (now, stored));
    }

    /// The response `id` if `tenant` created it and it has not expired.
    pub fn get(&self, id: &str, tenant: &str) -> Option<Stored> {
        let entries = self.entries();
        let (at, stored) = entries.by_id.get(id)?;
        (stored.tenant == tenant && at.elapsed() < STORED_TTL).then(|| stored.clone())
    }

    /// Deletes `id` if `tenant` created it; whether it did.
    pub fn delete(&self, id: &str, tenant: &str) -> bool {
        let mut entries = self.entries();
        let owned = entries
            .by_id
            .get(id)
            .is_some_and(|(_, stored)| stored.tenant == tenant);
        if owned {
            entries.by_id.remove(id);
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
}
