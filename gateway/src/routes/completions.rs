//! `POST /v1/completions` (legacy text completions), streaming and not: through the route
//! pipeline like chat, with `text_completion` shapes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};

use super::observation::Observation;
use super::pipeline::{self, Answer, Edge, Exchange, Whole};
use crate::error::ApiError;
use crate::translate::completion::{TextStream, ValidCompletion, meta, parse, whole};
use crate::translate::response::Aggregate;

/// The route label of this endpoint.
const ROUTE: &str = "/v1/completions";

pub async fn completions(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange(ROUTE, body, handle).await
}

async fn handle(exchange: &mut Exchange<'_>, body: Bytes) -> Result<Response, ApiError> {
    let ValidCompletion {
        request,
        stream,
        include_usage,
    } = parse(&body)?;
    let meta = meta(request.model.clone());
    let answer = if stream {
        Answer::Streamed(TextStream::new(meta, include_usage))
    } else {
        Answer::Whole(move |events, _: &Observation| {
            let mut aggregate = Aggregate::new(meta.clone());
            for event in events {
                aggregate.push(event);
            }
            let (answer, usage) = aggregate.whole()?;
            let text = whole(&meta, &answer.content, &answer.finish_reason, usage);
            Ok(Whole {
                response: Json(text).into_response(),
                usage: (usage.prompt_tokens, usage.completion_tokens),
            })
        })
    };
    pipeline::serve(exchange, request, answer).await
}
