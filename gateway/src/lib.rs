//! The gateway: the OpenAI-compatible HTTP edge. It owns the wire format, validation, tenants
//! and priorities, and turns each request into one server-streaming gRPC call to the scheduler.
//!
//! # Layout
//! - [`config`]: flags and environment (`GATEWAY_*`, `SCHEDULER_URL`).
//! - [`server`]: [`serve`] and the router with its layer stack; [`edge`]: the accept loop
//!   (connection limit, header-read timeout, graceful drain).
//! - [`layers`]: request-wide concerns, one layer each (request id, server span, request
//!   metric, caller).
//! - [`routes`]: one file per endpoint (chat completions, models, limits, health, metrics).
//! - [`openai`]: OpenAI wire types (plain serde data).
//! - [`translate`]: the only module that knows both OpenAI and proto types.
//! - [`caller`]: who is calling (tenant, priority, request id).
//! - [`governance`]: `GATEWAY_CONFIG`: API keys, tenants, rate limits and token budgets, in
//!   memory or in Redis.
//! - [`scheduler_client`]: a small pool of HTTP/2 connections to the scheduler.
//! - [`error`]: [`error::ApiError`] and its OpenAI error envelope.
//! - [`status_table`]: the one gRPC code → HTTP status table.
//! - [`metrics`]: the Prometheus metrics the routes record.
//! - [`backend_label`]: the opaque endpoint label `x-llmgw-backend` shows clients.
//! - [`responses_store`]: the Responses API's stored responses (`previous_response_id`).
//! - [`status_page`]: `GET /status` and `/status.json`: schedulers, pools, tenants, refusals.

pub mod backend_label;
pub mod caller;
pub mod config;
pub mod edge;
pub mod error;
pub mod governance;
pub mod layers;
pub mod metrics;
pub mod openai;
pub mod responses_store;
pub mod routes;
pub mod scheduler_client;
pub mod server;
pub mod status_page;
pub mod status_table;
pub mod translate;

pub use config::Config;
pub use server::{ServeError, router, serve};
