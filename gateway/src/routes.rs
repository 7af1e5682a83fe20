//! HTTP endpoints, one file each, and the state they share.

pub mod call;
pub mod chat_completions;
pub mod completions;
pub mod embeddings;
mod gather;
pub mod health;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod models;
mod observation;
pub mod ollama;
pub mod ollama_info;
pub mod pipeline;
pub mod responses;
pub mod status_page;
mod stream;

use std::sync::Arc;

use crate::config::Config;
use crate::governance::Governance;
use crate::metrics::GatewayMetrics;
use crate::scheduler_client::SchedulerClients;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub scheduler: SchedulerClients,
    pub config: Arc<Config>,
    pub metrics: Arc<GatewayMetrics>,
    pub governance: Arc<Governance>,
    /// The Responses API's stored responses.
    pub responses: Arc<crate::responses_store::ResponseStore>,
    /// What was refused lately, for the status page.
    pub refusals: Arc<crate::status_page::recent::RecentRefusals>,
    /// The last `/status.json`, served again for a moment.
    pub status_cache: Arc<crate::status_page::SnapshotCache>,
    /// Cancelled when the gateway begins to shut down: `/readyz` fails from then on.
    pub stopping: tokio_util::sync::CancellationToken,
}
