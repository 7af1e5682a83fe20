//! [`ConnectionWatch`]: one connection's deadlines that hyper does not keep for us.
//!
//! - **Head**: the first request's head must be complete within `GATEWAY_HEADER_READ_TIMEOUT_MS`
//!   of the accept. hyper-util reads the protocol preface with no timer at all, and HTTP/2 has
//!   no header timer: without this a socket that sends nothing, or only the HTTP/2 preface,
//!   holds its connection place forever.
//! - **Idle**: a connection with no request in flight is closed `GATEWAY_IDLE_TIMEOUT_MS` after
//!   its last request ended (HTTP/2 has no idle timeout of its own; an HTTP/2 client that
//!   starts a request's head and never finishes it has no request in flight either).
//! - **Send**: a response that has handed hyper a piece which hyper could not pass on for
//!   `GATEWAY_SEND_TIMEOUT_MS` (the client stopped reading: its TCP window, or its HTTP/2
//!   stream window, stays shut while its stack still answers probes and pings) has its
//!   connection dropped, and with it the scheduler call and its slot.
//!
//! The accept loop's connection task sleeps until [`ConnectionWatch::expiry`] and closes the
//! connection once it passes; every request holds an [`InFlight`] while it runs (until its
//! response body's last byte), which moves the expiry, and marks with [`InFlight::handed`] /
//! [`InFlight::asked`] whether its response waits on the client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The connection deadlines.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionDeadlines {
    pub head: Duration,
    pub idle: Duration,
    pub send: Duration,
}

#[derive(Debug)]
struct State {
    /// Each request in flight: since when (ms after `opened`, + 1) its response has waited
    /// on the client; 0 while it does not.
    in_flight: Vec<Arc<AtomicU64>>,
    /// A request's head arrived on this connection.
    served: bool,
    /// When the connection was accepted or its last request ended.
    since: Instant,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No complete request head within the head timeout of the accept.
    Head,
    /// No request in flight for the idle timeout.
    Idle,
    /// A response waited on the client for the send timeout (or, not yet: a time to look
    /// again while requests are in flight).
    Send,
}

impl Expired {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Head => "head_timeout",
            Self::Idle => "idle_timeout",
            Self::Send => "send_timeout",
        }
    }
}

/// One connection's requests in flight and the deadline they imply.
#[derive(Debug)]
pub struct ConnectionWatch {
    opened: Instant,
    state: Mutex<State>,
    changed: Notify,
}

impl ConnectionWatch {
    pub fn new() -> Arc<Self> {
        let opened = Instant::now();
        Arc::new(Self {
            opened,
            state: Mutex::new(State {
                in_flight: Vec::new(),
                served: false,
                since: opened,
            }),
            changed: Notify::new(),
        })
    }

    /// A request's head arrived: held until the request's response ends.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let waiting = Arc::new(AtomicU64::new(0));
        if let Ok(mut state) = self.state.lock() {
            state.in_flight.push(Arc::clone(&waiting));
            state.served = true;
        }
        self.changed.notify_one();
        InFlight {
            watch: Arc::clone(self),
            waiting,
        }
    }

    /// When to close the connection (or, with requests in flight, to look again), and why.
    pub fn expiry(&self, deadlines: ConnectionDeadlines) -> Option<(Instant, Expired)> {
        let state = self.state.lock().ok()?;
        if state.in_flight.is_empty() {
            return Some(if state.served {
                (state.since + deadlines.idle, Expired::Idle)
            } else {
                (state.since + deadlines.head, Expired::Head)
            });
        }
        let oldest = state
            .in_flight
            .iter()
            .map(|waiting| waiting.load(Ordering::Relaxed))
            .filter(|since| *since > 0)
            .min();
        let at = match oldest {
            Some(since) => self.opened + Duration::from_millis(since - 1) + deadlines.send,
            // Nothing waits on the client now: look again within one send timeout.
            None => Instant::now() + deadlines.send,
        };
        Some((at, Expired::Send))
    }

    /// Resolves after a request began or ended since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct InFlight {
    watch: Arc<ConnectionWatch>,
    waiting: Arc<AtomicU64>,
}

impl InFlight {
    /// The response handed hyper a piece: until hyper asks for the next, it waits on the client.
    pub fn handed(&self) {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            let since = self.watch.opened.elapsed().as_millis() as u64 + 1;
            self.waiting.store(since, Ordering::Relaxed);
        }
    }

    /// hyper asked for the response's next piece: the client is keeping up.
    pub fn asked(&self) {
        self.waiting.store(0, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut state) = self.watch.state.lock() {
            state
                .in_flight
                .retain(|waiting| !Arc::ptr_eq(waiting, &self.waiting));
            state.since = Instant::now();
        }
        self.watch.changed.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`InFlight`] until it ends and tells it when
    /// the response waits on the client.
    pub struct Watched<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B> Watched<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self { body, in_flight }
    }
}

impl<B: http_body::Body> http_body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        this.in_flight.asked();
        let polled = this.body.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            this.in_flight.handed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINES: ConnectionDeadlines = ConnectionDeadlines {
        head: Duration::from_secs(1),
        idle: Duration::from_secs(5),
        send: Duration::from_secs(3),
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_head_deadline_and_a_busy_one_the_send_check() {
        let watch = ConnectionWatch::new();
        let accepted = Instant::now();
        assert_eq!(
            watch.expiry(DEADLINES),
            Some((accepted + DEADLINES.head, Expired::Head))
        );
        let request = watch.begin();
        assert_eq!(
            watch.expiry(DEADLINES),
            Some((Instant::now() + DEADLINES.send, Expired::Send)),
            "busy: only a look again"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(request);
        let ended = Instant::now();
        assert_eq!(
            watch.expiry(DEADLINES),
            Some((ended + DEADLINES.idle, Expired::Idle))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_waiting_on_the_client_expires_after_the_send_timeout() {
        let watch = ConnectionWatch::new();
        let request = watch.begin();
        tokio::time::advance(Duration::from_secs(10)).await;
        request.handed();
        let handed = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        request.handed(); // a second piece does not move the clock back
        assert_eq!(
            watch.expiry(DEADLINES),
            Some((handed + DEADLINES.send, Expired::Send))
        );
        request.asked();
        assert_eq!(
            watch.expiry(DEADLINES),
            Some((Instant::now() + DEADLINES.send, Expired::Send))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_begin_and_end_wakes_the_watcher() {
        let watch = ConnectionWatch::new();
        let request = watch.begin();
        assert!(
            tokio::time::timeout(Duration::from_millis(1), watch.changed())
                .await
                .is_ok(),
            "begin did not wake the watcher"
        );
        drop(request);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), watch.changed())
                .await
                .is_ok(),
            "end did not wake the watcher"
        );
    }
}
