//! `POST /v1/completions` (OpenAI's legacy text completions): the body becomes a
//! [`CompletionRequest`] (one prompt, continued as is), and events become `text_completion`
//! objects — SSE chunks when streamed, one object otherwise.

use bytes::Bytes;
use llmgw_proto::v1::CompletionRequest;
use llmgw_proto::v1::chat_event::Event;
use serde_json::{Value, json};

use super::fields::{body_object, engine_options, field, model, sampling};
use super::response::{ResponseMeta, error_frame};
use super::shape::{SSE_DONE, StreamShape, sse_comment, sse_data};
use crate::error::ApiError;
use crate::openai::request::StreamOptions;
use crate::openai::response::Usage;

/// A completion request that passed validation (caller fields unset).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCompletion {
    pub request: CompletionRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// OpenAI fields accepted and deliberately not acted on.
const IGNORED: [&str; 1] = ["user"];

/// One prompt: a string, or an array holding one string.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// Parses and validates a `/v1/completions` body.
pub fn parse(body: &[u8]) -> Result<ValidCompletion, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let prompt = match field::<Prompt>(&mut object, "prompt")? {
        None => String::new(),
        Some(Prompt::One(prompt)) => prompt,
        Some(Prompt::Many(mut prompts)) if prompts.len() <= 1 => prompts.pop().unwrap_or_default(),
        Some(Prompt::Many(prompts)) => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "`prompt` must be one string (one completion per request), got {}",
                    prompts.len()
                ),
            ));
        }
    };
    let suffix = field::<String>(&mut object, "suffix")?.unwrap_or_default();
    let stream = field::<bool>(&mut object, "stream")?.unwrap_or(false);
    let include_usage = field::<StreamOptions>(&mut object, "stream_options")?
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let sampling = sampling(&mut object)?;
    for (name, neutral) in [("n", 1), ("best_of", 1)] {
        if let Some(value) = field::<i64>(&mut object, name)?
            && value != neutral
        {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be 1 (one completion per request), got {value}"),
            ));
        }
    }
    if field::<bool>(&mut object, "echo")? == Some(true) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if field::<Value>(&mut object, "logprobs")?.is_some() {
        return Err(ApiError::invalid("logprobs", "`logprobs` is not supported"));
    }
    for name in IGNORED {
        object.remove(name);
    }
    Ok(ValidCompletion {
        request: CompletionRequest {
            model,
            prompt,
            suffix,
            sampling: Some(sampling),
            stream,
            extra_json: engine_options(object, "")?,
            // A text completion continues the prompt as written: no chat template.
            raw: true,
            ..Default::default()
        },
        stream,
        include_usage,
    })
}

/// The `cmpl-…` identity of one response.
pub fn meta(model: String) -> ResponseMeta {
    let mut meta = ResponseMeta::new(model);
    meta.id = meta.id.replacen("chatcmpl-", "cmpl-", 1);
    meta
}

fn object(meta: &ResponseMeta, text: &str, finish: Option<&str>) -> Value {
    json!({
        "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
        "choices": [{ "index": 0, "text": text, "finish_reason": finish, "logprobs": null }],
    })
}

/// The whole answer as one `text_completion`.
pub fn whole(meta: &ResponseMeta, text: &str, finish: &str, usage: Usage) -> Value {
    let mut whole = object(meta, text, Some(finish));
    whole["usage"] = json!(usage);
    whole
}

/// Events as `text_completion` SSE chunks.
#[derive(Debug)]
pub struct TextStream {
    meta: ResponseMeta,
    include_usage: bool,
    finished: bool,
}

impl TextStream {
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        Self {
            meta,
            include_usage,
            finished: false,
        }
    }

    fn chunk(&self, text: &str, finish: Option<&str>) -> Bytes {
        let mut chunk = object(&self.meta, text, finish);
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        sse_data(&chunk)
    }
}

impl StreamShape for TextStream {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn frame(&mut self, event: Event) -> Option<Bytes> {
        match event {
            Event::Delta(delta) => Some(self.chunk(&delta.content, None)),
            Event::Finish(finish) => {
                self.finished = true;
                Some(self.chunk("", Some(&finish.reason)))
            }
            Event::Usage(usage) if self.include_usage => {
                let mut last = object(&self.meta, "", None);
                last["choices"] = json!([]);
                last["usage"] = json!(Usage::reported(&usage));
                Some(sse_data(&last))
            }
            Event::Usage(_)
            | Event::Queued(_)
            | Event::Started(_)
            | Event::Dispatched(_)
            | Event::Embeddings(_) => None,
        }
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn done(&self) -> Option<Bytes> {
        Some(Bytes::from_static(SSE_DONE))
    }

    fn error(&self, error: &ApiError) -> Bytes {
        error_frame(error)
    }

    fn comment(&self, text: &str) -> Option<Bytes> {
        Some(sse_comment(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_prompt_raw_and_the_unsupported_named() {
        let valid = parse(br#"{"model":"m","prompt":["Once"],"max_tokens":5,"top_k":3}"#).unwrap();
        assert_eq!(valid.request.prompt, "Once");
        assert!(valid.request.raw);
        assert_eq!(valid.request.extra_json, r#"{"top_k":3}"#);
        let param = |body: &[u8]| match parse(body) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(br#"{"model":"m","prompt":["a","b"]}"#).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(br#"{"model":"m","prompt":"a","n":2}"#).as_deref(),
            Some("n")
        );
        assert_eq!(
            param(br#"{"model":"m","prompt":"a","echo":true}"#).as_deref(),
            Some("echo")
        );
        assert_eq!(
            param(br#"{"model":"m","prompt":[1,2]}"#).as_deref(),
            Some("prompt")
        );
    }
}
