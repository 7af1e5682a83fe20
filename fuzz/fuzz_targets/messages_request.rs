//! Anthropic's Messages request parser (JSON → proto): any bytes give a request or a 400,
//! never a panic; an accepted request has a model, at least one message, known roles, an output
//! cap (except when counting tokens), tool calls only on assistant messages and tool results
//! only on tool messages.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for counting in [false, true] {
        if let Ok(valid) = gateway::translate::anthropic_request::parse(body, counting) {
            let request = valid.request;
            assert!(!request.model.is_empty());
            assert!(!request.messages.is_empty());
            for message in &request.messages {
                assert!(["system", "user", "assistant", "tool"].contains(&message.role.as_str()));
                // Only an assistant calls tools; only a tool message answers one.
                assert!(message.tool_calls.is_empty() || message.role == "assistant");
                assert!(message.tool_call_id.is_empty() || message.role == "tool");
            }
            let capped = request.sampling.as_ref().and_then(|s| s.max_tokens).is_some();
            assert!(counting || capped, "max_tokens is required");
            assert!(!valid.stream || !counting);
        }
    }
});
