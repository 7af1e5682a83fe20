//! [`serve`]: the one shell every generation and embeddings route runs — governance, the
//! scheduler call, the answer streamed or gathered, its settlement, and the headers that
//! explain it. A route brings only its wire format: a decoded request (anything
//! [`Governed`] that becomes a scheduler [`Call`]) and an [`Answer`] — the [`StreamShape`]
//! its stream is spelled in, or how its gathered events become one body.
//!
//! The HTTP status is decided by the scheduler's first *content* event: until then (queued,
//! admitted, backend connecting) any refusal or failure can still be an honest 4xx/5xx. After
//! it, failures end a stream with the shape's error frame (never a hang, never a fake end).
//! Dropping the response (client gone) drops the gRPC stream, which frees the slot upstream.

use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use llmgw_proto::v1::chat_event::Event;
use llmgw_telemetry::TraceContext;

use super::AppState;
use super::call::{self, Call};
use super::observation::Observation;
use super::{gather, stream};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::governance::Admitted;
use crate::governance::governed::Governed;
use crate::governance::reservation::Reservation;
use crate::layers::IncomingTrace;
use crate::translate::shape::StreamShape;

/// One request's exchange at the edge: who asks, the trace it continues, and what is observed
/// of it (metrics, the log line, limit headers).
pub(crate) struct Exchange<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    pub incoming: &'a TraceContext,
    pub observation: &'a mut Observation,
}

/// How a route answers.
pub(crate) enum Answer<S, W> {
    /// Streamed in this shape.
    Streamed(S),
    /// Gathered: every event after the opening becomes one body (see [`Whole`]).
    Whole(W),
}

/// A gathered answer's body and the usage it is charged: prompt and completion tokens.
pub(crate) struct Whole {
    pub response: Response,
    pub usage: (u32, u32),
}

/// What the layers in front of a route hand its handler: the shared state, the caller
/// (`layers::caller`) and the caller's trace context.
pub struct Edge {
    state: AppState,
    caller: Caller,
    incoming: TraceContext,
}

impl FromRequestParts<AppState> for Edge {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Extension(caller) = Extension::<Caller>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Extension(IncomingTrace(incoming)) =
            Extension::<IncomingTrace>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
        Ok(Self {
            state: state.clone(),
            caller,
            incoming,
        })
    }
}

