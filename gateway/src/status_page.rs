//! The status page: what the gateway and its schedulers are doing now, in one place.
//!
//! - [`recent`]: the refusals and failures of late (the last ones, and counts per tenant).
//! - [`snapshot`]: the JSON document: every scheduler's `Status` merged with this gateway's
//!   limits and refusals.
//! - `page.html`: the page itself — one self-contained file built into the binary (no build
//!   step, no CDN, no external font or script) that polls the JSON once a second.
//!
//! Served by [`crate::routes::status_page`].

pub mod recent;
pub mod snapshot;

/// The page, as served.
pub const PAGE: &str = include_str!("status_page/page.html");
