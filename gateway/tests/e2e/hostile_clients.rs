//! Hostile clients against the real edge on loopback: quiet sockets (silent, HTTP/2 preface
//! only, an HTTP/2 connection left idle) are closed and free their places; a body that stalls
//! or trickles is cut with 408; bodies past the memory budget are refused at once with 503; a
//! refused request's large body is never read; engine options pass only from an allow-list;
//! a model allow-list holds along fallbacks.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use llm_sim::{Fault, SimConfig};

use crate::support::{Stack, chat_body, fallback_fleet, quick_sim, temp_config_path};

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Waits (at most `within`) for the server to close `stream`; returns what it sent before.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

async fn connect(stack: &Stack) -> TcpStream {
    let stream = TcpStream::connect(stack.gateway).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

#[tokio::test]
async fn quiet_sockets_are_closed_and_free_their_places() {
    let stack = Stack::start_with(
        Some(quick_sim()),
        |_| {},
        |g| {
            g.max_connections = 6;
            g.header_read_timeout_ms = 400;
        },
    )
    .await;
    // Every place taken: three sockets that send nothing, three that send only the HTTP/2
    // preface (hyper-util reads the preface with no timer; HTTP/2 has no header timer).
    let mut quiet = Vec::new();
    for n in 0..6 {
        let mut socket = connect(&stack).await;
        if n % 2 == 1 {
            socket.write_all(H2_PREFACE).await.unwrap();
        }
        quiet.push(socket);
    }
    for (n, socket) in quiet.iter_mut().enumerate() {
        assert!(
            closed_by_server(socket, Duration::from_secs(10))
                .await
                .is_some(),
            "quiet socket {n} was never closed"
        );
    }
    // Their places are free again: a new client is served.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let health = fresh
        .get(stack.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Operators see it: each closed quiet socket is counted by its reason.
    let metrics = fresh
        .get(stack.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let closed: f64 = metrics
        .lines()
        .find(|line| line.starts_with("llmgw_connections_closed_total{reason=\"head_timeout\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(closed >= 6.0, "{metrics}");
}

/// A HEADERS frame for `GET /healthz` on stream 1 (HPACK: indexed :method GET and :scheme
/// http, literal :path and :authority), ending the stream.
fn h2_get_healthz() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 1, b'x']);
    let mut frame = vec![0, 0, block.len() as u8, 0x01, 0x05, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    frame
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_its_last_request() {
    let stack = Stack::start_with(Some(quick_sim()), |_| {}, |g| g.idle_timeout_ms = 500).await;
    let mut client = connect(&stack).await;
    client.write_all(H2_PREFACE).await.unwrap();
    client.write_all(&h2_get_healthz()).await.unwrap();
    // Served (a HEADERS frame for stream 1), then left idle: the server says goodbye and
    // closes, where before an HTTP/2 connection stayed open for as long as the client liked.
    let received = closed_by_server(&mut client, Duration::from_secs(10))
        .await
        .expect("the idle HTTP/2 connection was never closed");
    let mut frames = received.as_slice();
    let mut kinds = Vec::new();
    while frames.len() >= 9 {
        let length =
            usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
        let stream = u32::from_be_bytes([frames[5], frames[6], frames[7], frames[8]]) & 0x7fff_ffff;
        kinds.push((frames[3], stream));
        frames = &frames[(9 + length).min(frames.len())..];
    }
    assert!(
        kinds.contains(&(0x01, 1)),
        "no response headers on stream 1: {kinds:?}"
    );
    assert!(
        kinds.contains(&(0x07, 0)),
        "no GOAWAY before the close: {kinds:?}"
    );
}

/// Writes a chat request head declaring `length` body bytes.
async fn post_head(stream: &mut TcpStream, length: usize, extra: &str) {
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
}

fn body_of(size: usize) -> Vec<u8> {
    let prompt = "a".repeat(size.saturating_sub(80));
    let mut body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": prompt}]})
        .to_string()
        .into_bytes();
    body.resize(size, b' ');
    body
}

fn status_and_reason(answer: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(answer).to_ascii_lowercase();
    let status = text.get(9..12).unwrap_or_default().to_owned();
    let reason = text
        .lines()
        .find_map(|line| line.strip_prefix("x-llmgw-reason:"))
        .map_or_else(String::new, |r| r.trim().to_owned());
    (status, reason)
}

#[tokio::test]
async fn a_body_that_stalls_or_trickles_is_cut_with_408() {
    let stack = Stack::start_with(
        Some(quick_sim()),
        |_| {},
        |g| {
            g.body_stall_timeout_ms = 400;
            g.body_timeout_ms = 1_500;
        },
    )
    .await;
    let body = body_of(2_000);
    // Stalls: half the body, then nothing.
    let mut stalled = connect(&stack).await;
    post_head(&mut stalled, body.len(), "").await;
    stalled.write_all(&body[..1_000]).await.unwrap();
    let answer = closed_by_server(&mut stalled, Duration::from_secs(10))
        .await
        .expect("a stalled body kept its connection");
    assert_eq!(
        status_and_reason(&answer),
        ("408".into(), "body_timeout".into())
    );
    // Trickles: a byte every 100 ms never stalls, and would take 200 s.
    let mut trickling = connect(&stack).await;
    post_head(&mut trickling, body.len(), "").await;
    let began = std::time::Instant::now();
    let mut answer = Vec::new();
    for byte in &body {
        if trickling.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buffer = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(100), trickling.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_quiet) => {}
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the trickle was never cut"
        );
    }
    if let Some(rest) = closed_by_server(&mut trickling, Duration::from_secs(10)).await {
        answer.extend_from_slice(&rest);
    }
    assert_eq!(
        status_and_reason(&answer),
        ("408".into(), "body_timeout".into())
    );
    // A client that sends its body at once is served as ever.
    let served = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn bodies_past_the_memory_budget_are_refused_at_once() {
    const BUDGET: usize = 64 << 10;
    let stack = Stack::start_with(
        Some(quick_sim()),
        |_| {},
        |g| {
            g.max_body_bytes = BUDGET;
            g.max_body_buffer_bytes = BUDGET * gateway::edge::body::MEMORY_PER_BODY_BYTE;
        },
    )
    .await;
    // One client sends all but the last 100 bytes of a body the size of the budget (what has
    // arrived is what counts, not what a Content-Length declares).
    let big = body_of(BUDGET);
    let mut holding = connect(&stack).await;
    post_head(&mut holding, big.len(), "").await;
    holding.write_all(&big[..BUDGET - 100]).await.unwrap();
    // Whoever comes next is refused at once, not queued behind it nor buffered.
    crate::support::eventually_async(
        "a body past the budget refused with 503",
        Duration::from_secs(10),
        || async {
            let answer = stack
                .http
                .post(stack.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(body_of(1_000))
                .send()
                .await
                .unwrap();
            answer.status() == 503
                && answer.headers()["x-llmgw-reason"] == "gateway_overloaded"
                && answer.headers()["retry-after"] == "1"
        },
    )
    .await;
    // The first body completes and is served; its budget comes back.
    holding.write_all(&big[BUDGET - 100..]).await.unwrap();
    let mut head = [0u8; 12];
    holding.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let served = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body_of(1_000))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn a_refused_large_body_is_answered_without_being_read() {
    let path = temp_config_path();
    let sha = gateway::governance::keys::hex(&gateway::governance::keys::hash("sk-some-key-1234"));
    std::fs::write(
        &path,
        format!("[[tenant]]\nname = \"t\"\n[[key]]\ntenant = \"t\"\nsha256 = \"{sha}\"\n"),
    )
    .unwrap();
    let file = path.display().to_string();
    let stack = Stack::start_with(
        Some(quick_sim()),
        |_| {},
        move |g| g.config_file = Some(file),
    )
    .await;
    // No key, 4 MiB declared, not a byte of it sent: the 401 comes at once and the connection
    // closes; the body is never read into memory (before: read whole, then refused).
    let mut keyless = connect(&stack).await;
    post_head(&mut keyless, 4 << 20, "").await;
    let answer = closed_by_server(&mut keyless, Duration::from_secs(3))
        .await
        .expect("the refusal waited for a body it does not need");
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("401", "invalid_api_key")
    );
    assert!(
        String::from_utf8_lossy(&answer)
            .to_ascii_lowercase()
            .contains("connection: close")
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn engine_options_pass_only_from_the_allow_list_in_every_auth_mode() {
    // Open mode, no config file: before, anything unknown went to the engine (llama.cpp reads
    // `n_predict` ahead of `max_tokens`).
    let stack = Stack::start(quick_sim()).await;
    for (field, param) in [
        ("n_predict", "n_predict"),
        ("id_slot", "id_slot"),
        ("num_ctx", "num_ctx"),
    ] {
        let mut body = chat_body("llama3.2", "hi");
        body[field] = json!(100_000);
        let refused = stack.chat(body).await;
        assert_eq!(refused.status(), 400, "{field}");
        let error: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["param"], param);
    }
    let ollama = stack
        .http
        .post(stack.url("/api/chat"))
        .json(
            &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}],
                      "stream": false, "options": {"num_gpu": 99}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ollama.status(), 400);
    let error: serde_json::Value = ollama.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("options.num_gpu"),
        "{error}"
    );
    // A sampling knob on the list passes.
    let mut body = chat_body("llama3.2", "hi");
    body["top_k"] = json!(4);
    assert_eq!(stack.chat(body).await.status(), 200);
}

#[tokio::test]
async fn the_model_allow_list_holds_along_fallbacks() {
    let key = |name: &str| format!("sk-{name}-0123456789");
    let sha =
        |name: &str| gateway::governance::keys::hex(&gateway::governance::keys::hash(&key(name)));
    let path = temp_config_path();
    std::fs::write(
        &path,
        format!(
            "[[tenant]]\nname = \"narrow\"\nmodels = [\"main\"]\n[[tenant]]\nname = \"wide\"\nmodels = [\"main\", \"back*\"]\n\
             [[key]]\ntenant = \"narrow\"\nsha256 = \"{}\"\n[[key]]\ntenant = \"wide\"\nsha256 = \"{}\"\n",
            sha("narrow"),
            sha("wide")
        ),
    )
    .unwrap();
    let file = path.display().to_string();
    let broken = SimConfig {
        fault: Fault::Status(503),
        ..quick_sim()
    };
    let stack = Stack::fleet_with(
        vec![broken, quick_sim()],
        fallback_fleet,
        |_| {},
        move |g| g.config_file = Some(file),
    )
    .await;
    let ask = |name: &str| {
        stack
            .http
            .post(stack.url("/v1/chat/completions"))
            .bearer_auth(key(name))
            .json(&chat_body("main", "fall back"))
            .send()
    };
    // Allowed only `main`: its failure is the answer; `backup` never sees the request.
    let narrow = ask("narrow").await.unwrap();
    assert_eq!(narrow.status(), 503);
    assert_eq!(
        stack.sims[1].stats().requests,
        0,
        "the fallback outside the allow-list was used"
    );
    // Allowed `backup` too: served by it, and the response says so.
    let wide = ask("wide").await.unwrap();
    assert_eq!(wide.status(), 200);
    assert_eq!(wide.headers()["x-llmgw-model"], "backup");
    assert_eq!(stack.sims[1].stats().requests, 1);
    let _ = std::fs::remove_file(path);
}
