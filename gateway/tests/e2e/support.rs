//! Test harness: start sim → scheduler → gateway on ephemeral ports, poll readiness with a
//! deadline, and parse SSE.

use std::net::SocketAddr;
use std::time::Duration;

use llm_sim::{SimConfig, SimHandle};
use scheduler::topology::Topologies;
use serde_json::Value;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A running sim + scheduler + gateway.
pub struct Stack {
    pub sims: Vec<SimHandle>,
    /// The scheduler's config file, for fleets (removed on drop).
    pub config_path: Option<std::path::PathBuf>,
    pub topologies: Arc<Topologies>,
    pub gateway: SocketAddr,
    /// The scheduler's gRPC address.
    pub scheduler: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(path) = &self.config_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A fresh path for a scheduler config file.
pub fn temp_config_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "llmgw-test-{}-{:016x}.toml",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// A loopback address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Sim timings for tests that only care about content: fast but not instant.
pub fn quick_sim() -> SimConfig {
    SimConfig {
        ttft_ms: 5,
        tpot_ms: 1,
        output_tokens: 8,
        ..SimConfig::default()
    }
}

impl Stack {
    /// Everything with defaults, the sim configured as given; waits until `/readyz` is 200.
    pub async fn start(sim: SimConfig) -> Self {
        Self::start_with(Some(sim), |_| {}, |_| {}).await
    }

    /// Full control. Without a sim, the scheduler points at a closed port (backend down), and
    /// readiness is not awaited.
    pub async fn start_with(
        sim: Option<SimConfig>,
        tune_scheduler: impl FnOnce(&mut scheduler::Config),
        tune_gateway: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        let sims = match sim {
            Some(config) => vec![llm_sim::spawn(config).await.unwrap()],
            None => Vec::new(),
        };
        let backend = match sims.first() {
            Some(sim) => sim.base_url(),
            None => format!("http://{}", closed_port().await),
        };
        let scheduler_config = scheduler::Config::for_backend(backend);
        Self::launch(sims, None, scheduler_config, tune_scheduler, tune_gateway).await
    }

    /// Several sims behind a scheduler configured by the TOML `config` builds from their base
    /// URLs; waits until ready.
    pub async fn fleet(
        sims: Vec<SimConfig>,
        config: impl FnOnce(&[String]) -> String,
        tune_scheduler: impl FnOnce(&mut scheduler::Config),
    ) -> Self {
        Self::fleet_with(sims, config, tune_scheduler, |_| {}).await
    }

    /// [`Stack::fleet`] with the gateway tuned too.
    pub async fn fleet_with(
        sims: Vec<SimConfig>,
        config: impl FnOnce(&[String]) -> String,
        tune_scheduler: impl FnOnce(&mut scheduler::Config),
        tune_gateway: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        let mut handles = Vec::new();
        for sim in sims {
            handles.push(llm_sim::spawn(sim).await.unwrap());
        }
        let urls: Vec<String> = handles.iter().map(SimHandle::base_url).collect();
        let path = temp_config_path();
        std::fs::write(&path, config(&urls)).unwrap();
        let mut scheduler_config = scheduler::Config::for_backend("http://unused");
        scheduler_config.config_file = Some(path.display().to_string());
        Self::launch(
            handles,
            Some(path),
            scheduler_config,
            tune_scheduler,
            tune_gateway,
        )
        .await
    }

    async fn launch(
        sims: Vec<SimHandle>,
        config_path: Option<std::path::PathBuf>,
        mut scheduler_config: scheduler::Config,
        tune_scheduler: impl FnOnce(&mut scheduler::Config),
        tune_gateway: impl FnOnce(&mut gateway::Config),
    ) -> Self {
        let shutdown = CancellationToken::new();
        scheduler_config.probe_interval_ms = 100;
        scheduler_config.load_poll_ms = 100;
        tune_scheduler(&mut scheduler_config);
        let scheduler_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheduler_addr = scheduler_listener.local_addr().unwrap();
        let topologies = scheduler::load(&scheduler_config).unwrap();
        tokio::spawn(scheduler::serve_topologies(
            scheduler_listener,
            scheduler_config,
            Arc::clone(&topologies),
            shutdown.clone(),
        ));

        let mut gateway_config = gateway::Config::for_scheduler(format!("http://{scheduler_addr}"));
        tune_gateway(&mut gateway_config);
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = gateway_listener.local_addr().unwrap();
        tokio::spawn(gateway::serve(
            gateway_listener,
            gateway_config,
            shutdown.clone(),
        ));

        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let stack = Self {
            sims,
            config_path,
            topologies,
            gateway,
            scheduler: scheduler_addr,
            http,
            shutdown,
        };
        if !stack.sims.is_empty() {
            stack.wait_ready().await;
        }
        stack
    }

