//! Ollama's native API: `POST /api/chat` and `/api/generate` (NDJSON stream or one object),
//! `POST /api/embed`, `GET /api/tags`. Usage comes from `prompt_eval_count` / `eval_count`;
//! tool calls are passed through.

use llmgw_proto::engine_options::EngineProtocol;
use std::time::Duration;

use futures::future::BoxFuture;
use llmgw_proto::v1::response_format::Kind as FormatKind;
use llmgw_proto::v1::{
    ChatRequest, CompletionRequest, Delta, EmbedRequest, Finish, ToolCallDelta, Usage,
    chat_event::Event,
};
use serde_json::{Value, json};

use super::decode::{ChunkDecoder, WholeBody, decode};
use super::embed::EmbedDecoder;
use super::ollama_wire as wire;
use super::tools::{json_or_string, tools_json};
use super::{
    Backend, BackendError, EventStream, SendGate, get_json, http_client, sampling_options, send,
    transport_error,
};
use crate::framing::LineDecoder;
use crate::work::Work;

/// Longest NDJSON line accepted from Ollama (a non-streamed answer is one line).
const MAX_LINE_BYTES: usize = 16 << 20;

/// One Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaBackend {
    name: String,
    base: String,
    http: reqwest::Client,
}

impl OllamaBackend {
    /// A backend for the Ollama server at `base` (e.g. `http://localhost:11434`).
    pub fn new(base: &str, connect_timeout: Duration) -> Result<Self, BackendError> {
        let http = http_client(connect_timeout)?;
        let base = base.trim_end_matches('/').to_owned();
        Ok(Self {
            name: format!("ollama@{base}"),
            base,
            http,
        })
    }
}

impl Backend for OllamaBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &'static str {
        "ollama"
    }

    fn call(
        &self,
        work: Work,
        trace: http::HeaderMap,
        gate: SendGate,
    ) -> BoxFuture<'static, Result<EventStream, BackendError>> {
        let model = work.model().to_owned();
        let prompt_words = super::prompt_words(&work);
        let post = |path: &str| {
            self.http
                .post(format!("{}{path}", self.base))
                .headers(trace)
        };
        let (call, embeddings) = match work {
            Work::Chat(chat) => (post("/api/chat").json(&to_wire(chat)), None),
            Work::Completion(completion) => {
                (post("/api/generate").json(&generate_wire(completion)), None)
            }
            Work::Embedding(embed) => {
                let inputs = embed.input.len();
                (post("/api/embed").json(&embed_wire(embed)), Some(inputs))
            }
        };
        Box::pin(async move {
            let body = send(call, &gate, &model).await?.bytes_stream();
            Ok(match embeddings {
                None => decode_events(body, prompt_words),
                Some(inputs) => decode(
                    body,
                    WholeBody::new(MAX_LINE_BYTES),
                    EmbedDecoder::new(parse_embeddings, prompt_words, inputs),
                ),
            })
        })
    }

    fn list_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
        let call = self.http.get(format!("{}/api/tags", self.base));
        Box::pin(async move {
            let tags: wire::Tags = get_json(call, "/api/tags").await?;
            Ok(tags.models.into_iter().map(|m| m.name).collect())
        })
    }

    fn loaded_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
        let request = self.http.get(format!("{}/api/ps", self.base));
        Box::pin(async move {
            let response = request.send().await.map_err(transport_error)?;
            if response.status() != 200 {
                return Ok(Vec::new());
            }
            let loaded: wire::Tags = super::json_body(response, "/api/ps").await?;
            Ok(loaded.models.into_iter().map(|m| m.name).collect())
        })
    }
}

