//! `POST /v1/chat/completions`, streaming and not.
//!
//! The HTTP status is decided by the scheduler's first *content* event: until then (queued,
//! admitted, backend connecting) any refusal or failure can still be an honest 4xx/5xx. After
//! it, failures end an SSE stream with an error event (never a hang, never a fake `[DONE]`).
//! Dropping the response (client gone) drops the gRPC stream, which frees the slot upstream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmgw_proto::Reason;
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{ChatEvent, Started};
use llmgw_telemetry::{TraceContext, propagation};
use tokio::time::Instant;
use tonic::Streaming;
use tracing::Instrument;

use super::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::governance::Admitted;
use crate::governance::reservation::Reservation;
use crate::layers::{IncomingTrace, Observed, put};
use crate::metrics::GatewayMetrics;
use crate::translate::request::{ValidChat, parse};
use crate::translate::response::{Aggregate, DONE_FRAME, ResponseMeta, SseTranslator, error_frame};

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(IncomingTrace(incoming)): Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut observation = Observation {
        metrics: Arc::clone(&state.metrics),
        model: None,
        tenant: caller.metrics_tenant.clone(),
        received: Instant::now(),
        streaming: false,
    };
    let mut limit_headers = HeaderMap::new();
    let handled = handle(
        &state,
        &caller,
        body,
        &incoming,
        &mut observation,
        &mut limit_headers,
    )
    .await;
    let mut response = match handled {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    // The tenant's rate-limit state as of its reservation, on success and failure alike.
    response.headers_mut().extend(limit_headers);
    if let Some(model) = observation.model {
        response.extensions_mut().insert(Observed {
            model,
            streaming: observation.streaming,
        });
    }
    response
}

