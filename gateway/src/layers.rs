//! Request-wide concerns as layers, so every route — and every early refusal, such as a 400
//! for a bad header — gets them, not only the handlers that remember. [`crate::server::router`]
//! composes them; outermost first:
//!
//! 1. [`request_id`]: the id the client sent (if well-formed) or a fresh one, as an extension
//!    and as `x-request-id` on every response.
//! 2. [`server_span`]: the HTTP server span, a child of the caller's W3C trace context, entered
//!    for the whole request (streams keep it until their last byte); `x-trace-id` on responses.
//! 3. [`observe`]: `llmgw_http_requests_total` for every response and its duration (streams
//!    record theirs when they end), labelled by the matched route, never the raw path; a
//!    refusal or failure is also remembered for the status page.
//! 4. [`shed`]: beyond `GATEWAY_MAX_IN_FLIGHT` requests in flight, a fast 503.
//! 5. [`caller`] (API routes only): who is calling and how urgent it is — the API key's tenant,
//!    or open mode's headers — as a [`crate::caller::Caller`] extension, with `x-llmgw-tenant`
//!    / `x-llmgw-priority` explaining the decision; a bad header is a 400, a bad key a 401.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use llmgw_telemetry::{TraceContext, propagation};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use crate::caller::{priority_name, valid_token};
use crate::edge::body::BodyTicket;
use crate::error::{ApiError, Refusal};
use crate::governance::Governance;
use crate::metrics::GatewayMetrics;
use crate::status_page::recent::{RecentRefusals, Refused};

/// The request's id, as the client sent it or as the gateway made it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The caller's W3C trace context, for handlers that call onwards.
#[derive(Debug, Clone)]
pub struct IncomingTrace(pub TraceContext);

/// Set by a handler on its response once the scheduler accepted the model name (before that,
/// metrics say `-`, so arbitrary client input cannot mint series).
#[derive(Debug, Clone)]
pub struct Observed {
    pub model: String,
    /// The body is a stream that records its own duration when it ends.
    pub streaming: bool,
}

/// Route label of requests no route matched.
const UNMATCHED: &str = "unmatched";

fn route_of(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned())
}

/// Layer 1: the request id.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| valid_token(id))
        .map_or_else(|| format!("req_{:016x}", fastrand::u64(..)), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    put(response.headers_mut(), "x-request-id", &id);
    response
}

/// Layer 2: the server span.
pub async fn server_span(mut request: Request, next: Next) -> Response {
    let route = route_of(&request);
    let method = request.method().as_str().to_owned();
    let incoming = propagation::extract_http(request.headers());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |id| id.0.as_str())
        .to_owned();
    let span = tracing::info_span!(
        "http_request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        "http.request.method" = %method,
        "http.route" = %route,
        "url.path" = %request.uri().path(),
        "http.response.status_code" = tracing::field::Empty,
        "gen_ai.request.model" = tracing::field::Empty,
        "llmgw.tenant" = tracing::field::Empty,
        "llmgw.priority" = tracing::field::Empty,
        "llmgw.key" = tracing::field::Empty,
        "llmgw.ratelimit.decision" = tracing::field::Empty,
        request_id = %request_id,
        // Log context (trace attributes stay off log lines): who called, by key label.
        tenant = tracing::field::Empty,
        key = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let own_trace_id = propagation::adopt(&span, incoming.clone());
    let trace_id = own_trace_id.or_else(|| propagation::trace_id(&incoming));
    request.extensions_mut().insert(IncomingTrace(incoming));
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(trace_id) = trace_id {
        put(response.headers_mut(), "x-trace-id", &trace_id);
    }
    response
}

/// What layer 3 writes to: the metrics, and the status page's recent refusals.
#[derive(Debug, Clone)]
pub struct Observers {
    pub metrics: Arc<GatewayMetrics>,
    pub refusals: Arc<RecentRefusals>,
}

/// Layer 3: the request metric and, for whole responses, the duration; a refusal or failure
/// (400 and above) is remembered for the status page.
pub async fn observe(State(observers): State<Observers>, request: Request, next: Next) -> Response {
    let received = Instant::now();
    let route = route_of(&request);
    let request_id = request.extensions().get::<RequestId>().cloned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let (model, streaming) = response
        .extensions()
        .get::<Observed>()
        .map_or(("-", false), |o| (o.model.as_str(), o.streaming));
    observers.metrics.request(&route, model, status);
    if !streaming {
        observers
            .metrics
            .duration(&route, model, status, received.elapsed().as_secs_f64());
    }
    // API routes only: probes, metrics and unmatched paths are not a tenant's refusals.
    if status >= 400 && (route.starts_with("/v1/") || route.starts_with("/api/")) {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        observers.refusals.record(Refused {
            at: llmgw_telemetry::timestamp::now_rfc3339(),
            request_id: request_id.map_or_else(String::new, |id| id.0),
            tenant: header("x-llmgw-tenant"),
            route,
            model: model.to_owned(),
            status,
            reason: header("x-llmgw-reason"),
        });
    }
    response
}

