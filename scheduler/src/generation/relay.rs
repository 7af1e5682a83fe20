//! [`relay`]: after the first token, passes the backend's events on under the idle timeout
//! and the budget, and for non-streamed requests gathers the deltas into one answer. Once a
//! token went out, a failure ends the stream with an error: output is never spliced.

use futures::{Stream, StreamExt};
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{ChatEvent, Delta};
use tonic::Status;

use super::attempt::{Blame, Committed, record_failure};
use super::budget::Budget;
use super::context::Context;
use crate::admission::SlotPermit;
use crate::error::{SchedulerError, TimeoutKind};
use crate::pool::Pool;
use crate::routing::table::Route;
use std::sync::Arc;
use tokio::time::Instant;

/// Passes events on; for non-streamed requests, gathers each choice's deltas into one (content,
/// tool calls and log probabilities), sent just before the first finish.
#[derive(Debug)]
pub struct Gather {
    /// `None` while streaming: everything passes through.
    gathered: Option<Vec<Gathered>>,
}

/// One choice's answer so far.
#[derive(Debug, Default)]
struct Gathered {
    delta: Delta,
    /// The `content` items of every piece's log probabilities, in order.
    logprobs: Vec<serde_json::Value>,
}

impl Gather {
    pub fn new(stream: bool) -> Self {
        Self {
            gathered: (!stream).then(Vec::new),
        }
    }

    /// The events to send for `event`.
    pub fn push(&mut self, event: Event) -> Vec<Event> {
        match (&mut self.gathered, event) {
            (Some(gathered), Event::Delta(piece)) => {
                let at = match gathered.iter().position(|g| g.delta.choice == piece.choice) {
                    Some(at) => at,
                    None => {
                        gathered.push(Gathered {
                            delta: Delta {
                                choice: piece.choice,
                                ..Delta::default()
                            },
                            logprobs: Vec::new(),
                        });
                        gathered.len() - 1
                    }
                };
                let choice = &mut gathered[at];
                choice.delta.content.push_str(&piece.content);
                for call in piece.tool_calls {
                    llmgw_proto::merge_tool_call(&mut choice.delta.tool_calls, call);
                }
                // Only when asked for: no JSON parse (and error) per token otherwise.
                if !piece.logprobs_json.is_empty()
                    && let Ok(serde_json::Value::Object(mut logprobs)) =
                        serde_json::from_str(&piece.logprobs_json)
                    && let Some(serde_json::Value::Array(tokens)) = logprobs.remove("content")
                {
                    choice.logprobs.extend(tokens);
                }
                Vec::new()
            }
            (gathered @ Some(_), finish @ Event::Finish(_)) => {
                let mut choices = gathered.take().unwrap_or_default();
                choices.sort_by_key(|g| g.delta.choice);
                let wholes = choices.into_iter().map(
                    |Gathered {
                         mut delta,
                         logprobs,
                     }| {
                        if !logprobs.is_empty() {
                            delta.logprobs_json =
                                serde_json::json!({ "content": logprobs }).to_string();
                        }
                        Event::Delta(delta)
                    },
                );
                wholes.chain([finish]).collect()
            }
            (_, other) => vec![other],
        }
    }
}

/// Everything the relay owns: the slot and the endpoint mark end with it, however it ends.
#[derive(Debug)]
pub struct Relayed {
    pub committed: Committed,
    pub permit: SlotPermit,
    pub pool: Arc<Pool>,
    pub route: Route,
    pub budget: Budget,
    pub stream: bool,
}

/// The events after the first token, to the end of the generation.
pub fn relay(
    context: &Context,
    relayed: Relayed,
) -> impl Stream<Item = Result<ChatEvent, Status>> + Send + '_ {
    async_stream::stream! {
        let Relayed { committed, mut permit, pool, route, budget, stream } = relayed;
        let Committed { in_flight, first, mut rest, call_span } = committed;
        let first_token_at = Instant::now();
        let at_first_token = in_flight.endpoint().occupancy.reading();
        let mut gather = Gather::new(stream);
        for out in gather.push(first) {
            yield Ok(event(out));
        }
        let idle = route.timeouts.idle;
        let idle_ms = idle.as_millis() as u64;
        let (mut prompt_tokens, mut completion_tokens, mut prompt_counted) = (0, 0, false);
        loop {
            let (limit, expired) = budget.cap(Instant::now() + idle, TimeoutKind::Idle, idle_ms);
            let failure = match tokio::time::timeout_at(limit, rest.next()).await {
                Ok(Some(Ok(next))) => {
                    in_flight.endpoint().record_output();
                    match &next {
                        Event::Usage(usage) => {
                            (prompt_tokens, completion_tokens) = (usage.prompt_tokens, usage.completion_tokens);
                            prompt_counted = usage.prompt_counted;
                            call_span.record("gen_ai.usage.input_tokens", i64::from(usage.prompt_tokens));
                            call_span.record("gen_ai.usage.output_tokens", i64::from(usage.completion_tokens));
                        }
                        Event::Finish(finish) => {
                            call_span.record("gen_ai.response.finish_reasons", format!("[\"{}\"]", finish.reason));
                        }
                        Event::Queued(_) | Event::Started(_) | Event::Dispatched(_) | Event::Delta(_) | Event::Embeddings(_) => {}
                    }
                    for out in gather.push(next) {
                        yield Ok(event(out));
                    }
                    continue;
                }
                Ok(None) => break,
                Ok(Some(Err(err))) => SchedulerError::from(err),
                Err(_) => expired,
            };
            record_failure(context, &pool, in_flight.endpoint(), &call_span, &failure, Blame::AsUsual);
            yield Err(context.fail_after(failure, true));
            return;
        }
        let queue_ms = permit.queued().as_millis() as u64;
        // The real usage corrects the tenant's fair share and teaches the decode pace.
        let decoding = first_token_at.elapsed();
        in_flight.endpoint().pace.record_decode(completion_tokens, decoding);
        // The batch it decoded in: the endpoint's average in-flight count over its decode.
        if let Some(batch) = in_flight.endpoint().occupancy.reading().average_since(&at_first_token) {
            in_flight.endpoint().pace.record_decode_in_batch(batch, completion_tokens, decoding);
        }
        pool.admission.pace().record_decode(completion_tokens, decoding);
        if prompt_tokens > 0 || completion_tokens > 0 {
            // The scheduler's own word count undercounts a prompt the engine did not count.
            let prompt_tokens = if prompt_counted {
                prompt_tokens.max(permit.cost().prompt_tokens)
            } else {
                prompt_tokens
            };
            permit.settle(crate::admission::Cost { prompt_tokens, completion_tokens });
        }
        drop(call_span);
        // The one line per request at `info`: where it ran and what it cost; the decisions
        // that led here are on the trace and at `debug`.
        tracing::info!(parent: &context.span, pool = %pool.name, endpoint = in_flight.endpoint().name(),
            upstream_model = %route.upstream, queue_ms, prompt_tokens, completion_tokens, "request finished");
        drop(in_flight);
        drop(permit);
        context.span.record("rpc.grpc.status_code", 0);
    }
}

pub fn event(event: Event) -> ChatEvent {
    ChatEvent { event: Some(event) }
}
