//! `llmgw-bench`: a closed-loop load generator. For each worker count it runs every target in
//! turn (interleaved, so machine noise hits all alike) and prints one table row per target with
//! RPS, latency percentiles and, for streams, time to first token, plus ratios against the
//! first target (the baseline measured in the same run).

use std::time::Duration;

use clap::Parser;
use llmgw_bench::request::{ChatCall, client};
use llmgw_bench::stats::percentile_ms;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Closed-loop load generator for OpenAI-compatible chat endpoints")]
struct Args {
    /// `label=url` of a chat completions endpoint; the first one is the baseline.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    #[arg(long, default_value = "llama3.2")]
    model: String,
    /// Comma-separated worker counts to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32")]
    workers: Vec<usize>,
    /// Seconds per measurement window.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of warm-up before each window (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stream responses and record time to first token.
    #[arg(long)]
    stream: bool,
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
    /// Sent to every target as `Authorization: Bearer <key>` (targets without keys ignore it).
    #[arg(long)]
    api_key: Option<String>,
}

#[derive(Debug, Default)]
struct Window {
    latencies: Vec<Duration>,
    ttfts: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Window {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run_window(
    http: &reqwest::Client,
    url: &str,
    args: &Args,
    workers: usize,
    seconds: f64,
    record: bool,
) -> Window {
    let mut call = ChatCall::new(url, &args.model, args.stream, args.max_tokens);
    if let Some(key) = &args.api_key {
        call = call.header("authorization", &format!("Bearer {key}"));
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks = (0..workers).map(|_| {
        let (http, call) = (http.clone(), call.clone());
        async move {
            let mut window = Window::default();
            while Instant::now() < until {
                let outcome = call.send(&http).await;
                if outcome.ok() {
                    window.latencies.push(outcome.total);
                    window.ttfts.push(outcome.ttft);
                } else {
                    window.errors += 1;
                    // A well-behaved client honours Retry-After instead of hammering refusals.
                    if let Some(wait) = outcome.retry_after {
                        tokio::time::sleep_until(until.min(Instant::now() + wait)).await;
                    }
                }
            }
            window
        }
    });
    let mut merged = Window::default();
    for window in futures::future::join_all(tasks).await {
        merged.latencies.extend(window.latencies);
        merged.ttfts.extend(window.ttfts);
        merged.errors += window.errors;
    }
    merged.elapsed = start.elapsed();
    if !record {
        merged.latencies.clear();
    }
    merged
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let targets: Vec<(String, String)> = args
        .targets
        .iter()
        .map(|t| t.split_once('=').map(|(l, u)| (l.to_owned(), u.to_owned())))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("--target must be label=url"))?;
    let http = client();
    let metric = if args.stream { "ttft" } else { "latency" };
    println!(
        "| workers | target | requests | errors | rps | rps ratio | {metric} p50 ms | {metric} p90 ms | {metric} p99 ms | p99 ratio |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &workers in &args.workers {
        let mut baseline: Option<(f64, f64)> = None;
        for (label, url) in &targets {
            run_window(&http, url, &args, workers, args.warmup, false).await;
            let window = run_window(&http, url, &args, workers, args.seconds, true).await;
            let samples = if args.stream {
                &window.ttfts
            } else {
                &window.latencies
            };
            let (p50, p90, p99) = (
                percentile_ms(samples, 0.5),
                percentile_ms(samples, 0.9),
                percentile_ms(samples, 0.99),
            );
            let rps = window.rps();
            let (base_rps, base_p99) = *baseline.get_or_insert((rps, p99));
            println!(
                "| {workers} | {label} | {} | {} | {rps:.1} | {:.3} | {p50:.2} | {p90:.2} | {p99:.2} | {:.3} |",
                window.latencies.len(),
                window.errors,
                rps / base_rps,
                p99 / base_p99,
            );
        }
    }
    Ok(())
}