/// Layer 4: the caller — the API key's tenant, or in open mode `x-tenant-id` and `x-priority`.
/// Applied to the API routes only: probes and `/metrics` need no key.
pub async fn caller(
    State(state): State<CallerState>,
    mut request: Request,
    next: Next,
) -> Response {
    let governance = &state.governance;
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(String::new, |id| id.0.clone());
    let caller = match governance.identify(request.headers(), request_id) {
        Ok(caller) => caller,
        Err(err) => return refuse_before_the_body(request, err, REFUSAL_DRAIN_BYTES).await,
    };
    let span = tracing::Span::current();
    span.record("llmgw.tenant", caller.tenant.as_str());
    span.record("tenant", caller.tenant.as_str());
    if let Some(key) = &caller.key_name {
        span.record("llmgw.key", key.as_str());
        span.record("key", key.as_str());
    }
    span.record("llmgw.priority", priority_name(caller.priority));
    let explained = (caller.tenant.clone(), priority_name(caller.priority));
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    put(headers, "x-llmgw-tenant", &explained.0);
    put(headers, "x-llmgw-priority", explained.1);
    response
}

/// The most of a shed request's body read before its 503.
const SHED_DRAIN_BYTES: usize = 64 << 10;

/// The in-flight limit (`None`: unlimited).
#[derive(Debug, Clone)]
pub struct InFlight(pub Option<Arc<Semaphore>>);

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self((max > 0).then(|| Arc::new(Semaphore::new(max))))
    }
}

/// Sheds load beyond `GATEWAY_MAX_IN_FLIGHT` with a fast 503 `gateway_overloaded` (and
/// `Retry-After: 1`) instead of letting memory and latency grow. A request is in flight until
/// its response body's last byte, so a stream holds its place for its whole length.
pub async fn shed(State(limit): State<InFlight>, request: Request, next: Next) -> Response {
    let Some(semaphore) = &limit.0 else {
        return next.run(request).await;
    };
    let Ok(permit) = Arc::clone(semaphore).try_acquire_owned() else {
        let shed = ApiError::Refused(Box::new(Refusal {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            reason: llmgw_proto::Reason::GatewayOverloaded,
            message: "The gateway is at its limit of requests in flight; retry shortly".to_owned(),
            param: None,
            retry_after_s: Some(1),
            headers: HeaderMap::new(),
        }));
        // A small body is read so the client's connection survives its retry; a large one is
        // not worth reading while overloaded: that connection closes.
        return refuse_before_the_body(request, shed, SHED_DRAIN_BYTES).await;
    };
    next.run(request)
        .await
        .map(|body| axum::body::Body::new(PermitBody { body, permit }))
}

pin_project_lite::pin_project! {
    /// A response body that holds `permit` (an in-flight place, a drain token) until it ends.
    pub(crate) struct PermitBody<B, P> {
        #[pin]
        pub(crate) body: B,
        pub(crate) permit: P,
    }
}

impl<B: http_body::Body, P> http_body::Body for PermitBody<B, P> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What the caller layer needs.
#[derive(Debug, Clone)]
pub struct CallerState {
    pub governance: Arc<Governance>,
}

/// How long a refused request's body may take to arrive before the connection is given up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Refuses a request whose body has not been read, with [`drain_then`].
async fn refuse_before_the_body(request: Request, err: ApiError, limit: usize) -> Response {
    drain_then(request, err.into_response(), limit).await
}

/// The most of a body read (and dropped) before a refusal that does not look at it (a bad
/// key, an unknown route, model management); beyond it the connection closes after the answer.
pub const REFUSAL_DRAIN_BYTES: usize = 1 << 20;

/// Answers `response` to a request whose body nobody read. A body that declares at most
/// `limit` bytes is read and dropped piece by piece as it arrives (never held: a flood of
/// refused bodies costs no memory), within [`DRAIN_TIMEOUT`]: an HTTP/1.1 server that answers
/// without reading it must close the connection, and a client's next request on that
/// keep-alive connection would fail with "server disconnected". A larger body, or one that
/// cannot be read in time, is not read at all: the answer says `Connection: close`.
pub async fn drain_then(request: Request, mut response: Response, limit: usize) -> Response {
    // HTTP/2 resets the one stream and keeps the connection; a client that waits for
    // `100 Continue` has not sent its body and need not: nothing to drain in either case.
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if request.version() >= axum::http::Version::HTTP_2 || expects_continue {
        return response;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let small = declared.is_none_or(|bytes| bytes <= limit as u64);
    let drained = small && {
        if let Some(ticket) = request.extensions().get::<Arc<BodyTicket>>() {
            ticket.discard();
        }
        let discarded = discard(request.into_body(), limit);
        matches!(
            tokio::time::timeout(DRAIN_TIMEOUT, discarded).await,
            Ok(true)
        )
    };
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads `body` to its end, dropping every piece; false if it breaks or passes `limit` bytes.
async fn discard(mut body: axum::body::Body, limit: usize) -> bool {
    use http_body_util::BodyExt;
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        seen += frame.data_ref().map_or(0, |data| data.len());
        if seen > limit {
            return false;
        }
    }
    true
}

/// Sets a header if `value` is a valid header value (ids and names always are).
pub fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}
