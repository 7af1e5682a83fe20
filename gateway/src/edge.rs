//! [`accept`]: the HTTP edge's accept loop, with the limits a public edge needs and axum's
//! `serve` does not expose: at most `GATEWAY_MAX_CONNECTIONS` open connections (beyond that,
//! new ones wait in the kernel's backlog instead of costing memory), a header-read timeout
//! (`GATEWAY_HEADER_READ_TIMEOUT_MS`: a client that trickles its headers is disconnected), and
//! TCP_NODELAY on every accepted socket (token-sized SSE writes must not wait on Nagle).
//!
//! On shutdown it stops accepting, then drains: every request already in flight runs to its
//! last byte, and every response sent while draining carries `Connection: close` (HTTP/1.x),
//! so a keep-alive client learns to reconnect (elsewhere) from an answer, never from a dropped
//! connection. Open connections stay open until the last request ends and a short linger
//! after it: a client that wrote its next request on a stream's connection just as that stream
//! ended is answered, not cut off. Then the idle connections close. All within the grace period.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::layers::Held;

/// After the last request in flight at shutdown ended, how long idle connections stay open
/// for a next request that was already on its way.
const DRAIN_LINGER: Duration = Duration::from_millis(500);

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
        axum::body::Body::new(Held {
            body,
            permit: token,
        })
    })
}

/// Edge limits.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub grace: Duration,
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
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
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
        let (stream, _) = tokio::select! {
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
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        // Not tracked one by one: `graceful` waits for every connection at shutdown.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + limits.grace;
    drain.requests.close();
    let drained = tokio::time::timeout_at(deadline, drain.requests.wait())
        .await
        .is_ok();
    if drained && graceful.count() > 0 {
        let linger_until = (tokio::time::Instant::now() + DRAIN_LINGER).min(deadline);
        tokio::time::sleep_until(linger_until).await;
    }
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.grace.as_millis() as u64,
            "drain grace period over; closing remaining requests"
        );
    }
}
