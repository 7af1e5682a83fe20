//! OpenAI-compatible engines: `POST /v1/chat/completions` and `/v1/completions` (SSE stream or
//! one object), `POST /v1/embeddings`, `GET /v1/models`. Streams ask for usage (`stream_options.include_usage`); when an engine
//! does not report it, completion tokens are counted (one per content delta) and prompt tokens
//! estimated (whitespace-separated words).

use llmgw_proto::engine_options::EngineProtocol;
use std::time::Duration;

use futures::future::BoxFuture;
use llmgw_proto::v1::response_format::Kind as FormatKind;
use llmgw_proto::v1::{
    ChatRequest, CompletionRequest, Delta, EmbedRequest, Finish, ResponseFormat, ToolCallDelta,
    Usage, chat_event::Event,
};
use serde_json::Value;

use super::decode::{ChunkDecoder, WholeBody, decode};
use super::embed::EmbedDecoder;
use super::openai_wire as wire;
use super::tools::{json_or_string, tools_json};
use super::{
    Backend, BackendError, EventStream, SendGate, get_json, http_client, sampling_options, send,
};
use crate::framing::sse::{SseDecoder, SseEvent};
use crate::routing::config::SchemaFormat;
use crate::work::Work;

/// Longest SSE line, and longest non-streamed answer, accepted.
const MAX_LINE_BYTES: usize = 16 << 20;

/// One OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiBackend {
    name: String,
    base: String,
    api_key: Option<String>,
    schema_format: SchemaFormat,
    http: reqwest::Client,
}

impl std::fmt::Debug for OpenAiBackend {
    // The API key never appears in logs or `Debug` output; only whether one is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("name", &self.name)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl OpenAiBackend {
    /// A backend at `base` (e.g. `http://vllm:8000`; a trailing `/v1` is accepted).
    pub fn new(
        base: &str,
        api_key: Option<String>,
        connect_timeout: Duration,
    ) -> Result<Self, BackendError> {
        let base = base
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_owned();
        Ok(Self {
            name: format!("openai@{base}"),
            base,
            api_key,
            schema_format: SchemaFormat::default(),
            http: http_client(connect_timeout)?,
        })
    }

    /// How this engine is asked for JSON matching a schema.
    pub fn with_schema_format(mut self, schema_format: SchemaFormat) -> Self {
        self.schema_format = schema_format;
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }
}

impl Backend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &'static str {
        "openai"
    }

    fn call(
        &self,
        work: Work,
        trace: http::HeaderMap,
        gate: SendGate,
    ) -> BoxFuture<'static, Result<EventStream, BackendError>> {
        let prompt_words = super::prompt_words(&work);
        let stream = work.stream();
        let model = work.model().to_owned();
        let post = |path: &str| self.request(reqwest::Method::POST, path).headers(trace);
        let (call, embeddings) = match work {
            Work::Chat(chat) => (
                post("/v1/chat/completions").json(&to_wire(chat, self.schema_format)),
                None,
            ),
            Work::Completion(completion) => (
                post("/v1/completions").json(&completion_wire(completion)),
                None,
            ),
            Work::Embedding(embed) => {
                let inputs = embed.input.len();
                (
                    post("/v1/embeddings").json(&embed_wire(embed)),
                    Some(inputs),
                )
            }
        };
        Box::pin(async move {
            let response = send(call, &gate, &model).await?;
            let body = response.bytes_stream();
            Ok(match embeddings {
                Some(inputs) => decode(
                    body,
                    WholeBody::new(MAX_LINE_BYTES),
                    EmbedDecoder::new(parse_embeddings, prompt_words, inputs),
                ),
                None => decode_events(body, prompt_words, stream),
            })
        })
    }

    /// `/metrics` (vLLM, SGLang, TGI, llama.cpp with `--metrics`) and llama.cpp's `/props`.
    fn engine_load(
        &self,
    ) -> BoxFuture<'static, Result<Option<super::engine_load::EngineLoad>, BackendError>> {
        let metrics = self.request(reqwest::Method::GET, "/metrics");
        let props = self.request(reqwest::Method::GET, "/props");
        Box::pin(async move {
            let mut load = super::get_text(metrics)
                .await?
                .and_then(|text| super::engine_load::EngineLoad::from_metrics(&text));
            let total_slots = super::get_text(props)
                .await?
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|props| props.get("total_slots")?.as_u64())
                .and_then(|slots| usize::try_from(slots).ok())
                .filter(|slots| *slots > 0);
            if let Some(slots) = total_slots {
                load.get_or_insert_with(Default::default).total_slots = Some(slots);
            }
            Ok(load)
        })
    }

    fn list_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
        let call = self.request(reqwest::Method::GET, "/v1/models");
        Box::pin(async move {
            let list: wire::ModelList = get_json(call, "/v1/models").await?;
            Ok(list.data.into_iter().map(|m| m.id).collect())
        })
    }
}

