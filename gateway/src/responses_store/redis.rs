//! [`RedisResponses`]: stored responses in `[store]`'s Redis, so any gateway continues a
//! conversation another stored. Keys are the tenant's (`<prefix>:response:{<tenant>}:<id>`,
//! a hash of `tenant`, `conversation` as length-delimited protobuf `Message`s and `response`
//! as JSON), expiring after [`STORED_TTL`]; `responses.lua` keeps each tenant within
//! [`PER_TENANT`] responses and [`PER_TENANT_BYTES`] (its oldest out), so one
//! tenant can neither push out another's responses nor fill the Redis the limits live in.
//!
//! The write starts as the answer is finished, and the answer's end waits for it
//! ([`RedisResponses::written`]), so the client's next turn finds it through any gateway;
//! meanwhile this gateway answers for it from `pending`. Writes have a connection of their
//! own: a large one never holds up a read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmgw_proto::v1::Message as Turn;
use prost::Message as _;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use super::{PER_TENANT, PER_TENANT_BYTES, STORED_TTL, Stored};
use crate::governance::store::redis::connection_manager;

/// The longest the end of an answer waits for its write.
const WRITE_WAIT: Duration = Duration::from_secs(1);

/// Deletes the response and its bookkeeping when the tenant in it is the caller's.
const DELETE_OWNED: &str = r#"
if redis.call('HGET', KEYS[1], 'tenant') == ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A write on its way: the response, and who waits for it to land.
#[derive(Debug)]
struct Pending {
    stored: Stored,
    landed: Arc<Notify>,
}

/// Stored responses in Redis.
pub struct RedisResponses {
    reader: ConnectionManager,
    writer: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    put: Arc<Script>,
    delete_owned: Arc<Script>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
}

impl std::fmt::Debug for RedisResponses {
    // The URL may carry a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResponses")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The tenant's keys: its response `id`, its index and its sizes (one hash slot per tenant).
struct Keys {
    response: String,
    index: String,
    sizes: String,
    /// `response` without the id.
    responses: String,
}

impl Keys {
    /// A call of `script` (`responses.lua`'s put or delete) on these keys, in the order the
    /// scripts read them.
    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.response)
            .key(&self.index)
            .key(&self.sizes);
        invocation
    }
}

