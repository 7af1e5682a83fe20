//! Routing: which pool and which upstream model serve a public model name for a tenant.
//!
//! # Layout
//! - [`config`]: the `SCHEDULER_CONFIG` TOML file (plain data, `deny_unknown_fields`) and its
//!   validation, with messages that name the key.
//! - [`table`]: the resolved routing table: aliases, versions, weighted splits, tenant pins,
//!   fallbacks.

pub mod config;
pub mod table;

pub use config::{ConfigError, FileConfig};
pub use table::{Route, RouteTable};
