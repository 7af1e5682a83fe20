//! Gateway configuration: one struct, environment first, every variable also a flag.

use std::time::Duration;

/// `gateway [serve]` (default) or `gateway healthcheck`.
#[derive(Debug, clap::Parser)]
#[command(name = "gateway", about = "llm-gateway HTTP edge (OpenAI-compatible)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands besides serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Exit 0 if the gateway at `--listen` answers `GET /healthz` (for container checks).
    Healthcheck,
    /// Print the SHA-256 of an API key, to paste as `sha256` in a `[[key]]` of GATEWAY_CONFIG.
    /// The key is read from standard input when not given (keeps it out of shell history).
    HashKey {
        /// The key; `-` or absent reads one line from standard input.
        key: Option<String>,
    },
}

/// Everything the gateway needs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// HTTP listen address.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Where the schedulers' gRPC services are: one URL, several comma-separated, or a DNS
    /// name resolving to several addresses (re-resolved every few seconds).
    #[arg(long, env = "SCHEDULER_URL", default_value = "http://127.0.0.1:50051")]
    pub scheduler_url: String,
    /// TOML with API keys, tenants and limits (see README, Governance). Unset = open mode:
    /// no authentication, tenant and priority from headers. Reloaded on SIGHUP and on change.
    #[arg(long = "config", env = "GATEWAY_CONFIG")]
    pub config_file: Option<String>,
    /// Bearer token sent on every Scheduler call; must match the scheduler's.
    #[arg(long, env = "SCHEDULER_AUTH_TOKEN", hide_env_values = true)]
    pub scheduler_auth_token: Option<llmgw_proto::SchedulerToken>,
    /// HTTP/2 connections to the scheduler; streams are spread over them round-robin.
    #[arg(long, env = "GATEWAY_SCHEDULER_CONNECTIONS", default_value_t = 4)]
    pub scheduler_connections: usize,
    /// Connect timeout towards the scheduler, in milliseconds.
    #[arg(
        long,
        env = "GATEWAY_SCHEDULER_CONNECT_TIMEOUT_MS",
        default_value_t = 1_000
    )]
    pub scheduler_connect_timeout_ms: u64,
    /// Largest accepted request body in bytes (larger: 413).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Budget for a whole request (queue + generation) in milliseconds; passed to the
    /// scheduler as the deadline. 0 = none.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT_MS", default_value_t = 600_000)]
    pub request_timeout_ms: u64,
    /// While a streamed request still waits for a slot, after this many milliseconds the SSE
    /// response is committed and an SSE comment is sent at this interval (proxies cut idle
    /// streams). 0 = never: the status waits for the first token.
    #[arg(long, env = "GATEWAY_SSE_KEEPALIVE_MS", default_value_t = 10_000)]
    pub sse_keepalive_ms: u64,
    /// With several schedulers: how long a request that every scheduler turned away before its
    /// first byte (down, standing by, shutting down) waits for one to become the leader, in
    /// milliseconds. Cover the lease TTL plus a second. 0 = answer 503 at once.
    #[arg(long, env = "GATEWAY_FAILOVER_WAIT_MS", default_value_t = 6_000)]
    pub failover_wait_ms: u64,
    /// Open client connections at most; beyond that new ones wait in the listen backlog.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// A new connection's first request head (HTTP/1 or HTTP/2, protocol preface included)
    /// must be complete within this many milliseconds of the accept, and every later HTTP/1
    /// head within as long; otherwise the connection is closed.
    #[arg(long, env = "GATEWAY_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this many milliseconds is closed (HTTP/1
    /// keep-alive and HTTP/2 alike).
    #[arg(long, env = "GATEWAY_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// A response that could not pass anything on to its client for this many milliseconds
    /// (the client stopped reading) has its connection dropped, and with it its scheduler call
    /// and slot.
    #[arg(long, env = "GATEWAY_SEND_TIMEOUT_MS", default_value_t = 60_000)]
    pub send_timeout_ms: u64,
    /// HTTP/2 keep-alive: a ping this often, and a peer that leaves one unanswered as long is
    /// disconnected. 0 = no pings.
    #[arg(long, env = "GATEWAY_HTTP2_KEEPALIVE_MS", default_value_t = 20_000)]
    pub http2_keepalive_ms: u64,
    /// A request body that sends no bytes for this many milliseconds is cut (408
    /// `body_timeout`, connection closed).
    #[arg(long, env = "GATEWAY_BODY_STALL_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_stall_timeout_ms: u64,
    /// A request body must be complete within this many milliseconds of its head (a client
    /// trickling a byte at a time never stalls, but is cut here: 408 `body_timeout`).
    #[arg(long, env = "GATEWAY_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Memory for request bodies being read and parsed at once, across all requests; each
    /// body byte counts 8 times (the bytes, the parsed JSON, the scheduler request and its
    /// encoding live together). A body that would go past it is refused at once with 503
    /// `gateway_overloaded`. 0 = no limit.
    #[arg(long, env = "GATEWAY_MAX_BODY_BUFFER_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_body_buffer_bytes: usize,
    /// Requests in flight at most (streams count until their last byte); beyond that, 503
    /// `gateway_overloaded` at once. 0 = no limit.
    #[arg(long, env = "GATEWAY_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Threads that run requests: 1 = a single-threaded runtime (no cross-thread wake-ups;
    /// the cheapest per request where cores are shared), 0 = one per available core.
    #[arg(long, env = "GATEWAY_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Who may read `/status` and `/status.json` in open mode: `loopback` (clients on this
    /// machine), `any`, or `off`. With API keys, an `admin = true` key reads them (`off` still
    /// turns them off).
    #[arg(long, env = "GATEWAY_STATUS_ACCESS", value_enum, default_value_t = StatusAccess::Loopback)]
    pub status_access: StatusAccess,
    /// On SIGTERM, `/readyz` answers 503 at once and the edge keeps serving (new connections
    /// too) for this many milliseconds, so load balancers stop sending before it stops
    /// accepting; then it drains for `GATEWAY_SHUTDOWN_GRACE_MS`.
    #[arg(long, env = "GATEWAY_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,
    /// Grace period for in-flight requests on SIGTERM, in milliseconds.
    #[arg(long, env = "GATEWAY_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
}

