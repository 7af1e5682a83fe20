//! [`serve`] and [`router`]: the gateway as a library function, so tests run the real thing on
//! port 0, or drive the router without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::edge::body::BodyLimits;
use crate::edge::{self, EdgeLimits};
use crate::error::ApiError;
use crate::governance::Governance;
use crate::layers;
use crate::metrics::GatewayMetrics;
use crate::responses_store::ResponseStore;
use crate::routes::{
    AppState, chat_completions, completions, embeddings, health, limits, messages, metrics, models,
    ollama, ollama_info, responses, status_page,
};
use crate::scheduler_client::SchedulerClients;

/// Why the gateway could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid SCHEDULER_URL: {0}")]
    SchedulerUrl(#[from] crate::scheduler_client::UrlError),
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The gateway's routes and layers for `config`.
pub fn router(config: &Config) -> Result<Router, ServeError> {
    build(config, CancellationToken::new()).map(|built| built.router)
}

/// What [`build`] makes for [`serve`].
struct Built {
    router: Router,
    governance: Arc<Governance>,
    schedulers: SchedulerClients,
    metrics: Arc<GatewayMetrics>,
}

/// The router and the live governance (which `serve` reloads on SIGHUP and file changes);
/// `/readyz` fails from the moment `stopping` is cancelled.
fn build(config: &Config, stopping: CancellationToken) -> Result<Built, ServeError> {
    config.validate().map_err(ServeError::Config)?;
    crate::backend_label::key_with(
        config
            .scheduler_auth_token
            .as_ref()
            .map(llmgw_proto::SchedulerToken::secret),
    );
    let scheduler = SchedulerClients::connect_lazy(
        &config.scheduler_url,
        config.scheduler_connections,
        config.scheduler_connect_timeout(),
        config.scheduler_auth_token.clone(),
    )?;
    let metrics = Arc::new(GatewayMetrics::new());
    let governance = Arc::new(
        Governance::load(config.config_file.as_deref(), Arc::clone(&metrics))
            .map_err(|err| ServeError::Config(format!("GATEWAY_CONFIG: {err}")))?,
    );
    let state = AppState {
        scheduler: scheduler.clone(),
        config: Arc::new(config.clone()),
        metrics: Arc::clone(&metrics),
        governance: Arc::clone(&governance),
        refusals: Arc::default(),
        status_cache: Arc::default(),
        responses: Arc::new(
            ResponseStore::for_config(governance.policy().as_ref().map(|p| &p.store))
                .map_err(|err| ServeError::Config(format!("GATEWAY_CONFIG: {err}")))?,
        ),
        stopping,
    };
    // The edge's API routes: OpenAI's, and Ollama's native ones (with its error bodies). Both
    // get the caller (the key's tenant, or open mode's headers) as an extension — probes and
    // Prometheus need no key; a refusal there (400 bad header, 401 bad key, 403 priority)
    // still passes through every layer below: counted, traced, with its request id — and load
    // shedding beyond GATEWAY_MAX_IN_FLIGHT before any work, one limit for both.
    let in_flight = layers::InFlight::new(config.max_in_flight);
    let caller = layers::CallerState {
        governance: Arc::clone(&governance),
    };
    let with_caller = |routes: Router<AppState>| {
        routes
            .route_layer(middleware::from_fn_with_state(
                caller.clone(),
                layers::caller,
            ))
            .route_layer(middleware::from_fn_with_state(
                in_flight.clone(),
                layers::shed,
            ))
    };
    let api = with_caller(
        Router::new()
            .route(
                "/v1/chat/completions",
                post(chat_completions::chat_completions),
            )
            .route("/v1/completions", post(completions::completions))
            .route("/v1/embeddings", post(embeddings::embeddings))
            .route("/v1/models", get(models::list_models))
            .route("/v1/limits", get(limits::limits))
            .route("/v1/responses", post(responses::create))
            .route(
                "/v1/responses/{id}",
                get(responses::retrieve).delete(responses::delete),
            ),
    );
    let anthropic_api = with_caller(
        Router::new()
            .route("/v1/messages", post(messages::messages))
            .route("/v1/messages/count_tokens", post(messages::count_tokens)),
    )
    .route_layer(middleware::from_fn(messages::anthropic_errors));
    let refuse = || any(ollama_info::management);
    let ollama_api = with_caller(
        Router::new()
            .route("/api/chat", post(ollama::chat))
            .route("/api/generate", post(ollama::generate))
            .route("/api/embed", post(ollama::embed))
            .route("/api/embeddings", post(ollama::embeddings))
            .route("/api/tags", get(ollama_info::tags))
            .route("/api/ps", get(ollama_info::ps))
            .route("/api/version", get(ollama_info::version))
            .route("/api/pull", refuse())
            .route("/api/push", refuse())
            .route("/api/create", refuse())
            .route("/api/copy", refuse())
            .route("/api/delete", refuse())
            .route("/api/blobs/{digest}", refuse()),
    )
    .route_layer(middleware::from_fn(ollama_info::ollama_errors));
    let router = Router::new()
        .merge(api)
        .merge(anthropic_api)
        .merge(ollama_api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .merge(
            // Counted against GATEWAY_MAX_IN_FLIGHT like the API: no flood of status reads
            // gets past the limit.
            Router::new()
                .route("/status", get(status_page::page))
                .route("/status.json", get(status_page::json))
                .route_layer(middleware::from_fn_with_state(
                    in_flight.clone(),
                    layers::shed,
                )),
        )
        .fallback(not_found)
        // Layers, innermost first (each `.layer` wraps everything above it):
        // the body limit bounds memory per request before any parsing; over it is a 413.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        // every response counted by matched route and status, whole responses timed.
        .layer(middleware::from_fn_with_state(
            layers::Observers {
                metrics: Arc::clone(&metrics),
                refusals: Arc::clone(&state.refusals),
            },
            layers::observe,
        ))
        // the server span, child of the caller's trace context, around all of the above.
        .layer(middleware::from_fn(layers::server_span))
        // outermost, so the span and every response (even a 500 from a layer) carry it.
        .layer(middleware::from_fn(layers::request_id))
        .with_state(state);
    Ok(Built {
        router,
        governance,
        schedulers: scheduler,
        metrics,
    })
}

/// 404 naming the path, after reading the body (the keep-alive connection stays usable).
async fn not_found(request: axum::extract::Request) -> axum::response::Response {
    let refused = ApiError::RouteNotFound(request.uri().path().to_owned()).into_response();
    layers::drain_then(request, refused, layers::REFUSAL_DRAIN_BYTES).await
}

/// Serves the gateway on `listener` until `shutdown` is cancelled; in-flight requests then get
/// `shutdown_grace_ms` to finish.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    if config.config_file.is_none() {
        tracing::warn!(
            "GATEWAY_CONFIG is unset: open mode, no authentication; tenants and priorities come from headers"
        );
    }
    let Built {
        router: app,
        governance,
        schedulers,
        metrics,
    } = build(&config, shutdown.clone())?;
    let tasks = TaskTracker::new();
    // Serving state and models of every scheduler, and DNS names re-resolved.
    tasks.spawn(schedulers.watch(shutdown.clone()));
    if let Some(path) = governance.file().map(str::to_owned) {
        let stop = shutdown.clone().cancelled_owned();
        tasks.spawn(async move {
            llmgw_telemetry::signals::watch_config(path, stop, |why| match governance.reload() {
                Ok(()) => tracing::info!(trigger = why, "GATEWAY_CONFIG reloaded"),
                Err(err) => {
                    tracing::error!(trigger = why, error = %err, "GATEWAY_CONFIG reload refused; keeping the running one")
                }
            })
            .await;
        });
    }
    let limits = EdgeLimits {
        max_connections: config.max_connections,
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        send_timeout: Duration::from_millis(config.send_timeout_ms),
        http2_keepalive: Duration::from_millis(config.http2_keepalive_ms),
        bodies: BodyLimits {
            stall: Duration::from_millis(config.body_stall_timeout_ms),
            total: Duration::from_millis(config.body_timeout_ms),
            budget: (config.max_body_buffer_bytes > 0)
                .then(|| Arc::new(Semaphore::new(config.max_body_buffer_bytes))),
        },
        grace: Duration::from_millis(config.shutdown_grace_ms),
        metrics,
    };
    // Readiness fails at once (the router reads `shutdown`); the edge keeps accepting for
    // the shutdown delay, so load balancers that poll `/readyz` stop sending first.
    let stop_accepting = CancellationToken::new();
    let delay = Duration::from_millis(config.shutdown_delay_ms);
    tasks.spawn({
        let (shutdown, stop_accepting) = (shutdown.clone(), stop_accepting.clone());
        async move {
            shutdown.cancelled().await;
            if !delay.is_zero() {
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "not ready; accepting until the shutdown delay ends"
                );
                tokio::time::sleep(delay).await;
            }
            stop_accepting.cancel();
        }
    });
    edge::accept(listener, app, limits, stop_accepting).await;
    tasks.close();
    tasks.wait().await;
    Ok(())
}