fn to_wire(request: ChatRequest) -> wire::ChatRequest {
    let options = sampling_options(
        request.sampling,
        &request.extra_json,
        EngineProtocol::Ollama,
    );
    let messages = request
        .messages
        .into_iter()
        .map(|m| wire::Message {
            tool_name: (m.role == "tool" && !m.name.is_empty()).then_some(m.name),
            role: m.role,
            content: m.content,
            images: m
                .images
                .iter()
                .map(|image| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(&image.data)
                })
                .collect(),
            tool_calls: m
                .tool_calls
                .into_iter()
                .map(|call| wire::ToolCall {
                    function: wire::FunctionCall {
                        name: call.name,
                        arguments: json_or_string(&call.arguments_json),
                    },
                })
                .collect(),
        })
        .collect();
    // Ollama has no `tool_choice`: "none" is honoured by not offering the tools; "auto" is
    // what Ollama does anyway; forcing a tool cannot be expressed and is left to the model.
    let offered = if request.tool_choice_json.trim() == "\"none\"" {
        Vec::new()
    } else {
        request.tools
    };
    let tools = tools_json(offered);
    let format = request
        .response_format
        .and_then(|format| match format.kind() {
            FormatKind::Text => None,
            FormatKind::JsonObject => Some(Value::from("json")),
            FormatKind::JsonSchema => Some(json_or_string(&format.schema_json)),
        });
    wire::ChatRequest {
        model: request.model,
        messages,
        stream: request.stream,
        options,
        tools,
        format,
        logprobs: request.logprobs,
        top_logprobs: (request.logprobs && request.top_logprobs > 0)
            .then_some(request.top_logprobs),
    }
}

fn generate_wire(request: CompletionRequest) -> wire::GenerateRequest {
    wire::GenerateRequest {
        options: sampling_options(
            request.sampling,
            &request.extra_json,
            EngineProtocol::Ollama,
        ),
        model: request.model,
        prompt: request.prompt,
        suffix: request.suffix,
        raw: request.raw,
        stream: request.stream,
    }
}

fn embed_wire(request: EmbedRequest) -> wire::EmbedRequest {
    wire::EmbedRequest {
        options: sampling_options(None, &request.extra_json, EngineProtocol::Ollama),
        model: request.model,
        input: request.input,
        dimensions: (request.dimensions > 0).then_some(request.dimensions),
    }
}

fn parse_embeddings(body: &[u8]) -> Result<(Vec<Vec<f32>>, Option<u32>), BackendError> {
    let answer: wire::EmbedResponse = serde_json::from_slice(body)
        .map_err(|err| BackendError::BadResponse(format!("not an Ollama embed answer ({err})")))?;
    Ok((answer.embeddings, answer.prompt_eval_count))
}

/// Decodes Ollama's NDJSON body into events; a stream that ends without `done` is an error.
/// Public for the `backend_decoders` fuzz target (fuzz/fuzz_targets/).
pub fn decode_events<S, E>(body: S, prompt_words: u32) -> EventStream
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let state = DecodeState {
        prompt_words,
        ..DecodeState::default()
    };
    decode(body, LineDecoder::new(MAX_LINE_BYTES), state)
}

#[derive(Debug, Default)]
struct DecodeState {
    tool_calls: u32,
    deltas: u32,
    done: bool,
    /// The prompt estimate used when Ollama reports no `prompt_eval_count`.
    prompt_words: u32,
}

impl ChunkDecoder for DecodeState {
    type Frame = bytes::Bytes;

    fn done(&self) -> bool {
        self.done
    }

    fn at_end(&mut self) -> Result<Vec<Event>, BackendError> {
        Err(BackendError::Interrupted(
            "stream ended before the generation finished".to_owned(),
        ))
    }

