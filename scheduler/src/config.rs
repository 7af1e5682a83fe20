//! Scheduler configuration: one struct, environment first, every variable also a flag.

use std::collections::HashMap;
use std::time::Duration;

/// `scheduler [serve]` (default) or `scheduler healthcheck`.
#[derive(Debug, clap::Parser)]
#[command(name = "scheduler", about = "llm-gateway scheduler (gRPC)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands besides serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Exit 0 if the scheduler at `--listen` answers gRPC health SERVING (for container checks).
    Healthcheck,
}

/// Everything the scheduler needs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "SCHEDULER_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: String,
    /// Prometheus `/metrics` listen address (OpenMetrics text).
    #[arg(long, env = "SCHEDULER_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    pub metrics_listen: String,
    /// Base URL of the default Ollama backend.
    #[arg(long, env = "OLLAMA_BASE", default_value = "http://localhost:11434")]
    pub ollama_base: String,
    /// TOML file with models, backend pools and routes (see README). When set, it replaces
    /// OLLAMA_BASE and the SCHEDULER_MAX_* pool settings; reloaded on SIGHUP and on change.
    #[arg(long = "config", env = "SCHEDULER_CONFIG")]
    pub config_file: Option<String>,
    /// Generations the default pool runs at once. Set it to the backend's real parallel slots
    /// (Ollama's OLLAMA_NUM_PARALLEL).
    #[arg(long, env = "SCHEDULER_MAX_CONCURRENCY", default_value_t = 4)]
    pub max_concurrency: usize,
    /// Requests allowed to wait for a slot; beyond that, refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SCHEDULER_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,
    /// Total encoded size of waiting requests allowed, in bytes.
    #[arg(long, env = "SCHEDULER_MAX_QUEUE_BYTES", default_value_t = 64 << 20)]
    pub max_queue_bytes: usize,
    /// Waiting time worth one priority class step, in milliseconds: a batch request that has
    /// waited 2× this longer than the oldest critical one goes first (no starvation).
    #[arg(long, env = "SCHEDULER_PRIORITY_AGING_MS", default_value_t = 10_000)]
    pub priority_aging_ms: u64,
    /// Tenant weights for fair sharing inside a class, e.g. `team-a=3,team-b=1` (default 1).
    #[arg(long, env = "SCHEDULER_TENANT_WEIGHTS", default_value = "")]
    pub tenant_weights: String,
    /// Longest wait for a slot before UNAVAILABLE, in milliseconds.
    #[arg(long, env = "SCHEDULER_QUEUE_TIMEOUT_MS", default_value_t = 30_000)]
    pub queue_timeout_ms: u64,
    /// Connect timeout towards backends, in milliseconds.
    #[arg(
        long,
        env = "SCHEDULER_BACKEND_CONNECT_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub backend_connect_timeout_ms: u64,
    /// Default time to first token per attempt, in milliseconds (config file may override).
    #[arg(long, env = "SCHEDULER_TTFT_TIMEOUT_MS", default_value_t = 120_000)]
    pub ttft_timeout_ms: u64,
    /// Default longest gap between tokens, in milliseconds.
    #[arg(long, env = "SCHEDULER_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Default budget for a whole generation, in milliseconds.
    #[arg(long, env = "SCHEDULER_TOTAL_TIMEOUT_MS", default_value_t = 600_000)]
    pub total_timeout_ms: u64,
    /// Interval of the active backend health probe, in milliseconds.
    #[arg(long, env = "SCHEDULER_PROBE_INTERVAL_MS", default_value_t = 5_000)]
    pub probe_interval_ms: u64,
    /// How often each engine's own load report (`/metrics`, `/props`) is read, in
    /// milliseconds; 0 = never (slots as configured, no saturation).
    #[arg(long, env = "SCHEDULER_LOAD_POLL_MS", default_value_t = 1_000)]
    pub load_poll_ms: u64,
    /// Threads that run requests: 1 = a single-threaded runtime (no cross-thread wake-ups;
    /// the cheapest per request where cores are shared), 0 = one per available core.
    #[arg(long, env = "SCHEDULER_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Grace period for in-flight streams on SIGTERM, in milliseconds.
    #[arg(long, env = "SCHEDULER_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// When set, every `Scheduler` and reflection call must carry
    /// `authorization: Bearer <token>` (else UNAUTHENTICATED); gRPC health stays open for
    /// probes. The gateway reads the same variable and sends it.
    #[arg(long, env = "SCHEDULER_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<llmgw_proto::SchedulerToken>,
    /// Without `SCHEDULER_AUTH_TOKEN` the scheduler listens on loopback only (the port of
    /// `SCHEDULER_LISTEN`): anyone who reaches it could name any tenant and `critical`.
    /// `true` serves `SCHEDULER_LISTEN` as given without a token, with a warning at start.
    #[arg(
        long,
        env = "SCHEDULER_ALLOW_UNAUTHENTICATED",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub allow_unauthenticated: bool,
    /// Redis for the group lease (high availability): replicas of one `SCHEDULER_GROUP`
    /// elect one active leader; the others stand by. Unset = one scheduler, always active.
    #[arg(long, env = "SCHEDULER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Replicas with the same group and configuration share one lease.
    #[arg(long, env = "SCHEDULER_GROUP", default_value = "default")]
    pub group: String,
    /// Lease time to live in milliseconds; renewed every third of it. Failover takes at most
    /// about this long.
    #[arg(long, env = "SCHEDULER_LEASE_TTL_MS", default_value_t = 5_000)]
    pub lease_ttl_ms: u64,
    /// How this replica names itself to gateways when it leads (`x-llmgw-leader`); default:
    /// `SCHEDULER_LISTEN`.
    #[arg(long, env = "SCHEDULER_ADVERTISE")]
    pub advertise: Option<String>,
}

