//! [`RedisResponses`]: stored responses in `[store]`'s Redis, so any gateway continues a
//! conversation another stored. One hash per response (`<prefix>:response:<id>`: `tenant`,
//! `conversation` as length-delimited protobuf `Message`s, `response` as JSON), expiring
//! after [`STORED_TTL`]; Redis's own `maxmemory` bounds the total. The write starts as the
//! answer is finished, and the answer's last byte waits for it ([`RedisResponses::written`]),
//! so the client's next turn finds it through any gateway; meanwhile this gateway answers for
//! it from `pending`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use llmgw_proto::v1::Message as Turn;
use prost::Message as _;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{STORED_TTL, Stored};
use crate::governance::store::redis::connection_manager;

/// Deletes the hash only when the tenant in it is the caller's.
const DELETE_OWNED: &str = r#"
if redis.call('HGET', KEYS[1], 'tenant') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Stored responses in Redis.
pub struct RedisResponses {
    connection: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    delete_owned: Script,
    /// Written, Redis not yet acknowledged.
    pending: Arc<Mutex<HashMap<String, Stored>>>,
    /// Woken whenever a write leaves `pending`.
    landed: Arc<Notify>,
}

impl std::fmt::Debug for RedisResponses {
    // The URL may carry a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResponses")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisResponses {
    /// Prepares a lazily connecting store (the gateway starts while Redis is down).
    pub fn connect_lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        // Each command is bounded here (a large conversation's write takes longer).
        let connection = connection_manager(url, timeout, None)?;
        Ok(Self {
            connection,
            prefix: prefix.into(),
            timeout,
            delete_owned: Script::new(DELETE_OWNED),
            pending: Arc::default(),
            landed: Arc::default(),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}:response:{id}", self.prefix)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        lock(&self.pending)
    }

    /// Writes `stored` in the background; a failed write is logged (the response was answered,
    /// only its continuation is lost).
    pub fn put(&self, id: String, stored: Stored) {
        let mut conversation = Vec::new();
        for turn in &stored.conversation {
            // Writing into a Vec cannot run out of room.
            let _ = turn.encode_length_delimited(&mut conversation);
        }
        let mut write = redis::pipe();
        write
            .atomic()
            .cmd("HSET")
            .arg(self.key(&id))
            .arg("tenant")
            .arg(&stored.tenant)
            .arg("conversation")
            .arg(conversation)
            .arg("response")
            .arg(stored.response.to_string())
            .ignore()
            .cmd("PEXPIRE")
            .arg(self.key(&id))
            .arg(STORED_TTL.as_millis() as u64)
            .ignore();
        self.pending().insert(id.clone(), stored);
        let mut connection = self.connection.clone();
        let pending = Arc::clone(&self.pending);
        let landed = Arc::clone(&self.landed);
        let key = self.key(&id);
        let timeout = self.write_timeout();
        tokio::spawn(async move {
            let written =
                tokio::time::timeout(timeout, write.query_async::<()>(&mut connection)).await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::warn!("a stored response was not written to the response store");
            }
            let deleted_meanwhile = lock(&pending).remove(&id).is_none();
            landed.notify_waiters();
            if deleted_meanwhile {
                let _ = tokio::time::timeout(
                    timeout,
                    redis::cmd("DEL")
                        .arg(key)
                        .query_async::<()>(&mut connection),
                )
                .await;
            }
        });
    }

    /// A large conversation takes longer to send than one limit decision.
    fn write_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_secs(5))
    }

    /// Returns once the write of `id` has landed (or failed, or timed out): the answer's last
    /// byte waits for it, so a client's next turn through another gateway finds it.
    pub async fn written(&self, id: &str) {
        let deadline = tokio::time::sleep(self.write_timeout());
        tokio::pin!(deadline);
        loop {
            let landed = self.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if !self.pending().contains_key(id) {
                return;
            }
            tokio::select! {
                () = &mut landed => {}
                () = &mut deadline => return,
            }
        }
    }

    pub async fn get(&self, id: &str, tenant: &str) -> Result<Option<Stored>, String> {
        if let Some(stored) = self.pending().get(id) {
            return Ok((stored.tenant == tenant).then(|| stored.clone()));
        }
        let mut connection = self.connection.clone();
        let mut read = redis::cmd("HMGET");
        read.arg(self.key(id))
            .arg("tenant")
            .arg("conversation")
            .arg("response");
        let fields: Vec<Option<Vec<u8>>> = self.bounded(read.query_async(&mut connection)).await?;
        let [Some(owner), Some(conversation), Some(response)] = <[_; 3]>::try_from(fields)
            .map_err(|fields| format!("HMGET answered {} fields", fields.len()))?
        else {
            return Ok(None);
        };
        if owner != tenant.as_bytes() {
            return Ok(None);
        }
        let mut turns = Vec::new();
        let mut rest = conversation.as_slice();
        while !rest.is_empty() {
            turns.push(
                Turn::decode_length_delimited(&mut rest)
                    .map_err(|err| format!("stored conversation: {err}"))?,
            );
        }
        let response =
            serde_json::from_slice(&response).map_err(|err| format!("stored response: {err}"))?;
        Ok(Some(Stored {
            tenant: tenant.to_owned(),
            conversation: turns,
            response,
        }))
    }

    pub async fn delete(&self, id: &str, tenant: &str) -> Result<bool, String> {
        let was_pending = {
            let mut pending = self.pending();
            let owned = pending.get(id).is_some_and(|s| s.tenant == tenant);
            if owned {
                pending.remove(id);
            }
            owned
        };
        let mut connection = self.connection.clone();
        let mut invocation = self.delete_owned.key(self.key(id));
        invocation.arg(tenant);
        let deleted: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
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

fn lock(
    pending: &Mutex<HashMap<String, Stored>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}
