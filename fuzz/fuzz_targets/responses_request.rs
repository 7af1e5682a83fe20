//! OpenAI's Responses request parser (JSON → proto): any bytes give a request or a 400, never
//! a panic; an accepted request has a model and input, its chat is its instructions then its
//! input, tool calls only on assistant messages and tool results only on tool messages.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(valid) = gateway::translate::responses_request::parse(body) {
        let request = &valid.request;
        assert!(!request.model.is_empty());
        assert!(!valid.input.is_empty());
        let instructions = usize::from(valid.instructions.is_some());
        assert_eq!(request.messages.len(), instructions + valid.input.len());
        for message in &request.messages {
            assert!(message.tool_calls.is_empty() || message.role == "assistant");
            assert!(message.tool_call_id.is_empty() || message.role == "tool");
        }
    }
});