    fn on_frame(&mut self, line: bytes::Bytes) -> Result<Vec<Event>, BackendError> {
        let chunk: wire::ChatChunk = serde_json::from_slice(&line).map_err(|err| {
            BackendError::BadResponse(format!("not an Ollama chat chunk ({err})"))
        })?;
        if let Some(error) = chunk.error {
            return Err(BackendError::Interrupted(error));
        }
        let mut events = Vec::new();
        let thinking = chunk
            .message
            .as_ref()
            .is_some_and(|message| !message.thinking.is_empty());
        // Carried as the OpenAI backend carries a choice's `logprobs`: `{"content": [...]}`,
        // each entry completed to OpenAI's shape. A thinking chunk's are not answer tokens.
        let logprobs_json = match chunk.logprobs {
            Some(Value::Array(mut entries)) if !entries.is_empty() && !thinking => {
                entries.iter_mut().for_each(openai_logprob);
                json!({ "content": entries }).to_string()
            }
            _ => String::new(),
        };
        if let Some(text) = chunk.response.filter(|text| !text.is_empty()) {
            self.deltas += 1;
            events.push(Event::Delta(Delta {
                content: text,
                ..Delta::default()
            }));
        }
        if let Some(message) = chunk.message {
            let tool_calls: Vec<ToolCallDelta> = message
                .tool_calls
                .into_iter()
                .map(|call| {
                    let index = self.tool_calls;
                    self.tool_calls += 1;
                    ToolCallDelta {
                        index,
                        id: format!("call_{:016x}", fastrand::u64(..)),
                        r#type: "function".to_owned(),
                        name: call.function.name,
                        arguments: call.function.arguments.to_string(),
                    }
                })
                .collect();
            if !message.content.is_empty() || !tool_calls.is_empty() || !logprobs_json.is_empty() {
                self.deltas += 1;
                events.push(Event::Delta(Delta {
                    content: message.content,
                    tool_calls,
                    logprobs_json,
                    ..Delta::default()
                }));
            }
        }
        if chunk.done {
            self.done = true;
            let reason = if self.tool_calls > 0 {
                "tool_calls".to_owned()
            } else {
                chunk
                    .done_reason
                    .filter(|r| r == "length")
                    .unwrap_or_else(|| "stop".to_owned())
            };
            events.push(Event::Finish(Finish { reason, choice: 0 }));
            events.push(Event::Usage(Usage {
                prompt_tokens: chunk.prompt_eval_count.unwrap_or(self.prompt_words),
                completion_tokens: chunk.eval_count.unwrap_or(self.deltas),
                prompt_counted: chunk.prompt_eval_count.is_none(),
                cached_tokens: 0,
            }));
        }
        Ok(events)
    }
}

