//! The scheduler's backend decoders: an engine's answer body (Ollama NDJSON lines, OpenAI SSE
//! `data:` events, or one whole OpenAI object) becomes the event stream a request relays.
//!
//! Input: byte 0 picks the protocol (`% 3`: Ollama NDJSON, OpenAI SSE, OpenAI whole body) and,
//! with its top bit, a transport error after the last byte; byte 1 is the chunk size the body is
//! cut into; the rest is the body. Asserted, besides no panic:
//! - the stream ends in exactly one terminal: finish event(s) then one usage event, or one
//!   error; nothing follows it, and only content deltas come before it;
//! - no empty delta (each has text, a tool call or log probabilities); carried log probabilities
//!   are JSON; finish reasons are `stop`, `length` or `tool_calls`, one per choice in order;
//! - Ollama: everything is choice 0, tool calls are numbered 0, 1, 2… with `call_` ids and JSON
//!   arguments, and the finish is `tool_calls` exactly when a tool was called; OpenAI: a choice
//!   that called a tool does not finish with `stop`;
//! - the events do not depend on how the body was cut into chunks.
#![no_main]

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use llmgw_proto::v1::chat_event::Event;
use scheduler::backend::{EventStream, ollama, openai};
use serde_json::Value;

/// The prompt estimate handed to the decoders (used when the engine reports none).
const PROMPT_WORDS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    OllamaLines,
    OpenAiEvents,
    OpenAiWhole,
}

/// A failed body read, as a broken connection gives one.
#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset")
    }
}

impl std::error::Error for Broken {}

fuzz_target!(|input: &[u8]| {
    let [mode, step, body @ ..] = input else {
        return;
    };
    let protocol = match mode % 3 {
        0 => Protocol::OllamaLines,
        1 => Protocol::OpenAiEvents,
        _ => Protocol::OpenAiWhole,
    };
    let broken = mode & 0x80 != 0;
    let step = usize::from((*step).max(1));

    let whole = run(protocol, &[body], broken);
    check(protocol, &whole);
    let chunks: Vec<&[u8]> = body.chunks(step).collect();
    let cut = run(protocol, &chunks, broken);
    assert_eq!(
        comparable(whole),
        comparable(cut),
        "events depend on chunking"
    );
});

/// Every item of the decoded stream, errors as their reason and message.
fn run(protocol: Protocol, chunks: &[&[u8]], broken: bool) -> Vec<Result<Event, String>> {
    let mut items: Vec<Result<Bytes, Broken>> = chunks
        .iter()
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    if broken {
        items.push(Err(Broken));
    }
    let body = futures::stream::iter(items);
    let events: EventStream = match protocol {
        Protocol::OllamaLines => ollama::decode_events(body, PROMPT_WORDS),
        Protocol::OpenAiEvents => openai::decode_events(body, PROMPT_WORDS, true),
        Protocol::OpenAiWhole => openai::decode_events(body, PROMPT_WORDS, false),
    };
    futures::executor::block_on(
        events
            .map(|item| item.map_err(|err| format!("{}: {err}", err.reason().as_str())))
            .collect(),
    )
}

fn check(protocol: Protocol, items: &[Result<Event, String>]) {
    let (last, before) = items
        .split_last()
        .expect("a stream always ends in a terminal");
    let ollama = protocol == Protocol::OllamaLines;
    let mut finishes = Vec::new();
    let mut tool_choices = BTreeSet::new();
    let mut next_tool_index = 0;
    for (at, item) in before.iter().enumerate() {
        let event = item.as_ref().expect("an error ends the stream");
        match event {
            Event::Delta(delta) => {
                assert!(finishes.is_empty(), "a delta after a finish: {items:?}");
                assert!(
                    !delta.content.is_empty()
                        || !delta.tool_calls.is_empty()
                        || !delta.logprobs_json.is_empty(),
                    "an empty delta"
                );
                if !delta.logprobs_json.is_empty() {
                    json(&delta.logprobs_json);
                }
                if !delta.tool_calls.is_empty() {
                    tool_choices.insert(delta.choice);
                }
                if ollama {
                    assert_eq!(delta.choice, 0);
                    if !delta.logprobs_json.is_empty() {
                        let carried = json(&delta.logprobs_json);
                        let entries = carried["content"].as_array().expect("`content` entries");
                        assert!(!entries.is_empty());
                        for entry in entries.iter().filter_map(Value::as_object) {
                            assert!(entry.contains_key("bytes"), "OpenAI's shape has `bytes`");
                            assert!(entry.contains_key("top_logprobs"), "…and `top_logprobs`");
                        }
                    }
                    for call in &delta.tool_calls {
                        assert_eq!(call.index, next_tool_index, "tool calls numbered in order");
                        next_tool_index += 1;
                        assert!(
                            call.id.starts_with("call_") && call.id.len() == 21,
                            "{}",
                            call.id
                        );
                        assert_eq!(call.r#type, "function");
                        json(&call.arguments);
                    }
                }
            }
            Event::Finish(finish) => {
                assert!(
                    matches!(finish.reason.as_str(), "stop" | "length" | "tool_calls"),
                    "finish reason {:?}",
                    finish.reason
                );
                if let Some(previous) = finishes.last() {
                    assert!(
                        finish.choice > *previous,
                        "finishes out of order: {items:?}"
                    );
                }
                finishes.push(finish.choice);
                if ollama {
                    assert_eq!(finish.choice, 0);
                    assert_eq!(
                        finish.reason == "tool_calls",
                        next_tool_index > 0,
                        "Ollama's finish is tool_calls exactly when a tool was called"
                    );
                } else if tool_choices.contains(&finish.choice) {
                    assert_ne!(finish.reason, "stop", "a choice that called a tool");
                }
            }
            other => panic!("event {at} before the end is {other:?}: {items:?}"),
        }
    }
    match last {
        Ok(Event::Usage(_)) => assert!(!finishes.is_empty(), "usage without a finish"),
        Ok(other) => panic!("the stream ended on {other:?}, not usage or an error"),
        Err(_) => {
            assert!(finishes.is_empty(), "an error after a finish: {items:?}");
        }
    }
}

/// The items with Ollama's random tool-call ids blanked, so two decodings compare.
fn comparable(mut items: Vec<Result<Event, String>>) -> Vec<Result<Event, String>> {
    for item in &mut items {
        if let Ok(Event::Delta(delta)) = item {
            for call in &mut delta.tool_calls {
                if call.id.starts_with("call_") {
                    call.id.clear();
                }
            }
        }
    }
    items
}

/// `text` is JSON.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"))
}
