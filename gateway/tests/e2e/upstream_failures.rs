//! Backend trouble maps to 404/502/503 with a reason before the first token, and to an SSE
//! error event (then the end of the stream, no `[DONE]`) after it.

use llm_sim::{Fault, SimConfig, completion_text};
use serde_json::{Value, json};

use std::time::Duration;

use crate::support::{
    SseData, Stack, chat_body, eventually_async, quick_sim, sse_data, streamed_text,
};

async fn status_reason_body(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let reason = response.headers()["x-llmgw-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, reason, response.json().await.unwrap())
}

#[tokio::test]
async fn unknown_model_is_404_naming_the_model_param() {
    let stack = Stack::start(quick_sim()).await;
    let (status, reason, body) =
        status_reason_body(stack.chat(chat_body("no-such-model", "hi")).await).await;
    assert_eq!((status, reason.as_str()), (404, "model_not_found"));
    assert_eq!(body["error"]["param"], "model");
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn backend_down_is_503_for_stream_and_non_stream_and_readyz_says_so() {
    let stack = Stack::start_with(None, |_| {}, |_| {}).await;
    // Before the first probe has run, a request finds out by trying.
    let (status, reason, _) =
        status_reason_body(stack.chat(chat_body("llama3.2", "hi")).await).await;
    assert_eq!(status, 503);
    assert!(
        ["backend_unavailable", "no_healthy_backend"].contains(&reason.as_str()),
        "{reason}"
    );
    let (http, url) = (stack.http.clone(), stack.url("/readyz"));
    eventually_async(
        "probe marked the backend down",
        Duration::from_secs(5),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .contains("NOT_SERVING")
            }
        },
    )
    .await;
    // After it, the pool has no capacity and refuses at once.
    for stream in [false, true] {
        let mut body = chat_body("llama3.2", "hi");
        body["stream"] = json!(stream);
        let (status, reason, body) = status_reason_body(stack.chat(body).await).await;
        assert_eq!(
            (status, reason.as_str()),
            (503, "no_healthy_backend"),
            "stream={stream}"
        );
        assert_eq!(
            body["error"]["message"],
            "No healthy backend can serve this model right now"
        );
        assert_eq!(body["error"]["type"], "server_error");
    }
    assert_eq!(
        stack.admission().running(),
        0,
        "failed requests release their slot"
    );
}

#[tokio::test]
async fn backend_garbage_is_502_for_stream_and_non_stream() {
    let stack = Stack::start(SimConfig {
        fault: Fault::Garbage,
        ..quick_sim()
    })
    .await;
    for stream in [false, true] {
        let mut body = chat_body("llama3.2", "hi");
        body["stream"] = json!(stream);
        let (status, reason, _) = status_reason_body(stack.chat(body).await).await;
        assert_eq!(
            (status, reason.as_str()),
            (502, "backend_bad_response"),
            "stream={stream}"
        );
    }
}

#[tokio::test]
async fn backend_error_status_is_502_and_overload_is_503() {
    let stack = Stack::start(SimConfig {
        fault: Fault::Status(500),
        ..quick_sim()
    })
    .await;
    let (status, reason, _) =
        status_reason_body(stack.chat(chat_body("llama3.2", "hi")).await).await;
    assert_eq!((status, reason.as_str()), (502, "backend_error"));
    let stack = Stack::start(SimConfig {
        fault: Fault::Status(503),
        ..quick_sim()
    })
    .await;
    let response = stack.chat(chat_body("llama3.2", "hi")).await;
    let retry_after = response.headers().get("retry-after").cloned();
    let (status, reason, _) = status_reason_body(response).await;
    assert_eq!((status, reason.as_str()), (503, "backend_overloaded"));
    assert_eq!(
        retry_after.as_ref().map(|v| v.to_str().unwrap()),
        Some(llm_sim::refusal::RETRY_AFTER_SECS.to_string().as_str()),
        "the engine's own Retry-After reaches the client"
    );
}

#[tokio::test]
async fn mid_stream_drop_ends_with_an_error_event_and_no_done() {
    let stack = Stack::start(SimConfig {
        fault: Fault::DropAfter(3),
        ..quick_sim()
    })
    .await;
    let mut body = chat_body("llama3.2", "hi");
    body["stream"] = json!(true);
    let response = stack.chat(body).await;
    assert_eq!(
        response.status(),
        200,
        "the first tokens went out, so the status is committed"
    );
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(
        streamed_text(&events),
        completion_text("hi", 0, 3),
        "the tokens before the drop arrive intact"
    );
    let SseData::Json(last) = events.last().unwrap() else {
        panic!("stream must not end with [DONE]")
    };
    assert_eq!(last["error"]["code"], "backend_interrupted");
    assert!(!events.contains(&SseData::Done));

    let (status, reason, _) =
        status_reason_body(stack.chat(chat_body("llama3.2", "hi")).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (502, "backend_interrupted"),
        "non-stream: nothing was sent yet"
    );
    assert_eq!(stack.admission().running(), 0);
}
