//! Image input end to end: an OpenAI `image_url` part with a `data:` URL reaches an Ollama
//! engine as `images` and an OpenAI-compatible one as an `image_url` part — the very bytes sent
//! (llm-sim reports each image it saw as type, length and byte sum); Ollama's own `images`
//! pass the same way; a remote URL, a non-image type and a broken one are 400s naming the
//! field, and the prompt estimate counts the image.

use serde_json::{Value, json};

use crate::support::{Stack, quick_sim, two_kinds};

/// A 1×1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn summary(media_type: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(PNG)
        .unwrap();
    let sum = bytes
        .iter()
        .fold(0u32, |sum, byte| sum.wrapping_add(u32::from(*byte)));
    format!("{media_type}:{}:{sum}", bytes.len())
}

fn with_image(model: &str, url: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
    ]}]})
}

#[tokio::test]
async fn a_data_url_image_reaches_both_engine_kinds_byte_for_byte() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    let url = format!("data:image/png;base64,{PNG}");
    for (index, model, seen) in [
        (0, "via-ollama", summary("base64")),
        (1, "via-openai", summary("image/png")),
    ] {
        let response = stack.chat(with_image(model, &url)).await;
        assert_eq!(response.status(), 200, "{model}");
        let body: Value = response.json().await.unwrap();
        assert!(body["choices"][0]["message"]["content"].is_string());
        assert_eq!(stack.sims[index].stats().last_images, vec![seen], "{model}");
    }

    // Ollama's own /api/chat takes base64 `images` the same way.
    let native = stack
        .http
        .post(stack.url("/api/chat"))
        .json(
            &json!({"model": "via-openai", "stream": false, "messages": [
                {"role": "user", "content": "and this?", "images": [PNG]},
            ]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(native.status(), 200);
    assert_eq!(
        stack.sims[1].stats().last_images,
        vec![summary("image/png")],
        "the type was read from the PNG's own bytes"
    );
}

#[tokio::test]
async fn remote_foreign_and_broken_images_are_refused_naming_the_field() {
    let stack = Stack::start(quick_sim()).await;
    for url in [
        "https://example.com/cat.png",
        "data:text/plain;base64,aGk=",
        "data:image/png;base64,not base64!",
    ] {
        let response = stack.chat(with_image("llama3.2", url)).await;
        assert_eq!(response.status(), 400, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["param"], "messages[0].content[1].image_url.url",
            "{url}"
        );
    }
    assert_eq!(
        stack.sim().stats().requests,
        0,
        "nothing reached the engine"
    );
}
