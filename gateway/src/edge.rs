//! [`accept`]: the HTTP edge's accept loop, with the limits a public edge needs and axum's
//! `serve` does not give:
//!
//! - at most `GATEWAY_MAX_CONNECTIONS` open connections (beyond that, new ones wait in the
//!   kernel's backlog instead of costing memory);
//! - every connection under deadlines ([`watch`]): its first request's head within
//!   `GATEWAY_HEADER_READ_TIMEOUT_MS` of the accept (HTTP/1 and HTTP/2 alike, the protocol
//!   preface included), closed after `GATEWAY_IDLE_TIMEOUT_MS` without a request in flight,
//!   HTTP/2 keep-alive pings that close a peer gone silent, and dropped when a response has
//!   waited `GATEWAY_SEND_TIMEOUT_MS` on a client that stopped reading;
//! - every request body under deadlines and a gateway-wide memory budget ([`body`]);
//! - a connection closed after an answer that did not read the whole body lingers, reading
//!   and dropping, so the client gets the answer rather than a reset ([`linger`]);
//! - TCP_NODELAY on every accepted socket (token-sized SSE writes must not wait on Nagle).
//!
//! On shutdown it stops accepting, then drains: every request already in flight runs to its
//! last byte, and every response sent while draining carries `Connection: close` (HTTP/1.x),
//! so a keep-alive client learns to reconnect (elsewhere) from an answer, never from a dropped
//! connection. Open connections stay open until the last request ends and a short linger
//! after it: a client that wrote its next request on a stream's connection just as that stream
//! ended is answered, not cut off. Then the idle connections close. All within the grace period.

pub mod body;
pub mod linger;
pub mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::layers::PermitBody;
use body::{BodyLimits, BodyTicket, GuardedBody};
use linger::Lingering;
use watch::{ConnectionDeadlines, ConnectionWatch, Expired, Watched};

/// After the last request in flight at shutdown ended, how long idle connections stay open
/// for a next request that was already on its way.
const DRAIN_LINGER: Duration = Duration::from_millis(500);

/// How long a connection told to close (expired, or at shutdown) may take to say goodbye
/// (an HTTP/2 GOAWAY) before its socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Requests in flight (until their body's last byte) and whether the edge is draining.
#[derive(Debug, Clone)]
struct Drain {
    requests: TaskTracker,
    draining: CancellationToken,
}

/// Tracks each request until its body ends; while draining, tells HTTP/1.x clients to close.
async fn track(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    let token = drain.requests.token();
    let http1 = request.version() < Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 && drain.draining.is_cancelled() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.map(|body| {
        axum::body::Body::new(PermitBody {
            body,
            permit: token,
        })
    })
}

/// Edge limits.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    pub max_connections: usize,
    /// The first request's head, from the accept; HTTP/1's later heads too.
    pub header_read_timeout: Duration,
    /// A connection without a request in flight.
    pub idle_timeout: Duration,
    /// A response that waits on a client that stopped reading.
    pub send_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (and how long a ping may go unanswered); zero = none.
    pub http2_keepalive: Duration,
    pub bodies: BodyLimits,
    pub grace: Duration,
    /// Where connections closed on a deadline are counted.
    pub metrics: Arc<crate::metrics::GatewayMetrics>,
}

/// Serves `app` on `listener` until `shutdown`, then drains for at most `limits.grace`.
pub async fn accept(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    shutdown: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    if !limits.http2_keepalive.is_zero() {
        builder
            .http2()
            .keep_alive_interval(limits.http2_keepalive)
            .keep_alive_timeout(limits.http2_keepalive);
    }
    let deadlines = ConnectionDeadlines {
        head: limits.header_read_timeout,
        idle: limits.idle_timeout,
        send: limits.send_timeout,
    };
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let lingering = Arc::new(Semaphore::new(linger::MAX_LINGERING));
    let open = TaskTracker::new();
    // Cancelled once the requests in flight at shutdown have drained: idle connections close.
    let close_all = CancellationToken::new();
    let drain = Drain {
        requests: TaskTracker::new(),
        draining: shutdown.clone(),
    };
    let app = app.layer(middleware::from_fn_with_state(drain.clone(), track));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let watch = ConnectionWatch::new();
        let service = TowerToHyperService::new(EdgeService {
            app: app.clone(),
            watch: Arc::clone(&watch),
            bodies: limits.bodies.clone(),
            peer,
        });
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(Lingering::new(stream, Arc::clone(&lingering))),
                service,
            )
            .into_owned();
        let close_all = close_all.clone();
        let metrics = Arc::clone(&limits.metrics);
        open.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            // Set once a quiet connection was told to close: past it, and with no request in
            // flight (one may have slipped in before an HTTP/2 GOAWAY arrived), it is dropped.
            let mut give_up: Option<tokio::time::Instant> = None;
            loop {
                let expiry = watch.expiry(deadlines);
                let idle = expiry.is_some();
                let expired = async {
                    match expiry {
                        Some((at, why)) => {
                            tokio::time::sleep_until(at).await;
                            why
                        }
                        None => std::future::pending().await,
                    }
                };
                let abandon = async {
                    match give_up {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(err) = ended {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    () = watch.changed() => {}
                    why = expired, if !closing => {
                        // A request may have begun or moved just as the timer fired: look again.
                        let now = tokio::time::Instant::now();
                        if watch.expiry(deadlines).is_none_or(|(at, _)| at > now) {
                            continue;
                        }
                        if why == Expired::Send {
                            // Nothing more reaches this client: dropping the connection drops
                            // its responses, their scheduler calls and their slots.
                            tracing::debug!(why = why.as_str(), "dropping a connection whose client stopped reading");
                            metrics.connection_closed(why.as_str());
                            break;
                        }
                        tracing::debug!(why = why.as_str(), "closing a quiet connection");
                        metrics.connection_closed(why.as_str());
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        give_up = Some(now + CLOSE_LINGER);
                    }
                    () = abandon, if idle => break,
                    () = close_all.cancelled(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + limits.grace;
    drain.requests.close();
    open.close();
    let drained = tokio::time::timeout_at(deadline, drain.requests.wait())
        .await
        .is_ok();
    if drained && !open.is_empty() {
        let linger_until = (tokio::time::Instant::now() + DRAIN_LINGER).min(deadline);
        tokio::time::sleep_until(linger_until).await;
    }
    close_all.cancel();
    if tokio::time::timeout_at(deadline, open.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.grace.as_millis() as u64,
            "drain grace period over; closing remaining requests"
        );
    }
}

/// The router behind one connection: each request is in flight on the connection's watch
/// until its response's last byte, its body is guarded, and its share of the body budget is
/// given back once the handler has answered.
#[derive(Clone)]
struct EdgeService {
    app: Router,
    watch: Arc<ConnectionWatch>,
    bodies: BodyLimits,
    /// The client's address (the status page serves loopback clients in open mode).
    peer: std::net::SocketAddr,
}

impl<B> tower::Service<axum::http::Request<B>> for EdgeService
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let in_flight = self.watch.begin();
        let ticket = Arc::new(BodyTicket::default());
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(Arc::clone(&ticket));
        // Only the status page asks who connected: other requests pay nothing for it.
        if parts.uri.path().starts_with("/status") {
            parts
                .extensions
                .insert(crate::routes::status_page::Peer(self.peer));
        }
        let body = GuardedBody::new(body, self.bodies.clone(), Arc::clone(&ticket));
        let request = Request::from_parts(parts, axum::body::Body::new(body));
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request).await?;
            ticket.release();
            Ok(response.map(|body| axum::body::Body::new(Watched::new(body, in_flight))))
        })
    }
}
