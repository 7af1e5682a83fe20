//! The edge protects itself: a client that trickles its headers is disconnected after the
//! header-read timeout, connections beyond the limit wait until one closes, and requests beyond
//! the in-flight limit get a fast 503 while probes keep answering.

use std::time::Duration;

use llm_sim::SimConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Stack, chat_body, quick_sim};

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_disconnected() {
    let stack = Stack::start_with(
        Some(quick_sim()),
        |_| {},
        |g| g.header_read_timeout_ms = 300,
    )
    .await;
    let mut slow = TcpStream::connect(stack.gateway).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let began = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was closed, not left open");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(began.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let stack = Stack::start_with(Some(quick_sim()), |_| {}, |g| g.max_connections = 2).await;
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let probe = || {
        fresh()
            .get(stack.url("/healthz"))
            .timeout(Duration::from_millis(500))
            .send()
    };
    // Idle connections (ours, and the stack client's pooled one) fill the limit: then a new
    // connection is not served.
    let mut held = Vec::new();
    while probe().await.is_ok() {
        assert!(held.len() < 3, "the limit of 2 connections is not enforced");
        held.push(TcpStream::connect(stack.gateway).await.unwrap());
    }
    assert!(!held.is_empty());
    // Closing them frees the places: served again.
    held.clear();
    let served = fresh()
        .get(stack.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_fast_and_probes_still_answer() {
    let sim = SimConfig {
        ttft_ms: 5,
        tpot_ms: 10,
        output_tokens: 60,
        ..SimConfig::default()
    };
    let stack = Stack::start_with(Some(sim), |_| {}, |g| g.max_in_flight = 1).await;
    let mut long = chat_body("llama3.2", "hold the only place");
    long["stream"] = json!(true);
    let holding = stack.chat(long).await;
    assert_eq!(holding.status(), 200);
    let shed = stack.chat(chat_body("llama3.2", "one more")).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["x-llmgw-reason"], "gateway_overloaded");
    assert_eq!(shed.headers()["retry-after"], "1");
    assert!(shed.headers().contains_key("x-request-id"));
    let health = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "probes are not shed");
    // The stream holds its place to its last byte; then the next request is served.
    let body = holding.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert_eq!(stack.chat(chat_body("llama3.2", "now")).await.status(), 200);
}

/// Reads one HTTP/1.1 response with a `content-length` body; returns its head, lowercased.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut byte).await.unwrap();
        assert_eq!(
            read, 1,
            "the server closed the connection instead of answering"
        );
        received.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head
}

#[tokio::test]
async fn refusals_that_ignore_the_body_keep_the_connection_usable() {
    // The body of a refused request is read before the answer. A server that answers first
    // reads what has arrived of the body once, and closes the connection if that was not all
    // of it: the client's next request on its keep-alive connection then fails with "server
    // disconnected" (seen with the `ollama` client's `pull` then `delete`).
    let stack = Stack::start(quick_sim()).await;
    let mut client = TcpStream::connect(stack.gateway).await.unwrap();
    client.set_nodelay(true).unwrap();
    let body = json!({"model": "llama3.2", "stream": false}).to_string();
    for round in 0..4 {
        let (path, status) = if round % 2 == 0 {
            ("/api/pull", "403")
        } else {
            ("/no/such/route", "404")
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        // A client whose body comes a moment after its head (a slow sender, a second segment).
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(body.as_bytes()).await.unwrap();
        let answer = read_response(&mut client).await;
        assert!(
            answer.starts_with(&format!("http/1.1 {status}")),
            "{round}: {answer}"
        );
        assert!(!answer.contains("connection: close"), "{round}: {answer}");
    }
}
