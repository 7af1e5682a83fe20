//! Embeddings: Ollama's `POST /api/embed` and OpenAI's `POST /v1/embeddings`. Each input's
//! vector is a pure function of its text (unit length, [`EMBEDDING_DIMS`] values, or the first
//! `dimensions` renormalized), so tests can compute what the engine returns.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Fault;
use crate::state::Sim;
use crate::text::prompt_tokens;

/// The simulator's native embedding size.
pub const EMBEDDING_DIMS: usize = 16;

/// The vector for `text`: `dims` values (at most [`EMBEDDING_DIMS`]), unit length.
pub fn embedding(text: &str, dims: Option<usize>) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let count = dims.unwrap_or(EMBEDDING_DIMS).clamp(1, EMBEDDING_DIMS);
    let raw: Vec<f64> = (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) as f64 / u64::MAX as f64) * 2.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
        .max(f64::EPSILON);
    raw.iter().map(|v| (v / norm) as f32).collect()
}

/// One string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

impl Input {
    fn texts(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

#[derive(Debug, Deserialize)]
struct EmbedRequest {
    model: String,
    input: Input,
    dimensions: Option<usize>,
}

/// What both protocols do before answering: parse, check the model and the fault, hold a
/// slot while "computing". `Err` is the refusal already shaped for the protocol.
async fn vectors(
    sim: &Sim,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    refuse: fn(StatusCode, String) -> Response,
) -> Result<(String, Vec<Vec<f32>>, usize), Response> {
    sim.slots.stats().count_request(headers);
    let request: EmbedRequest = serde_json::from_slice(body)
        .map_err(|err| refuse(StatusCode::BAD_REQUEST, format!("invalid request: {err}")))?;
    let Some(model) = sim.config.resolve_model(&request.model) else {
        let message = format!(
            "model \"{}\" not found, try pulling it first",
            request.model
        );
        return Err(refuse(StatusCode::NOT_FOUND, message));
    };
    if let Fault::Status(code) = sim.fault() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(refuse(status, "simulated upstream failure".to_owned()));
    }
    let Ok(mut slot) = sim.slots.acquire().await else {
        let busy = "server busy, please try again.".to_owned();
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, busy));
    };
    let texts = request.input.texts();
    let tokens = texts.iter().map(|text| prompt_tokens(text)).sum();
    let vectors = texts
        .iter()
        .map(|text| embedding(text, request.dimensions))
        .collect();
    slot.complete();
    Ok((model, vectors, tokens))
}

fn ollama_error(status: StatusCode, message: String) -> Response {
    crate::refusal::with_retry_after((status, Json(json!({ "error": message }))).into_response())
}

fn openai_error(status: StatusCode, message: String) -> Response {
    let body = json!({ "error": { "message": message, "type": "invalid_request_error", "param": null, "code": null } });
    crate::refusal::with_retry_after((status, Json(body)).into_response())
}

/// `POST /api/embed`.
pub async fn ollama(
    State(sim): State<Sim>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    match vectors(&sim, &headers, &body, ollama_error).await {
        Ok((model, embeddings, tokens)) => Json(json!({
            "model": model, "embeddings": embeddings,
            "total_duration": 0, "load_duration": 0, "prompt_eval_count": tokens,
        }))
        .into_response(),
        Err(refusal) => refusal,
    }
}

/// `POST /v1/embeddings` (floats only).
pub async fn openai(
    State(sim): State<Sim>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    match vectors(&sim, &headers, &body, openai_error).await {
        Ok((model, embeddings, tokens)) => {
            let data: Vec<Value> = embeddings
                .into_iter()
                .enumerate()
                .map(|(index, vector)| json!({ "object": "embedding", "index": index, "embedding": vector }))
                .collect();
            Json(json!({
                "object": "list", "data": data, "model": model,
                "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
            }))
            .into_response()
        }
        Err(refusal) => refusal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_length_and_shortened_on_request() {
        let a = embedding("hello", None);
        assert_eq!(a.len(), EMBEDDING_DIMS);
        assert_eq!(a, embedding("hello", None));
        assert_ne!(a, embedding("world", None));
        let length: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((length - 1.0).abs() < 1e-5);
        assert_eq!(embedding("hello", Some(4)).len(), 4);
    }
}
