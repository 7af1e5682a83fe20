//! [`RedisStore`]: counters in Redis, shared by every gateway. Each decision is one `EVALSHA`
//! of `limits.lua` (the twin of the ledger) on the server's clock; keys are hash-tagged per
//! tenant (`<prefix>:{tenant}:…`), so the store works on Redis Cluster. The connection manager
//! reconnects by itself: when Redis comes back, limits work again without a restart.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use super::{LimitStore, Reserve, StoreError};
use crate::governance::ledger::{Decision, Limit, Limits, Remaining};

/// Counters in Redis.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    script: Arc<Script>,
    prefix: Arc<str>,
}

impl std::fmt::Debug for RedisStore {
    // The URL may carry a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares a lazily connecting store; nothing is sent until the first decision, so the
    /// gateway starts while Redis is still down (and `on_error` decides meanwhile).
    pub fn connect_lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let connection = connection_manager(url, timeout, Some(timeout)).map_err(StoreError)?;
        Ok(Self {
            connection,
            script: Arc::new(Script::new(include_str!("limits.lua"))),
            prefix: prefix.into(),
        })
    }

    fn call(
        &self,
        op: &'static str,
        tenant: &str,
        id: &str,
        tokens: u64,
        limits: &Limits,
        ttl_ms: u64,
    ) -> BoxFuture<'static, Result<Vec<i64>, StoreError>> {
        let key = |what: &str| format!("{}:{{{}}}:{}", self.prefix, tenant, what);
        let keys = [key("state"), key("held"), key("detail"), key("cancelled")];
        let args = [
            tokens,
            limits.rpm.unwrap_or(0),
            limits.tpm.unwrap_or(0),
            limits.max_concurrent.unwrap_or(0),
            limits.tokens_per_day.unwrap_or(0),
            limits.tokens_per_month.unwrap_or(0),
            ttl_ms,
        ];
        let id = id.to_owned();
        let script = Arc::clone(&self.script);
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation.arg(op).arg(&id);
            for arg in args {
                invocation.arg(arg);
            }
            invocation
                .invoke_async::<Vec<i64>>(&mut connection)
                .await
                .map_err(|err| StoreError(err.to_string()))
        })
    }
}

/// A lazily connecting, self-reconnecting connection to `[store]`'s Redis (shared with the
/// Responses API's store): TCP_NODELAY, `timeout` to connect, `response_timeout` per command
/// (`None`: the caller bounds its own).
pub fn connection_manager(
    url: &str,
    timeout: Duration,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager, String> {
    let info = url
        .into_connection_info()
        .map_err(|err| format!("invalid store.redis_url: {}", err.category()))?
        // Decisions are tiny request/response pairs: Nagle would add delay to each.
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = redis::Client::open(info).map_err(|err| err.to_string())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    client
        .get_connection_manager_lazy(config)
        .map_err(|err| err.to_string())
}

/// Reads the script's reply into what remains, given which limits exist.
fn remaining(reply: &[i64], limits: &Limits) -> Result<Remaining, StoreError> {
    let [
        _,
        _,
        _,
        requests,
        tokens,
        concurrent,
        today,
        month,
        rq_reset,
        tk_reset,
        day_reset,
        month_reset,
    ] = reply
    else {
        return Err(StoreError(format!(
            "unexpected script reply of {} values",
            reply.len()
        )));
    };
    let count = |v: i64| v.max(0) as u64;
    Ok(Remaining {
        requests: limits.rpm.map(|_| count(*requests)),
        tokens: limits.tpm.map(|_| *tokens),
        concurrent: limits.max_concurrent.map(|_| count(*concurrent)),
        today: limits.tokens_per_day.map(|_| count(*today)),
        this_month: limits.tokens_per_month.map(|_| count(*month)),
        requests_reset_ms: count(*rq_reset),
        tokens_reset_ms: count(*tk_reset),
        day_reset_ms: count(*day_reset),
        month_reset_ms: count(*month_reset),
    })
}

impl LimitStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn reserve(&self, ask: Reserve) -> BoxFuture<'static, Result<Decision, StoreError>> {
        let call = self.call(
            "reserve",
            &ask.tenant,
            &ask.id,
            ask.tokens,
            &ask.limits,
            ask.ttl_ms,
        );
        Box::pin(async move {
            let reply = call.await?;
            let remaining = remaining(&reply, &ask.limits)?;
            match (reply[0], Limit::from_code(reply[1])) {
                (1, _) => Ok(Decision::Granted(remaining)),
                (0, Some(limit)) => Ok(Decision::Refused {
                    limit,
                    retry_after_ms: u64::try_from(reply[2]).ok(),
                    remaining,
                }),
                _ => Err(StoreError(format!("unexpected script reply {reply:?}"))),
            }
        })
    }

    fn settle(
        &self,
        tenant: Arc<str>,
        id: String,
        used: u64,
        limits: Limits,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let call = self.call("settle", &tenant, &id, used, &limits, 0);
        Box::pin(async move { call.await.map(|_| ()) })
    }

    fn cancel(
        &self,
        tenant: Arc<str>,
        id: String,
        limits: Limits,
        ttl_ms: u64,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let call = self.call("cancel", &tenant, &id, 0, &limits, ttl_ms);
        Box::pin(async move { call.await.map(|_| ()) })
    }

    fn peek(
        &self,
        tenant: Arc<str>,
        limits: Limits,
    ) -> BoxFuture<'static, Result<Remaining, StoreError>> {
        let call = self.call("peek", &tenant, "", 0, &limits, 0);
        Box::pin(async move { remaining(&call.await?, &limits) })
    }
}
