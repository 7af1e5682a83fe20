//! The scheduler: a tonic gRPC service that decides who runs, who waits and who is refused,
//! and streams each admitted request's generation from a backend.
//!
//! # Layout
//! - [`config`]: flags and environment (`SCHEDULER_*`, `OLLAMA_BASE`).
//! - [`server`]: [`serve`]: gRPC service, health, reflection, probes, shutdown.
//! - [`service`]: the `llmgw.scheduler.v1.Scheduler` implementation (validation, the event stream).
//! - [`admission`]: slots, the bounded wait queue and its refusals.
//! - [`pool`]: a backend pool: its admission and its backend.
//! - [`backend`]: the backend trait; [`backend::ollama`] speaks Ollama's native API.
//! - [`framing`]: the NDJSON line decoder backends share.
//! - [`health`]: active probes that drive gRPC health.
//! - [`error`]: the crate's error enum and its gRPC status mapping.

pub mod admission;
pub mod backend;
pub mod breaker;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod generation;
pub mod health;
pub mod metrics;
pub mod metrics_server;
pub mod pool;
pub mod reload;
pub mod routing;
pub mod server;
pub mod service;
pub mod topology;

pub use config::Config;
pub use server::{ServeError, load, serve, serve_topologies};
