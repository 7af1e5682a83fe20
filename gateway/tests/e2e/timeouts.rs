//! Every timeout kind ends cleanly: 504 with its reason before the first token, an error event
//! then the end of the stream after it; the upstream request is dropped and the slot freed.

use std::time::Duration;

use llm_sim::{Fault, SimConfig};
use serde_json::json;

use crate::support::{SseData, Stack, chat_body, eventually, quick_sim, sse_data, streamed_text};

fn config(urls: &[String], timeouts: &str) -> String {
    format!(
        "[timeouts]\n{timeouts}\n[[pool]]\nname = \"p\"\n[[pool.endpoint]]\nurl = \"{}\"\nkind = \"ollama\"\nslots = 4\n\
         [[model]]\nname = \"m\"\n[[model.version]]\nname = \"v\"\npool = \"p\"\nupstream = \"llama3.2\"\n",
        urls[0]
    )
}

async fn reason_of(stack: &Stack, stream: bool) -> (u16, String) {
    reason_for(stack, "m", stream).await
}

async fn reason_for(stack: &Stack, model: &str, stream: bool) -> (u16, String) {
    let mut body = chat_body(model, "time me");
    body["stream"] = json!(stream);
    let response = stack.chat(body).await;
    let status = response.status().as_u16();
    let reason = response
        .headers()
        .get("x-llmgw-reason")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, reason)
}

#[tokio::test]
async fn no_first_token_in_time_is_504_ttft_timeout_and_frees_the_backend() {
    let sim = SimConfig {
        ttft_ms: 5_000,
        ..quick_sim()
    };
    let stack = Stack::fleet(vec![sim], |urls| config(urls, "ttft_ms = 150"), |_| {}).await;
    assert_eq!(
        reason_of(&stack, false).await,
        (504, "ttft_timeout".to_owned())
    );
    assert_eq!(
        reason_of(&stack, true).await,
        (504, "ttft_timeout".to_owned())
    );
    eventually("backend freed", Duration::from_secs(2), || {
        stack.sims[0].stats().active == 0
    })
    .await;
    assert_eq!(stack.sims[0].stats().cancelled, 2);
}

#[tokio::test]
async fn a_silent_stream_ends_with_an_idle_timeout_event() {
    let sim = SimConfig {
        fault: Fault::StallAfter(2),
        ..quick_sim()
    };
    let stack = Stack::fleet(vec![sim], |urls| config(urls, "idle_ms = 150"), |_| {}).await;
    let mut body = chat_body("m", "stall");
    body["stream"] = json!(true);
    let response = stack.chat(body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(
        streamed_text(&events),
        llm_sim::completion_text("stall", 0, 2)
    );
    let SseData::Json(last) = events.last().unwrap() else {
        panic!()
    };
    assert_eq!(last["error"]["code"], "idle_timeout");
    eventually("backend freed", Duration::from_secs(2), || {
        stack.sims[0].stats().active == 0
    })
    .await;
    assert_eq!(stack.pool("p").admission.running(), 0);
}

#[tokio::test]
async fn a_generation_over_its_total_budget_is_cut() {
    let sim = SimConfig {
        ttft_ms: 5,
        tpot_ms: 50,
        output_tokens: 100,
        ..SimConfig::default()
    };
    let stack = Stack::fleet(vec![sim], |urls| config(urls, "total_ms = 300"), |_| {}).await;
    let mut body = chat_body("m", "long");
    body["stream"] = json!(true);
    let response = stack.chat(body).await;
    let events = sse_data(&response.text().await.unwrap());
    let SseData::Json(last) = events.last().unwrap() else {
        panic!()
    };
    assert_eq!(last["error"]["code"], "total_timeout");
    let (status, reason) = reason_of(&stack, false).await;
    assert_eq!(
        (status, reason.as_str()),
        (504, "total_timeout"),
        "non-stream: nothing was sent yet"
    );
    eventually("backend freed", Duration::from_secs(2), || {
        stack.sims[0].stats().active == 0
    })
    .await;
}

#[tokio::test]
async fn a_backend_that_accepts_but_never_answers_is_a_connect_timeout() {
    // Accepts connections and says nothing (a wedged process): the response head never comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    let stack = Stack::start_with(
        None,
        |s| {
            let path = crate::support::temp_config_path();
            std::fs::write(
                &path,
                config(std::slice::from_ref(&url), "connect_ms = 150"),
            )
            .unwrap();
            s.config_file = Some(path.display().to_string());
            // Probes time out after min(interval, 2 s): keep the first one pending well past
            // the request, so the request itself meets the silent endpoint.
            s.probe_interval_ms = 10_000;
        },
        |_| {},
    )
    .await;
    // The first probe is still waiting (2 s) on the silent endpoint, so the request tries it.
    assert_eq!(
        reason_of(&stack, false).await,
        (504, "connect_timeout".to_owned())
    );
    held.abort();
}

#[tokio::test]
async fn the_request_deadline_is_504_deadline_exceeded_for_the_running_and_the_waiting_request() {
    // `GATEWAY_REQUEST_TIMEOUT_MS` is the whole request's budget: it is sent to the scheduler as
    // the deadline, and it ends a request wherever it is — waiting for a slot or for a token.
    let sim = SimConfig {
        ttft_ms: 5_000,
        ..quick_sim()
    };
    let stack = Stack::start_with(
        Some(sim),
        |scheduler| scheduler.max_concurrency = 1,
        |gateway| gateway.request_timeout_ms = 300,
    )
    .await;
    // The first request holds the only slot, waiting for a first token past its deadline; the
    // second waits in the queue behind it (and may get the slot for its last milliseconds).
    let (first, second) = tokio::join!(reason_for(&stack, "llama3.2", false), async {
        eventually(
            "the first request reached the backend",
            Duration::from_secs(2),
            || stack.sims[0].stats().requests == 1,
        )
        .await;
        reason_for(&stack, "llama3.2", true).await
    });
    assert_eq!(first, (504, "deadline_exceeded".to_owned()));
    assert_eq!(second, (504, "deadline_exceeded".to_owned()));
    eventually("backend freed", Duration::from_secs(2), || {
        stack.sims[0].stats().active == 0
    })
    .await;
    let stats = stack.sims[0].stats();
    assert_eq!(
        stats.cancelled, stats.requests,
        "every generation that started was cancelled at its deadline: {stats:?}"
    );
}