fn to_wire(request: ChatRequest, schema_format: SchemaFormat) -> wire::ChatRequest {
    let options = sampling_options(
        request.sampling,
        &request.extra_json,
        EngineProtocol::OpenAi,
    );
    let messages = request
        .messages
        .into_iter()
        .map(|m| wire::Message {
            role: m.role,
            content: content_with_images(m.content, &m.images),
            name: (!m.name.is_empty()).then_some(m.name),
            tool_calls: m
                .tool_calls
                .into_iter()
                .map(|call| wire::ToolCall {
                    id: call.id,
                    kind: if call.r#type.is_empty() {
                        "function".to_owned()
                    } else {
                        call.r#type
                    },
                    function: wire::FunctionCall {
                        name: call.name,
                        arguments: call.arguments_json,
                    },
                })
                .collect(),
            tool_call_id: (!m.tool_call_id.is_empty()).then_some(m.tool_call_id),
        })
        .collect();
    let tools = tools_json(request.tools);
    wire::ChatRequest {
        model: request.model,
        messages,
        stream: request.stream,
        stream_options: request.stream.then_some(wire::StreamOptions {
            include_usage: true,
        }),
        tools,
        tool_choice: serde_json::from_str(&request.tool_choice_json).ok(),
        response_format: request
            .response_format
            .and_then(|format| response_format(format, schema_format)),
        n: (request.n > 1).then_some(request.n),
        logprobs: request.logprobs,
        top_logprobs: (request.logprobs && request.top_logprobs > 0)
            .then_some(request.top_logprobs),
        options,
    }
}

fn completion_wire(request: CompletionRequest) -> wire::CompletionRequest {
    wire::CompletionRequest {
        options: sampling_options(
            request.sampling,
            &request.extra_json,
            EngineProtocol::OpenAi,
        ),
        model: request.model,
        prompt: request.prompt,
        suffix: (!request.suffix.is_empty()).then_some(request.suffix),
        stream: request.stream,
        stream_options: request.stream.then_some(wire::StreamOptions {
            include_usage: true,
        }),
    }
}

fn embed_wire(request: EmbedRequest) -> wire::EmbedRequest {
    wire::EmbedRequest {
        options: sampling_options(None, &request.extra_json, EngineProtocol::OpenAi),
        model: request.model,
        input: request.input,
        dimensions: (request.dimensions > 0).then_some(request.dimensions),
        encoding_format: "float",
    }
}

/// `data[]` in `index` order (engines may answer out of order).
fn parse_embeddings(body: &[u8]) -> Result<(Vec<Vec<f32>>, Option<u32>), BackendError> {
    let mut answer: wire::EmbedResponse = serde_json::from_slice(body).map_err(|err| {
        BackendError::BadResponse(format!("not an OpenAI embeddings answer ({err})"))
    })?;
    answer.data.sort_by_key(|entry| entry.index);
    let vectors = answer
        .data
        .into_iter()
        .map(|entry| entry.embedding)
        .collect();
    Ok((vectors, answer.usage.map(|usage| usage.prompt_tokens)))
}

/// Decodes a chat or text-completion body into events: SSE chunks until `[DONE]` when
/// streamed, one whole object otherwise. Public for the `backend_decoders` fuzz target
/// (fuzz/fuzz_targets/).
pub fn decode_events<S, E>(body: S, prompt_words: u32, stream: bool) -> EventStream
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let state = DecodeState {
        prompt_words,
        ..DecodeState::default()
    };
    if stream {
        decode(body, SseDecoder::new(MAX_LINE_BYTES), SseFrames(state))
    } else {
        decode(body, WholeBody::new(MAX_LINE_BYTES), state)
    }
}

/// OpenAI's `response_format` in the spelling this engine takes.
fn response_format(format: ResponseFormat, spelling: SchemaFormat) -> Option<Value> {
    let schema = || json_or_string(&format.schema_json);
    match (format.kind(), spelling) {
        (FormatKind::Text, _) => None,
        (FormatKind::JsonObject, _) => Some(serde_json::json!({ "type": "json_object" })),
        (FormatKind::JsonSchema, SchemaFormat::JsonSchema) => Some(serde_json::json!({
            "type": "json_schema",
            "json_schema": {
                "name": if format.name.is_empty() { "response" } else { format.name.as_str() },
                "schema": schema(),
                "strict": format.strict,
            },
        })),
        (FormatKind::JsonSchema, SchemaFormat::JsonObjectSchema) => {
            Some(serde_json::json!({ "type": "json_object", "schema": schema() }))
        }
    }
}

