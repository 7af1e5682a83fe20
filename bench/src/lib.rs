//! Shared pieces of the benchmark programs: one timed chat request, and percentiles.
//!
//! # Layout
//! - [`request`]: send one chat completion and time it (total, time to first token).
//! - [`stats`]: percentiles over latency samples.

pub mod request;
pub mod stats;
