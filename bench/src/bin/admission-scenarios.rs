//! `admission-scenarios`: the admission policy measured against llm-sim with slot emulation.
//! Prints one markdown table: each scenario's measurement, its target and the verdict. All
//! comparisons are against baselines measured in the same run (idle TTFT, service time, the
//! simulator's own capacity), because the machine is shared and noisy.

use std::time::Duration;

use clap::Parser;
use llmgw_bench::request::{ChatCall, Outcome, client};
use llmgw_bench::stats::percentile_ms;
use llmgw_bench::work;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Admission scenarios: overload, tenants, classes, refusals, disconnects")]
struct Args {
    /// Gateway base URL.
    #[arg(long)]
    gateway: String,
    /// llm-sim base URL (direct baseline and `/sim/stats`).
    #[arg(long)]
    direct: String,
    #[arg(long, default_value = "llama3.2")]
    model: String,
    /// The simulator's (and scheduler's) slots.
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// Seconds per loaded window.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Output tokens per request (the sim caps it at its SIM_OUTPUT_TOKENS).
    #[arg(long, default_value_t = 30)]
    max_tokens: u32,
    /// The scheduler's metrics URL (`/metrics`), for breaker states.
    #[arg(long)]
    scheduler_metrics: Option<String>,
}

struct Row {
    scenario: &'static str,
    measured: String,
    target: String,
    pass: bool,
}

/// Outcome plus when it ended.
type Timed = (Outcome, Instant);

/// Sends `call` at `rate` per second for `seconds`; waits at most `grace` after the window for
/// the stragglers, then drops them (their clients disconnect, as real ones would).
async fn open_loop(
    http: &reqwest::Client,
    call: &ChatCall,
    rate: f64,
    seconds: f64,
    grace: Duration,
) -> Vec<Timed> {
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = start;
    while next < end {
        tokio::time::sleep_until(next).await;
        let (http, call) = (http.clone(), call.clone());
        tasks.spawn(async move {
            let outcome = call.send(&http).await;
            (outcome, Instant::now())
        });
        next += interval;
    }
    let mut done = Vec::new();
    let give_up = end + grace;
    while let Ok(Some(joined)) = tokio::time::timeout_at(give_up, tasks.join_next()).await {
        if let Ok(timed) = joined {
            done.push(timed);
        }
    }
    tasks.abort_all();
    done
}

fn ttfts(outcomes: &[Timed]) -> Vec<Duration> {
    outcomes
        .iter()
        .filter(|(o, _)| o.ok())
        .map(|(o, _)| o.ttft)
        .collect()
}

fn count(outcomes: &[Timed], status: u16) -> usize {
    outcomes.iter().filter(|(o, _)| o.status == status).count()
}

async fn sequential(http: &reqwest::Client, call: &ChatCall, n: usize) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for _ in 0..n {
        outcomes.push(call.send(http).await);
    }
    outcomes
}

