//! OpenAI's Responses API at the edge — `POST /v1/responses` (streamed and not) and
//! `GET`/`DELETE /v1/responses/{id}` — through the route pipeline like every other route. A
//! stored response (`store`, the default) can be continued with `previous_response_id`: its
//! conversation (input and output, not its instructions) comes before the new input. Stored
//! responses live in the [`ResponseStore`](crate::responses_store) (memory, or `[store]`'s Redis), scoped to the
//! tenant that created them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::observation::Observation;
use super::pipeline::{self, Answer, Edge, Exchange, Whole};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::translate::response::{Aggregate, ResponseMeta};
use crate::translate::responses_request::{ValidResponses, parse};
use crate::translate::responses_response::{
    Keep, ResponseHead, ResponsesStream, output_items, status_of,
};

/// `POST /v1/responses`.
pub async fn create(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange("/v1/responses", body, handle).await
}

async fn handle(exchange: &mut Exchange<'_>, body: Bytes) -> Result<Response, ApiError> {
    let ValidResponses {
        mut request,
        input,
        instructions,
        stream,
        store,
        previous_response_id,
        echo,
    } = parse(&body)?;
    let responses = &exchange.state.responses;
    let tenant = exchange.caller.tenant.clone();
    // The stored conversation goes after this turn's instructions and before its input.
    let mut conversation = Vec::new();
    if let Some(previous) = &previous_response_id {
        let stored = responses.get(previous, &tenant).await?.ok_or_else(|| {
            ApiError::invalid(
                "previous_response_id",
                format!("Previous response with id `{previous}` not found"),
            )
        })?;
        conversation = stored.conversation;
        let at = usize::from(instructions.is_some());
        request
            .messages
            .splice(at..at, conversation.iter().cloned());
    }
    conversation.extend(input);
    let keep = store.then(|| Keep {
        store: std::sync::Arc::clone(responses),
        tenant,
        conversation,
    });
    let head = ResponseHead::new(
        request.model.clone(),
        previous_response_id,
        instructions,
        store,
        echo,
    );
    let id = head.id.clone();
    let answer = if stream {
        Answer::Streamed(ResponsesStream::new(head, keep))
    } else {
        Answer::Whole(move |events, _: &Observation| {
            let mut aggregate = Aggregate::new(ResponseMeta::new(head.model.clone()));
            for event in events {
                aggregate.push(event);
            }
            let (answer, usage) = aggregate.whole()?;
            let usage = (usage.prompt_tokens, usage.completion_tokens);
            let status = status_of(&answer.finish_reason);
            let response = head.object(
                status,
                &output_items(&answer),
                Some(usage),
                &answer.finish_reason,
            );
            if let Some(keep) = keep {
                // The whole body waits for it below, once the pipeline returns.
                drop(keep.keep(&head.id, &response, &answer.content, &answer.tool_calls));
            }
            Ok(Whole {
                response: Json(response).into_response(),
                usage,
            })
        })
    };
    let response = pipeline::serve(exchange, request, answer).await?;
    // A whole answer goes out once its stored response can be read by every gateway (a stream
    // waits for it before its closing event: `StreamShape::before_sending`).
    if store && !stream {
        exchange.state.responses.written(&id).await;
    }
    Ok(response)
}

fn not_found(id: &str) -> Response {
    ApiError::Scheduler(tonic::Status::not_found(format!(
        "Response with id `{id}` not found"
    )))
    .into_response()
}

/// `GET /v1/responses/{id}`: a stored response of the caller's tenant.
pub async fn retrieve(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.responses.get(&id, &caller.tenant).await {
        Ok(Some(stored)) => Json(stored.response).into_response(),
        Ok(None) => not_found(&id),
        Err(error) => error.into_response(),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.responses.delete(&id, &caller.tenant).await {
        Ok(true) => (
            StatusCode::OK,
            Json(json!({"id": id, "object": "response.deleted", "deleted": true})),
        )
            .into_response(),
        Ok(false) => not_found(&id),
        Err(error) => error.into_response(),
    }
}
