//! Scheduler configuration: one struct, environment first, every variable also a flag.

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
    /// Base URL of the default Ollama backend.
    #[arg(long, env = "OLLAMA_BASE", default_value = "http://localhost:11434")]
    pub ollama_base: String,
    /// TOML file with models and backend pools (routing issue; not read yet).
    #[arg(long = "config", env = "SCHEDULER_CONFIG")]
    pub config_file: Option<String>,
    /// Generations the default pool runs at once. Set it to the backend's real parallel slots
    /// (Ollama's OLLAMA_NUM_PARALLEL).
    #[arg(long, env = "SCHEDULER_MAX_CONCURRENCY", default_value_t = 4)]
    pub max_concurrency: usize,
    /// Requests allowed to wait for a slot; beyond that, refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SCHEDULER_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,
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
    /// Interval of the active backend health probe, in milliseconds.
    #[arg(long, env = "SCHEDULER_PROBE_INTERVAL_MS", default_value_t = 5_000)]
    pub probe_interval_ms: u64,
    /// Grace period for in-flight streams on SIGTERM, in milliseconds.
    #[arg(long, env = "SCHEDULER_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
}

impl Config {
    /// Defaults for tests: Ollama at `ollama_base`, everything else as documented.
    pub fn for_backend(ollama_base: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            ollama_base: ollama_base.into(),
            config_file: None,
            max_concurrency: 4,
            max_queue: 256,
            queue_timeout_ms: 30_000,
            backend_connect_timeout_ms: 2_000,
            probe_interval_ms: 5_000,
            shutdown_grace_ms: 10_000,
        }
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

    /// Checks values that parse but make no sense, naming the variable.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrency == 0 {
            return Err("SCHEDULER_MAX_CONCURRENCY must be at least 1".to_owned());
        }
        if self.queue_timeout_ms == 0 {
            return Err("SCHEDULER_QUEUE_TIMEOUT_MS must be at least 1".to_owned());
        }
        if !self.ollama_base.starts_with("http://") {
            return Err(format!(
                "OLLAMA_BASE must be an http:// URL, got `{}`",
                self.ollama_base
            ));
        }
        if let Some(path) = &self.config_file {
            return Err(format!(
                "SCHEDULER_CONFIG ({path}) is not supported yet: unset it to serve one Ollama pool at OLLAMA_BASE"
            ));
        }
        Ok(())
    }
}