impl Config {
    /// Defaults for tests: Ollama at `ollama_base`, everything else as documented.
    pub fn for_backend(ollama_base: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            metrics_listen: "127.0.0.1:0".to_owned(),
            ollama_base: ollama_base.into(),
            config_file: None,
            max_concurrency: 4,
            max_queue: 256,
            max_queue_bytes: 64 << 20,
            priority_aging_ms: 10_000,
            tenant_weights: String::new(),
            queue_timeout_ms: 30_000,
            backend_connect_timeout_ms: 2_000,
            ttft_timeout_ms: 120_000,
            idle_timeout_ms: 60_000,
            total_timeout_ms: 600_000,
            probe_interval_ms: 5_000,
            load_poll_ms: 1_000,
            shutdown_grace_ms: 10_000,
            worker_threads: 0,
            auth_token: None,
            allow_unauthenticated: false,
            redis_url: None,
            group: "default".to_owned(),
            lease_ttl_ms: 5_000,
            advertise: None,
        }
    }

    /// The lease settings, when `SCHEDULER_REDIS_URL` is set.
    pub fn lease(&self) -> Option<crate::lease::LeaseConfig> {
        Some(crate::lease::LeaseConfig {
            redis_url: self.redis_url.clone()?,
            group: self.group.clone(),
            ttl: Duration::from_millis(self.lease_ttl_ms),
            advertise: self
                .advertise
                .clone()
                .unwrap_or_else(|| self.listen.clone()),
        })
    }

    /// Where to listen, given where `SCHEDULER_LISTEN` resolved: unchanged with a token or the
    /// explicit opt-out; otherwise the same port on loopback (`true` when it was changed).
    pub fn confine(&self, wanted: std::net::SocketAddr) -> (std::net::SocketAddr, bool) {
        use std::net::{IpAddr, Ipv4Addr};
        if self.auth_token.is_some() || self.allow_unauthenticated || wanted.ip().is_loopback() {
            return (wanted, false);
        }
        // IPv4's loopback for either family: the `healthcheck` subcommand (and most local
        // clients) dial 127.0.0.1.
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        (std::net::SocketAddr::new(loopback, wanted.port()), true)
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    pub fn backend_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_connect_timeout_ms)
    }

    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms.max(100))
    }

    /// `SCHEDULER_TENANT_WEIGHTS` parsed: `tenant=weight` pairs, weights 1..=1000.
    pub fn weights(&self) -> Result<HashMap<String, u32>, String> {
        let mut weights = HashMap::new();
        for pair in self
            .tenant_weights
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let parsed = pair
                .split_once('=')
                .and_then(|(tenant, weight)| {
                    Some((tenant.trim(), weight.trim().parse::<u32>().ok()?))
                })
                .filter(|(tenant, weight)| !tenant.is_empty() && (1..=1000).contains(weight));
            let Some((tenant, weight)) = parsed else {
                return Err(format!(
                    "SCHEDULER_TENANT_WEIGHTS must be `tenant=weight` pairs with weights 1 to 1000, got `{pair}`"
                ));
            };
            weights.insert(tenant.to_owned(), weight);
        }
        Ok(weights)
    }

    /// Checks values that parse but make no sense, naming the variable.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrency == 0 {
            return Err("SCHEDULER_MAX_CONCURRENCY must be at least 1".to_owned());
        }
        if self.queue_timeout_ms == 0 {
            return Err("SCHEDULER_QUEUE_TIMEOUT_MS must be at least 1".to_owned());
        }
        if !(self.ollama_base.starts_with("http://") || self.ollama_base.starts_with("https://")) {
            return Err(format!(
                "OLLAMA_BASE must be an http:// or https:// URL, got `{}`",
                self.ollama_base
            ));
        }
        self.weights()?;
        if self.redis_url.is_some() && self.lease_ttl_ms < 300 {
            return Err("SCHEDULER_LEASE_TTL_MS must be at least 300".to_owned());
        }
        if !llmgw_proto::valid_token(&self.group) {
            return Err(
                "SCHEDULER_GROUP must be 1 to 64 characters of letters, digits, `.`, `_` or `-`"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_weights_parse_and_bad_ones_name_the_variable() {
        let mut config = Config::for_backend("http://x");
        config.tenant_weights = "team-a=3, team-b = 1".to_owned();
        assert_eq!(
            config.weights().unwrap(),
            HashMap::from([("team-a".to_owned(), 3), ("team-b".to_owned(), 1)])
        );
        config.tenant_weights = "team-a=0".to_owned();
        assert!(
            config
                .validate()
                .unwrap_err()
                .starts_with("SCHEDULER_TENANT_WEIGHTS")
        );
        config.tenant_weights = "team-a".to_owned();
        assert!(config.weights().is_err());
    }

    #[test]
    fn without_a_token_only_loopback_is_served_unless_opted_out() {
        let mut config = Config::for_backend("http://x");
        let any: std::net::SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let any6: std::net::SocketAddr = "[::]:50051".parse().unwrap();
        assert_eq!(
            config.confine(any),
            ("127.0.0.1:50051".parse().unwrap(), true)
        );
        assert_eq!(
            config.confine(any6),
            ("127.0.0.1:50051".parse().unwrap(), true)
        );
        let local: std::net::SocketAddr = "127.0.0.2:7".parse().unwrap();
        assert_eq!(config.confine(local), (local, false));
        config.allow_unauthenticated = true;
        assert_eq!(config.confine(any), (any, false));
        config.allow_unauthenticated = false;
        config.auth_token = Some("t".parse().unwrap());
        assert_eq!(config.confine(any), (any, false));
    }

    #[test]
    fn the_opt_out_reads_true_and_false_from_the_environment() {
        use clap::Parser;
        let parse = |value: &str| {
            crate::config::Cli::try_parse_from(["scheduler", "--allow-unauthenticated", value])
                .map(|cli| cli.config.allow_unauthenticated)
        };
        assert_eq!(parse("true").ok(), Some(true));
        assert_eq!(parse("false").ok(), Some(false));
        assert!(parse("maybe").is_err());
    }
}
