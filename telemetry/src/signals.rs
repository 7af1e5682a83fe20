//! The process's signals, shared by every binary: Ctrl-C, and SIGTERM on Unix (what
//! containers and service managers send) to stop; SIGHUP or a changed file to reload config.

/// Resolves on the first Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Calls `reload` on SIGHUP and whenever the file at `path` changes (modification time or size,
/// checked every second), until `stop` resolves. Shared by every binary with a config file, so
/// reloading works the same everywhere.
pub async fn watch_config(
    path: String,
    stop: impl std::future::Future<Output = ()>,
    reload: impl Fn(&'static str),
) {
    use std::time::{Duration, SystemTime};
    fn fingerprint(path: &str) -> Option<(SystemTime, u64)> {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    }
    let mut seen = fingerprint(&path);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut stop = std::pin::pin!(stop);
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<Option<()>>();
        tokio::select! {
            () = &mut stop => return,
            _ = hangup_received => {
                seen = fingerprint(&path);
                reload("SIGHUP");
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = fingerprint(&path);
                if now != seen {
                    seen = now;
                    reload("file changed");
                }
            }
        }
    }
}