/// Ollama leaves out an entry's empty `bytes` and `top_logprobs`; OpenAI's shape has both
/// (`bytes` may be null), and strict clients require them.
fn openai_logprob(entry: &mut Value) {
    let Some(fields) = entry.as_object_mut() else {
        return;
    };
    fields.entry("bytes").or_insert(Value::Null);
    let top = fields
        .entry("top_logprobs")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(alternatives) = top.as_array_mut() {
        for alternative in alternatives.iter_mut().filter_map(Value::as_object_mut) {
            alternative.entry("bytes").or_insert(Value::Null);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_gate_sends_nothing() {
        // A listener that counts connections: the gate is asked before any byte goes out.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let backend = OllamaBackend::new(&base, Duration::from_secs(1)).unwrap();
        let request = ChatRequest {
            model: "m".to_owned(),
            ..Default::default()
        };
        let gate: SendGate = std::sync::Arc::new(|| false);
        let outcome = backend
            .call(Work::Chat(request), http::HeaderMap::new(), gate)
            .await;
        assert!(matches!(outcome, Err(BackendError::NotSent)));
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was opened");
    }

    use futures::StreamExt;

    async fn collect(body: &'static [&'static [u8]]) -> Vec<Result<Event, String>> {
        let chunks = futures::stream::iter(
            body.iter()
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from_static(c))),
        );
        decode_events(chunks, 4)
            .map(|r| r.map_err(|e| e.reason().as_str().to_owned()))
            .collect()
            .await
    }

    #[test]
    fn tool_choice_none_offers_no_tools() {
        let request = |choice: &str| ChatRequest {
            model: "m".into(),
            tools: vec![llmgw_proto::v1::Tool {
                name: "f".into(),
                ..Default::default()
            }],
            tool_choice_json: choice.into(),
            ..Default::default()
        };
        assert!(to_wire(request("\"none\"")).tools.is_empty());
        assert_eq!(to_wire(request("\"auto\"")).tools.len(), 1);
        assert_eq!(to_wire(request("")).tools.len(), 1);
    }

    #[tokio::test]
    async fn a_missing_prompt_count_is_estimated_not_zero() {
        let events =
            collect(&[b"{\"message\":{\"content\":\"x\"},\"done\":true,\"eval_count\":1}\n"]).await;
        assert!(events.iter().any(|e| matches!(
            e,
            Ok(Event::Usage(Usage {
                prompt_tokens: 4,
                completion_tokens: 1,
                prompt_counted: true,
                cached_tokens: 0,
            }))
        )));
    }

    #[tokio::test]
    async fn log_probabilities_take_openais_shape_and_skip_thinking() {
        // Real Ollama leaves out empty `bytes` and `top_logprobs`.
        let events = collect(&[
            b"{\"message\":{\"content\":\"\",\"thinking\":\"hm\"},\"logprobs\":[{\"token\":\"hm\",\"logprob\":-0.5}],\"done\":false}\n",
            b"{\"message\":{\"content\":\"Hi\"},\"logprobs\":[{\"token\":\"Hi\",\"logprob\":-0.1,\"top_logprobs\":[{\"token\":\"Yo\",\"logprob\":-2.0}]}],\"done\":false}\n",
            b"{\"message\":{\"content\":\"\"},\"done\":true,\"eval_count\":2}\n",
        ])
        .await;
        let deltas: Vec<&Delta> = events
            .iter()
            .filter_map(|e| match e {
                Ok(Event::Delta(delta)) => Some(delta),
                _ => None,
            })
            .collect();
        assert_eq!(
            deltas.len(),
            1,
            "the thinking chunk carries nothing: {events:?}"
        );
        let carried: Value = serde_json::from_str(&deltas[0].logprobs_json).unwrap();
        assert_eq!(
            carried,
            json!({"content": [{"token": "Hi", "logprob": -0.1, "bytes": null,
                "top_logprobs": [{"token": "Yo", "logprob": -2.0, "bytes": null}]}]})
        );
    }

    #[tokio::test]
    async fn streamed_lines_become_deltas_finish_and_usage() {
        let events = collect(&[
            b"{\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n{\"message\":{\"content\":\"lo\"},",
            b"\"done\":false}\n{\"message\":{\"content\":\"\"},\"done\":true,\"done_reason\":\"length\",\"prompt_eval_count\":3,\"eval_count\":2}",
        ])
        .await;
        assert_eq!(
            events,
            vec![
                Ok(Event::Delta(Delta {
                    content: "Hel".into(),
                    tool_calls: vec![],
                    ..Default::default()
                })),
                Ok(Event::Delta(Delta {
                    content: "lo".into(),
                    tool_calls: vec![],
                    ..Default::default()
                })),
                Ok(Event::Finish(Finish {
                    reason: "length".into(),
                    ..Default::default()
                })),
                Ok(Event::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    prompt_counted: false,
                    cached_tokens: 0,
                })),
            ]
        );
    }

    #[tokio::test]
    async fn garbage_is_a_bad_response_and_truncation_an_interruption() {
        assert_eq!(
            collect(&[b"\x00<html>\n"]).await,
            vec![Err("backend_bad_response".into())]
        );
        let cut = collect(&[b"{\"message\":{\"content\":\"a\"},\"done\":false}\n"]).await;
        assert_eq!(cut.last(), Some(&Err("backend_interrupted".into())));
    }

    #[tokio::test]
    async fn tool_calls_pass_through_with_finish_reason_tool_calls() {
        let events = collect(&[b"{\"message\":{\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":5,\"eval_count\":7}\n"]).await;
        let Ok(Event::Delta(delta)) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(delta.tool_calls[0].name, "get_weather");
        assert_eq!(delta.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
        assert_eq!(
            events[1],
            Ok(Event::Finish(Finish {
                reason: "tool_calls".into(),
                ..Default::default()
            }))
        );
    }
}
