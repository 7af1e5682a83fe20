//! The rest of Ollama's API at the edge: `GET /api/tags` and `/api/ps` (the served models, in
//! Ollama's list shape), `GET /api/version`, model management refused (the gateway serves the
//! fleet; it does not change it), and the error bodies Ollama's clients read
//! (`{"error": "…"}` in place of OpenAI's envelope).

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::models::served;
use crate::error::ApiError;

/// The Ollama API version the gateway speaks (what `ollama --version` clients compare with).
pub const OLLAMA_API_VERSION: &str = "0.12.0";

fn listed(models: Vec<llmgw_proto::v1::Model>) -> Value {
    let models: Vec<Value> = models
        .into_iter()
        .map(|model| {
            json!({
                "name": model.id, "model": model.id,
                "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "",
                "details": { "format": "", "family": "", "parameter_size": "", "quantization_level": "" },
            })
        })
        .collect();
    json!({ "models": models })
}

/// `GET /api/tags`: every model the schedulers serve.
pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(listed(served(&state).await?)))
}

/// `GET /api/ps`: the gateway cannot see engines' memory; it lists what it serves.
pub async fn ps(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(listed(served(&state).await?)))
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": OLLAMA_API_VERSION }))
}

/// `pull`, `push`, `create`, `copy`, `delete`, blobs: 403 (after reading the body, so the
/// client's keep-alive connection stays usable).
pub async fn management(request: Request) -> Response {
    let message =
        "model management is not available through the gateway; manage models on the engines";
    let refused = (StatusCode::FORBIDDEN, Json(json!({ "error": message }))).into_response();
    crate::layers::drain_then(request, refused, crate::layers::REFUSAL_DRAIN_BYTES).await
}

/// The most of an error body read to reshape (the gateway's own errors are far smaller).
const ERROR_BODY_BYTES: usize = 64 << 10;

/// Rewrites OpenAI error envelopes on `/api/*` routes as Ollama's `{"error": "message"}`, so
/// Ollama's clients show the message (refusals from the caller and limit layers included).
pub async fn ollama_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_BYTES).await else {
        parts.headers.remove(header::CONTENT_LENGTH);
        let body = json!({ "error": status.canonical_reason().unwrap_or("error") }).to_string();
        return Response::from_parts(parts, Body::from(body));
    };
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|body| {
            body.get("error")?
                .get("message")?
                .as_str()
                .map(str::to_owned)
        });
    match message {
        Some(message) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = json!({ "error": message }).to_string();
            Response::from_parts(parts, Body::from(body))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}
