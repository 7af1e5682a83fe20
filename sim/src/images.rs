//! The images a chat carries, as the simulator saw them: OpenAI's `image_url` parts with
//! `data:` URLs and Ollama's base64 `images`, each summarized as `<media type>:<bytes>:<sum>`
//! (the media type `base64` for Ollama's, which names none; the sum of the decoded bytes
//! modulo 2^32), so a test can tell that the very image it sent reached the engine.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// Summaries of every image in `messages`, in order.
pub fn in_messages(messages: &[Value]) -> Vec<String> {
    let mut seen = Vec::new();
    for message in messages {
        if let Some(Value::Array(parts)) = message.get("content") {
            for part in parts {
                let url = part
                    .get("image_url")
                    .and_then(|image| image.get("url"))
                    .and_then(Value::as_str);
                if let Some(summary) = url.and_then(data_url) {
                    seen.push(summary);
                }
            }
        }
        if let Some(Value::Array(images)) = message.get("images") {
            seen.extend(
                images
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|data| summary("base64", data)),
            );
        }
    }
    seen
}

fn data_url(url: &str) -> Option<String> {
    let (header, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some(summary(header.strip_suffix(";base64")?, data))
}

fn summary(media_type: &str, data: &str) -> String {
    match STANDARD.decode(data) {
        Ok(bytes) => {
            let sum = bytes
                .iter()
                .fold(0u32, |sum, byte| sum.wrapping_add(u32::from(*byte)));
            format!("{media_type}:{}:{sum}", bytes.len())
        }
        Err(_) => format!("{media_type}:invalid"),
    }
}
