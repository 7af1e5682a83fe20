//! [`Lease`]: which replica of a scheduler group is active. With `SCHEDULER_REDIS_URL`, the
//! replicas of one `SCHEDULER_GROUP` compete for one Redis key; the holder is the leader, the
//! others stand by (gRPC health NOT_SERVING; `Chat` refused UNAVAILABLE, reason `not_leader`,
//! naming the leader in `x-llmgw-leader`). Without it there is one scheduler and it always
//! leads.
//!
//! The lease is taken with a fencing epoch (a counter incremented at every change of holder)
//! and renewed every third of its TTL. Leadership is trusted only until `sent + ttl − margin`,
//! where `sent` is when the last successful renewal was *sent*: a leader that cannot reach
//! Redis, or that was paused (SIGSTOP) and resumes, stops starting generations on its own
//! clock, before another replica can have taken over.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// Takes the lease if it is free or already ours (then renews it). Reply: {1 = held by us /
/// 0 = held by another, epoch, holder}.
const ACQUIRE: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local epoch, holder = string.match(current, '^(%d+)|(.*)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(epoch), holder}
  end
  return {0, tonumber(epoch or 0), holder or current}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. '|' .. ARGV[1], 'PX', ARGV[2])
return {1, epoch, ARGV[1]}
"#;

/// Gives the lease up if it is still ours (graceful shutdown: a standby takes over at once).
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

#[derive(Debug, Clone)]
struct State {
    /// Leadership is trusted until then (`None`: not leader).
    valid_until: Option<Instant>,
    epoch: i64,
    /// Who holds the lease, as the holder advertises itself.
    leader: Option<String>,
}

/// This replica's view of the lease.
#[derive(Debug)]
pub struct Lease {
    /// `None`: no Redis, this scheduler always leads.
    state: Option<Mutex<State>>,
}

impl Lease {
    /// No lease: the only scheduler, always the leader.
    pub fn sole() -> Self {
        Self { state: None }
    }

    fn contended() -> Self {
        Self {
            state: Some(Mutex::new(State {
                valid_until: None,
                epoch: 0,
                leader: None,
            })),
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        self.state
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Whether this scheduler runs without a lease (the only one of its group).
    pub fn is_sole(&self) -> bool {
        self.state.is_none()
    }

    /// Whether this replica may start work now.
    pub fn is_leader(&self) -> bool {
        self.lock().is_none_or(|state| {
            state
                .valid_until
                .is_some_and(|until| Instant::now() < until)
        })
    }

    /// The current leader as it advertises itself, if known.
    pub fn leader(&self) -> Option<String> {
        self.lock().and_then(|state| state.leader.clone())
    }

    /// The fencing epoch of the lease this replica last held or saw.
    pub fn epoch(&self) -> i64 {
        self.lock().map_or(0, |state| state.epoch)
    }

    fn update(&self, held: bool, epoch: i64, leader: String, valid_until: Instant) {
        if let Some(mut state) = self.lock() {
            state.valid_until = held.then_some(valid_until);
            state.epoch = epoch;
            state.leader = Some(leader);
        }
    }
}

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub redis_url: String,
    pub group: String,
    pub ttl: Duration,
    /// How this replica names itself to gateways (`x-llmgw-leader`).
    pub advertise: String,
}

/// Competes for the lease until `shutdown`, then gives it up if held. Returns the lease view
/// the service consults.
pub fn start(
    config: LeaseConfig,
    readiness: std::sync::Arc<Readiness>,
    shutdown: CancellationToken,
) -> Result<(std::sync::Arc<Lease>, impl std::future::Future<Output = ()>), String> {
    let info = redis::IntoConnectionInfo::into_connection_info(config.redis_url.as_str())
        .map_err(|err| format!("SCHEDULER_REDIS_URL: {}", err.category()))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = redis::Client::open(info).map_err(|err| format!("SCHEDULER_REDIS_URL: {err}"))?;
    let step = config.ttl / 3;
    let manager = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(step))
        .set_response_timeout(Some(step))
        .set_number_of_retries(0)
        .set_max_delay(Duration::from_millis(500));
    let mut connection = client
        .get_connection_manager_lazy(manager)
        .map_err(|err| format!("SCHEDULER_REDIS_URL: {err}"))?;
    let lease = std::sync::Arc::new(Lease::contended());
    let view = std::sync::Arc::clone(&lease);
    // Unique per process: two replicas advertising the same address never share a lease.
    let holder = format!("{}#{:08x}", config.advertise, fastrand::u32(..));
    let key = format!("llmgw:lease:{{{}}}", config.group);
    let epoch_key = format!("llmgw:lease:{{{}}}:epoch", config.group);
    let ttl_ms = config.ttl.as_millis() as u64;
    // Trust the lease a fifth of the TTL less than Redis keeps it: room for clock rate
    // differences and for the time the renewal took to arrive.
    let margin = config.ttl / 5;
    let task = async move {
        let acquire = redis::Script::new(ACQUIRE);
        let mut was_leader = false;
        loop {
            let sent = Instant::now();
            let mut invocation = acquire.prepare_invoke();
            invocation
                .key(&key)
                .key(&epoch_key)
                .arg(&holder)
                .arg(ttl_ms);
            let attempt = invocation.invoke_async::<(i64, i64, String)>(&mut connection);
            match tokio::time::timeout(step, attempt).await {
                Ok(Ok((held, epoch, leader))) => {
                    let advertised = leader.rsplit_once('#').map_or(leader.as_str(), |(a, _)| a);
                    lease.update(
                        held == 1,
                        epoch,
                        advertised.to_owned(),
                        sent + config.ttl - margin,
                    );
                }
                Ok(Err(err)) => {
                    tracing::warn!(group = %config.group, error = %err, "lease: Redis did not answer")
                }
                Err(_) => {
                    tracing::warn!(group = %config.group, "lease: Redis did not answer in time")
                }
            }
            let leading = lease.is_leader();
            if leading != was_leader {
                if leading {
                    tracing::info!(group = %config.group, epoch = lease.epoch(), "lease: this replica leads");
                } else {
                    tracing::warn!(group = %config.group, leader = ?lease.leader(), "lease: this replica stands by");
                }
                readiness.set_leader(leading).await;
                was_leader = leading;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(step) => {}
            }
        }
        if was_leader {
            let value = format!("{}|{holder}", lease.epoch());
            let release = redis::Script::new(RELEASE);
            let mut invocation = release.prepare_invoke();
            invocation.key(&key).arg(value);
            let released = invocation.invoke_async::<i64>(&mut connection);
            if let Ok(Ok(1)) = tokio::time::timeout(step, released).await {
                tracing::info!(group = %config.group, "lease: released for a standby");
            }
        }
    };
    Ok((view, task))
}
