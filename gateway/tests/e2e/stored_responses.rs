//! The Responses API's stored responses in `[store]`'s Redis: two gateways share them, so a
//! conversation stored through one continues through the other; `GET` and `DELETE` work from
//! either, still scoped to the tenant that created the response; with Redis down, reading one
//! answers 503 `store_unavailable` instead of pretending it does not exist.

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::redis_server::RedisServer;
use crate::support::{Stack, eventually_async, key_hash, quick_sim, temp_config_path};

const KEY: &str = "sk-store-team-a-0123456789";
const OTHER_KEY: &str = "sk-store-team-b-9876543210";

fn config(redis: &str) -> String {
    format!(
        r#"
        [store]
        redis_url = "{redis}"
        timeout_ms = 300
        on_error = "allow"
        [[tenant]]
        name = "team-a"
        [[tenant]]
        name = "team-b"
        [[key]]
        tenant = "team-a"
        sha256 = "{}"
        [[key]]
        tenant = "team-b"
        sha256 = "{}"
        "#,
        key_hash(KEY),
        key_hash(OTHER_KEY)
    )
}

struct Gateway {
    base: String,
    stop: CancellationToken,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A second gateway in front of `stack`'s scheduler, reading the same config file.
async fn second_gateway(stack: &Stack, file: &str) -> Gateway {
    let mut config = gateway::Config::for_scheduler(format!("http://{}", stack.scheduler));
    config.config_file = Some(file.to_owned());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(gateway::serve(listener, config, stop.clone()));
    let http = stack.http.clone();
    let ready = format!("{base}/readyz");
    eventually_async(
        "the second gateway is ready",
        std::time::Duration::from_secs(10),
        || {
            let http = http.clone();
            let ready = ready.clone();
            async move {
                http.get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        },
    )
    .await;
    Gateway { base, stop }
}

async fn send(request: reqwest::RequestBuilder, key: &str) -> (u16, Value) {
    let answer = request.bearer_auth(key).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_conversation_stored_through_one_gateway_continues_through_another() {
    let mut redis = RedisServer::start().await;
    let path = temp_config_path();
    std::fs::write(&path, config(&redis.url())).unwrap();
    let file = path.display().to_string();
    let first_file = file.clone();
    let stack = Stack::start_with(
        Some(quick_sim()),
        |_| {},
        move |g| g.config_file = Some(first_file),
    )
    .await;
    let second = second_gateway(&stack, &file).await;
    let http = &stack.http;
    let create = |base: &str, body: Value| http.post(format!("{base}/v1/responses")).json(&body);
    let first_base = stack.url("");
    let first_base = first_base.trim_end_matches('/');

    let (status, first) = send(
        create(
            first_base,
            json!({"model": "llama3.2", "input": "one two three four"}),
        ),
        KEY,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    let first_input = first["usage"]["input_tokens"].as_u64().unwrap();

    // The next turn goes to the other gateway at once: it finds the conversation in Redis.
    let (status, next) = send(
        create(
            &second.base,
            json!({"model": "llama3.2", "input": "five", "previous_response_id": id}),
        ),
        KEY,
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["previous_response_id"], id.as_str());
    let (_, alone) = send(
        create(&second.base, json!({"model": "llama3.2", "input": "five"})),
        KEY,
    )
    .await;
    assert!(
        next["usage"]["input_tokens"].as_u64().unwrap()
            > alone["usage"]["input_tokens"].as_u64().unwrap() + first_input / 2,
        "the stored conversation went before the new input: {next} vs {alone}"
    );

    // Streamed too: once its last byte is read, the other gateway continues it.
    let streamed = http
        .post(format!("{first_base}/v1/responses"))
        .bearer_auth(KEY)
        .json(&json!({"model": "llama3.2", "input": "one two", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let completed = streamed
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "response.completed")
        .unwrap_or_else(|| panic!("no response.completed in {streamed}"));
    let streamed_id = completed["response"]["id"].as_str().unwrap().to_owned();
    let (status, after_stream) = send(
        create(
            &second.base,
            json!({"model": "llama3.2", "input": "three", "previous_response_id": streamed_id}),
        ),
        KEY,
    )
    .await;
    assert_eq!(status, 200, "{after_stream}");

    // Read from either gateway, by its tenant only.
    let retrieve = |base: &str| http.get(format!("{base}/v1/responses/{id}"));
    let (status, read) = send(retrieve(&second.base), KEY).await;
    assert_eq!(status, 200);
    assert_eq!(read["id"], id.as_str());
    assert_eq!(read["output"], first["output"]);
    let (status, _) = send(retrieve(&second.base), OTHER_KEY).await;
    assert_eq!(status, 404, "another tenant does not find it");
    let (status, _) = send(
        http.delete(format!("{}/v1/responses/{id}", second.base)),
        OTHER_KEY,
    )
    .await;
    assert_eq!(status, 404, "another tenant cannot delete it");

    // Deleted through one gateway, gone from the other.
    let (status, deleted) = send(
        http.delete(format!("{}/v1/responses/{id}", second.base)),
        KEY,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deleted"], true);
    let (status, _) = send(retrieve(first_base), KEY).await;
    assert_eq!(status, 404);

    // Redis down: a stored response cannot be read, and the client is told so (not "not found").
    let next_id = next["id"].as_str().unwrap().to_owned();
    redis.kill();
    let (status, refused) = send(
        http.get(format!("{first_base}/v1/responses/{next_id}")),
        KEY,
    )
    .await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "store_unavailable");
    let (status, refused) = send(
        create(
            first_base,
            json!({"model": "llama3.2", "input": "six", "previous_response_id": next_id}),
        ),
        KEY,
    )
    .await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "store_unavailable");
    let _ = std::fs::remove_file(path);
}

/// One tenant storing without end keeps within its share of the shared store — its oldest go
/// first — and never pushes out another tenant's responses.
#[tokio::test]
async fn a_tenant_storing_without_end_stays_within_its_share() {
    use gateway::responses_store::redis::RedisResponses;
    use gateway::responses_store::{PER_TENANT, PER_TENANT_BYTES, Stored};
    use llmgw_proto::v1::Message;

    let redis = RedisServer::start().await;
    let store =
        RedisResponses::connect_lazy(&redis.url(), "test", std::time::Duration::from_secs(2))
            .unwrap();
    let stored = |tenant: &str, text: String| Stored {
        tenant: tenant.to_owned(),
        conversation: vec![Message {
            role: "user".into(),
            content: text,
            ..Default::default()
        }],
        response: json!({"id": "x"}),
    };
    let put = |id: String, stored: Stored| {
        let size = stored.bytes();
        store.put(id.clone(), stored, size);
        async move { id }
    };
    let kept = put("resp_other".into(), stored("team-b", "hello".into())).await;
    store.written(&kept).await;
    for index in 0..PER_TENANT + 5 {
        let id = put(
            format!("resp_{index}"),
            stored("team-a", format!("turn {index}")),
        )
        .await;
        store.written(&id).await;
    }
    assert!(
        store.get("resp_0", "team-a").await.unwrap().is_none(),
        "the oldest went"
    );
    assert!(store.get("resp_4", "team-a").await.unwrap().is_none());
    assert!(store.get("resp_5", "team-a").await.unwrap().is_some());
    let last = format!("resp_{}", PER_TENANT + 4);
    assert_eq!(
        store
            .get(&last, "team-a")
            .await
            .unwrap()
            .unwrap()
            .conversation[0]
            .content,
        format!("turn {}", PER_TENANT + 4)
    );
    assert!(
        store.get("resp_other", "team-b").await.unwrap().is_some(),
        "another tenant's stays"
    );
    assert!(
        store.get("resp_other", "team-a").await.unwrap().is_none(),
        "and is its own"
    );

    // Bytes too: two responses that together pass the share leave only the newer.
    let big = || "x".repeat(PER_TENANT_BYTES * 5 / 8);
    let first = put("resp_big_1".into(), stored("team-c", big())).await;
    store.written(&first).await;
    let second = put("resp_big_2".into(), stored("team-c", big())).await;
    store.written(&second).await;
    assert!(store.get("resp_big_1", "team-c").await.unwrap().is_none());
    assert!(store.get("resp_big_2", "team-c").await.unwrap().is_some());
    assert!(store.get("resp_other", "team-b").await.unwrap().is_some());
}
