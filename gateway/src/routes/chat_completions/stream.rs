//! The SSE body of a streamed chat completion: queue comments and keep-alives until the first
//! token, then chunks, then `[DONE]` — or an error event if the generation fails after the
//! response was committed (never a hang, never a fake `[DONE]`).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use llmgw_proto::v1::ChatEvent;
use llmgw_proto::v1::chat_event::Event;
use tonic::Streaming;

use super::open::{Opening, record_rpc_status};
use super::{Observation, ROUTE};
use crate::error::ApiError;
use crate::governance::reservation::Reservation;
use crate::translate::response::{DONE_FRAME, SseTranslator, error_frame};

/// What the SSE body does next.
enum Step {
    Event(Event),
    KeepAlive,
    End,
    Failed(tonic::Status),
}

pub(super) fn stream_response(
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