/// A streamed answer: SSE events, each a chunk, until `[DONE]`.
struct SseFrames(DecodeState);

impl ChunkDecoder for SseFrames {
    type Frame = SseEvent;

    fn on_frame(&mut self, event: SseEvent) -> Result<Vec<Event>, BackendError> {
        if event.data == "[DONE]" {
            return self.0.finish();
        }
        self.0.on_data(event.data.as_bytes())
    }

    fn done(&self) -> bool {
        self.0.finished
    }

    /// No `[DONE]`: fine if the generation finished, an interruption otherwise.
    fn at_end(&mut self) -> Result<Vec<Event>, BackendError> {
        self.0.finish()
    }
}

/// A non-streamed answer: the whole body is one `chat.completion`.
impl ChunkDecoder for DecodeState {
    type Frame = bytes::Bytes;

    fn on_frame(&mut self, body: bytes::Bytes) -> Result<Vec<Event>, BackendError> {
        let mut events = self.on_data(&body)?;
        events.extend(self.finish()?);
        Ok(events)
    }

    fn done(&self) -> bool {
        self.finished
    }

    fn at_end(&mut self) -> Result<Vec<Event>, BackendError> {
        self.finish()
    }
}

/// Turns chunks into events, holding finish and usage back to the end so the order is always
/// deltas, finish, usage.
#[derive(Debug, Default)]
struct DecodeState {
    prompt_words: u32,
    deltas: u32,
    /// Each choice's finish reason, as it came.
    finish_reasons: Vec<(u32, String)>,
    usage: Option<wire::Usage>,
    /// Choices that produced a tool call (their finish is `tool_calls` whatever the engine said).
    tool_choices: Vec<u32>,
    finished: bool,
}

