//! Hot reload of `SCHEDULER_CONFIG`: on SIGHUP, and when the file's modification time or size
//! changes (checked every second). A file that does not validate leaves the running topology in
//! place and says why in the log.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::topology::Topologies;

fn fingerprint(path: &str) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn reload(topologies: &Topologies, why: &str) {
    match topologies.reload() {
        Ok(()) => tracing::info!(trigger = why, "configuration reloaded"),
        Err(err) => {
            tracing::error!(trigger = why, error = %err, "configuration reload refused; keeping the running one")
        }
    }
}

/// Watches for SIGHUP and file changes until `shutdown`.
pub async fn watch(topologies: Arc<Topologies>, shutdown: CancellationToken) {
    let Some(path) = topologies.config_file().map(str::to_owned) else {
        return;
    };
    let mut seen = fingerprint(&path);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => futures::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = futures::future::pending::<Option<()>>();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup_received => {
                seen = fingerprint(&path);
                reload(&topologies, "SIGHUP");
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = fingerprint(&path);
                if now != seen {
                    seen = now;
                    reload(&topologies, "file changed");
                }
            }
        }
    }
}