async fn sim_started(http: &reqwest::Client, direct: &str) -> anyhow::Result<u64> {
    let stats: serde_json::Value = http
        .get(format!("{direct}/sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    stats["started"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("/sim/stats has no `started`"))
}

/// Time from a streaming client's disconnect to the backend starting the queued request that
/// inherits its slot, as the simulator sees it.
async fn disconnect_to_reuse(
    http: &reqwest::Client,
    args: &Args,
    gateway_chat: &str,
) -> anyhow::Result<Duration> {
    let long = ChatCall::new(gateway_chat, &args.model, true, args.max_tokens);
    let mut holders = Vec::new();
    for _ in 0..args.slots {
        let mut request = http.post(&long.url).json(&long.body);
        for (name, value) in &long.headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await?;
        response.chunk().await?;
        holders.push(response);
    }
    let waiter_call = ChatCall::new(gateway_chat, &args.model, false, 1);
    let (waiter_http, waiter_call_clone) = (http.clone(), waiter_call.clone());
    let waiter = tokio::spawn(async move { waiter_call_clone.send(&waiter_http).await });
    let before = sim_started(http, &args.direct).await?;
    // Let the waiter reach the scheduler's queue before the slot frees.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let dropped_at = Instant::now();
    holders.pop();
    let reused = loop {
        if sim_started(http, &args.direct).await? > before {
            break dropped_at.elapsed();
        }
        anyhow::ensure!(
            dropped_at.elapsed() < Duration::from_secs(5),
            "slot never reused"
        );
    };
    drop(holders);
    let _ = waiter.await;
    Ok(reused)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = client();
    let gateway_chat = format!("{}/v1/chat/completions", args.gateway);
    let direct_chat = format!("{}/v1/chat/completions", args.direct);
    let stream_gw = ChatCall::new(&gateway_chat, &args.model, true, args.max_tokens);
    let plain_gw = ChatCall::new(&gateway_chat, &args.model, false, args.max_tokens);
    let plain_direct = ChatCall::new(&direct_chat, &args.model, false, args.max_tokens);
    let mut rows = Vec::new();

    // Baselines, same run: idle TTFT through the gateway, service time and capacity direct.
    let idle: Vec<Duration> = sequential(&http, &stream_gw, 10)
        .await
        .iter()
        .map(|o| o.ttft)
        .collect();
    let idle_ttft = percentile_ms(&idle, 0.5);
    let service: Vec<Duration> = sequential(&http, &plain_direct, 5)
        .await
        .iter()
        .map(|o| o.total)
        .collect();
    let service_ms = percentile_ms(&service, 0.5);
    let capacity = args.slots as f64 / (service_ms / 1000.0);
    println!(
        "baseline: idle TTFT {idle_ttft:.1} ms (gateway), service time {service_ms:.1} ms, capacity {capacity:.2} req/s"
    );

    // 1. Overload: 3x capacity through the gateway; steady-state throughput (after the first
    // two service times, while the pipeline fills) vs capacity, and refusal latency.
    let started = Instant::now();
    let outcomes = open_loop(
        &http,
        &plain_gw,
        3.0 * capacity,
        args.seconds,
        Duration::ZERO,
    )
    .await;
    let warmup = Duration::from_secs_f64(2.0 * service_ms / 1000.0);
    let (from, to) = (
        started + warmup,
        started + Duration::from_secs_f64(args.seconds),
    );
    let completed = outcomes
        .iter()
        .filter(|(o, at)| o.ok() && *at >= from && *at <= to)
        .count();
    let throughput = completed as f64 / (to - from).as_secs_f64();
    let ratio = throughput / capacity;
    rows.push(Row {
        scenario: "3x overload: throughput vs capacity",
        measured: format!(
            "{throughput:.2} req/s = {:.1} % ({} ok, {} × 429)",
            ratio * 100.0,
            completed,
            count(&outcomes, 429)
        ),
        target: "≥ 99 %".into(),
        pass: ratio >= 0.99,
    });
    let refusals: Vec<Duration> = outcomes
        .iter()
        .filter(|(o, _)| o.status == 429)
        .map(|(o, _)| o.total)
        .collect();
    let refusal_p99 = percentile_ms(&refusals, 0.99);
    rows.push(Row {
        scenario: "refusal latency (429) p50 / p99",
        measured: format!(
            "{:.2} / {refusal_p99:.2} ms ({} refusals)",
            percentile_ms(&refusals, 0.5),
            refusals.len()
        ),
        target: "p99 ≤ 1 ms".into(),
        pass: refusal_p99 <= 1.0,
    });

    // 2. Two tenants: `heavy` floods at 5x its fair share, `light` sends 1 req/s.
    let heavy = plain_gw.clone().header("x-tenant-id", "heavy");
    let light = stream_gw.clone().header("x-tenant-id", "light");
    let grace = Duration::from_secs(10);
    let (heavy_out, light_out) = tokio::join!(
        open_loop(
            &http,
            &heavy,
            5.0 * capacity / 2.0,
            args.seconds,
            Duration::ZERO
        ),
        open_loop(&http, &light, 1.0, args.seconds, grace),
    );
    let light_p99 = percentile_ms(&ttfts(&light_out), 0.99);
    rows.push(Row {
        scenario: "light tenant TTFT p50 / p99 while another floods at 5x share",
        measured: format!(
            "{:.0} / {light_p99:.0} ms ({} ok of {}; heavy: {} ok, {} × 429)",
            percentile_ms(&ttfts(&light_out), 0.5),
            count(&light_out, 200),
            light_out.len(),
            count(&heavy_out, 200),
            count(&heavy_out, 429)
        ),
        target: format!("p99 ≤ idle + 1 service = {:.0} ms", idle_ttft + service_ms),
        pass: light_p99 <= idle_ttft + service_ms && count(&light_out, 200) == light_out.len(),
    });

    // 3. Two classes: batch floods at 3x capacity, critical sends 1 req/s.
    let bulk = plain_gw
        .clone()
        .header("x-priority", "batch")
        .header("x-tenant-id", "bulk");
    let urgent = stream_gw
        .clone()
        .header("x-priority", "critical")
        .header("x-tenant-id", "ops");
    let (bulk_out, urgent_out) = tokio::join!(
        open_loop(&http, &bulk, 3.0 * capacity, args.seconds, Duration::ZERO),
        open_loop(&http, &urgent, 1.0, args.seconds, grace),
    );
    let urgent_p99 = percentile_ms(&ttfts(&urgent_out), 0.99);
    rows.push(Row {
        scenario: "critical TTFT p50 / p99 under a batch flood at 3x capacity",
        measured: format!(
            "{:.0} / {urgent_p99:.0} ms ({} ok of {}; batch: {} ok, {} × 429)",
            percentile_ms(&ttfts(&urgent_out), 0.5),
            count(&urgent_out, 200),
            urgent_out.len(),
            count(&bulk_out, 200),
            count(&bulk_out, 429)
        ),
        target: format!("p99 ≤ idle + 1 service = {:.0} ms", idle_ttft + service_ms),
        pass: urgent_p99 <= idle_ttft + service_ms && count(&urgent_out, 200) == urgent_out.len(),
    });

    // 4. Disconnect → the slot serves the next waiter.
    let mut reuse = Vec::new();
    for _ in 0..10 {
        reuse.push(disconnect_to_reuse(&http, &args, &gateway_chat).await?);
    }
    let reuse_p99 = percentile_ms(&reuse, 0.99);
    rows.push(Row {
        scenario: "client disconnect → slot reused by the next waiter, p50 / max",
        measured: format!(
            "{:.2} / {reuse_p99:.2} ms (10 runs)",
            percentile_ms(&reuse, 0.5)
        ),
        target: "≤ 5 ms".into(),
        pass: reuse_p99 <= 5.0,
    });

    // 5-8. Work, not requests.
    let work_rows = work_scenarios(
        &http,
        &args,
        &gateway_chat,
        service_ms,
        &light_out,
        &urgent_out,
    )
    .await;
    rows.extend(work_rows);

    println!("\n| scenario | measured | target | verdict |\n|---|---|---|---|");
    for row in &rows {
        let verdict = if row.pass { "met" } else { "missed" };
        println!(
            "| {} | {} | {} | {verdict} |",
            row.scenario, row.measured, row.target
        );
    }
    Ok(())
}

/// Endpoints whose breaker is open now, from the scheduler's metrics.
async fn breakers_open(http: &reqwest::Client, metrics: Option<&str>) -> Option<usize> {
    let text = http.get(metrics?).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|line| line.starts_with("llmgw_breaker_state{") && line.ends_with(" 2"))
            .count(),
    )
}

