//! [`attempt`]: tries the endpoints of one pool for one route until one produces a first
//! token ([`Committed`]), counting attempts against the request's retry budget. Only failures
//! before the first token are retried; the breaker hears of every endpoint fault.
//!
//! **Budgets grow with the prompt.** An attempt's first-token (and response-head) timeout is
//! the model's `ttft_ms` plus the prompt's prefill at the pool's configured
//! `prefill_ms_per_1k_tokens` or the endpoint's learned rate, whichever is larger.
//!
//! **Blame.** A first-token timeout is the endpoint's fault only when the request was ordinary
//! work for it ([`Pool::is_heavy`]) and no other request on it made progress meanwhile. A
//! heavy request that times out ends with `prompt_too_heavy`: not retried around the pool, no
//! breaker told — one tenant's prompt sizes never eject an engine.
//!
//! **Work.** Each hand-over to an engine is announced ([`Dispatched`]) before it is sent, so
//! the gateway can charge the prompt of a caller that leaves; [`Attempts::worked`] says whether
//! any engine worked on the request (everything but refused connections and error statuses).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use llmgw_proto::v1::Dispatched;
use llmgw_proto::v1::chat_event::Event;
use llmgw_telemetry::DECISIONS;
use tokio::time::Instant;
use tracing::Instrument;

use super::budget::Budget;
use super::context::Context;
use crate::backend::{BackendError, EventStream, SendGate};
use crate::endpoint::{Endpoint, InFlight};
use crate::error::{SchedulerError, TimeoutKind};
use crate::pool::Pool;
use crate::routing::table::{Route, Timeouts};
use crate::work::Work;

/// A backend produced its first content event: the request is committed to it.
pub struct Committed {
    /// The endpoint's in-flight mark, held until the relay ends.
    pub in_flight: InFlight,
    pub first: Event,
    pub rest: EventStream,
    /// The `gen_ai.chat` client span of the committed call.
    pub call_span: tracing::Span,
}

impl std::fmt::Debug for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("in_flight", &self.in_flight)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

/// Why a route could not be committed.
#[derive(Debug)]
pub enum NotCommitted {
    /// Stop here: no other endpoint or model would do better.
    Final(SchedulerError),
    /// Every endpoint of this pool was tried (or none can serve): a fallback model may.
    Exhausted,
    /// The retry budget is spent.
    OutOfAttempts,
}

/// The request's retry budget and what went wrong last, across pools and fallbacks.
#[derive(Debug)]
pub struct Attempts {
    left: u32,
    /// Endpoint indexes of the current pool already tried.
    tried: Vec<usize>,
    pub last_error: Option<SchedulerError>,
    /// An engine worked on the request (its prompt is charged even if it fails).
    pub worked: bool,
    /// Where hand-overs to engines are announced.
    dispatched: tokio::sync::mpsc::UnboundedSender<Dispatched>,
}

impl Attempts {
    /// `total` attempts; each hand-over to an engine is announced on `dispatched`.
    pub fn new(total: u32, dispatched: tokio::sync::mpsc::UnboundedSender<Dispatched>) -> Self {
        Self {
            left: total,
            tried: Vec::new(),
            last_error: None,
            worked: false,
            dispatched,
        }
    }

    /// A fallback moved to another route: its endpoints are all untried.
    pub fn next_route(&mut self) {
        self.tried.clear();
    }
}

