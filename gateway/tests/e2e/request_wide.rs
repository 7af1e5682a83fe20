//! Request-wide layers apply to every route and every early refusal: each response carries
//! `x-request-id` (the client's, or a fresh one), continues the caller's trace (`x-trace-id`),
//! and is counted by matched route and status.

use crate::support::{Stack, chat_body, quick_sim};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn every_route_and_every_early_refusal_gets_id_trace_and_count() {
    let stack = Stack::start(quick_sim()).await;
    let get = |path: &str, id: &str| {
        stack
            .http
            .get(stack.url(path))
            .header("x-request-id", id)
            .header("traceparent", TRACEPARENT)
            .send()
    };
    for (path, id, status) in [
        ("/v1/models", "models-1", 200),
        ("/healthz", "health-1", 200),
        ("/no/such/route", "nothing-1", 404),
    ] {
        let response = get(path, id).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["x-request-id"], id, "{path}");
        assert_eq!(
            response.headers()["x-trace-id"],
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "{path}"
        );
    }

    // A bad header is refused before any handler runs, and still gets the layers.
    let refused = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", "not a tenant")
        .header("traceparent", TRACEPARENT)
        .json(&chat_body("llama3.2", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        id.starts_with("req_") && id.len() == 20,
        "fresh id, got {id}"
    );
    assert_eq!(
        refused.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["param"], "x-tenant-id");

    // A malformed request id is replaced, not echoed.
    let replaced = get("/healthz", "bad id with spaces").await.unwrap();
    assert!(
        replaced.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );

    let metrics = stack
        .http
        .get(stack.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"llmgw_http_requests_total{route="/v1/chat/completions",model="-",status="400"} 1"#,
        r#"llmgw_http_requests_total{route="/v1/models",model="-",status="200"} 1"#,
        r#"llmgw_http_requests_total{route="/healthz",model="-",status="200"} 2"#,
        r#"llmgw_http_requests_total{route="unmatched",model="-",status="404"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in:\n{metrics}"
        );
    }
}