/// Four long documents from one tenant while another chats: the row, with the documents'
/// outcomes and the breakers open afterwards.
async fn beside_long_prompts(
    http: &reqwest::Client,
    args: &Args,
    gateway_chat: &str,
    scenario: &'static str,
) -> Row {
    let beside =
        work::long_prompts_beside_a_chat(http, gateway_chat, &args.model, 4, 2000, 4.0).await;
    let open = breakers_open(http, args.scheduler_metrics.as_deref()).await;
    let served = beside.chat_served as f64 / beside.chat_sent.max(1) as f64;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for (status, code) in &beside.documents {
        *codes
            .entry(format!("{status} {code}").trim().to_owned())
            .or_default() += 1;
    }
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{n}× {c}")).collect();
    Row {
        scenario,
        measured: format!(
            "chat {} of {} = {:.1} % served; documents: {}; breakers open: {}",
            beside.chat_served,
            beside.chat_sent,
            served * 100.0,
            codes.join(", "),
            open.map_or("unknown".to_owned(), |n| n.to_string())
        ),
        target: "≥ 95 % served, 0 breakers open".into(),
        pass: served >= 0.95 && open == Some(0),
    }
}

/// Token shares, long prompts beside a chat, objectives refused at once, and the error of the
/// first-token predictions the streamed requests of scenarios 2 and 3 carried.
async fn work_scenarios(
    http: &reqwest::Client,
    args: &Args,
    gateway_chat: &str,
    service_ms: f64,
    light_out: &[Timed],
    urgent_out: &[Timed],
) -> Vec<Row> {
    let mut rows = Vec::new();
    // Long prompts before any was served (no prefill rate learned), then after.
    rows.push(
        beside_long_prompts(
            http,
            args,
            gateway_chat,
            "4 × 2,000-word prompts (2 s of prefill, 1 s first-token budget, no prefill rate learned yet) beside a chatting tenant",
        )
        .await,
    );
    let shares = work::token_shares(
        http,
        gateway_chat,
        &args.model,
        &[("long", 400), ("short", 8)],
        2 * args.slots,
        // A long request is worth 34 short ones: a share needs many of them to show.
        (5.0, 1.5 * args.seconds),
    )
    .await;
    let ratio = shares[0] as f64 / shares[1].max(1) as f64;
    rows.push(Row {
        scenario: "token shares of two backlogged tenants, 400- vs 8-word prompts (long : short)",
        measured: format!(
            "{ratio:.2} ({} : {} tokens in {:.0} s)",
            shares[0],
            shares[1],
            1.5 * args.seconds
        ),
        target: "within 1.5× (request-count fairness gave 31×)".into(),
        pass: (1.0 / 1.5..=1.5).contains(&ratio),
    });
    rows.push(
        beside_long_prompts(
            http,
            args,
            gateway_chat,
            "the same, once the 400-word prompts taught the prefill rate",
        )
        .await,
    );

    let objectives = work::objectives(
        http,
        gateway_chat,
        &args.model,
        3 * args.slots,
        args.max_tokens,
        20,
        100,
    )
    .await;
    let refused_p99 = percentile_ms(&objectives.refused, 0.99);
    rows.push(Row {
        scenario: "first-token objective of 100 ms behind a full queue: refusal latency p50 / p99",
        measured: format!(
            "{:.2} / {refused_p99:.2} ms ({} refused, {} admitted; an ordinary request waited {:.0} ms)",
            percentile_ms(&objectives.refused, 0.5),
            objectives.refused.len(),
            objectives.admitted,
            percentile_ms(&objectives.ordinary_wait, 0.5)
        ),
        target: "p99 ≤ 5 ms, none admitted".into(),
        pass: refused_p99 <= 5.0 && objectives.admitted == 0,
    });

    let pairs: Vec<(Duration, Duration)> = light_out
        .iter()
        .chain(urgent_out)
        .filter(|(o, _)| o.ok())
        .filter_map(|(o, _)| Some((o.predicted_ttft?, o.ttft)))
        .collect();
    let (p50, p90, relative) = work::prediction_error(&pairs);
    rows.push(Row {
        scenario: "first-token prediction error |actual − predicted|, p50 / p90 (streams of scenarios 2 and 3)",
        measured: format!(
            "{p50:.0} / {p90:.0} ms; p50 relative {:.0} % ({} requests)",
            relative * 100.0,
            pairs.len()
        ),
        target: format!("p50 ≤ 1 service time = {service_ms:.0} ms"),
        pass: p50 <= service_ms,
    });
    rows
}
