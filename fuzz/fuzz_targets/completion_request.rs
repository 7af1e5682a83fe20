//! The `/v1/completions` and `/v1/embeddings` request parsers: any bytes give a request or a
//! 400, never a panic. An accepted completion has a non-blank model, is raw (no chat template),
//! keeps its sampling parameters in range (at most 4 stop sequences, a positive token cap) and
//! passes on as engine options only a JSON object of allow-listed engine options
//! (`llmgw_proto::engine_options`), none of them a field the parser took.
//! Accepted embeddings have a non-blank model and 1 to 2048 non-empty inputs, with the same rule
//! for engine options. Parsing the same body twice gives the same result.
#![no_main]

use gateway::error::ApiError;
use gateway::translate::{completion, embedding};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Fields `/v1/completions` takes (or drops) itself: never passed on as engine options.
const COMPLETION_FIELDS: [&str; 18] = [
    "model",
    "prompt",
    "suffix",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "max_completion_tokens",
    "max_tokens",
    "stop",
    "seed",
    "n",
    "best_of",
    "echo",
    "logprobs",
    "user",
];

/// Fields `/v1/embeddings` takes (or drops) itself.
const EMBEDDING_FIELDS: [&str; 5] = ["model", "input", "encoding_format", "dimensions", "user"];

fuzz_target!(|body: &[u8]| {
    match completion::parse(body) {
        Ok(valid) => {
            assert_eq!(completion::parse(body).ok().as_ref(), Some(&valid));
            let request = &valid.request;
            assert!(!request.model.trim().is_empty());
            assert!(request.raw, "a text completion is never templated");
            assert_eq!(request.stream, valid.stream);
            let sampling = request.sampling.as_ref().expect("sampling is always set");
            let within = |value: Option<f32>, min: f32, max: f32| {
                assert!(value.is_none_or(|v| (min..=max).contains(&v)), "{value:?}");
            };
            within(sampling.temperature, 0.0, 2.0);
            within(sampling.top_p, 0.0, 1.0);
            within(sampling.presence_penalty, -2.0, 2.0);
            within(sampling.frequency_penalty, -2.0, 2.0);
            assert_ne!(sampling.max_tokens, Some(0));
            assert!(sampling.stop.len() <= 4);
            check_extra(&request.extra_json, &COMPLETION_FIELDS);
        }
        Err(error) => bad_request(&error),
    }

    match embedding::parse(body) {
        Ok(valid) => {
            assert_eq!(embedding::parse(body).ok().as_ref(), Some(&valid));
            let request = &valid.request;
            assert!(!request.model.trim().is_empty());
            assert!((1..=2048).contains(&request.input.len()));
            assert!(request.input.iter().all(|text| !text.is_empty()));
            check_extra(&request.extra_json, &EMBEDDING_FIELDS);
        }
        Err(error) => bad_request(&error),
    }
});

/// A refused body is a 400.
fn bad_request(error: &ApiError) {
    assert!(
        matches!(error, ApiError::InvalidRequest { .. }),
        "{error:?}"
    );
    assert_eq!(error.status(), 400);
}

/// Engine options: none, or a non-empty JSON object of allow-listed options, none of them a
/// field the parser took.
fn check_extra(extra_json: &str, taken: &[&str]) {
    if extra_json.is_empty() {
        return;
    }
    let extra: Value = serde_json::from_str(extra_json)
        .unwrap_or_else(|err| panic!("engine options are not JSON ({err}): {extra_json}"));
    let object = extra.as_object().expect("engine options are an object");
    assert!(!object.is_empty());
    for name in taken {
        assert!(!object.contains_key(*name), "`{name}` left in {extra_json}");
    }
    for name in object.keys() {
        assert!(
            llmgw_proto::engine_options::is_engine_option(name),
            "`{name}` passed on but not on the engine-option allow-list"
        );
    }
}