    /// Starts a graceful shutdown of gateway and scheduler (what SIGTERM does).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    pub fn sim(&self) -> &SimHandle {
        self.sims.first().expect("this stack has a sim")
    }

    /// Admission state of the default pool.
    pub fn admission(&self) -> Arc<scheduler::admission::Admission> {
        self.pool("default").admission.clone()
    }

    /// A pool of the current topology.
    pub fn pool(&self, name: &str) -> Arc<scheduler::pool::Pool> {
        Arc::clone(self.topologies.current().pool(name).expect("pool exists"))
    }

    /// `POST /v1/chat/completions` with a JSON body, as `tenant` (open mode's `x-tenant-id`).
    pub async fn chat_as(&self, tenant: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .header("x-tenant-id", tenant)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/chat/completions` with a JSON body.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Polls `/readyz` until 200, at most 10 s.
    pub async fn wait_ready(&self) {
        let http = self.http.clone();
        let url = self.url("/readyz");
        eventually_async("gateway ready", Duration::from_secs(10), || {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(url)
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false)
            }
        })
        .await;
    }
}

/// Polls `check` every millisecond until it holds; panics after `deadline`. Returns how long
/// it took.
pub async fn eventually(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// [`eventually`] for an async check (polled every 20 ms).
pub async fn eventually_async<F: Future<Output = bool>>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One SSE `data:` payload: a JSON chunk, or the `[DONE]` marker.
#[derive(Debug, Clone, PartialEq)]
pub enum SseData {
    Json(Value),
    Done,
}

/// Splits a whole SSE body into its data payloads, checking the framing on the way.
pub fn sse_data(body: &str) -> Vec<SseData> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line: {body:?}"
    );
    body.split("\n\n")
        .filter(|event| !event.is_empty() && !event.starts_with(':'))
        .map(|event| {
            let data = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"));
            if data == "[DONE]" {
                SseData::Done
            } else {
                SseData::Json(serde_json::from_str(data).unwrap())
            }
        })
        .collect()
}

/// A minimal chat body.
/// Posts `body` to `url` as `tenant` (open mode's `x-tenant-id`), reads the whole answer and
/// returns its status: for requests spawned to keep an engine busy.
pub async fn answered_status(http: reqwest::Client, url: String, tenant: &str, body: Value) -> u16 {
    let response = http
        .post(url)
        .header("x-tenant-id", tenant)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

pub fn chat_body(model: &str, prompt: &str) -> Value {
    serde_json::json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

/// Concatenated `delta.content` of all chunks.
pub fn streamed_text(events: &[SseData]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            SseData::Json(chunk) => chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned),
            SseData::Done => None,
        })
        .collect()
}

/// Model `via-ollama` on an Ollama-kind sim, `via-openai` on an OpenAI-kind one.
pub fn two_kinds(urls: &[String]) -> String {
    format!(
        r#"
        [[pool]]
        name = "ollama"
        [[pool.endpoint]]
        url = "{}"
        kind = "ollama"
        slots = 2

        [[pool]]
        name = "openai"
        [[pool.endpoint]]
        url = "{}"
        kind = "openai"
        slots = 2

        [[model]]
        name = "via-ollama"
        [[model.version]]
        name = "v"
        pool = "ollama"
        upstream = "llama3.2"

        [[model]]
        name = "via-openai"
        [[model.version]]
        name = "v"
        pool = "openai"
        upstream = "llama3.2"
        "#,
        urls[0], urls[1]
    )
}

/// The `data:` payloads of an SSE body, without `[DONE]`.
pub fn sse_objects(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

/// Two pools of one endpoint each (the first sim's, the second's): model `main` in `primary`
/// falls back to model `backup` in `spare`.
pub fn fallback_fleet(urls: &[String]) -> String {
    format!(
        r#"
        [[pool]]
        name = "primary"
        [[pool.endpoint]]
        url = "{}"
        kind = "ollama"
        slots = 2
        [[pool]]
        name = "spare"
        [[pool.endpoint]]
        url = "{}"
        kind = "ollama"
        slots = 2
        [[model]]
        name = "main"
        fallbacks = ["backup"]
        [[model.version]]
        name = "v"
        pool = "primary"
        upstream = "llama3.2"
        [[model]]
        name = "backup"
        [[model.version]]
        name = "v"
        pool = "spare"
        upstream = "smollm2:135m"
        "#,
        urls[0], urls[1]
    )
}

/// The `sha256` of `key` as a `[[key]]` entry holds it.
pub fn key_hash(key: &str) -> String {
    gateway::governance::keys::hex(&gateway::governance::keys::hash(key))
}
