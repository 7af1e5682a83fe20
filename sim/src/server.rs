//! The simulator's HTTP server: routes, shared state, and [`serve`] / [`spawn`] for tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use futures::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Fault, SimConfig};
use crate::slots::{Slots, StatsSnapshot};
use crate::{ollama_api, openai_api};

/// Shared state of one simulator instance.
#[derive(Debug, Clone)]
pub struct Sim {
    pub(crate) config: Arc<SimConfig>,
    pub(crate) slots: Slots,
    fault: Arc<Mutex<Fault>>,
}

impl Sim {
    /// The fault applied to requests arriving now.
    pub(crate) fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The router for `config`, with the state it closes over.
pub fn router(config: SimConfig) -> (Router, Sim) {
    let slots = Slots::new(config.slots, config.overflow, config.max_queue);
    let fault = Arc::new(Mutex::new(config.fault));
    let sim = Sim {
        config: Arc::new(config),
        slots,
        fault,
    };
    let router = Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/chat", post(ollama_api::chat))
        .route("/api/tags", get(ollama_api::tags))
        .route("/api/ps", get(ollama_api::ps))
        .route("/api/version", get(ollama_api::version))
        .route("/v1/chat/completions", post(openai_api::chat))
        .route("/v1/models", get(openai_api::models))
        .route("/sim/stats", get(stats))
        .route("/sim/fault", put(set_fault))
        // Real engines take long prompts (Ollama has no small body limit); so does the sim.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(sim.clone());
    (router, sim)
}

/// `PUT /sim/fault` with a fault in the `SIM_FAULT` grammar: applies to requests from now on.
async fn set_fault(State(sim): State<Sim>, body: String) -> (StatusCode, String) {
    match body.trim().parse::<Fault>() {
        Ok(fault) => {
            *sim.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
            (StatusCode::OK, format!("{fault:?}"))
        }
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()),
    }
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
        *self.sim.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
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

/// A 200 response whose body is `chunks`; an `Err` chunk aborts the connection mid-body.
pub(crate) fn streaming_response(
    content_type: &'static str,
    chunks: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A 200 whose body starts and is then cut: the head and a few bytes reach the client (the
/// pause lets the server flush them), then the connection drops.
pub(crate) fn cut_response(content_type: &'static str) -> Response {
    let chunks = async_stream::stream! {
        yield Ok(Bytes::from_static(b"{\"model\":"));
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        yield Err(std::io::Error::other("simulated drop"));
    };
    streaming_response(content_type, chunks)
}