impl Edge {
    /// Runs one request of `route`: its body read within the gateway's limits, then `handle`
    /// (the route's decoder, which ends in [`serve`]), observed — metrics, the log line, the
    /// limit headers — whatever the outcome.
    pub(crate) async fn exchange(
        self,
        route: &'static str,
        body: Result<Bytes, BytesRejection>,
        handle: impl AsyncFnOnce(&mut Exchange<'_>, Bytes) -> Result<Response, ApiError>,
    ) -> Response {
        let Self {
            state,
            caller,
            incoming,
        } = self;
        let mut observation = Observation::new(&state, &caller, route);
        let handled = async {
            let body = gather::body(body, state.config.max_body_bytes)?;
            let mut exchange = Exchange {
                state: &state,
                caller: &caller,
                incoming: &incoming,
                observation: &mut observation,
            };
            handle(&mut exchange, body).await
        }
        .await;
        observation.respond(handled)
    }
}

/// Governs `request` and answers it: [`admit`], then [`run`].
pub(crate) async fn serve<R, S, W>(
    exchange: &mut Exchange<'_>,
    mut request: R,
    answer: Answer<S, W>,
) -> Result<Response, ApiError>
where
    R: Governed + Send + Into<Call>,
    S: StreamShape,
    W: FnOnce(Vec<Event>, &Observation) -> Result<Whole, ApiError>,
{
    let reservation = admit(exchange, &mut request).await?;
    run(exchange, request.into(), reservation, answer).await
}

/// Stamps who asks into `request` (never what the client sent) and passes it through
/// governance: model allow-list, engine options, completion cap, the reservation against
/// limits. The limit headers go on the answer, whatever it becomes; the reservation (for a
/// limited tenant) is settled when the answer ends.
pub(crate) async fn admit<R: Governed + Send>(
    exchange: &mut Exchange<'_>,
    request: &mut R,
) -> Result<Option<Reservation>, ApiError> {
    let Exchange { state, caller, .. } = exchange;
    request.stamp(caller, state.config.request_timeout_ms);
    let Admitted {
        reservation,
        headers,
    } = state.governance.admit(caller, request).await?;
    exchange.observation.limit_headers = headers;
    Ok(reservation)
}

/// Opens the scheduler call for an admitted request and answers it.
pub(crate) async fn run<S, W>(
    exchange: &mut Exchange<'_>,
    call: Call,
    mut reservation: Option<Reservation>,
    answer: Answer<S, W>,
) -> Result<Response, ApiError>
where
    S: StreamShape,
    W: FnOnce(Vec<Event>, &Observation) -> Result<Whole, ApiError>,
{
    let Exchange {
        state,
        incoming,
        observation,
        ..
    } = exchange;
    let model = call.model().to_owned();
    let server_span = tracing::Span::current();
    server_span.record("gen_ai.request.model", model.as_str());
    let rpc_span = call::rpc_span(call.method());
    let keepalive = Duration::from_millis(state.config.sse_keepalive_ms);
    // A shape with comments commits its head after the first keep-alive while the request
    // waits; one without (NDJSON) sends it when the answer starts, so a refusal while queued
    // is still an honest status.
    let commit_after = match &answer {
        Answer::Streamed(_) if S::COMMENTS && !keepalive.is_zero() => Some(keepalive),
        _ => None,
    };
    let (mut events, opening) = call::open(
        state,
        call,
        incoming,
        &rpc_span,
        commit_after,
        &mut reservation,
    )
    .await?;
    let started = opening.started.clone();
    // The scheduler accepted the model name: from here on it may label metrics.
    observation.model = Some(model.clone());
    let mut response = match answer {
        Answer::Streamed(shape) => {
            observation.streaming = true;
            stream::stream_response(
                shape,
                opening,
                events,
                keepalive,
                observation.clone(),
                (server_span, rpc_span),
                reservation,
            )
        }
        Answer::Whole(body) => {
            let all = gather::rest(opening, &mut events, &rpc_span, &mut reservation).await?;
            let Whole { response, usage } = body(all, observation)?;
            gather::settle(reservation, observation, &model, usage).await;
            response
        }
    };
    if let Some(started) = started {
        gather::started_headers(response.headers_mut(), &started);
    }
    Ok(response)
}

/// The stream shape of routes that never stream (embeddings): it cannot be built.
pub(crate) enum Unstreamed {}

impl StreamShape for Unstreamed {
    const CONTENT_TYPE: &'static str = "application/json";
    const COMMENTS: bool = false;
    fn frame(&mut self, _event: Event) -> Option<Bytes> {
        match *self {}
    }
    fn finished(&self) -> bool {
        match *self {}
    }
    fn done(&self) -> Option<Bytes> {
        match *self {}
    }
    fn error(&self, _error: &ApiError) -> Bytes {
        match *self {}
    }
    fn comment(&self, _text: &str) -> Option<Bytes> {
        match *self {}
    }
}

/// The vectors and prompt tokens of a gathered embeddings answer; an answer without vectors
/// was interrupted.
pub(crate) fn embeddings(events: Vec<Event>) -> Result<(Vec<Vec<f32>>, u32), ApiError> {
    let (mut vectors, mut prompt_tokens) = (None, 0);
    for event in events {
        match event {
            Event::Embeddings(embeddings) => vectors = Some(embeddings.vectors),
            Event::Usage(usage) => prompt_tokens = usage.prompt_tokens,
            _ => {}
        }
    }
    let vectors = vectors.ok_or_else(ApiError::backend_interrupted)?;
    Ok((
        vectors.into_iter().map(|vector| vector.values).collect(),
        prompt_tokens,
    ))
}