impl Config {
    /// Defaults for tests: scheduler at `scheduler_url`, everything else as documented.
    pub fn for_scheduler(scheduler_url: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            scheduler_url: scheduler_url.into(),
            config_file: None,
            scheduler_auth_token: None,
            scheduler_connections: 4,
            scheduler_connect_timeout_ms: 1_000,
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 600_000,
            sse_keepalive_ms: 10_000,
            failover_wait_ms: 6_000,
            shutdown_grace_ms: 10_000,
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
            http2_keepalive_ms: 20_000,
            body_stall_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_body_buffer_bytes: 256 * 1024 * 1024,
            shutdown_delay_ms: 0,
            max_in_flight: 4096,
            worker_threads: 0,
            status_access: StatusAccess::Loopback,
        }
    }

    pub fn scheduler_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.scheduler_connect_timeout_ms)
    }

    /// Checks values that parse but make no sense, naming the variable.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes > 64 << 20 {
            return Err(
                "GATEWAY_MAX_BODY_BYTES must be at most 67108864 (64 MiB, the scheduler's request limit)"
                    .to_owned(),
            );
        }
        let per_byte = crate::edge::body::MEMORY_PER_BODY_BYTE;
        if self.max_body_buffer_bytes != 0
            && self.max_body_buffer_bytes < self.max_body_bytes.saturating_mul(per_byte)
        {
            return Err(format!(
                "GATEWAY_MAX_BODY_BUFFER_BYTES ({}) must be 0 or at least {per_byte} × GATEWAY_MAX_BODY_BYTES ({}): no body that large could ever be read",
                self.max_body_buffer_bytes, self.max_body_bytes
            ));
        }
        for (name, value) in [
            (
                "GATEWAY_HEADER_READ_TIMEOUT_MS",
                self.header_read_timeout_ms,
            ),
            ("GATEWAY_IDLE_TIMEOUT_MS", self.idle_timeout_ms),
            ("GATEWAY_SEND_TIMEOUT_MS", self.send_timeout_ms),
            ("GATEWAY_BODY_STALL_TIMEOUT_MS", self.body_stall_timeout_ms),
            ("GATEWAY_BODY_TIMEOUT_MS", self.body_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.scheduler_connections == 0 {
            return Err("GATEWAY_SCHEDULER_CONNECTIONS must be at least 1".to_owned());
        }
        if self
            .scheduler_url
            .split(',')
            .any(|url| !url.trim().starts_with("http://"))
        {
            return Err(format!(
                "SCHEDULER_URL must be one or more comma-separated http:// URLs, got `{}`",
                self.scheduler_url
            ));
        }
        Ok(())
    }
}

/// Who may read the status page in open mode (`GATEWAY_STATUS_ACCESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusAccess {
    /// Clients connecting from a loopback address.
    Loopback,
    /// Anyone who reaches the gateway.
    Any,
    /// Nobody: `/status` and `/status.json` answer 404.
    Off,
}
