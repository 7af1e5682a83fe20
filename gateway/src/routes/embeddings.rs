//! `POST /v1/embeddings`: governance (model allow-list, limits on the input tokens), one Embed
//! call to the scheduler — queued, admitted and routed like a chat, holding one of its pool's
//! slots while the engine computes — and OpenAI's `list` of vectors.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};

use super::observation::Observation;
use super::pipeline::{self, Answer, Edge, Exchange, Unstreamed, Whole};
use crate::error::ApiError;
use crate::translate::embedding::{ValidEmbedding, list, parse};

/// The route label of this endpoint.
const ROUTE: &str = "/v1/embeddings";

pub async fn embeddings(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange(ROUTE, body, handle).await
}

async fn handle(exchange: &mut Exchange<'_>, body: Bytes) -> Result<Response, ApiError> {
    let ValidEmbedding { request, base64 } = parse(&body)?;
    let model = request.model.clone();
    let answer = Answer::<Unstreamed, _>::Whole(move |events, _: &Observation| {
        let (vectors, prompt_tokens) = pipeline::embeddings(events)?;
        Ok(Whole {
            response: Json(list(&model, vectors, base64, prompt_tokens)).into_response(),
            usage: (prompt_tokens, 0),
        })
    });
    pipeline::serve(exchange, request, answer).await
}