async fn handle(
    state: &AppState,
    caller: &Caller,
    body: Result<Bytes, BytesRejection>,
    incoming: &TraceContext,
    observation: &mut Observation,
    limit_headers: &mut HeaderMap,
) -> Result<Response, ApiError> {
    let received = observation.received;
    let body = body.map_err(|rejection| body_error(rejection, state.config.max_body_bytes))?;
    let ValidChat {
        mut request,
        stream,
        include_usage,
    } = parse(&body)?;
    request.tenant = caller.tenant.clone();
    request.priority = caller.priority as i32;
    request.request_id = caller.request_id.clone();
    request.deadline_ms = state.config.request_timeout_ms;
    // Model allow-list, engine options, completion cap and the reservation against limits.
    let Admitted {
        mut reservation,
        headers,
    } = state.governance.admit_chat(caller, &mut request).await?;
    *limit_headers = headers;
    let model = request.model.clone();
    let meta = ResponseMeta::new(model.clone());
    let server_span = tracing::Span::current();
    server_span.record("gen_ai.request.model", request.model.as_str());
    tracing::debug!(model = %request.model, stream, messages = request.messages.len(), "chat request");

    let rpc_span = tracing::info_span!(
        "scheduler_call",
        otel.name = "llmgw.scheduler.v1.Scheduler/Chat",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        "rpc.system" = "grpc",
        "rpc.service" = "llmgw.scheduler.v1.Scheduler",
        "rpc.method" = "Chat",
        "rpc.grpc.status_code" = tracing::field::Empty,
    );
    let keepalive = Duration::from_millis(state.config.sse_keepalive_ms);
    let commit_after = (stream && !keepalive.is_zero()).then_some(keepalive);
    // Another scheduler is tried — before the client got any byte — when one is down, stands
    // by (`not_leader`), shuts down, or its connection breaks. The request is cloned only when
    // a retry is possible.
    // With several schedulers, a request every one of them turned away waits (bounded) for a
    // new leader: a failover costs it latency, not an error.
    let several = state.scheduler.targets().len() > 1;
    let failover_until = Instant::now() + Duration::from_millis(state.config.failover_wait_ms);
    let mut excluded: Vec<String> = Vec::new();
    let mut last_failure: Option<tonic::Status> = None;
    let mut pending = Some(request);
    let (mut events, opening) = loop {
        let Some(target) = state.scheduler.pick(&model, &excluded) else {
            if several
                && Instant::now() < failover_until
                && last_failure
                    .as_ref()
                    .is_some_and(|f| moves_on(f) == MoveOn::OrWait)
            {
                tokio::time::sleep(FAILOVER_POLL).await;
                excluded.clear();
                continue;
            }
            let failure =
                last_failure.unwrap_or_else(|| tonic::Status::unavailable("no scheduler to call"));
            return Err(record_rpc_failure(&rpc_span, failure));
        };
        let Some(this) = pending.take() else {
            let failure =
                last_failure.unwrap_or_else(|| tonic::Status::unavailable("no scheduler to call"));
            return Err(record_rpc_failure(&rpc_span, failure));
        };
        if several {
            pending = Some(this.clone());
        }
        let mut call = tonic::Request::new(this);
        propagation::inject_grpc(
            &propagation::outgoing(&rpc_span, incoming),
            call.metadata_mut(),
        );
        state.scheduler.authorize(&mut call);
        // The response head comes as soon as the scheduler admitted or queued the call; a
        // scheduler that does not send it in time (paused, cut off) is skipped like a dead one.
        let head_timeout = state.config.scheduler_connect_timeout() + SCHEDULER_HEAD_GRACE;
        let called = tokio::time::timeout(
            head_timeout,
            target.scheduler().chat(call).instrument(rpc_span.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::unavailable(
                "the scheduler did not answer in time",
            ))
        });
        let outcome = match called {
            Ok(response) => {
                let mut events = response.into_inner();
                match Opening::read(&mut events, commit_after, stream, &mut reservation).await {
                    Ok(opening) => Ok((events, opening)),
                    Err(ApiError::Scheduler(status)) => Err(status),
                    Err(other) => return Err(other),
                }
            }
            Err(status) => Err(status),
        };
        match outcome {
            Ok(opened) => break opened,
            Err(status) if pending.is_some() && moves_on(&status) != MoveOn::No => {
                tracing::info!(scheduler = %target.address, code = ?status.code(),
                    "scheduler failed before the first byte; trying another");
                excluded.push(target.address.clone());
                last_failure = Some(status);
            }
            Err(status) => return Err(record_rpc_failure(&rpc_span, status)),
        }
    };
    let started = opening.started.clone();
    // The scheduler accepted the model name: from here on it may label metrics.
    observation.model = Some(model.clone());
    observation.streaming = stream;
    let mut response = if stream {
        stream_response(
            SseTranslator::new(meta, include_usage),
            opening,
            events,
            keepalive,
            observation.clone(),
            (server_span, rpc_span),
            reservation,
        )
    } else {
        let mut aggregate = Aggregate::new(meta);
        if let Some(first) = opening.first {
            aggregate.push(first);
        }
        while let Some(event) = events
            .message()
            .await
            .map_err(|status| record_rpc_failure(&rpc_span, status))?
        {
            if let Some(event) = event.event {
                aggregate.push(event);
            }
        }
        rpc_span.record("rpc.grpc.status_code", 0);
        let completion = aggregate.finish()?;
        if let Some(reservation) = reservation {
            reservation.finish(
                completion.usage.prompt_tokens,
                completion.usage.completion_tokens,
            );
        }
        observation.metrics.tokens(
            &model,
            &observation.tenant,
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
        );
        tracing::info!(
            status = 200,
            prompt_tokens = completion.usage.prompt_tokens,
            completion_tokens = completion.usage.completion_tokens,
            elapsed_ms = received.elapsed().as_millis() as u64,
            "chat completed"
        );
        Json(completion).into_response()
    };
    if let Some(started) = started {
        let headers = response.headers_mut();
        put(headers, "x-llmgw-queue-ms", &started.queue_ms.to_string());
        put(
            headers,
            "x-llmgw-backend",
            &crate::backend_label::public(&started.backend),
        );
    }
    Ok(response)
}

/// Everything the scheduler said before the first content event.
#[derive(Debug, Default)]
struct Opening {
    started: Option<Started>,
    /// Set if the request had to wait for a slot.
    queued_position: Option<u32>,
    /// The first delta/finish/usage event, or `None` if the stream ended without one.
    first: Option<Event>,
}

