//! Scheduler events in Ollama's native shapes: NDJSON lines for streams (`/api/chat` puts the
//! text in `message`, `/api/generate` in `response`), one object otherwise, and the final
//! `done: true` object with `done_reason` and the token counts. An error after the head is an
//! `{"error": …}` line, which Ollama's clients raise.

use bytes::Bytes;
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{Delta, ToolCallDelta};
use llmgw_telemetry::timestamp::now_rfc3339;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::shape::StreamShape;
use crate::error::ApiError;

/// Which endpoint's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Generate,
}

/// What the final object reports.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub done_reason: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// One Ollama response object (a line of a stream, or the whole answer).
pub fn object(
    endpoint: Endpoint,
    model: &str,
    text: &str,
    tool_calls: &[ToolCallDelta],
    totals: Option<(&Totals, Instant)>,
) -> Value {
    let mut object = json!({ "model": model, "created_at": now_rfc3339() });
    match endpoint {
        Endpoint::Chat => {
            let mut message = json!({ "role": "assistant", "content": text });
            if !tool_calls.is_empty() {
                message["tool_calls"] = tool_calls
                    .iter()
                    .map(|call| {
                        let arguments: Value = serde_json::from_str(&call.arguments)
                            .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                        json!({ "function": { "name": call.name, "arguments": arguments } })
                    })
                    .collect();
            }
            object["message"] = message;
        }
        Endpoint::Generate => object["response"] = json!(text),
    }
    object["done"] = json!(totals.is_some());
    if let Some((totals, started)) = totals {
        let total_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        object["done_reason"] = json!(totals.done_reason);
        object["total_duration"] = json!(total_ns);
        object["load_duration"] = json!(0);
        object["prompt_eval_count"] = json!(totals.prompt_tokens);
        object["prompt_eval_duration"] = json!(0);
        object["eval_count"] = json!(totals.completion_tokens);
        object["eval_duration"] = json!(0);
        if endpoint == Endpoint::Generate {
            object["context"] = json!([]);
        }
    }
    object
}

/// Ollama's `done_reason`: `stop` or `length` (a tool call is a `stop` with `tool_calls`).
pub fn ollama_done_reason(reason: String) -> String {
    if reason == "length" {
        reason
    } else {
        "stop".to_owned()
    }
}

/// Events as NDJSON lines.
#[derive(Debug)]
pub struct NdjsonStream {
    endpoint: Endpoint,
    model: String,
    started: Instant,
    totals: Totals,
    finished: bool,
    /// The final line went out (after usage, or at the end without it).
    closed: bool,
    /// Streamed tool-call pieces, merged: Ollama sends each call whole (`arguments` an
    /// object), so they go out in one line when the generation finishes.
    tool_calls: Vec<ToolCallDelta>,
}

impl NdjsonStream {
    pub fn new(endpoint: Endpoint, model: String, started: Instant) -> Self {
        Self {
            endpoint,
            model,
            started,
            totals: Totals::default(),
            finished: false,
            closed: false,
            tool_calls: Vec::new(),
        }
    }

    fn line(&self, value: &Value) -> Bytes {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn last_line(&mut self) -> Bytes {
        self.closed = true;
        let last = object(
            self.endpoint,
            &self.model,
            "",
            &[],
            Some((&self.totals, self.started)),
        );
        self.line(&last)
    }
}

impl StreamShape for NdjsonStream {
    const CONTENT_TYPE: &'static str = "application/x-ndjson";
    const COMMENTS: bool = false;

