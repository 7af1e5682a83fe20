//! One request's life after admission, as the event stream the Chat call returns: wait for a
//! slot, try endpoints (and then fallback models) until one produces a first token, then relay
//! the generation under idle and total timeouts.
//!
//! Retries and fallbacks happen only before the first token: once a token went out, a failure
//! ends the stream with an error — output is never duplicated or spliced. The slot permit and
//! the endpoint's in-flight mark live inside the stream, so they end with it, however it ends.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use llmgw_proto::v1::{
    ChatEvent, ChatRequest, Delta, Priority, Queued, Started, chat_event::Event,
};
use llmgw_telemetry::TraceContext;
use tokio::time::Instant;
use tonic::Status;
use tracing::Instrument;

use crate::admission::{Ask, Class, Entry, SlotPermit};
use crate::backend::EventStream;
use crate::endpoint::Endpoint;
use crate::error::{SchedulerError, TimeoutKind};
use crate::metrics::SchedulerMetrics;
use crate::pool::Pool;
use crate::routing::table::{Route, Timeouts};
use crate::topology::Topology;

/// Everything one admitted (or queued) request carries into its stream.
#[derive(Debug)]
pub struct Job {
    pub topology: Arc<Topology>,
    pub route: Route,
    pub pool: Arc<Pool>,
    pub request: ChatRequest,
    pub ask: Ask,
    pub entry: Entry,
    /// The caller's own deadline (`deadline_ms`), if any.
    pub deadline: Option<Instant>,
    pub span: tracing::Span,
    /// The caller's trace context, passed on when spans are not recorded.
    pub incoming: TraceContext,
    pub metrics: Arc<SchedulerMetrics>,
}

pub fn priority_of(class: Class) -> Priority {
    match class {
        Class::Critical => Priority::Critical,
        Class::Interactive => Priority::Interactive,
        Class::Batch => Priority::Batch,
    }
}

fn event(event: Event) -> ChatEvent {
    ChatEvent { event: Some(event) }
}

/// The earlier of the caller's deadline and the model's total budget, and what expiring means.
#[derive(Debug, Clone, Copy)]
struct Budget {
    at: Instant,
    error_if_hit: fn(u64, u64) -> SchedulerError,
    request_ms: u64,
    total_ms: u64,
}

impl Budget {
    fn new(deadline: Option<Instant>, request_ms: u64, timeouts: &Timeouts) -> Self {
        let total = Instant::now() + timeouts.total;
        let total_ms = timeouts.total.as_millis() as u64;
        match deadline {
            Some(deadline) if deadline <= total => Self {
                at: deadline,
                error_if_hit: |request_ms, _| SchedulerError::DeadlineExceeded(request_ms),
                request_ms,
                total_ms,
            },
            _ => Self {
                at: total,
                error_if_hit: |_, total_ms| SchedulerError::Timeout {
                    kind: TimeoutKind::Total,
                    ms: total_ms,
                },
                request_ms,
                total_ms,
            },
        }
    }

    fn error(&self) -> SchedulerError {
        (self.error_if_hit)(self.request_ms, self.total_ms)
    }

    /// `at` capped by the budget, and the error to report if that cap is what expires.
    fn cap(&self, at: Instant, kind: TimeoutKind, ms: u64) -> (Instant, SchedulerError) {
        if self.at <= at {
            (self.at, self.error())
        } else {
            (at, SchedulerError::Timeout { kind, ms })
        }
    }
}

/// Waits for a slot unless `deadline` passes first.
async fn wait_for_slot(
    entry: Entry,
    deadline: Option<Instant>,
    request_ms: u64,
) -> Result<SlotPermit, SchedulerError> {
    match entry {
        Entry::Admitted(permit) => Ok(permit),
        Entry::Waiting(ticket) => match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, ticket.wait())
                .await
                .map_err(|_| SchedulerError::DeadlineExceeded(request_ms))?,
            None => ticket.wait().await,
        },
    }
}

