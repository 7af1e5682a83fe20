//! The body of a streamed answer, for every route that streams (chat and text completions, in
//! their OpenAI SSE shapes): queue comments and keep-alives until the first token, then
//! chunks, then the end marker — or an error frame if the generation fails after the response
//! was committed (never a hang, never a fake end).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use llmgw_proto::v1::ChatEvent;
use llmgw_proto::v1::chat_event::Event;
use tonic::Streaming;

use super::observation::Observation;
use crate::error::ApiError;
use crate::governance::reservation::Reservation;
use crate::routes::call::{Opening, record_rpc_status};
use crate::translate::shape::StreamShape;

/// What the SSE body does next.
enum Step {
    Event(Event),
    KeepAlive,
    End,
    Failed(tonic::Status),
}

pub(crate) fn stream_response<S: StreamShape>(
    mut translator: S,
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
        let Observation { metrics, model, tenant, received, route, failures, .. } = observation;
        let model = model.unwrap_or_default();
        let mut first_token_at: Option<Duration> = None;
        let mut output_tokens = 0;
        // No data chunk before the first real one: while the request still waits for a slot,
        // only SSE comments go out, so proxies see traffic and clients see nothing.
        let mut opened = false;
        if let Some(comment) = queued_position.filter(|_| first.is_none()).and_then(|p| translator.comment(&format!("queued position={p}"))) {
            yield Ok(comment);
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
                Step::KeepAlive => {
                    if let Some(comment) = translator.comment("keep-alive") {
                        yield Ok::<Bytes, Infallible>(comment);
                    }
                }
                Step::Event(Event::Queued(queued)) if !opened => {
                    if let Some(comment) = translator.comment(&format!("queued position={}", queued.position)) {
                        yield Ok(comment);
                    }
                }
                Step::Event(Event::Dispatched(_)) => {
                    if let Some(reservation) = &mut reservation {
                        reservation.dispatched();
                    }
                }
                // Headers are gone already: the queue time the header would carry goes here.
                Step::Event(Event::Started(started)) if !opened => {
                    if let Some(reservation) = &mut reservation {
                        reservation.generating(true);
                    }
                    if let Some(comment) = translator.comment(&format!("started queue_ms={}", started.queue_ms)) {
                        yield Ok(comment);
                    }
                }
                Step::Event(event) => {
                    let content = matches!(event, Event::Delta(_) | Event::Finish(_) | Event::Usage(_));
                    if content && !opened {
                        opened = true;
                        if let Some(opening) = translator.opening() {
                            yield Ok(opening);
                        }
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
                        // Settled before the usage frame and the end marker go out.
                        if let Some(mut reservation) = reservation.take() {
                            reservation.usage_seen(usage);
                            reservation.finish(usage.prompt_tokens, usage.completion_tokens).await;
                        }
                        output_tokens = usage.completion_tokens;
                        metrics.tokens(&model, &tenant, usage.prompt_tokens, usage.completion_tokens);
                    }
                    if let Some(frame) = translator.frame(event) {
                        if let Some(landing) = translator.before_sending() {
                            landing.await;
                        }
                        yield Ok(frame);
                    }
                }
                Step::End if translator.finished() => {
                    rpc_span.record("rpc.grpc.status_code", 0);
                    let total = received.elapsed();
                    metrics.duration(route, &model, 200, total.as_secs_f64());
                    if let Some(ttft) = first_token_at.filter(|_| output_tokens > 1) {
                        metrics.per_output_token(&model, (total - ttft).as_secs_f64() / f64::from(output_tokens - 1));
                    }
                    tracing::info!(status = 200, elapsed_ms = received.elapsed().as_millis() as u64, "stream completed");
                    if let Some(done) = translator.done() {
                        yield Ok(done);
                    }
                    break;
                }
                Step::End => {
                    let err = ApiError::backend_interrupted();
                    metrics.stream_error(&model, err.reason().as_str());
                    failures.record(route, &model, err.reason());
                    metrics.duration(route, &model, 200, received.elapsed().as_secs_f64());
                    tracing::warn!(reason = err.reason().as_str(), "stream ended before finishing");
                    yield Ok(translator.error(&err));
                    break;
                }
                Step::Failed(status) => {
                    if let Some(reservation) = &mut reservation {
                        reservation.failed(&status);
                    }
                    record_rpc_status(&rpc_span, &status);
                    server_span.record("otel.status_code", "ERROR");
                    let err = ApiError::Scheduler(status);
                    metrics.stream_error(&model, err.reason().as_str());
                    failures.record(route, &model, err.reason());
                    metrics.duration(route, &model, 200, received.elapsed().as_secs_f64());
                    tracing::warn!(reason = err.reason().as_str(), error = %err, "stream failed after the response was committed");
                    yield Ok(translator.error(&err));
                    break;
                }
            }
        }
    };
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(S::CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn next_step(next: Option<Result<ChatEvent, tonic::Status>>) -> Step {
    match next {
        Some(Ok(ChatEvent { event: Some(event) })) => Step::Event(event),
        Some(Ok(ChatEvent { event: None })) => Step::KeepAlive,
        None => Step::End,
        Some(Err(status)) => Step::Failed(status),
    }
}