impl DecodeState {
    fn on_data(&mut self, data: &[u8]) -> Result<Vec<Event>, BackendError> {
        let chunk: wire::Chunk = serde_json::from_slice(data).map_err(|err| {
            BackendError::BadResponse(format!("not an OpenAI chat chunk ({err})"))
        })?;
        if let Some(error) = chunk.error {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(BackendError::Interrupted(message));
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let mut events = Vec::new();
        for choice in chunk.choices {
            let index = choice.index.unwrap_or(0);
            let logprobs_json = choice
                .logprobs
                .filter(|logprobs| !logprobs.is_null())
                .map(|logprobs| logprobs.to_string())
                .unwrap_or_default();
            let delta = choice.delta.unwrap_or_default();
            let tool_calls: Vec<ToolCallDelta> = delta
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|call| {
                    let function = call.function.unwrap_or(wire::FunctionChunk {
                        name: None,
                        arguments: None,
                    });
                    ToolCallDelta {
                        index: call.index.unwrap_or(0),
                        id: call.id.unwrap_or_default(),
                        r#type: call.kind.unwrap_or_else(|| "function".to_owned()),
                        name: function.name.unwrap_or_default(),
                        arguments: function.arguments.unwrap_or_default(),
                    }
                })
                .collect();
            let content = delta.content.or(choice.text).unwrap_or_default();
            if !content.is_empty() || !tool_calls.is_empty() || !logprobs_json.is_empty() {
                if !tool_calls.is_empty() && !self.tool_choices.contains(&index) {
                    self.tool_choices.push(index);
                }
                self.deltas += 1;
                events.push(Event::Delta(Delta {
                    content,
                    tool_calls,
                    choice: index,
                    logprobs_json,
                }));
            }
            if let Some(reason) = choice.finish_reason {
                match self.finish_reasons.iter_mut().find(|(at, _)| *at == index) {
                    Some((_, known)) => *known = reason,
                    None => self.finish_reasons.push((index, reason)),
                }
            }
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<Event>, BackendError> {
        if self.finished {
            return Ok(Vec::new());
        }
        if self.finish_reasons.is_empty() {
            return Err(BackendError::Interrupted(
                "stream ended before the generation finished".to_owned(),
            ));
        }
        self.finished = true;
        let mut reasons = std::mem::take(&mut self.finish_reasons);
        reasons.sort_by_key(|(choice, _)| *choice);
        let mut events: Vec<Event> = reasons
            .into_iter()
            .map(|(choice, reason)| {
                let reason = match reason.as_str() {
                    "length" => "length",
                    "tool_calls" | "function_call" => "tool_calls",
                    _ if self.tool_choices.contains(&choice) => "tool_calls",
                    _ => "stop",
                };
                Event::Finish(Finish {
                    reason: reason.to_owned(),
                    choice,
                })
            })
            .collect();
        let prompt_counted = self.usage.is_none();
        let usage = self.usage.unwrap_or(wire::Usage {
            prompt_tokens: self.prompt_words,
            completion_tokens: self.deltas,
            prompt_tokens_details: None,
        });
        events.push(Event::Usage(Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            prompt_counted,
            cached_tokens: usage
                .prompt_tokens_details
                .and_then(|details| details.cached_tokens)
                .unwrap_or(0),
        }));
        Ok(events)
    }
}

/// A message's content: its text, or with images OpenAI's parts — the text, then each image
/// as an `image_url` with a `data:` URL.
fn content_with_images(text: String, images: &[llmgw_proto::v1::Image]) -> Value {
    use base64::Engine as _;
    if images.is_empty() {
        return Value::String(text);
    }
    let text = (!text.is_empty()).then(|| serde_json::json!({"type": "text", "text": text}));
    let images = images.iter().map(|image| {
        let data = base64::engine::general_purpose::STANDARD.encode(&image.data);
        serde_json::json!({
            "type": "image_url",
            "image_url": {"url": format!("data:{};base64,{data}", image.media_type)},
        })
    });
    Value::Array(text.into_iter().chain(images).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn collect(body: &'static [&'static [u8]]) -> Vec<Result<Event, String>> {
        let chunks = futures::stream::iter(
            body.iter()
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from_static(c))),
        );
        let state = DecodeState {
            prompt_words: 4,
            ..Default::default()
        };
        decode(chunks, SseDecoder::new(MAX_LINE_BYTES), SseFrames(state))
            .map(|r| r.map_err(|e| e.reason().as_str().to_owned()))
            .collect()
            .await
    }

    fn delta(text: &str) -> Result<Event, String> {
        Ok(Event::Delta(Delta {
            content: text.into(),
            tool_calls: vec![],
            ..Default::default()
        }))
    }

    #[tokio::test]
    async fn sse_chunks_become_deltas_then_finish_then_reported_usage() {
        let events = collect(&[
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n",
            b"\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
        ])
        .await;
        assert_eq!(
            events,
            vec![
                delta("Hi"),
                Ok(Event::Finish(Finish {
                    reason: "length".into(),
                    ..Default::default()
                })),
                Ok(Event::Usage(Usage {
                    prompt_tokens: 9,
                    completion_tokens: 1,
                    prompt_counted: false,
                    cached_tokens: 0,
                })),
            ]
        );
    }

    #[tokio::test]
    async fn usage_is_counted_when_the_engine_does_not_report_it() {
        let events = collect(&[b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" b\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"]).await;
        assert_eq!(
            events.last(),
            Some(&Ok(Event::Usage(Usage {
                prompt_tokens: 4,
                completion_tokens: 2,
                prompt_counted: true,
                cached_tokens: 0,
            })))
        );
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let backend = OpenAiBackend::new(
            "http://engine:8000",
            Some("sk-hidden-42".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{backend:?}").contains("sk-hidden-42"));
    }

    #[tokio::test]
    async fn garbage_cut_streams_and_error_events_fail_with_reasons() {
        assert_eq!(
            collect(&[b"data: <html>\n\n"]).await,
            vec![Err("backend_bad_response".into())]
        );
        let cut = collect(&[b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"]).await;
        assert_eq!(cut, vec![delta("a"), Err("backend_interrupted".into())]);
        let error = collect(&[b"data: {\"error\":{\"message\":\"out of memory\"}}\n\n"]).await;
        assert_eq!(error, vec![Err("backend_interrupted".into())]);
    }

    #[tokio::test]
    async fn streamed_tool_call_pieces_pass_through() {
        let events = collect(&[b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n"]).await;
        let Ok(Event::Delta(delta)) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (
                delta.tool_calls[0].id.as_str(),
                delta.tool_calls[0].name.as_str()
            ),
            ("call_1", "f")
        );
        assert_eq!(
            events[1],
            Ok(Event::Finish(Finish {
                reason: "tool_calls".into(),
                ..Default::default()
            }))
        );
    }
}