/// Sends the request to `endpoint` and waits for its first content event.
async fn first_token(
    endpoint: &Endpoint,
    request: ChatRequest,
    timeouts: &Timeouts,
    budget: &Budget,
    call_span: &tracing::Span,
    incoming: &TraceContext,
) -> Result<(Event, EventStream), SchedulerError> {
    let start = Instant::now();
    // The response head must come within the connect timeout, and within the first-token
    // timeout if that is shorter.
    let (connect_by, connect_error) = if timeouts.ttft < timeouts.connect {
        budget.cap(
            start + timeouts.ttft,
            TimeoutKind::FirstToken,
            timeouts.ttft.as_millis() as u64,
        )
    } else {
        budget.cap(
            start + timeouts.connect,
            TimeoutKind::Connect,
            timeouts.connect.as_millis() as u64,
        )
    };
    let mut trace = http::HeaderMap::new();
    llmgw_telemetry::propagation::inject_http(
        &llmgw_telemetry::propagation::outgoing(call_span, incoming),
        &mut trace,
    );
    let mut events =
        match tokio::time::timeout_at(connect_by, endpoint.backend.chat(request, trace)).await {
            Ok(started) => started?,
            Err(_) => return Err(connect_error),
        };
    let (first_by, first_error) = budget.cap(
        start + timeouts.ttft,
        TimeoutKind::FirstToken,
        timeouts.ttft.as_millis() as u64,
    );
    loop {
        match tokio::time::timeout_at(first_by, events.next()).await {
            Ok(Some(Ok(Event::Queued(_) | Event::Started(_)))) => {}
            Ok(Some(Ok(content))) => {
                let ttft = start.elapsed();
                endpoint.record_ttft(ttft);
                tracing::info!(parent: call_span, ttft_ms = ttft.as_secs_f64() * 1000.0, "first token");
                return Ok((content, events));
            }
            Ok(Some(Err(err))) => return Err(err.into()),
            Ok(None) => {
                let cut = crate::backend::BackendError::Interrupted(
                    "stream ended before the first token".to_owned(),
                );
                return Err(cut.into());
            }
            Err(_) => return Err(first_error),
        }
    }
}

/// The client span of one backend call, with the OpenTelemetry GenAI attributes; usage and
/// finish reasons are recorded as they arrive. No prompt or completion text.
fn backend_span(
    parent: &tracing::Span,
    endpoint: &Endpoint,
    route: &Route,
    request: &ChatRequest,
) -> tracing::Span {
    let sampling = request.sampling.clone().unwrap_or_default();
    let span = tracing::info_span!(parent: parent, "gen_ai.chat",
        otel.name = format!("chat {}", route.upstream),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        "gen_ai.operation.name" = "chat",
        "gen_ai.provider.name" = endpoint.backend.provider(),
        "gen_ai.request.model" = %route.upstream,
        "gen_ai.request.max_tokens" = tracing::field::Empty,
        "gen_ai.request.temperature" = tracing::field::Empty,
        "gen_ai.response.model" = %route.upstream,
        "gen_ai.response.finish_reasons" = tracing::field::Empty,
        "gen_ai.usage.input_tokens" = tracing::field::Empty,
        "gen_ai.usage.output_tokens" = tracing::field::Empty,
        "server.address" = %endpoint.config.url,
        "error.type" = tracing::field::Empty,
    );
    if let Some(max_tokens) = sampling.max_tokens {
        span.record("gen_ai.request.max_tokens", i64::from(max_tokens));
    }
    if let Some(temperature) = sampling.temperature {
        span.record("gen_ai.request.temperature", f64::from(temperature));
    }
    span
}

/// Counts a failure against the endpoint's breaker; shrinks the pool if it opened.
fn blame(pool: &Pool, endpoint: &Endpoint, err: &SchedulerError, span: &tracing::Span) {
    let endpoint_fault = match err {
        SchedulerError::Backend(backend) => backend.is_endpoint_fault(),
        SchedulerError::Timeout { kind, .. } => matches!(
            kind,
            TimeoutKind::Connect | TimeoutKind::FirstToken | TimeoutKind::Idle
        ),
        _ => false,
    };
    if endpoint_fault && endpoint.breaker.on_failure() {
        tracing::warn!(parent: span, endpoint = endpoint.name(), "circuit breaker opened");
        pool.refresh_capacity();
    }
}

/// Passes events on; for non-streamed requests, gathers the deltas into one, sent just before
/// the finish.
#[derive(Debug)]
struct Relay {
    gathered: Option<Delta>,
}

impl Relay {
    fn new(stream: bool) -> Self {
        Self {
            gathered: (!stream).then(Delta::default),
        }
    }

