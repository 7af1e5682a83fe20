//! `llmgw-overhead`: the measurements behind `scripts/bench/overhead.sh`. Each subcommand runs
//! one experiment against already-running processes and prints one JSON object per target on
//! stdout; the script turns them into the table with targets and verdicts.
//!
//! CPU is read from `/proc/<pid>/task/*/schedstat` (nanoseconds on CPU, every thread), memory
//! from `VmRSS`, so the numbers are the processes' own, not the load generator's.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Parser, Subcommand};
use llmgw_bench::proc_stats::{cpu_ns, rss_kib};
use llmgw_bench::request::{ChatCall, client};
use llmgw_bench::stats::percentile_ms;
use serde_json::json;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Gateway overhead experiments; one JSON line per target")]
struct Args {
    #[command(subcommand)]
    experiment: Experiment,
}

#[derive(Debug, Subcommand)]
enum Experiment {
    /// One client, one request per target in turn (direct, skeleton, pair, …): latency or TTFT
    /// percentiles, chunk gaps, and CPU per request of each target's processes.
    Interleaved {
        #[command(flatten)]
        targets: Targets,
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long)]
        stream: bool,
        #[arg(long, default_value_t = 16)]
        max_tokens: u32,
    },
    /// Closed loop with many workers on each target in turn: requests/s and CPU per request.
    Load {
        #[command(flatten)]
        targets: Targets,
        #[arg(long, default_value_t = 32)]
        workers: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long)]
        stream: bool,
        #[arg(long, default_value_t = 16)]
        max_tokens: u32,
    },
    /// Opens `streams` long streams on each target in turn, waits until every one has its first
    /// token, and reports the resident memory each process gained per open stream.
    Hold {
        #[command(flatten)]
        targets: Targets,
        #[arg(long, default_value_t = 1024)]
        streams: usize,
        /// Long enough that no stream ends before all are open.
        #[arg(long, default_value_t = 2000)]
        max_tokens: u32,
        #[arg(long, default_value_t = 60.0)]
        open_deadline_seconds: f64,
        /// Streams being opened at the same time: a few (as in service) measures what an open
        /// stream holds; all of them measures a burst's high-water mark as well.
        #[arg(long, default_value_t = 32)]
        opening_at_once: usize,
    },
}

#[derive(Debug, clap::Args)]
struct Targets {
    /// `label=url` of a chat completions endpoint; the first is the baseline.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// `label=pid,pid`: the processes whose CPU and memory belong to that target.
    #[arg(long = "pids")]
    pids: Vec<String>,
    #[arg(long, default_value = "llama3.2")]
    model: String,
    /// Copied into every JSON line, to tell runs of the same experiment apart.
    #[arg(long, default_value = "")]
    tag: String,
}

struct Target {
    label: String,
    url: String,
    pids: Vec<u32>,
}

