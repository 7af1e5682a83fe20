//! The OpenAI request parser (JSON → proto): any bytes give a request or a 400, never a panic;
//! an accepted request has a model and at least one message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(valid) = gateway::translate::request::parse(body) {
        assert!(!valid.request.model.is_empty());
        assert!(!valid.request.messages.is_empty());
    }
});