    fn push(&mut self, event: Event) -> Vec<Event> {
        match (&mut self.gathered, event) {
            (Some(gathered), Event::Delta(delta)) => {
                gathered.content.push_str(&delta.content);
                for piece in delta.tool_calls {
                    match gathered
                        .tool_calls
                        .iter_mut()
                        .find(|call| call.index == piece.index)
                    {
                        Some(call) => call.arguments.push_str(&piece.arguments),
                        None => gathered.tool_calls.push(piece),
                    }
                }
                Vec::new()
            }
            (gathered @ Some(_), finish @ Event::Finish(_)) => {
                let whole = gathered.take().map(Event::Delta);
                whole.into_iter().chain([finish]).collect()
            }
            (_, other) => vec![other],
        }
    }
}

/// The event stream of one request.
pub fn run(job: Job) -> impl Stream<Item = Result<ChatEvent, Status>> + Send {
    async_stream::stream! {
        let Job { topology, mut route, mut pool, request, ask, entry, deadline, span, incoming, metrics } = job;
        let request_ms = request.deadline_ms;
        let fail = |err: SchedulerError| {
            tracing::warn!(parent: &span, reason = err.reason(), error = %err, "chat failed");
            let status = Status::from(err);
            span.record("rpc.grpc.status_code", status.code() as i32);
            span.record("otel.status_code", "ERROR");
            status
        };
        if let Entry::Waiting(ticket) = &entry {
            yield Ok(event(Event::Queued(Queued {
                position: ticket.position() as u32,
                pool: pool.name.clone(),
                priority: priority_of(ask.class) as i32,
                tenant: ask.tenant.to_string(),
            })));
        }
        let position = match &entry {
            Entry::Waiting(ticket) => ticket.position(),
            Entry::Admitted(_) => 0,
        };
        let wait_span = tracing::info_span!(parent: &span, "admission.wait",
            otel.name = "admission.wait",
            "llmgw.pool" = %pool.name,
            "llmgw.priority" = ask.class.name(),
            "llmgw.tenant" = %ask.tenant,
            "llmgw.queue.position" = position as i64,
            "llmgw.queue.wait_ms" = tracing::field::Empty,
            "llmgw.admission.outcome" = tracing::field::Empty,
        );
        let waited = wait_for_slot(entry, deadline, request_ms).instrument(wait_span.clone()).await;
        let outcome = match &waited {
            Ok(_) if position == 0 => "admitted",
            Ok(_) => "admitted_after_wait",
            Err(err) => err.reason(),
        };
        let wait_ms = waited.as_ref().map_or(0.0, |p| p.queued().as_secs_f64() * 1000.0);
        metrics.admission(&pool.name, ask.class, outcome);
        if let Ok(permit) = &waited {
            metrics.queue_wait(&pool.name, ask.class, permit.queued().as_secs_f64());
        }
        wait_span.record("llmgw.admission.outcome", outcome);
        wait_span.record("llmgw.queue.wait_ms", wait_ms);
        tracing::info!(parent: &wait_span, class = ask.class.name(), tenant = %ask.tenant, position, wait_ms, outcome,
            "admission decision");
        drop(wait_span);
        let mut permit = match waited {
            Ok(permit) => permit,
            Err(err) => {
                yield Err(fail(err));
                return;
            }
        };
        let budget = Budget::new(deadline, request_ms, &route.timeouts);
        let mut attempts_left = topology.retry_attempts + 1;
        let mut fallbacks: VecDeque<String> = route.fallbacks.iter().cloned().collect();
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error: Option<SchedulerError> = None;
        let committed = loop {
            if attempts_left == 0 {
                break None;
            }
            let Some((index, endpoint)) = pool.pick(&route.upstream, &tried) else {
                // This model's endpoints are exhausted: the next fallback model, if any.
                let Some(next) = fallbacks.pop_front() else { break None };
                let Ok(next_route) = topology.routes.resolve(&next, &ask.tenant, fastrand::u64(..)) else { continue };
                let Some(next_pool) = topology.pool(&next_route.pool).cloned() else { continue };
                if next_pool.name != pool.name {
                    drop(permit);
                    let entered = next_pool.admission.enter(ask.clone());
                    permit = match entered {
                        Ok(entry) => match wait_for_slot(entry, deadline, request_ms).await {
                            Ok(permit) => permit,
                            Err(err) => {
                                yield Err(fail(err));
                                return;
                            }
                        },
                        Err(err) => {
                            yield Err(fail(err));
                            return;
                        }
                    };
                    pool = next_pool;
                }
                tracing::info!(parent: &span, from = %route.model, to = %next_route.model, "falling back to another model");
                route = next_route;
                tried.clear();
                continue;
            };
            attempts_left -= 1;
            tried.push(index);
            tracing::info!(parent: &span,
                endpoint = endpoint.name(),
                attempt = tried.len(),
                model_loaded = endpoint.has_loaded(&route.upstream),
                load = endpoint.load(),
                ttft_estimate_ms = endpoint.ttft_estimate().as_secs_f64() * 1000.0,
                why = "available; model loaded first, then least loaded per slot, then fastest first token",
                "routing decision");
            let in_flight = endpoint.begin();
            let call_span = backend_span(&span, &endpoint, &route, &request);
            let attempt_started = Instant::now();
            // Backends always stream: first-token and idle timeouts, and cancellation, then work
            // the same for non-streamed requests, whose answer is assembled below.
            let attempt = ChatRequest { model: route.upstream.clone(), stream: true, ..request.clone() };
            match first_token(&endpoint, attempt, &route.timeouts, &budget, &call_span, &incoming).instrument(call_span.clone()).await {
                Ok((first, rest)) => {
                    endpoint.breaker.on_success();
                    metrics.first_token(&pool.name, &route.upstream, attempt_started.elapsed().as_secs_f64());
                    break Some((in_flight, first, rest, call_span));
                }
                Err(err) => {
                    call_span.record("error.type", err.reason());
                    call_span.record("otel.status_code", "ERROR");
                    metrics.backend_error(&pool.name, endpoint.name(), err.reason());
                    blame(&pool, &endpoint, &err, &span);
                    if !err.retryable() {
                        yield Err(fail(err));
                        return;
                    }
                    tracing::info!(parent: &span, endpoint = endpoint.name(), reason = err.reason(), error = %err,
                        "attempt failed before the first token");
                    last_error = Some(err);
                }
            }
        };
        let Some((in_flight, first, mut rest, call_span)) = committed else {
            let err = last_error.unwrap_or(SchedulerError::NoHealthyBackend { pool: pool.name.clone() });
            yield Err(fail(err));
            return;
        };
        let queue_ms = permit.queued().as_millis() as u64;
        yield Ok(event(Event::Started(Started {
            backend: in_flight.endpoint().name().to_owned(),
            queue_ms,
            pool: pool.name.clone(),
            model: route.upstream.clone(),
            priority: priority_of(ask.class) as i32,
            tenant: ask.tenant.to_string(),
        })));
        let mut relay = Relay::new(request.stream);
        for out in relay.push(first) {
            yield Ok(event(out));
        }
        let idle = route.timeouts.idle;
        let mut completion_tokens = 0;
        loop {
            let (limit, expired) = budget.cap(Instant::now() + idle, TimeoutKind::Idle, idle.as_millis() as u64);
            match tokio::time::timeout_at(limit, rest.next()).await {
                Ok(Some(Ok(next))) => {
                    match &next {
                        Event::Usage(usage) => {
                            completion_tokens = usage.completion_tokens;
                            call_span.record("gen_ai.usage.input_tokens", i64::from(usage.prompt_tokens));
                            call_span.record("gen_ai.usage.output_tokens", i64::from(usage.completion_tokens));
                        }
                        Event::Finish(finish) => {
                            call_span.record("gen_ai.response.finish_reasons", format!("[\"{}\"]", finish.reason));
                        }
                        Event::Queued(_) | Event::Started(_) | Event::Delta(_) => {}
                    }
                    for out in relay.push(next) {
                        yield Ok(event(out));
                    }
                }
                Ok(Some(Err(err))) => {
                    let err = SchedulerError::from(err);
                    call_span.record("error.type", err.reason());
                    call_span.record("otel.status_code", "ERROR");
                    metrics.backend_error(&pool.name, in_flight.endpoint().name(), err.reason());
                    blame(&pool, in_flight.endpoint(), &err, &span);
                    yield Err(fail(err));
                    return;
                }
                Ok(None) => break,
                Err(_) => {
                    call_span.record("error.type", expired.reason());
                    call_span.record("otel.status_code", "ERROR");
                    metrics.backend_error(&pool.name, in_flight.endpoint().name(), expired.reason());
                    blame(&pool, in_flight.endpoint(), &expired, &span);
                    yield Err(fail(expired));
                    return;
                }
            }
        }
        drop(call_span);
        drop(in_flight);
        drop(permit);
        span.record("rpc.grpc.status_code", 0);
        tracing::info!(parent: &span, queue_ms, completion_tokens, "chat finished");
    }
}
