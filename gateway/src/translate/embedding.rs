//! `POST /v1/embeddings`: the body becomes an [`EmbedRequest`] (one or more texts), and the
//! scheduler's `embeddings` event becomes OpenAI's `list` of `embedding` objects, as floats or
//! as base64 of little-endian f32s (what the OpenAI SDK asks for by default).

use base64::Engine as _;
use llmgw_proto::v1::EmbedRequest;
use serde_json::{Value, json};

use super::fields::{body_object, engine_options, field, model, positive};
use crate::error::ApiError;

/// An embeddings request that passed validation (caller fields unset).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEmbedding {
    pub request: EmbedRequest,
    pub base64: bool,
}

/// The most inputs one request may carry (OpenAI's own limit).
const MAX_INPUTS: usize = 2048;

/// One text or several.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

/// Parses and validates a `/v1/embeddings` body.
pub fn parse(body: &[u8]) -> Result<ValidEmbedding, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let input = match field::<Input>(&mut object, "input")? {
        None => return Err(ApiError::invalid("input", "`input` is required")),
        Some(Input::One(text)) => vec![text],
        Some(Input::Many(texts)) => texts,
    };
    if input.is_empty() || input.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!(
                "`input` must hold 1 to {MAX_INPUTS} texts, got {}",
                input.len()
            ),
        ));
    }
    if let Some(index) = input.iter().position(String::is_empty) {
        return Err(ApiError::invalid(
            format!("input[{index}]"),
            format!("`input[{index}]` must not be empty"),
        ));
    }
    let base64 = match field::<String>(&mut object, "encoding_format")?.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`, got `{other}`"),
            ));
        }
    };
    let dimensions = positive(&mut object, "dimensions")?.unwrap_or(0);
    object.remove("user");
    Ok(ValidEmbedding {
        request: EmbedRequest {
            model,
            input,
            dimensions,
            extra_json: engine_options(object, "")?,
            ..Default::default()
        },
        base64,
    })
}

/// OpenAI's answer for `vectors`.
pub fn list(model: &str, vectors: Vec<Vec<f32>>, base64: bool, prompt_tokens: u32) -> Value {
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, values)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(values)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_formats_and_dimensions() {
        let valid = parse(br#"{"model":"m","input":"hi","dimensions":8}"#).unwrap();
        assert_eq!(valid.request.input, vec!["hi".to_owned()]);
        assert_eq!(valid.request.dimensions, 8);
        assert!(!valid.base64);
        assert!(
            parse(br#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#)
                .unwrap()
                .base64
        );
        let param = |body: &[u8]| match parse(body) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(param(br#"{"model":"m"}"#).as_deref(), Some("input"));
        assert_eq!(
            param(br#"{"model":"m","input":[]}"#).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(br#"{"model":"m","input":["a",""]}"#).as_deref(),
            Some("input[1]")
        );
        assert_eq!(
            param(br#"{"model":"m","input":[[1,2]]}"#).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(br#"{"model":"m","input":"a","encoding_format":"hex"}"#).as_deref(),
            Some("encoding_format")
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let body = list("m", vec![vec![1.0, -2.5]], true, 3);
        let text = body["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
        assert_eq!(body["usage"]["prompt_tokens"], 3);
    }
}
