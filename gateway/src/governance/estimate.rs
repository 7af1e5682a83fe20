//! The prompt-token estimate a reservation is made with, before the engine reports the real
//! count. No tokenizer is bundled: the estimate is `ceil(bytes / prompt_bytes_per_token)` over
//! the text the engine will tokenize (message contents, names, tool-call arguments, tool
//! schemas), plus 8 tokens per message and 8 for the reply's opening (chat-template markers).
//! With the default of 1 byte per token this is an upper bound for byte-level BPE tokenizers
//! (each token covers at least one byte), so reservations never undercount; settlement then
//! refunds the difference.

use llmgw_proto::v1::ChatRequest;

/// Template tokens per message (role markers, separators).
const PER_MESSAGE: u64 = 8;
/// Template tokens of the assistant's opening.
const PER_REQUEST: u64 = 8;

/// Estimated prompt tokens of `request`.
pub fn prompt_tokens(request: &ChatRequest, bytes_per_token: f64) -> u64 {
    let mut bytes = 0usize;
    for message in &request.messages {
        bytes += message.content.len() + message.name.len() + message.role.len();
        for call in &message.tool_calls {
            bytes += call.name.len() + call.arguments_json.len();
        }
    }
    for tool in &request.tools {
        bytes += tool.name.len() + tool.description.len() + tool.parameters_json.len();
    }
    let text = (bytes as f64 / bytes_per_token.max(1.0)).ceil() as u64;
    text + PER_MESSAGE * request.messages.len() as u64 + PER_REQUEST
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::Message;

    #[test]
    fn counts_bytes_and_template_overhead() {
        let request = ChatRequest {
            messages: vec![Message {
                role: "user".into(),
                content: "hello world".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(prompt_tokens(&request, 1.0), 15 + 8 + 8);
        assert_eq!(prompt_tokens(&request, 4.0), 4 + 8 + 8);
    }
}
