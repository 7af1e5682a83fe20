//! Hot reload of `SCHEDULER_CONFIG`: on SIGHUP, and when the file's modification time or size
//! changes (checked every second). A file that does not validate leaves the running topology in
//! place and says why in the log.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::topology::Topologies;

/// Watches for SIGHUP and file changes until `shutdown`.
pub async fn watch(topologies: Arc<Topologies>, shutdown: CancellationToken) {
    let Some(path) = topologies.config_file().map(str::to_owned) else {
        return;
    };
    llmgw_telemetry::signals::watch_config(path, shutdown.cancelled_owned(), |why| {
        match topologies.reload() {
            Ok(()) => tracing::info!(trigger = why, "configuration reloaded"),
            Err(err) => {
                tracing::error!(trigger = why, error = %err, "configuration reload refused; keeping the running one")
            }
        }
    })
    .await;
}
