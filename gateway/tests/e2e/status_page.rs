//! `/status.json` through the whole stack: the scheduler's `Status` snapshot shows a pool's
//! running and waiting requests by class and by tenant, with the oldest wait, and what each
//! tenant was served; in open mode the page and its data are served to clients on this
//! machine only (a client connecting over another interface is refused), everyone with
//! `GATEWAY_STATUS_ACCESS=any`, nobody with `off`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use gateway::config::StatusAccess;
use llm_sim::SimConfig;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{Stack, chat_body, eventually_async, quick_sim};

/// This machine's address on a non-loopback interface (the one a route to a private network
/// would leave by). No packet is sent.
fn interface_address() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe
        .connect("10.255.255.255:9")
        .expect("the machine needs a non-loopback IPv4 interface for this test");
    let address = probe.local_addr().unwrap().ip();
    assert!(!address.is_loopback(), "{address}");
    address
}

/// A gateway listening on every interface in front of `stack`'s scheduler.
async fn gateway_on_all_interfaces(
    stack: &Stack,
    access: StatusAccess,
) -> (u16, CancellationToken) {
    let mut config = gateway::Config::for_scheduler(format!("http://{}", stack.scheduler));
    config.status_access = access;
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(gateway::serve(listener, config, stop.clone()));
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let http = stack.http.clone();
    eventually_async("the gateway is ready", Duration::from_secs(10), || {
        let (http, ready) = (http.clone(), ready.clone());
        async move {
            http.get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    (port, stop)
}

async fn status_of(http: &reqwest::Client, address: SocketAddr, path: &str) -> (u16, Value) {
    let answer = http
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn open_mode_serves_the_status_to_this_machine_only_unless_told_otherwise() {
    let stack = Stack::start(quick_sim()).await;
    let outside = interface_address();
    for (access, from_loopback, from_outside) in [
        (StatusAccess::Loopback, 200, 403),
        (StatusAccess::Any, 200, 200),
        (StatusAccess::Off, 404, 404),
    ] {
        let (port, stop) = gateway_on_all_interfaces(&stack, access).await;
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let remote = SocketAddr::new(outside, port);
        for path in ["/status.json", "/status"] {
            let (status, body) = status_of(&stack.http, local, path).await;
            assert_eq!(
                status, from_loopback,
                "{access:?} {path} from loopback: {body}"
            );
            let (status, body) = status_of(&stack.http, remote, path).await;
            assert_eq!(
                status, from_outside,
                "{access:?} {path} from {outside}: {body}"
            );
            if status == 403 {
                assert_eq!(body["error"]["code"], "admin_required");
            }
        }
        stop.cancel();
    }
}

#[tokio::test]
async fn the_snapshot_shows_who_runs_and_who_waits_by_class_and_tenant() {
    let sim = SimConfig {
        // Long enough that two wait across several snapshot builds (one per 250 ms).
        tpot_ms: 150,
        output_tokens: 12,
        ..quick_sim()
    };
    let stack = Stack::start_with(Some(sim), |s| s.max_concurrency = 1, |_| {}).await;
    let send = |tenant: &'static str, priority: &'static str| {
        let request = stack
            .http
            .post(stack.url("/v1/chat/completions"))
            .header("x-tenant-id", tenant)
            .header("x-priority", priority)
            .json(&chat_body("llama3.2", "who waits"));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    let running = send("team-a", "interactive");
    let status_url = stack.url("/status.json");
    let http = stack.http.clone();
    let snapshot = || {
        let (http, url) = (http.clone(), status_url.clone());
        async move {
            http.get(&url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    eventually_async("one runs", Duration::from_secs(5), || async {
        snapshot().await["schedulers"][0]["pools"][0]["running"] == 1
    })
    .await;
    let waiting = [send("team-b", "interactive"), send("team-c", "batch")];
    eventually_async("two wait", Duration::from_secs(5), || async {
        let pool = &snapshot().await["schedulers"][0]["pools"][0];
        pool["waiting"][1]["requests"] == 1 && pool["waiting"][2]["requests"] == 1
    })
    .await;
    let status = snapshot().await;
    let scheduler = &status["schedulers"][0];
    assert_eq!(scheduler["role"], "sole");
    assert_eq!(scheduler["serving"], true);
    let pool = &scheduler["pools"][0];
    assert_eq!(pool["capacity"], 1);
    assert_eq!(
        pool["waiting"][0],
        json!({"class": "critical", "requests": 0, "tokens": 0, "oldest_wait_ms": 0})
    );
    assert!(pool["waiting"][1]["tokens"].as_u64().unwrap() > 0);
    assert_eq!(pool["endpoints"][0]["in_flight"], 1);
    assert_eq!(pool["endpoints"][0]["ejected"], false);
    let tenant = |name: &str| {
        status["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {status}"))
    };
    assert_eq!(tenant("team-a")["running"], 1);
    assert_eq!(tenant("team-b")["waiting"], 1);
    assert_eq!(tenant("team-c")["waiting"], 1);

    assert_eq!(running.await.unwrap(), 200);
    for request in waiting {
        assert_eq!(request.await.unwrap(), 200);
    }
    eventually_async(
        "all served and counted",
        Duration::from_secs(15),
        || async {
            let status = snapshot().await;
            let pool = &status["schedulers"][0]["pools"][0];
            pool["running"] == 0
                && status["tenants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["served_tokens"].as_u64().unwrap_or(0) > 0)
                    .count()
                    == 3
        },
    )
    .await;
    // Each ran alone at 150 ms a token: the endpoint's pace at its batch.
    let idle = snapshot().await;
    let tpot = idle["schedulers"][0]["pools"][0]["endpoints"][0]["tpot_ms"]
        .as_u64()
        .unwrap();
    assert!((100..2_000).contains(&tpot), "tpot_ms {tpot}");
    // A refusal is remembered with its request id and reason.
    let refused = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", "team-a")
        .json(&json!({"model": "llama3.2", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // Served again for a moment (250 ms): the refusal shows on the next build.
    eventually_async("the refusal is listed", Duration::from_secs(5), || async {
        snapshot().await["recent_refusals"][0]["request_id"] == id.as_str()
    })
    .await;
    let status = snapshot().await;
    assert_eq!(status["recent_refusals"][0]["reason"], "invalid_request");
    assert_eq!(status["recent_refusals"][0]["tenant"], "team-a");
    let team_a = status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "team-a")
        .cloned()
        .unwrap();
    assert_eq!(team_a["refusals"]["invalid_request"], 1);
}
