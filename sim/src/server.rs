//! The simulator's HTTP server: routes and [`serve`] / [`spawn`] for tests.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Fault, SimConfig};
use crate::slots::{Slots, StatsSnapshot};
use crate::state::Sim;
use crate::{completions, embeddings, ollama_api, openai_api};

/// The router for `config`, with the state it closes over.
pub fn router(config: SimConfig) -> (Router, Sim) {
    let slots = Slots::new(config.slots, config.overflow, config.max_queue);
    let load_report = config.load_report;
    let sim = Sim::new(config, slots);
    let router = Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/chat", post(ollama_api::chat))
        .route("/api/generate", post(completions::ollama))
        .route("/api/embed", post(embeddings::ollama))
        .route("/api/tags", get(ollama_api::tags))
        .route("/api/ps", get(ollama_api::ps))
        .route("/api/version", get(ollama_api::version))
        .route("/v1/chat/completions", post(openai_api::chat))
        .route("/v1/completions", post(completions::openai))
        .route("/v1/embeddings", post(embeddings::openai))
        .route("/v1/models", get(openai_api::models))
        .route("/sim/stats", get(stats))
        .route("/sim/fault", put(set_fault))
        .merge(if load_report {
            Router::new()
                .route("/props", get(props))
                .route("/metrics", get(metrics))
        } else {
            Router::new()
        })
        // Real engines take long prompts (Ollama has no small body limit); so does the sim.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(sim.clone());
    (router, sim)
}

/// `PUT /sim/fault` with a fault in the `SIM_FAULT` grammar: applies to requests from now on.
async fn set_fault(State(sim): State<Sim>, body: String) -> (StatusCode, String) {
    match body.trim().parse::<Fault>() {
        Ok(fault) => {
            sim.set_fault(fault);
            (StatusCode::OK, format!("{fault:?}"))
        }
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()),
    }
}

/// `GET /props`, as llama.cpp's server answers it: how many sequences it runs at once.
async fn props(State(sim): State<Sim>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "total_slots": sim.config.slots,
        "model_path": sim.config.models.first().cloned().unwrap_or_default(),
    }))
}

/// `GET /metrics`, as llama.cpp's server (`--metrics`) names its load: requests running and
/// waiting for a slot, prompt tokens seen and found in the prompt cache.
async fn metrics(State(sim): State<Sim>) -> String {
    use std::sync::atomic::Ordering;
    let stats = sim.slots.stats().snapshot();
    let line = |name: &str, kind: &str, help: &str, value: u64| {
        format!(
            "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}\n"
        )
    };
    [
        line(
            "requests_processing",
            "gauge",
            "Number of requests processing.",
            stats.active,
        ),
        line(
            "requests_deferred",
            "gauge",
            "Number of requests deferred.",
            stats.queued,
        ),
        line(
            "prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed.",
            sim.prompt_tokens.load(Ordering::Relaxed),
        ),
        line(
            "prompt_tokens_cached_total",
            "counter",
            "Number of prompt tokens found in the prompt cache.",
            sim.cached_tokens.load(Ordering::Relaxed),
        ),
    ]
    .concat()
}

async fn stats(State(sim): State<Sim>) -> Json<StatsSnapshot> {
    Json(sim.slots.stats().snapshot())
}

/// Serves the simulator on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (router, _sim) = router(config);
    // Nagle plus delayed ACKs would add ~40 ms to every small token write.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// A simulator running in this process (tests, benchmarks).
#[derive(Debug)]
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    sim: Sim,
    shutdown: CancellationToken,
}

impl SimHandle {
    /// `http://addr`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Current counters, read in-process (no HTTP round trip).
    pub fn stats(&self) -> StatsSnapshot {
        self.sim.slots.stats().snapshot()
    }

    /// Changes the fault for requests arriving from now on.
    pub fn set_fault(&self, fault: Fault) {
        self.sim.set_fault(fault);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a simulator on `127.0.0.1:0`; it stops when the handle is dropped.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (router, sim) = router(config);
    let shutdown = CancellationToken::new();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serving =
        axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Detached on purpose: the handle's drop cancels it, and a test process owns nothing else.
    tokio::spawn(async move {
        if let Err(err) = serving.await {
            tracing::warn!(error = %err, "llm-sim stopped with an error");
        }
    });
    Ok(SimHandle {
        addr,
        sim,
        shutdown,
    })
}
