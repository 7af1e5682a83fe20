//! HTTP endpoints, one file each, and the state they share.

pub mod chat_completions;
pub mod health;
pub mod models;

use std::sync::Arc;

use crate::config::Config;
use crate::scheduler_client::SchedulerClients;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub scheduler: SchedulerClients,
    pub config: Arc<Config>,
}
