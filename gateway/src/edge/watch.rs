//! [`ConnectionWatch`]: one connection's deadlines that hyper does not keep for us.
//!
//! - **Head**: the first request's head must be complete within `GATEWAY_HEADER_READ_TIMEOUT_MS`
//!   of the accept. hyper-util reads the protocol preface with no timer at all, and HTTP/2 has
//!   no header timer: without this a socket that sends nothing, or only the HTTP/2 preface,
//!   holds its connection place forever.
//! - **Idle**: a connection with no request in flight is closed `GATEWAY_IDLE_TIMEOUT_MS` after
//!   its last request ended (HTTP/2 has no idle timeout of its own; an HTTP/2 client that
//!   starts a request's head and never finishes it has no request in flight either).
//!
//! The accept loop's connection task sleeps until [`ConnectionWatch::expiry`] and closes the
//! connection once it passes; every request holds an [`InFlight`] while it runs (until its
//! response body's last byte), which moves the expiry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The two connection deadlines.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionDeadlines {
    pub head: Duration,
    pub idle: Duration,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// A request's head arrived on this connection.
    served: bool,
    /// When the connection was accepted or its last request ended.
    since: Instant,
}

/// Why a quiet connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No complete request head within the head timeout of the accept.
    Head,
    /// No request in flight for the idle timeout.
    Idle,
}

impl Expired {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Head => "head_timeout",
            Self::Idle => "idle_timeout",
        }
    }
}

/// One connection's requests in flight and the deadline they imply.
#[derive(Debug)]
pub struct ConnectionWatch {
    state: Mutex<State>,
    changed: Notify,
}

impl ConnectionWatch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                served: false,
                since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    /// A request's head arrived: held until the request's response ends.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        if let Ok(mut state) = self.state.lock() {
            state.in_flight += 1;
            state.served = true;
        }
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// When the connection is to be closed, and why; `None` while a request is in flight.
    pub fn expiry(&self, deadlines: ConnectionDeadlines) -> Option<(Instant, Expired)> {
        let state = self.state.lock().ok()?;
        if state.in_flight > 0 {
            return None;
        }
        Some(if state.served {
            (state.since + deadlines.idle, Expired::Idle)
        } else {
            (state.since + deadlines.head, Expired::Head)
        })
    }

    /// Resolves after a request began or ended since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnectionWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.in_flight = state.in_flight.saturating_sub(1);
            state.since = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINES: ConnectionDeadlines = ConnectionDeadlines {
        head: Duration::from_secs(1),
        idle: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_head_deadline_and_a_busy_one_none() {
        let watch = ConnectionWatch::new();
        let accepted = Instant::now();
        assert_eq!(
            watch.expiry(DEADLINES),
            Some((accepted + DEADLINES.head, Expired::Head))
        );
        let request = watch.begin();
        assert_eq!(watch.expiry(DEADLINES), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(request);
        let ended = Instant::now();
        assert_eq!(
            watch.expiry(DEADLINES),
            Some((ended + DEADLINES.idle, Expired::Idle))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_begin_and_end_wakes_the_watcher() {
        let watch = ConnectionWatch::new();
        let request = watch.begin();
        tokio::time::timeout(Duration::from_millis(1), watch.changed())
            .await
            .ok()
            .unwrap_or_else(|| panic!("begin did not wake the watcher"));
        drop(request);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), watch.changed())
                .await
                .is_ok(),
            "end did not wake the watcher"
        );
    }
}
