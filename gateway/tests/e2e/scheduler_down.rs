//! With no scheduler, chat is 503 with a reason (not a hang, not a 500) and `/readyz` is 503,
//! while `/healthz` stays 200: the gateway process itself is alive.

use std::time::Duration;

use serde_json::Value;

use crate::support::{chat_body, closed_port};

#[tokio::test]
async fn scheduler_down_is_503_and_not_ready() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = gateway::Config::for_scheduler(format!("http://{}", closed_port().await));
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(gateway::serve(listener, config, shutdown.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let response = http
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat_body("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["x-llmgw-reason"],
        "scheduler_unavailable"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "The scheduler is unavailable");

    let models = http
        .get(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 503);
    // Readiness answers from the gateway's health watch: unreachable once it has looked.
    let url = format!("http://{addr}/readyz");
    crate::support::eventually_async("readyz says unreachable", Duration::from_secs(10), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let ready = http.get(url).send().await.unwrap();
            ready.status() == 503
                && ready
                    .text()
                    .await
                    .unwrap()
                    .contains("scheduler unreachable")
        }
    })
    .await;
    let live = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    shutdown.cancel();
}
