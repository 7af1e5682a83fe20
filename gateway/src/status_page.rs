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

use std::time::Duration;

use axum::body::Bytes;
use tokio::time::Instant;

/// The page, as served.
pub const PAGE: &str = include_str!("status_page/page.html");

/// How long a built `/status.json` is served again.
pub const FRESH_FOR: Duration = Duration::from_millis(250);

/// The last `/status.json`: however many pages poll (or clients ask, with
/// `GATEWAY_STATUS_ACCESS=any`), the schedulers and the limit store are asked at most once per
/// [`FRESH_FOR`], one build at a time.
#[derive(Debug, Default)]
pub struct SnapshotCache {
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl SnapshotCache {
    /// The cached document if fresh, else `build`'s (the others asking meanwhile wait for it).
    pub async fn get_or_build(&self, build: impl Future<Output = Bytes>) -> Bytes {
        let mut last = self.last.lock().await;
        if let Some((at, body)) = last.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return body.clone();
        }
        let body = build.await;
        *last = Some((Instant::now(), body.clone()));
        body
    }
}
