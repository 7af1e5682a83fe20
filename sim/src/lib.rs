//! llm-sim: a deterministic simulator of an LLM server, for tests, benchmarks and the no-GPU demo.
//!
//! It speaks Ollama's native API and the OpenAI-compatible API, emulates a fixed number of
//! parallel generation slots (FIFO wait like Ollama, or 503 like a bounded server), paces tokens
//! (time to first token, time per token), injects faults, and produces text that is a pure
//! function of (prompt, seed) so tests can assert content.
//!
//! # Layout
//! - [`config`]: knobs (CLI flags / `SIM_*` env) and the fault grammar.
//! - [`text`]: the deterministic text generator ([`completion_text`]); [`structured`]: the JSON
//!   answer when a format or schema is asked for.
//! - [`tool_calls`]: the one tool call a user message that names a tool gets.
//! - [`logprobs`]: the deterministic log probability of each token, for both APIs.
//! - [`slots`]: slot emulation and the counters behind `GET /sim/stats`.
//! - [`generation`]: one paced generation, faults included, shared by both APIs.
//! - [`ollama_api`], [`openai_api`]: the two wire protocols' chat; [`completions`]: text
//!   completions in both; [`embeddings`]: embeddings in both ([`embeddings::embedding`]).
//! - [`state`]: the shared state ([`state::Sim`]); [`responses`]: streamed and cut bodies;
//!   [`refusal`]: the `Retry-After` on every 429/503.
//! - [`server`]: the router and [`serve`].

pub mod completions;
pub mod config;
pub mod embeddings;
pub mod generation;
pub mod images;
pub mod logprobs;
pub mod ollama_api;
pub mod openai_api;
pub mod prefix_cache;
pub mod refusal;
pub mod responses;
pub mod server;
pub mod slots;
pub mod state;
pub mod structured;
pub mod text;
pub mod tool_calls;

pub use config::{Fault, Overflow, SimConfig};
pub use server::{SimHandle, serve, spawn};
pub use slots::StatsSnapshot;
pub use text::{completion_text, prompt_tokens};