impl Opening {
    /// Reads events up to the first content event. With `commit_after` (streams), gives up
    /// waiting after that long so the caller can commit the SSE response and keep it alive.
    async fn read(
        events: &mut Streaming<ChatEvent>,
        commit_after: Option<Duration>,
        stream: bool,
        reservation: &mut Option<Reservation>,
    ) -> Result<Self, ApiError> {
        let mut opening = Self::default();
        let give_up_at = commit_after.map(|wait| Instant::now() + wait);
        loop {
            let next = match give_up_at {
                Some(at) => match tokio::time::timeout_at(at, events.next()).await {
                    Ok(next) => next,
                    Err(_still_waiting) => return Ok(opening),
                },
                None => events.next().await,
            };
            let Some(event) = next.transpose().map_err(ApiError::Scheduler)? else {
                return Ok(opening);
            };
            match event.event {
                Some(Event::Started(started)) => {
                    // The first token exists: leaving from here on is charged.
                    if let Some(reservation) = reservation {
                        reservation.generating(stream);
                    }
                    opening.started = Some(started);
                }
                Some(Event::Queued(queued)) => opening.queued_position = Some(queued.position),
                None => {}
                Some(content) => {
                    opening.first = Some(content);
                    return Ok(opening);
                }
            }
        }
    }
}

/// What the SSE body does next.
enum Step {
    Event(Event),
    KeepAlive,
    End,
    Failed(tonic::Status),
}

fn stream_response(
    mut translator: SseTranslator,
    opening: Opening,
    mut events: Streaming<ChatEvent>,
    keepalive: Duration,
    observation: Observation,
    spans: (tracing::Span, tracing::Span),
    mut reservation: Option<Reservation>,
) -> Response {
    // The streamed response's duration and TTFT are known only when its body ends.
    let frames = async_stream::stream! {
        // The server and call spans end with the stream, not with the response head.
        let (server_span, rpc_span) = spans;
        let Opening { first, queued_position, .. } = opening;
        let Observation { metrics, model, tenant, received, .. } = observation;
        let model = model.unwrap_or_default();
        let mut first_token_at: Option<Duration> = None;
        let mut output_tokens = 0;
        // No data chunk before the first real one: while the request still waits for a slot,
        // only SSE comments go out, so proxies see traffic and clients see nothing.
        let mut opened = false;
        if let Some(position) = queued_position.filter(|_| first.is_none()) {
            yield Ok(queued_comment(position));
        }
        let mut pending_first = first;
        loop {
            let step = if let Some(event) = pending_first.take() {
                Step::Event(event)
            } else if opened || keepalive.is_zero() {
                next_step(events.next().await)
            } else {
                match tokio::time::timeout(keepalive, events.next()).await {
                    Ok(next) => next_step(next),
                    Err(_quiet) => Step::KeepAlive,
                }
            };
            match step {
                Step::KeepAlive => yield Ok::<Bytes, Infallible>(Bytes::from_static(KEEPALIVE_FRAME)),
                Step::Event(Event::Queued(queued)) if !opened => {
                    yield Ok(queued_comment(queued.position));
                }
                // Headers are gone already: the queue time the header would carry goes here.
                Step::Event(Event::Started(started)) if !opened => {
                    if let Some(reservation) = &mut reservation {
                        reservation.generating(true);
                    }
                    yield Ok(Bytes::from(format!(": started queue_ms={}\n\n", started.queue_ms)));
                }
                Step::Event(event) => {
                    let content = matches!(event, Event::Delta(_) | Event::Finish(_) | Event::Usage(_));
                    if content && !opened {
                        opened = true;
                        yield Ok(translator.role_frame());
                    }
                    if let (Some(reservation), Event::Delta(_)) = (&mut reservation, &event) {
                        reservation.generating(true);
                        reservation.delivered_chunk();
                    }
                    if first_token_at.is_none() && matches!(event, Event::Delta(_)) {
                        let ttft = received.elapsed();
                        first_token_at = Some(ttft);
                        metrics.first_token(&model, ttft.as_secs_f64());
                    }
                    if let Event::Usage(usage) = &event {
                        if let Some(reservation) = reservation.take() {
                            reservation.finish(usage.prompt_tokens, usage.completion_tokens);
                        }
                        output_tokens = usage.completion_tokens;
                        metrics.tokens(&model, &tenant, usage.prompt_tokens, usage.completion_tokens);
                    }
                    if let Some(frame) = translator.frame(event) {
                        yield Ok(frame);
                    }
                }
                Step::End if translator.finished() => {
                    rpc_span.record("rpc.grpc.status_code", 0);
                    let total = received.elapsed();
                    metrics.duration(ROUTE, &model, 200, total.as_secs_f64());
                    if let Some(ttft) = first_token_at.filter(|_| output_tokens > 1) {
                        metrics.per_output_token(&model, (total - ttft).as_secs_f64() / f64::from(output_tokens - 1));
                    }
                    tracing::info!(status = 200, elapsed_ms = received.elapsed().as_millis() as u64, "chat stream completed");
                    yield Ok(Bytes::from_static(DONE_FRAME));
                    break;
                }
                Step::End => {
                    let err = ApiError::backend_interrupted();
                    metrics.stream_error(&model, err.reason().as_str());
                    metrics.duration(ROUTE, &model, 200, received.elapsed().as_secs_f64());
                    tracing::warn!(reason = err.reason().as_str(), "chat stream ended before finishing");
                    yield Ok(error_frame(&err));
                    break;
                }
                Step::Failed(status) => {
                    record_rpc_status(&rpc_span, &status);
                    server_span.record("otel.status_code", "ERROR");
                    let err = ApiError::Scheduler(status);
                    metrics.stream_error(&model, err.reason().as_str());
                    metrics.duration(ROUTE, &model, 200, received.elapsed().as_secs_f64());
                    tracing::warn!(reason = err.reason().as_str(), error = %err, "chat stream failed after the response was committed");
                    yield Ok(error_frame(&err));
                    break;
                }
            }
        }
    };
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge { limit }
    } else {
        ApiError::InvalidRequest {
            message: format!("cannot read request body: {rejection}"),
            param: None,
        }
    }
}