    fn frame(&mut self, event: Event) -> Option<Bytes> {
        match event {
            Event::Delta(Delta {
                content,
                tool_calls,
                logprobs_json,
                ..
            }) => {
                for piece in tool_calls {
                    llmgw_proto::merge_tool_call(&mut self.tool_calls, piece);
                }
                // Ollama's `logprobs` array is the carried entries as they are.
                let logprobs = super::response::logprob_entries(&logprobs_json);
                if content.is_empty() && logprobs.is_none() {
                    return None;
                }
                let mut value = object(self.endpoint, &self.model, &content, &[], None);
                if let Some(logprobs) = logprobs {
                    value["logprobs"] = logprobs;
                }
                Some(self.line(&value))
            }
            Event::Finish(finish) => {
                self.finished = true;
                self.totals.done_reason = ollama_done_reason(finish.reason);
                if self.tool_calls.is_empty() {
                    return None;
                }
                let calls = std::mem::take(&mut self.tool_calls);
                let value = object(self.endpoint, &self.model, "", &calls, None);
                Some(self.line(&value))
            }
            Event::Usage(usage) => {
                self.totals.prompt_tokens = usage.prompt_tokens;
                self.totals.completion_tokens = usage.completion_tokens;
                Some(self.last_line())
            }
            Event::Queued(_) | Event::Started(_) | Event::Dispatched(_) | Event::Embeddings(_) => {
                None
            }
        }
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn done(&self) -> Option<Bytes> {
        // The final object went out with the usage; a scheduler that sent none still closes it.
        (!self.closed).then(|| {
            let last = object(
                self.endpoint,
                &self.model,
                "",
                &[],
                Some((&self.totals, self.started)),
            );
            self.line(&last)
        })
    }

    fn error(&self, error: &ApiError) -> Bytes {
        self.line(&json!({ "error": error.envelope().error.message }))
    }

    fn comment(&self, _text: &str) -> Option<Bytes> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::{Finish, Usage};

    fn parse(line: &Bytes) -> Value {
        assert_eq!(line.last(), Some(&b'\n'));
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn chat_lines_then_one_final_object_with_counts() {
        let mut stream = NdjsonStream::new(Endpoint::Chat, "llama3.2".into(), Instant::now());
        let delta = stream
            .frame(Event::Delta(Delta {
                content: "Hi".into(),
                tool_calls: vec![],
                ..Default::default()
            }))
            .unwrap();
        let delta = parse(&delta);
        assert_eq!(delta["message"]["content"], "Hi");
        assert_eq!(delta["done"], false);
        assert!(
            stream
                .frame(Event::Finish(Finish {
                    reason: "stop".into(),
                    ..Default::default()
                }))
                .is_none()
        );
        assert!(stream.finished());
        let last = stream
            .frame(Event::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
                prompt_counted: false,
                cached_tokens: 0,
            }))
            .unwrap();
        let last = parse(&last);
        assert_eq!(last["done"], true);
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(
            (
                last["prompt_eval_count"].clone(),
                last["eval_count"].clone()
            ),
            (json!(3), json!(1))
        );
        assert!(stream.done().is_none(), "one final object only");
    }

    #[test]
    fn streamed_tool_call_pieces_go_out_whole_with_object_arguments() {
        let mut stream = NdjsonStream::new(Endpoint::Chat, "m".into(), Instant::now());
        let piece = |id: &str, name: &str, arguments: &str| ToolCallDelta {
            index: 0,
            id: id.into(),
            r#type: "function".into(),
            name: name.into(),
            arguments: arguments.into(),
        };
        for call in [
            piece("c1", "get_weather", "{\"city\":"),
            piece("", "", "\"Paris\"}"),
        ] {
            let frame = stream.frame(Event::Delta(Delta {
                tool_calls: vec![call],
                ..Default::default()
            }));
            assert!(frame.is_none(), "no partial call goes out");
        }
        let line = stream
            .frame(Event::Finish(Finish {
                reason: "tool_calls".into(),
                ..Default::default()
            }))
            .unwrap();
        let call = &parse(&line)["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "get_weather");
        assert_eq!(call["arguments"], json!({"city": "Paris"}));
        let last = parse(&stream.frame(Event::Usage(Usage::default())).unwrap());
        assert_eq!(
            last["done_reason"], "stop",
            "Ollama has no `tool_calls` reason"
        );
    }

    #[test]
    fn generate_puts_text_in_response_and_errors_are_error_lines() {
        let value = object(Endpoint::Generate, "m", "Once", &[], None);
        assert_eq!(value["response"], "Once");
        assert!(value.get("message").is_none());
        let stream = NdjsonStream::new(Endpoint::Generate, "m".into(), Instant::now());
        let error = parse(&stream.error(&ApiError::backend_interrupted()));
        assert!(error["error"].as_str().unwrap().len() > 5);
    }
}