/// Tries endpoints of `pool` for `route` until one produces a first token.
pub async fn attempt(
    context: &Context,
    pool: &Pool,
    route: &Route,
    request: &Work,
    budget: &Budget,
    attempts: &mut Attempts,
) -> Result<Committed, NotCommitted> {
    loop {
        if attempts.left == 0 {
            return Err(NotCommitted::OutOfAttempts);
        }
        if !context.lease.is_leader() {
            return Err(NotCommitted::Final(SchedulerError::NotLeader {
                leader: context.lease.leader(),
            }));
        }
        // A per-token objective was checked against the endpoints' batches, and the pick
        // prefers one that meets it: affinity may not move the request onto a busier batch.
        let prefix = pool
            .affinity
            .as_ref()
            .filter(|_| context.ask.slo_tpot.is_none())
            .map(|_| crate::affinity::prefix_key(request));
        let Some((index, endpoint)) = pool.pick(
            &route.upstream,
            &attempts.tried,
            prefix.as_ref(),
            context.ask.slo_tpot,
        ) else {
            return Err(NotCommitted::Exhausted);
        };
        attempts.left -= 1;
        attempts.tried.push(index);
        tracing::debug!(target: DECISIONS, parent: &context.span,
            endpoint = endpoint.name(),
            attempt = attempts.tried.len(),
            model_loaded = endpoint.has_loaded(&route.upstream),
            load = endpoint.load(),
            ttft_estimate_ms = endpoint.ttft_estimate().as_secs_f64() * 1000.0,
            why = "available; with affinity the prefix's endpoint within its load bound, else unsaturated first, model loaded, least loaded per slot, fastest first token",
            "routing decision");
        let in_flight = endpoint.begin();
        let call_span = backend_span(&context.span, &endpoint, route, request);
        let started = Instant::now();
        let prompt_tokens = context.ask.cost.prompt_tokens;
        // Never longer than the model's whole budget, which caps every deadline anyway.
        let allowance = pool
            .prefill_allowance(&endpoint, prompt_tokens)
            .min(route.timeouts.total);
        // A caller that has left cannot be told; the hand-over happens all the same.
        let _ = attempts.dispatched.send(Dispatched {
            backend: endpoint.name().to_owned(),
            prompt_tokens,
        });
        // Backends always stream: first-token and idle timeouts, and cancellation, then work
        // the same for non-streamed requests, whose answer is assembled by the relay.
        let call = request.for_backend(&route.upstream);
        let first = first_token(
            &endpoint,
            call,
            Allowed {
                timeouts: &route.timeouts,
                prefill: allowance,
                budget,
            },
            &call_span,
            context,
        )
        .instrument(call_span.clone())
        .await;
        match first {
            Ok((first, rest)) => {
                attempts.worked = true;
                pool.remember(prefix.as_ref(), index);
                let ttft = started.elapsed();
                endpoint.breaker.on_success();
                endpoint.record_output();
                endpoint.pace.record_first_token(prompt_tokens, ttft);
                if prompt_tokens < crate::pace::SHORT_PROMPT
                    && let Some(moved) = endpoint.capacity.learn(ttft, endpoint.outstanding())
                {
                    tracing::info!(pool = %pool.name, endpoint = endpoint.name(), from = moved.from,
                        to = moved.to, why = moved.why, "endpoint slots moved");
                    pool.refresh_capacity();
                }
                pool.admission
                    .pace()
                    .record_first_token(prompt_tokens, ttft);
                context
                    .metrics
                    .first_token(&pool.name, &route.upstream, ttft.as_secs_f64());
                return Ok(Committed {
                    in_flight,
                    first,
                    rest,
                    call_span,
                });
            }
            Err(Failed {
                error: err,
                answered,
            }) => {
                attempts.worked |= engine_worked(&err);
                let timed_out = matches!(
                    err,
                    SchedulerError::Timeout {
                        kind: TimeoutKind::FirstToken | TimeoutKind::Connect,
                        ..
                    }
                );
                // Only an engine known to be alive can be said to be busy with a heavy prompt;
                // silence from one that never answered anything is its own fault.
                let alive = answered
                    || endpoint.pace.proven_prompt() > 0
                    || endpoint.output_within(started.elapsed());
                let err = if timed_out && alive && pool.is_heavy(&endpoint, prompt_tokens) {
                    SchedulerError::PromptTooHeavy {
                        prompt_tokens,
                        budget_ms: route.timeouts.ttft.saturating_add(allowance).as_millis() as u64,
                    }
                } else {
                    err
                };
                // An engine that kept answering other requests while this one waited is
                // busy, not sick.
                let busy = timed_out && endpoint.output_within(started.elapsed());
                let blame = if busy {
                    Blame::NotTheEndpoint
                } else {
                    Blame::AsUsual
                };
                record_failure(context, pool, &endpoint, &call_span, &err, blame);
                if !err.retryable() {
                    return Err(NotCommitted::Final(err));
                }
                tracing::info!(parent: &context.span, endpoint = endpoint.name(), reason = err.reason().as_str(),
                    error = %err, "attempt failed before the first token");
                attempts.last_error = Some(err);
            }
        }
    }
}

/// Whether an engine did work on a request that failed with `err`: everything but a refused
/// connection, an error status at once, or nothing sent.
fn engine_worked(err: &SchedulerError) -> bool {
    match err {
        SchedulerError::Backend(backend) => matches!(
            backend,
            BackendError::Interrupted(_) | BackendError::BadResponse(_)
        ),
        SchedulerError::Timeout { .. } | SchedulerError::PromptTooHeavy { .. } => true,
        _ => false,
    }
}

/// Whether a failure may count against the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// If the error is an endpoint fault, the breaker hears of it.
    AsUsual,
    /// The endpoint showed it works meanwhile: the breaker hears nothing.
    NotTheEndpoint,
}