/// An SSE comment: ignored by clients, seen as traffic by proxies.
const KEEPALIVE_FRAME: &[u8] = b": keep-alive\n\n";

fn queued_comment(position: u32) -> Bytes {
    Bytes::from(format!(": queued position={position}\n\n"))
}

fn next_step(next: Option<Result<ChatEvent, tonic::Status>>) -> Step {
    match next {
        Some(Ok(ChatEvent { event: Some(event) })) => Step::Event(event),
        Some(Ok(ChatEvent { event: None })) => Step::KeepAlive,
        None => Step::End,
        Some(Err(status)) => Step::Failed(status),
    }
}

/// Beyond the connect timeout, how long a scheduler may take to send a call's response head.
const SCHEDULER_HEAD_GRACE: Duration = Duration::from_secs(1);

/// How often a request waiting out a failover looks for a new leader.
const FAILOVER_POLL: Duration = Duration::from_millis(100);

/// Whether another scheduler may serve a call that failed before its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MoveOn {
    /// No: the answer stands.
    No,
    /// Yes, if another has the model (schedulers shard models by config).
    Elsewhere,
    /// Yes; and if none serves now, wait (bounded) for a new leader.
    OrWait,
}

/// This scheduler stands by, shuts down, or never answered as itself (no reason: a transport
/// failure) → another one, or a new leader; it lacks the model → another one.
fn moves_on(status: &tonic::Status) -> MoveOn {
    let reason = status
        .metadata()
        .get(llmgw_proto::REASON_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|word| word.parse::<Reason>().ok());
    match reason {
        // Without a reason the scheduler never answered as itself: refused connection, broken
        // or closing connection (tonic reports some of these as CANCELLED).
        None | Some(Reason::NotLeader | Reason::ShuttingDown) => MoveOn::OrWait,
        Some(Reason::ModelNotFound) => MoveOn::Elsewhere,
        Some(_) => MoveOn::No,
    }
}

fn record_rpc_status(span: &tracing::Span, status: &tonic::Status) {
    span.record("rpc.grpc.status_code", status.code() as i32);
    span.record("otel.status_code", "ERROR");
}

fn record_rpc_failure(span: &tracing::Span, status: tonic::Status) -> ApiError {
    record_rpc_status(span, &status);
    ApiError::Scheduler(status)
}

/// The route label of this endpoint.
const ROUTE: &str = "/v1/chat/completions";

/// What metrics need to know about one request, filled in as it goes.
#[derive(Debug, Clone)]
struct Observation {
    metrics: Arc<GatewayMetrics>,
    /// The requested model once the scheduler accepted it.
    model: Option<String>,
    tenant: String,
    received: Instant,
    /// The response is a stream: its duration is recorded when the stream ends.
    streaming: bool,
}
