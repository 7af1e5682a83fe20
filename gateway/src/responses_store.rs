//! [`ResponseStore`]: the Responses API's stored responses, so a client can continue a
//! conversation with `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`, each
//! scoped to the tenant that created it (another tenant's id is not found).
//!
//! Where they live follows the limits' `[store]`: without `redis_url`, in this gateway's
//! memory ([`memory::MemoryResponses`], bounded in count and bytes); with it, in Redis
//! ([`redis::RedisResponses`]), so a conversation continues through any gateway. Either way
//! each response is kept [`STORED_TTL`].

pub mod memory;
pub mod redis;

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use llmgw_proto::Reason;
use llmgw_proto::v1::Message;
use serde_json::Value;

use crate::error::{ApiError, Refusal};
use crate::governance::config::StoreConfig;

use self::memory::MemoryResponses;
use self::redis::RedisResponses;

/// How long a stored response is kept.
pub const STORED_TTL: Duration = Duration::from_secs(3600);
/// The most bytes all stored responses take in one gateway's memory.
pub const MAX_STORED_BYTES: usize = 256 << 20;
/// Responses kept per tenant (memory or Redis): beyond, the tenant's own oldest go.
pub const PER_TENANT: usize = 1_000;
/// Bytes kept per tenant (its texts, images and response objects); a larger single response
/// is answered but not stored.
pub const PER_TENANT_BYTES: usize = 64 << 20;

/// One stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The tenant that created it: the only one that may read, continue or delete it.
    pub tenant: String,
    /// The conversation up to and including this response's output (without instructions).
    pub conversation: Vec<Message>,
    /// The response object, as `GET` returns it.
    pub response: Value,
}

impl Stored {
    /// What it holds, roughly: its texts, images and response object.
    pub fn bytes(&self) -> usize {
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

/// The gateway's stored responses: in memory, or in the shared Redis.
#[derive(Debug)]
pub enum ResponseStore {
    Memory(MemoryResponses),
    Redis(RedisResponses),
}

impl Default for ResponseStore {
    fn default() -> Self {
        Self::Memory(MemoryResponses::default())
    }
}

impl ResponseStore {
    /// The store `[store]` names: Redis when it has a `redis_url`, else memory.
    pub fn for_config(store: Option<&StoreConfig>) -> Result<Self, String> {
        match store.and_then(|s| s.redis_url.as_deref().map(|url| (s, url))) {
            Some((store, url)) => Ok(Self::Redis(RedisResponses::connect_lazy(
                url,
                &store.key_prefix,
                Duration::from_millis(store.timeout_ms),
            )?)),
            None => Ok(Self::default()),
        }
    }

    /// Stores `stored` under `id`. Called as the response finishes; a Redis write runs in the
    /// background ([`Self::written`] awaits it), and until it lands this gateway answers for it
    /// from memory.
    pub fn put(&self, id: String, stored: Stored) {
        let size = stored.bytes();
        match self {
            Self::Memory(memory) => memory.put(id, stored, size),
            Self::Redis(redis) => redis.put(id, stored, size),
        }
    }

    /// Returns once `id`'s write has landed where every gateway sees it (memory: at once).
    pub async fn written(&self, id: &str) {
        if let Self::Redis(redis) = self {
            redis.written(id).await;
        }
    }

    /// The response `id` if `tenant` created it and it has not expired.
    pub async fn get(&self, id: &str, tenant: &str) -> Result<Option<Stored>, ApiError> {
        match self {
            Self::Memory(memory) => Ok(memory.get(id, tenant)),
            Self::Redis(redis) => redis.get(id, tenant).await.map_err(unavailable),
        }
    }

    /// Deletes `id` if `tenant` created it; whether it did.
    pub async fn delete(&self, id: &str, tenant: &str) -> Result<bool, ApiError> {
        match self {
            Self::Memory(memory) => Ok(memory.delete(id, tenant)),
            Self::Redis(redis) => redis.delete(id, tenant).await.map_err(unavailable),
        }
    }
}

/// Redis did not answer in time: the client may retry.
fn unavailable(error: String) -> ApiError {
    tracing::warn!(%error, "the response store did not answer");
    ApiError::Refused(Box::new(Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason: Reason::StoreUnavailable,
        message: "Stored responses cannot be read right now; retry shortly".to_owned(),
        param: None,
        retry_after_s: Some(1),
        headers: HeaderMap::new(),
    }))
}
