//! `engine-scenarios`: the engine's capacity and cache, measured through gateways that differ
//! in one setting (`scripts/bench/engine_bench.sh` starts them):
//! - `multi-turn`: conversations over two engines with a prompt cache; first-token time of
//!   the later turns, and the share of their prompt the engines found cached — with prefix
//!   affinity against without;
//! - `backlog`: a deep `batch` backlog on an engine that runs 2 at once; the first-token time
//!   of `critical` requests — slots overstated 4× against honest.
//!
//! Prints one markdown row per gateway, then the ratios.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use llmgw_bench::request::ChatCall;
use llmgw_bench::stats::percentile_ms;
use serde_json::{Value, json};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    about = "Engine capacity and cache scenarios: multi-turn affinity, critical under a backlog"
)]
struct Args {
    /// `multi-turn` or `backlog`.
    scenario: String,
    /// `label=base URL` of each gateway, compared in order (the first is the baseline).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    #[arg(long, default_value_t = 16)]
    conversations: usize,
    #[arg(long, default_value_t = 6)]
    turns: usize,
    /// Words of each conversation's own system prompt.
    #[arg(long, default_value_t = 300)]
    system_words: usize,
    /// `backlog`: closed-loop batch clients.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// `backlog`: critical requests, one a second.
    #[arg(long, default_value_t = 10)]
    critical: usize,
}

/// One streamed chat; (time to first token, cached prompt tokens, prompt tokens, answer).
async fn turn(
    http: &reqwest::Client,
    url: &str,
    messages: &[Value],
) -> Option<(Duration, u64, u64, String)> {
    let body = json!({
        "model": "llama3.2", "stream": true, "messages": messages,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let mut response = http.post(url).json(&body).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    let (mut ttft, mut text, mut seen) = (None, String::new(), String::new());
    while let Some(chunk) = response.chunk().await.ok()? {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if ttft.is_none() && seen.contains("\"content\":\"") && !seen.ends_with("\"content\":\"\"")
        {
            ttft = Some(start.elapsed());
        }
    }
    let (mut cached, mut prompt) = (0, 0);
    for data in seen.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
            cached = usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0);
        }
    }
    Some((ttft.unwrap_or(start.elapsed()), cached, prompt, text))
}

/// The later turns' first-token times, and cached / all prompt tokens.
async fn multi_turn(http: &reqwest::Client, base: &str, args: &Args) -> (Vec<Duration>, u64, u64) {
    let url = format!("{base}/v1/chat/completions");
    let results = Arc::new(Mutex::new((Vec::new(), 0u64, 0u64)));
    let mut tasks = Vec::new();
    for conversation in 0..args.conversations {
        let (http, url, results) = (http.clone(), url.clone(), Arc::clone(&results));
        let system = format!(
            "conversation {conversation}: {}",
            "context ".repeat(args.system_words)
        );
        let turns = args.turns;
        tasks.push(tokio::spawn(async move {
            let mut messages = vec![json!({"role": "system", "content": system})];
            for number in 0..turns {
                // People type: a pause between turns, different for everyone.
                tokio::time::sleep(Duration::from_millis(fastrand_ms(conversation, number))).await;
                messages.push(json!({"role": "user", "content": format!("question {number}")}));
                let Some((ttft, cached, prompt, answer)) = turn(&http, &url, &messages).await
                else {
                    return;
                };
                if number > 0 {
                    let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
                    results.0.push(ttft);
                    results.1 += cached;
                    results.2 += prompt;
                }
                messages.push(json!({"role": "assistant", "content": answer}));
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let results = results.lock().unwrap_or_else(|p| p.into_inner());
    (results.0.clone(), results.1, results.2)
}

/// A pause of 0.5–1.5 s (someone reading the answer and typing) that differs by
/// conversation and turn, the same in every run.
fn fastrand_ms(conversation: usize, turn: usize) -> u64 {
    let mixed = (conversation as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (turn as u64 + 7);
    500 + mixed.wrapping_mul(0xBF58_476D_1CE4_E5B9) % 1000
}

/// The first-token times of critical requests, one a second, under a batch backlog.
async fn backlog(http: &reqwest::Client, base: &str, args: &Args) -> Vec<Duration> {
    let url = format!("{base}/v1/chat/completions");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bulk = ChatCall::new(&url, "llama3.2", false, 30).header("x-priority", "batch");
    let mut clients = Vec::new();
    for _ in 0..args.batch {
        let (http, bulk, stop) = (http.clone(), bulk.clone(), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                bulk.send(&http).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let urgent = ChatCall::new(&url, "llama3.2", true, 4).header("x-priority", "critical");
    let mut ttfts = Vec::new();
    for _ in 0..args.critical {
        let outcome = urgent.send(http).await;
        if outcome.ok() {
            ttfts.push(outcome.ttft);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.abort();
    }
    ttfts
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = llmgw_bench::request::client();
    let mut medians = Vec::new();
    match args.scenario.as_str() {
        "multi-turn" => {
            println!(
                "| target | turns | first token p50 / p99 ms | prompt tokens cached |\n|---|---:|---:|---:|"
            );
            for target in &args.targets {
                let (label, base) = target.split_once('=').unwrap_or((target, target));
                let (ttfts, cached, prompt) = multi_turn(&http, base, &args).await;
                let p50 = percentile_ms(&ttfts, 0.5);
                println!(
                    "| {label} | {} | {p50:.1} / {:.1} | {:.1} % ({cached} of {prompt}) |",
                    ttfts.len(),
                    percentile_ms(&ttfts, 0.99),
                    100.0 * cached as f64 / prompt.max(1) as f64
                );
                medians.push((label.to_owned(), p50, percentile_ms(&ttfts, 0.99)));
            }
        }
        "backlog" => {
            println!(
                "| target | critical requests | critical first token p50 / p99 ms |\n|---|---:|---:|"
            );
            for target in &args.targets {
                let (label, base) = target.split_once('=').unwrap_or((target, target));
                let ttfts = backlog(&http, base, &args).await;
                let p50 = percentile_ms(&ttfts, 0.5);
                println!(
                    "| {label} | {} | {p50:.1} / {:.1} |",
                    ttfts.len(),
                    percentile_ms(&ttfts, 0.99)
                );
                medians.push((label.to_owned(), p50, percentile_ms(&ttfts, 0.99)));
            }
        }
        other => anyhow::bail!("unknown scenario `{other}`: multi-turn or backlog"),
    }
    if let Some((base_label, base_p50, base_p99)) = medians.first().cloned() {
        for (label, p50, p99) in medians.iter().skip(1) {
            println!(
                "\n{label} ÷ {base_label}: first token p50 {:.2}×, p99 {:.2}×",
                p50 / base_p50,
                p99 / base_p99
            );
        }
    }
    Ok(())
}
