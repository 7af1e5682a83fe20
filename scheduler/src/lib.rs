//! The scheduler: a tonic gRPC service that decides who runs, who waits and who is refused,
//! and streams each admitted request's generation from a backend.
//!
//! # Layout
//! - [`config`]: flags and environment (`SCHEDULER_*`, `OLLAMA_BASE`).
//! - [`server`]: [`serve`]: gRPC service, health, reflection, probes, metrics, reload, shutdown.
//! - [`auth`]: the `SCHEDULER_AUTH_TOKEN` check on every call but health.
//! - [`service`]: the `llmgw.scheduler.v1.Scheduler` implementation: validation, routing,
//!   admission entry, list models.
//! - [`status`]: the `Status` RPC's snapshot (role, pools, queues, endpoints, tenants).
//! - [`validated`]: the request validated once at the door ([`validated::Validated`]).
//! - [`generation`]: one request's event stream in named phases: `admit` (the one door into a
//!   pool), `attempt` until the first token, fall back, `relay`; `budget` and `context`.
//! - [`admission`]: who runs, waits or is refused (policy); `admission::queue`: service order.
//! - [`routing`]: the `SCHEDULER_CONFIG` file and the routing table.
//! - [`topology`]: routes plus pools, swapped atomically; [`reload`]: SIGHUP and file watching.
//! - [`pool`]: endpoints behind one admission, and the load balancer; [`endpoint`]: one
//!   endpoint's live state; [`breaker`]: its circuit breaker.
//! - [`backend`]: the backend trait; [`backend::ollama`] and [`backend::openai`] speak the two
//!   protocols.
//! - [`framing`]: line framing (NDJSON) and [`framing::sse`], shared and property-tested.
//! - [`health`]: active probes driving availability and capacity; [`readiness`]: gRPC health
//!   from probes and leadership; [`lease`]: the Redis lease electing one active replica per
//!   `SCHEDULER_GROUP`.
//! - [`metrics`], [`metrics_server`]: Prometheus metrics on `SCHEDULER_METRICS_LISTEN`.
//! - [`error`]: the crate's error enum and its gRPC status mapping.

pub mod admission;
pub mod affinity;
pub mod auth;
pub mod backend;
pub mod breaker;
pub mod capacity;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod generation;
pub mod health;
pub mod lease;
pub mod load_poll;
pub mod metrics;
pub mod metrics_server;
pub mod occupancy;
pub mod pace;
pub mod pool;
pub mod readiness;
pub mod reload;
pub mod routing;
pub mod server;
pub mod service;
pub mod status;
pub mod topology;
pub mod validated;
pub mod work;

pub use config::Config;
pub use server::{ServeError, load, serve, serve_topologies};