/// Marks the call span failed, counts the error and tells the endpoint's breaker.
pub fn record_failure(
    context: &Context,
    pool: &Pool,
    endpoint: &Endpoint,
    call_span: &tracing::Span,
    err: &SchedulerError,
    blame: Blame,
) {
    call_span.record("error.type", err.reason().as_str());
    call_span.record("otel.status_code", "ERROR");
    context
        .metrics
        .backend_error(&pool.name, endpoint.name(), err.reason());
    let endpoint_fault = match err {
        SchedulerError::Backend(backend) => backend.is_endpoint_fault(),
        SchedulerError::Timeout { kind, .. } => matches!(
            kind,
            TimeoutKind::Connect | TimeoutKind::FirstToken | TimeoutKind::Idle
        ),
        _ => false,
    };
    if endpoint_fault && blame == Blame::AsUsual && endpoint.breaker.on_failure() {
        tracing::warn!(parent: &context.span, endpoint = endpoint.name(), "circuit breaker opened");
        pool.refresh_capacity();
    }
}

/// An attempt that failed before its first token.
struct Failed {
    error: SchedulerError,
    /// The engine had sent its response head: it took the request and was working on it.
    answered: bool,
}

/// The time limits of one attempt.
struct Allowed<'a> {
    timeouts: &'a Timeouts,
    /// What the prompt's prefill adds to the head and first-token timeouts.
    prefill: Duration,
    budget: &'a Budget,
}

/// Sends the request to `endpoint` and waits for its first content event. The response head
/// must come within the connect timeout (or the first-token timeout if shorter), the first
/// token within the first-token timeout, each plus the prompt's prefill allowance (engines
/// such as Ollama send the head with the first token); all capped by the budget.
async fn first_token(
    endpoint: &Arc<Endpoint>,
    request: Work,
    allowed: Allowed<'_>,
    call_span: &tracing::Span,
    context: &Context,
) -> Result<(Event, EventStream), Failed> {
    let before_head = |error: SchedulerError| Failed {
        error,
        answered: false,
    };
    let after_head = |error: SchedulerError| Failed {
        error,
        answered: true,
    };
    let Allowed {
        timeouts,
        prefill,
        budget,
    } = allowed;
    let start = Instant::now();
    let ttft = timeouts.ttft.saturating_add(prefill);
    let ttft_ms = ttft.as_millis() as u64;
    let connect = timeouts.connect.saturating_add(prefill);
    let (connect_by, connect_error) = if ttft < connect {
        budget.cap(start + ttft, TimeoutKind::FirstToken, ttft_ms)
    } else {
        budget.cap(
            start + connect,
            TimeoutKind::Connect,
            connect.as_millis() as u64,
        )
    };
    let mut trace = http::HeaderMap::new();
    llmgw_telemetry::propagation::inject_http(
        &llmgw_telemetry::propagation::outgoing(call_span, &context.incoming),
        &mut trace,
    );
    let lease = Arc::clone(&context.lease);
    let gate: SendGate = Arc::new(move || lease.is_leader());
    let call = endpoint.backend.call(request, trace, gate);
    let mut events = match tokio::time::timeout_at(connect_by, call).await {
        Ok(Ok(started)) => started,
        Ok(Err(BackendError::NotSent)) => {
            return Err(before_head(SchedulerError::NotLeader {
                leader: context.lease.leader(),
            }));
        }
        Ok(Err(err)) => return Err(before_head(err.into())),
        Err(_) => return Err(before_head(connect_error)),
    };
    let (first_by, first_error) = budget.cap(start + ttft, TimeoutKind::FirstToken, ttft_ms);
    loop {
        match tokio::time::timeout_at(first_by, events.next()).await {
            Ok(Some(Ok(Event::Queued(_) | Event::Started(_) | Event::Dispatched(_)))) => {}
            Ok(Some(Ok(content))) => {
                let ttft = start.elapsed();
                endpoint.record_ttft(ttft);
                tracing::debug!(target: DECISIONS, parent: call_span, ttft_ms = ttft.as_secs_f64() * 1000.0, "first token");
                return Ok((content, events));
            }
            Ok(Some(Err(err))) => return Err(after_head(err.into())),
            Ok(None) => {
                let cut =
                    BackendError::Interrupted("stream ended before the first token".to_owned());
                return Err(after_head(cut.into()));
            }
            Err(_) => return Err(after_head(first_error)),
        }
    }
}

/// The client span of one backend call, with the OpenTelemetry GenAI attributes; usage and
/// finish reasons are recorded as they arrive. No prompt or completion text.
fn backend_span(
    parent: &tracing::Span,
    endpoint: &Endpoint,
    route: &Route,
    request: &Work,
) -> tracing::Span {
    let operation = request.operation();
    let span = tracing::info_span!(parent: parent, "gen_ai.chat",
        otel.name = format!("{operation} {}", route.upstream),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        "gen_ai.operation.name" = operation,
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
    if let Some(sampling) = request.sampling() {
        if let Some(max_tokens) = sampling.max_tokens {
            span.record("gen_ai.request.max_tokens", i64::from(max_tokens));
        }
        if let Some(temperature) = sampling.temperature {
            span.record("gen_ai.request.temperature", f64::from(temperature));
        }
    }
    span
}
