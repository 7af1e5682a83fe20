//! Shared pieces of the benchmark programs: one timed chat request, percentiles, and what a
//! process costs.
//!
//! # Layout
//! - [`request`]: send one chat completion and time it (total, time to first token).
//! - [`stats`]: percentiles over latency samples.
//! - [`proc_stats`]: CPU time and resident memory of a process, from `/proc`.
//! - [`work`]: the work-aware scenarios (token shares, long prompts, objectives).

pub mod proc_stats;
pub mod request;
pub mod stats;
pub mod work;
