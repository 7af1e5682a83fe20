//! Two scheduler replicas of one group share a Redis lease: exactly one leads (SERVING, serves
//! `Chat`), the other stands by (NOT_SERVING, refuses `not_leader` naming the leader). A
//! gateway that lists both routes to the leader and, when the leader goes away, follows the
//! new one — the request in between waits out the failover instead of failing.

use std::time::Duration;

use llmgw_proto::v1::scheduler_client::SchedulerClient;
use llmgw_proto::v1::{ChatRequest, Message};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::redis_server::RedisServer;
use crate::support::{chat_body, eventually_async, quick_sim};

struct Replica {
    address: String,
    stop: CancellationToken,
}

async fn replica(sim: &str, redis: &str) -> Replica {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let mut config = scheduler::Config::for_backend(sim);
    config.probe_interval_ms = 100;
    config.redis_url = Some(redis.to_owned());
    config.lease_ttl_ms = 600;
    config.advertise = Some(address.clone());
    let stop = CancellationToken::new();
    tokio::spawn(scheduler::serve(listener, config, stop.clone()));
    Replica { address, stop }
}

async fn serving(address: &str) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(address.to_owned())
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    let mut health = HealthClient::new(channel);
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.get_ref().status() == ServingStatus::Serving)
}

/// The index of the one replica that is SERVING, once exactly one is.
async fn leader_of(replicas: &[Replica]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut leaders = Vec::new();
        for (index, replica) in replicas.iter().enumerate() {
            if serving(&replica.address).await {
                leaders.push(index);
            }
        }
        if let [leader] = leaders[..] {
            return leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no single leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_replica_leads_the_other_stands_by_and_the_gateway_follows_a_failover() {
    let redis = RedisServer::start().await;
    let sim = llm_sim::spawn(quick_sim()).await.unwrap();
    let replicas = vec![
        replica(&sim.base_url(), &redis.url()).await,
        replica(&sim.base_url(), &redis.url()).await,
    ];
    let leader = leader_of(&replicas).await;
    let standby = 1 - leader;

    // The standby refuses and names the leader.
    let mut client = SchedulerClient::connect(replicas[standby].address.clone())
        .await
        .unwrap();
    let refused = client
        .chat(ChatRequest {
            model: "llama3.2".into(),
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(
        refused.metadata().get("x-llmgw-reason").unwrap(),
        "not_leader"
    );
    assert_eq!(
        refused.metadata().get("x-llmgw-leader").unwrap(),
        replicas[leader].address.as_str()
    );

    // A gateway listing both serves through the leader.
    let mut config =
        gateway::Config::for_scheduler(format!("{},{}", replicas[0].address, replicas[1].address));
    config.failover_wait_ms = 5_000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let stop_gateway = CancellationToken::new();
    tokio::spawn(gateway::serve(listener, config, stop_gateway.clone()));
    let http = reqwest::Client::new();
    let chat = || {
        http.post(format!("{gateway}/v1/chat/completions"))
            .json(&chat_body("llama3.2", "hi"))
            .send()
    };
    let ready = || {
        let (http, url) = (http.clone(), format!("{gateway}/readyz"));
        async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    };
    eventually_async("gateway ready", Duration::from_secs(10), ready).await;
    for _ in 0..4 {
        assert_eq!(chat().await.unwrap().status(), 200);
    }

    // The leader goes away (it gives the lease up): the next request waits for the new one.
    replicas[leader].stop.cancel();
    let began = std::time::Instant::now();
    let served = chat().await.unwrap();
    assert_eq!(served.status(), 200, "served by the new leader");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert!(
        serving(&replicas[standby].address).await,
        "the standby took over"
    );
    for _ in 0..4 {
        assert_eq!(chat().await.unwrap().status(), 200);
    }
    stop_gateway.cancel();
    replicas[standby].stop.cancel();
}

#[tokio::test]
async fn without_redis_no_replica_leads_and_with_it_back_one_does_again() {
    let mut redis = RedisServer::start().await;
    let sim = llm_sim::spawn(quick_sim()).await.unwrap();
    let replicas = vec![
        replica(&sim.base_url(), &redis.url()).await,
        replica(&sim.base_url(), &redis.url()).await,
    ];
    leader_of(&replicas).await;
    let mut config =
        gateway::Config::for_scheduler(format!("{},{}", replicas[0].address, replicas[1].address));
    config.failover_wait_ms = 300;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let stop_gateway = CancellationToken::new();
    tokio::spawn(gateway::serve(listener, config, stop_gateway.clone()));
    let http = reqwest::Client::new();

    // The leader cannot confirm its lease: within the TTL it stops leading, and nobody else can.
    redis.kill();
    let addresses: Vec<String> = replicas.iter().map(|r| r.address.clone()).collect();
    eventually_async(
        "no replica leads without Redis",
        Duration::from_secs(5),
        || {
            let addresses = addresses.clone();
            async move {
                for address in &addresses {
                    if serving(address).await {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let refused = http
        .post(format!("{gateway}/v1/chat/completions"))
        .json(&chat_body("llama3.2", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-llmgw-reason"], "not_leader");

    redis.restart().await;
    leader_of(&replicas).await;
    let (http2, url) = (http.clone(), format!("{gateway}/v1/chat/completions"));
    eventually_async("served again", Duration::from_secs(5), || {
        let (http, url) = (http2.clone(), url.clone());
        async move {
            http.post(url)
                .json(&chat_body("llama3.2", "hi"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    stop_gateway.cancel();
    for replica in &replicas {
        replica.stop.cancel();
    }
}

/// A scheduler whose `SCHEDULER_CONFIG` serves only `model` (upstream llama3.2 at `sim`).
async fn shard(sim: &str, model: &str) -> (Replica, std::path::PathBuf) {
    let path = crate::support::temp_config_path();
    std::fs::write(
        &path,
        format!(
            "[[pool]]\nname = \"p\"\n[[pool.endpoint]]\nurl = \"{sim}\"\nkind = \"ollama\"\nslots = 2\n\
             [[model]]\nname = \"{model}\"\n[[model.version]]\nname = \"v\"\npool = \"p\"\nupstream = \"llama3.2\"\n"
        ),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let mut config = scheduler::Config::for_backend("http://unused");
    config.config_file = Some(path.display().to_string());
    config.probe_interval_ms = 100;
    let stop = CancellationToken::new();
    tokio::spawn(scheduler::serve(listener, config, stop.clone()));
    (Replica { address, stop }, path)
}

#[tokio::test]
async fn schedulers_that_own_different_models_each_get_their_own() {
    let first = llm_sim::spawn(quick_sim()).await.unwrap();
    let second = llm_sim::spawn(quick_sim()).await.unwrap();
    let (a, a_path) = shard(&first.base_url(), "model-a").await;
    let (b, b_path) = shard(&second.base_url(), "model-b").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let stop_gateway = CancellationToken::new();
    tokio::spawn(gateway::serve(
        listener,
        gateway::Config::for_scheduler(format!("{},{}", a.address, b.address)),
        stop_gateway.clone(),
    ));
    let http = reqwest::Client::new();
    // The gateway learns each scheduler's models; until then it may guess, so wait for both.
    let (probe, models) = (http.clone(), format!("{gateway}/v1/models"));
    eventually_async("both shards listed", Duration::from_secs(10), || {
        let (http, url) = (probe.clone(), models.clone());
        async move {
            let Ok(response) = http.get(url).send().await else {
                return false;
            };
            let text = response.text().await.unwrap_or_default();
            text.contains("model-a") && text.contains("model-b")
        }
    })
    .await;
    // Whether or not the gateway has learnt each shard's models yet, a shard that lacks the
    // model refuses before any backend work and the gateway moves on to the other.
    for _ in 0..3 {
        for model in ["model-a", "model-b"] {
            let response = http
                .post(format!("{gateway}/v1/chat/completions"))
                .json(&chat_body(model, "hi"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{model}");
        }
    }
    assert_eq!(first.stats().requests, 3, "model-a only on its shard");
    assert_eq!(second.stats().requests, 3, "model-b only on its shard");
    stop_gateway.cancel();
    a.stop.cancel();
    b.stop.cancel();
    let _ = std::fs::remove_file(a_path);
    let _ = std::fs::remove_file(b_path);
}