impl RedisResponses {
    /// Prepares a lazily connecting store (the gateway starts while Redis is down).
    pub fn connect_lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            reader: connection_manager(url, timeout, Some(timeout))?,
            // Each write is bounded where it is sent (a large conversation takes longer).
            writer: connection_manager(url, timeout, None)?,
            prefix: prefix.into(),
            timeout,
            put: Arc::new(Script::new(include_str!("responses.lua"))),
            delete_owned: Arc::new(Script::new(DELETE_OWNED)),
            pending: Arc::default(),
        })
    }

    fn keys(&self, tenant: &str, id: &str) -> Keys {
        let prefix = &self.prefix;
        let responses = format!("{prefix}:response:{{{tenant}}}:");
        Keys {
            response: format!("{responses}{id}"),
            index: format!("{prefix}:responses:{{{tenant}}}"),
            sizes: format!("{prefix}:response-bytes:{{{tenant}}}"),
            responses,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        lock(&self.pending)
    }

    /// Writes `stored` (of `size` bytes) in the background; a failed write is logged (the
    /// response was answered, only its continuation is lost).
    pub fn put(&self, id: String, stored: Stored, size: usize) {
        if size > PER_TENANT_BYTES {
            tracing::warn!(bytes = size, "a response too large to store was not stored");
            return;
        }
        let mut conversation = Vec::new();
        for turn in &stored.conversation {
            // Writing into a Vec cannot run out of room.
            let _ = turn.encode_length_delimited(&mut conversation);
        }
        let keys = self.keys(&stored.tenant, &id);
        let tenant = stored.tenant.clone();
        let response = stored.response.to_string();
        let landed = Arc::new(Notify::new());
        self.pending().insert(
            id.clone(),
            Pending {
                stored,
                landed: Arc::clone(&landed),
            },
        );
        let mut writer = self.writer.clone();
        let pending = Arc::clone(&self.pending);
        let (put, delete) = (Arc::clone(&self.put), Arc::clone(&self.delete_owned));
        let timeout = self.timeout.max(Duration::from_secs(5));
        tokio::spawn(async move {
            let mut invocation = keys.invocation(&put);
            invocation
                .arg(&id)
                .arg(&tenant)
                .arg(conversation)
                .arg(response)
                .arg(size)
                .arg(STORED_TTL.as_millis() as u64)
                .arg(PER_TENANT_BYTES)
                .arg(PER_TENANT)
                .arg(&keys.responses);
            let written =
                tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut writer)).await;
            if !matches!(written, Ok(Ok(_))) {
                tracing::warn!("a stored response was not written to the response store");
            }
            let deleted_meanwhile = lock(&pending).remove(&id).is_none();
            landed.notify_waiters();
            if deleted_meanwhile {
                let mut invocation = keys.invocation(&delete);
                invocation.arg(&tenant).arg(&id);
                let _ = tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut writer))
                    .await;
            }
        });
    }

    /// Returns once the write of `id` has landed (or failed), or after [`WRITE_WAIT`]: the
    /// answer's end waits for it, so a client's next turn through another gateway finds it.
    pub async fn written(&self, id: &str) {
        let Some(landed) = self.pending().get(id).map(|p| Arc::clone(&p.landed)) else {
            return;
        };
        let notified = landed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Landed between the lookup and `enable`: nothing will wake us.
        if !self.pending().contains_key(id) {
            return;
        }
        let _ = tokio::time::timeout(WRITE_WAIT, notified).await;
    }

    pub async fn get(&self, id: &str, tenant: &str) -> Result<Option<Stored>, String> {
        if let Some(pending) = self.pending().get(id) {
            return Ok((pending.stored.tenant == tenant).then(|| pending.stored.clone()));
        }
        let mut reader = self.reader.clone();
        let mut read = redis::cmd("HMGET");
        read.arg(self.keys(tenant, id).response)
            .arg("tenant")
            .arg("conversation")
            .arg("response");
        let fields: Vec<Option<Vec<u8>>> = self.bounded(read.query_async(&mut reader)).await?;
        let [Some(owner), Some(conversation), Some(response)] = <[_; 3]>::try_from(fields)
            .map_err(|fields| format!("HMGET answered {} fields", fields.len()))?
        else {
            return Ok(None);
        };
        if owner != tenant.as_bytes() {
            return Ok(None);
        }
        Ok(decode(&conversation, &response)
            .inspect_err(|error| tracing::warn!(%error, "a stored response cannot be read back"))
            .ok()
            .map(|(conversation, response)| Stored {
                tenant: tenant.to_owned(),
                conversation,
                response,
            }))
    }

    pub async fn delete(&self, id: &str, tenant: &str) -> Result<bool, String> {
        let was_pending = {
            let mut pending = self.pending();
            let owned = pending.get(id).is_some_and(|p| p.stored.tenant == tenant);
            if owned {
                pending.remove(id);
            }
            owned
        };
        let keys = self.keys(tenant, id);
        let mut reader = self.reader.clone();
        let mut invocation = keys.invocation(&self.delete_owned);
        invocation.arg(tenant).arg(id);
        let deleted: i64 = match self.bounded(invocation.invoke_async(&mut reader)).await {
            Ok(deleted) => deleted,
            // Its write had not landed: the writer deletes it when it does.
            Err(_) if was_pending => 0,
            Err(error) => return Err(error),
        };
        Ok(was_pending || deleted > 0)
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(err.category().to_owned()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// A stored conversation and response object, as written.
fn decode(conversation: &[u8], response: &[u8]) -> Result<(Vec<Turn>, serde_json::Value), String> {
    let mut turns = Vec::new();
    let mut rest = conversation;
    while !rest.is_empty() {
        turns.push(
            Turn::decode_length_delimited(&mut rest)
                .map_err(|err| format!("stored conversation: {err}"))?,
        );
    }
    let response =
        serde_json::from_slice(response).map_err(|err| format!("stored response: {err}"))?;
    Ok((turns, response))
}

fn lock(
    pending: &Mutex<HashMap<String, Pending>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}