impl Targets {
    fn resolve(&self) -> anyhow::Result<Vec<Target>> {
        let mut pids: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for entry in &self.pids {
            let (label, list) = entry
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--pids must be label=pid,pid"))?;
            let parsed = list
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()?;
            pids.insert(label, parsed);
        }
        self.targets
            .iter()
            .map(|entry| {
                let (label, url) = entry
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--target must be label=url"))?;
                Ok(Target {
                    label: label.to_owned(),
                    url: url.to_owned(),
                    pids: pids.get(label).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }
}

fn processes_cpu_ns(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| cpu_ns(pid)).sum()
}

fn micros(ms: f64) -> f64 {
    (ms * 1000.0 * 10.0).round() / 10.0
}

async fn interleaved(
    tag: &str,
    targets: &[Target],
    model: &str,
    requests: usize,
    stream: bool,
    max_tokens: u32,
) {
    let http = client();
    let calls: Vec<ChatCall> = targets
        .iter()
        .map(|t| ChatCall::new(&t.url, model, stream, max_tokens))
        .collect();
    // Warm every connection pool and code path before anything is recorded.
    for _ in 0..requests.clamp(1, 50) {
        for call in &calls {
            call.send(&http).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    let mut gaps: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    let mut chunks = vec![0usize; targets.len()];
    let mut errors = vec![0usize; targets.len()];
    let mut cpu = vec![0u64; targets.len()];
    for _ in 0..requests {
        for (index, (target, call)) in targets.iter().zip(&calls).enumerate() {
            let before = processes_cpu_ns(&target.pids);
            let outcome = call.send(&http).await;
            cpu[index] += processes_cpu_ns(&target.pids).saturating_sub(before);
            if !outcome.ok() {
                errors[index] += 1;
                continue;
            }
            samples[index].push(outcome.ttft);
            chunks[index] += outcome.gaps.len() + usize::from(stream);
            gaps[index].extend(outcome.gaps);
        }
    }
    let baseline: Vec<f64> = [0.5, 0.9, 0.99]
        .iter()
        .map(|&p| percentile_ms(&samples[0], p))
        .collect();
    for (index, target) in targets.iter().enumerate() {
        let quantiles: Vec<f64> = [0.5, 0.9, 0.99, 0.999]
            .iter()
            .map(|&p| percentile_ms(&samples[index], p))
            .collect();
        let count = samples[index].len().max(1) as f64;
        let mean_gap_ms = if gaps[index].is_empty() {
            f64::NAN
        } else {
            gaps[index].iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
                / gaps[index].len() as f64
        };
        let line = json!({
            "tag": tag,
            "experiment": if stream { "interleaved_stream" } else { "interleaved" },
            "target": target.label,
            "requests": samples[index].len(),
            "errors": errors[index],
            "p50_ms": quantiles[0], "p90_ms": quantiles[1], "p99_ms": quantiles[2], "p999_ms": quantiles[3],
            "added_p50_us": micros(quantiles[0] - baseline[0]),
            "added_p90_us": micros(quantiles[1] - baseline[1]),
            "added_p99_us": micros(quantiles[2] - baseline[2]),
            "chunks": chunks[index],
            "mean_gap_ms": if mean_gap_ms.is_nan() { serde_json::Value::Null } else { json!(mean_gap_ms) },
            "cpu_us_per_request": if target.pids.is_empty() { serde_json::Value::Null }
                else { json!((cpu[index] as f64 / count / 1000.0).round()) },
        });
        println!("{line}");
    }
}

async fn load(
    tag: &str,
    targets: &[Target],
    model: &str,
    workers: usize,
    seconds: f64,
    stream: bool,
    max_tokens: u32,
) {
    let http = client();
    let mut base_rps = None;
    for target in targets {
        let call = ChatCall::new(&target.url, model, stream, max_tokens);
        closed_loop(&http, &call, workers, 1.0).await;
        let before = processes_cpu_ns(&target.pids);
        let result = closed_loop(&http, &call, workers, seconds).await;
        let cpu = processes_cpu_ns(&target.pids).saturating_sub(before);
        let done = result.ttfts.len();
        let rps = done as f64 / result.elapsed.as_secs_f64();
        let base = *base_rps.get_or_insert(rps);
        let line = json!({
            "tag": tag,
            "experiment": if stream { "load_stream" } else { "load" },
            "target": target.label,
            "workers": workers,
            "requests": done,
            "errors": result.failed,
            "ttft_p50_ms": percentile_ms(&result.ttfts, 0.5),
            "ttft_p99_ms": percentile_ms(&result.ttfts, 0.99),
            "rps": rps,
            "rps_ratio": rps / base,
            "cpu_us_per_request": if target.pids.is_empty() || done == 0 { serde_json::Value::Null }
                else { json!((cpu as f64 / done as f64 / 1000.0).round()) },
        });
        println!("{line}");
    }
}

/// What a closed-loop window produced.
struct LoopResult {
    ttfts: Vec<Duration>,
    failed: usize,
    elapsed: Duration,
}

/// `workers` clients each sending back to back for `seconds`.
async fn closed_loop(
    http: &reqwest::Client,
    call: &ChatCall,
    workers: usize,
    seconds: f64,
) -> LoopResult {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let tasks = (0..workers).map(|_| {
        let (http, call) = (http.clone(), call.clone());
        tokio::spawn(async move {
            let (mut ttfts, mut failed) = (Vec::new(), 0);
            while Instant::now() < until {
                let outcome = call.send(&http).await;
                if outcome.ok() {
                    ttfts.push(outcome.ttft);
                } else {
                    failed += 1;
                }
            }
            (ttfts, failed)
        })
    });
    let mut result = LoopResult {
        ttfts: Vec::new(),
        failed: 0,
        elapsed: Duration::ZERO,
    };
    for task in futures::future::join_all(tasks).await {
        let (ttfts, failed) = task.unwrap_or((Vec::new(), 1));
        result.ttfts.extend(ttfts);
        result.failed += failed;
    }
    result.elapsed = start.elapsed();
    result
}

async fn hold(
    tag: &str,
    targets: &[Target],
    model: &str,
    streams: usize,
    max_tokens: u32,
    deadline: f64,
    opening_at_once: usize,
) {
    for target in targets {
        let http = client();
        let call = ChatCall::new(&target.url, model, true, max_tokens);
        // Settle allocator and pools with a short burst first, so the baseline is a warm process.
        closed_loop(&http, &ChatCall::new(&target.url, model, true, 4), 32, 1.0).await;
        let before: Vec<u64> = target.pids.iter().map(|&pid| rss_kib(pid)).collect();
        let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(streams);
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut held = Vec::with_capacity(streams);
        let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(opening_at_once.max(1)));
        for _ in 0..streams {
            let (http, call, opened_tx, release, opening) = (
                http.clone(),
                call.clone(),
                opened_tx.clone(),
                release.clone(),
                opening.clone(),
            );
            held.push(tokio::spawn(async move {
                let turn = opening.acquire_owned().await;
                let opened = call.open_stream(&http).await;
                drop(turn);
                let _ = opened_tx.send(opened.is_some()).await;
                let Some(mut response) = opened else { return };
                // Keep reading, as a client does (an unread stream would fill every buffer
                // on the way and measure flow-control windows instead), until measured.
                let drain = async { while let Ok(Some(_)) = response.chunk().await {} };
                tokio::select! {
                    () = drain => {}
                    () = release.notified() => {}
                }
            }));
        }
        let until = Instant::now() + Duration::from_secs_f64(deadline);
        let (mut open, mut failed) = (0usize, 0usize);
        while open + failed < streams {
            match tokio::time::timeout_at(until, opened_rx.recv()).await {
                Ok(Some(true)) => open += 1,
                Ok(Some(false)) => failed += 1,
                _ => break,
            }
        }
        let after: Vec<u64> = target.pids.iter().map(|&pid| rss_kib(pid)).collect();
        let per_stream: Vec<f64> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.saturating_sub(*b) as f64 / open.max(1) as f64)
            .collect();
        release.notify_waiters();
        for task in held {
            task.abort();
        }
        let line = json!({
            "tag": tag,
            "experiment": "hold",
            "opening_at_once": opening_at_once,
            "target": target.label,
            "streams_open": open,
            "streams_failed": failed,
            "pids": target.pids,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_stream": per_stream,
        });
        println!("{line}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().experiment {
        Experiment::Interleaved {
            targets,
            requests,
            stream,
            max_tokens,
        } => {
            let resolved = targets.resolve()?;
            interleaved(
                &targets.tag,
                &resolved,
                &targets.model,
                requests,
                stream,
                max_tokens,
            )
            .await;
        }
        Experiment::Load {
            targets,
            workers,
            seconds,
            stream,
            max_tokens,
        } => {
            let resolved = targets.resolve()?;
            load(
                &targets.tag,
                &resolved,
                &targets.model,
                workers,
                seconds,
                stream,
                max_tokens,
            )
            .await;
        }
        Experiment::Hold {
            targets,
            streams,
            max_tokens,
            open_deadline_seconds,
            opening_at_once,
        } => {
            let resolved = targets.resolve()?;
            hold(
                &targets.tag,
                &resolved,
                &targets.model,
                streams,
                max_tokens,
                open_deadline_seconds,
                opening_at_once,
            )
            .await;
        }
    }
    Ok(())
}
