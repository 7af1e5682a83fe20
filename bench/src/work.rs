//! The work-aware admission scenarios (tokens, not requests): token shares of backlogged
//! tenants with 50× different prompts, long prompts beside a chatting tenant, first-token
//! objectives refused at once, and how far the first-token prediction was from the truth.
//! Each returns what it measured; `admission-scenarios` turns them into rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::percentile_ms;

/// A chat request body with a prompt of `words` words.
pub fn body(model: &str, words: usize, max_tokens: u32, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "lorem ".repeat(words).trim_end()}],
    })
}

/// Tokens served (prompt + completion, as reported) to each tenant, every tenant running
/// `clients` closed-loop clients with its prompt length: counted for `seconds` after `warmup`
/// (the start, when whoever arrives first takes the free slots, is not a share).
pub async fn token_shares(
    http: &reqwest::Client,
    chat_url: &str,
    model: &str,
    tenants: &[(&str, usize)],
    clients: usize,
    (warmup, seconds): (f64, f64),
) -> Vec<u64> {
    let served: Vec<Arc<AtomicU64>> = tenants.iter().map(|_| Arc::default()).collect();
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (at, (tenant, words)) in tenants.iter().enumerate() {
        for _ in 0..clients {
            let (http, url, stop) = (http.clone(), chat_url.to_owned(), Arc::clone(&stop));
            let (served, tenant) = (Arc::clone(&served[at]), (*tenant).to_owned());
            let counting = Arc::clone(&counting);
            let body = body(model, *words, 4, false);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(response) = http
                        .post(&url)
                        .header("x-tenant-id", &tenant)
                        .json(&body)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let Ok(answer) = response.json::<serde_json::Value>().await else {
                        continue;
                    };
                    if counting.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        let tokens = answer["usage"]["total_tokens"].as_u64().unwrap_or(0);
                        served.fetch_add(tokens, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    counting.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    served.iter().map(|s| s.load(Ordering::Relaxed)).collect()
}

/// What happened to a chatting tenant while another sent long prompts.
#[derive(Debug, Clone)]
pub struct BesideLongPrompts {
    pub chat_sent: usize,
    pub chat_served: usize,
    /// Status and error code of each long prompt.
    pub documents: Vec<(u16, String)>,
}

/// `documents` prompts of `words` words at once from tenant `documents`, while tenant `chat`
/// sends short requests one after another for `seconds`.
pub async fn long_prompts_beside_a_chat(
    http: &reqwest::Client,
    chat_url: &str,
    model: &str,
    documents: usize,
    words: usize,
    seconds: f64,
) -> BesideLongPrompts {
    let mut long = Vec::new();
    for _ in 0..documents {
        let (http, url) = (http.clone(), chat_url.to_owned());
        let body = body(model, words, 4, false);
        long.push(tokio::spawn(async move {
            let Ok(response) = http
                .post(url)
                .header("x-tenant-id", "documents")
                .json(&body)
                .send()
                .await
            else {
                return (0, "transport".to_owned());
            };
            let status = response.status().as_u16();
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            let code = answer["error"]["code"].as_str().unwrap_or("").to_owned();
            (status, code)
        }));
    }
    let short = body(model, 3, 2, false);
    let (mut chat_sent, mut chat_served) = (0, 0);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        chat_sent += 1;
        let sent = http
            .post(chat_url)
            .header("x-tenant-id", "chat")
            .json(&short)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status() == 200) {
            chat_served += 1;
        }
    }
    let mut outcomes = Vec::new();
    for document in long {
        outcomes.push(document.await.unwrap_or((0, "panicked".to_owned())));
    }
    BesideLongPrompts {
        chat_sent,
        chat_served,
        documents: outcomes,
    }
}

/// How requests with an objective fared while `backlog` closed-loop clients kept the pool
/// busy: the refusal latency of the ones that could not be met, and the queue wait an
/// ordinary request of the same moment saw.
#[derive(Debug, Clone)]
pub struct Objectives {
    pub refused: Vec<Duration>,
    pub admitted: usize,
    pub ordinary_wait: Vec<Duration>,
}

/// Keeps the pool busy with `backlog` clients of `busy_tokens`-token answers, then sends
/// `probes` requests with `x-slo-ttft-ms: slo_ms` and as many without.
pub async fn objectives(
    http: &reqwest::Client,
    chat_url: &str,
    model: &str,
    backlog: usize,
    busy_tokens: u32,
    probes: usize,
    slo_ms: u64,
) -> Objectives {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..backlog {
        let (http, url, stop) = (http.clone(), chat_url.to_owned(), Arc::clone(&stop));
        let body = body(model, 8, busy_tokens, false);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = http
                    .post(&url)
                    .header("x-tenant-id", "busy")
                    .json(&body)
                    .send()
                    .await;
            }
        }));
    }
    // Let the queue fill and the pool learn its pace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probe = body(model, 3, 2, false);
    let mut result = Objectives {
        refused: Vec::new(),
        admitted: 0,
        ordinary_wait: Vec::new(),
    };
    for _ in 0..probes {
        let start = Instant::now();
        let sent = http
            .post(chat_url)
            .header("x-tenant-id", "busy")
            .header("x-slo-ttft-ms", slo_ms.to_string())
            .json(&probe)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 429 => result.refused.push(start.elapsed()),
            Ok(_) => result.admitted += 1,
            Err(_) => {}
        }
    }
    for _ in 0..probes.min(3) {
        let start = Instant::now();
        let _ = http
            .post(chat_url)
            .header("x-tenant-id", "busy")
            .json(&probe)
            .send()
            .await;
        result.ordinary_wait.push(start.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    result
}

/// The error of first-token predictions, from (predicted, actual) pairs: p50 and p90 of
/// |actual − predicted|, in ms, and p50 of that relative to the actual.
pub fn prediction_error(pairs: &[(Duration, Duration)]) -> (f64, f64, f64) {
    let errors: Vec<Duration> = pairs
        .iter()
        .map(|(predicted, actual)| predicted.abs_diff(*actual))
        .collect();
    let mut relative: Vec<f64> = pairs
        .iter()
        .filter(|(_, actual)| !actual.is_zero())
        .map(|(predicted, actual)| predicted.abs_diff(*actual).as_secs_f64() / actual.as_secs_f64())
        .collect();
    relative.sort_by(f64::total_cmp);
    let median = relative
        .get(relative.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    (
        percentile_ms(&errors, 0.5),
        percentile_ms(&errors, 0.9),
        median,
    )
}
