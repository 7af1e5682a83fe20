//! End-to-end behaviour across real processes' code paths: llm-sim, scheduler and gateway
//! each serve on a real loopback socket (port 0), and the tests talk HTTP to the gateway.
//! One behaviour per file.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod bad_input;
mod cancellation;
mod chat_content;
mod choices_and_logprobs;
mod completions_and_embeddings;
mod edge_limits;
mod engine_capacity;
mod governance;
mod hostile_clients;
mod images;
mod keepalive;
mod large_messages;
mod limit_store;
mod metrics;
mod ollama_api;
mod per_token_objective;
mod priority_and_fairness;
mod queue_limits;
mod redis_server;
mod reflection;
mod request_wide;
mod resilience;
mod routing;
mod scale_out;
mod scheduler_down;
mod shutdown;
mod slot_holding;
mod status_page;
mod stored_responses;
mod structured_output;
mod timeouts;
mod upstream_failures;
mod work_aware;
