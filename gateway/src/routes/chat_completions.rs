//! `POST /v1/chat/completions`, streaming and not: OpenAI's chat request decoded, answered
//! through the route pipeline ([`pipeline::serve`]) as SSE chunks or one completion.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};

use super::observation::Observation;
use super::pipeline::{self, Answer, Edge, Exchange, Whole};
use crate::error::ApiError;
use crate::translate::request::{ValidChat, parse};
use crate::translate::response::{Aggregate, ResponseMeta, SseTranslator};

pub async fn chat_completions(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange(ROUTE, body, handle).await
}

async fn handle(exchange: &mut Exchange<'_>, body: Bytes) -> Result<Response, ApiError> {
    let ValidChat {
        request,
        stream,
        include_usage,
    } = parse(&body)?;
    tracing::debug!(model = %request.model, stream, messages = request.messages.len(), "chat request");
    let meta = ResponseMeta::new(request.model.clone());
    let answer = if stream {
        Answer::Streamed(SseTranslator::new(meta, include_usage))
    } else {
        Answer::Whole(move |events, _: &Observation| {
            let mut aggregate = Aggregate::new(meta);
            for event in events {
                aggregate.push(event);
            }
            let completion = aggregate.finish()?;
            let usage = (
                completion.usage.prompt_tokens,
                completion.usage.completion_tokens,
            );
            Ok(Whole {
                response: Json(completion).into_response(),
                usage,
            })
        })
    };
    pipeline::serve(exchange, request, answer).await
}

/// The route label of this endpoint.
const ROUTE: &str = "/v1/chat/completions";
