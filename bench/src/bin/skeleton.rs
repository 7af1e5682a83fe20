//! `skeleton`: the gateway pair's architecture with zero logic, the physical floor our
//! services are measured against (R10 in the background notes): an axum edge that wraps the
//! request body into one server-streaming gRPC call, and a tonic middle that POSTs it to the
//! upstream's OpenAI-compatible endpoint and relays each upstream body chunk as one event, which
//! the edge writes out as one body chunk — streamed answers stream through, as in the pair. No
//! validation, admission, routing, tracing or metrics. Never a product: a ruler.
//!
//!   skeleton mid  --listen 127.0.0.1:19051 --upstream http://127.0.0.1:18434
//!   skeleton edge --listen 127.0.0.1:19080 --mid http://127.0.0.1:19051

use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::routing::post;
use axum::serve::ListenerExt;
use clap::Parser;
use futures::{Stream, StreamExt};
use llmgw_proto::v1::scheduler_client::SchedulerClient;
use llmgw_proto::v1::scheduler_server::{Scheduler, SchedulerServer};
use llmgw_proto::v1::{
    ChatEvent, ChatRequest, CompletionRequest, Delta, EmbedRequest, ListModelsRequest,
    ListModelsResponse, StatusRequest, StatusResponse, chat_event::Event,
};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
enum Args {
    /// The HTTP edge (gateway's place).
    Edge {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        mid: String,
    },
    /// The gRPC middle (scheduler's place).
    Mid {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        upstream: String,
    },
}

struct Mid {
    http: reqwest::Client,
    url: String,
}

type Events = Pin<Box<dyn Stream<Item = Result<ChatEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Scheduler for Mid {
    type ChatStream = Events;
    type CompleteStream = Events;
    type EmbedStream = Events;

    // The skeleton measures the chat path only.
    async fn complete(&self, _: Request<CompletionRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("the skeleton serves Chat only"))
    }

    async fn embed(&self, _: Request<EmbedRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("the skeleton serves Chat only"))
    }

    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<Events>, Status> {
        let body = request.into_inner().extra_json;
        let upstream = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?;
        let events = upstream.bytes_stream().map(|chunk| {
            let chunk = chunk.map_err(|err| Status::unknown(err.to_string()))?;
            Ok(ChatEvent {
                event: Some(Event::Delta(Delta {
                    content: String::from_utf8_lossy(&chunk).into_owned(),
                    ..Delta::default()
                })),
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse::default()))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse::default()))
    }
}

async fn edge(State(mid): State<Channel>, body: Bytes) -> Result<Body, String> {
    let request = ChatRequest {
        extra_json: String::from_utf8_lossy(&body).into_owned(),
        ..Default::default()
    };
    let events = SchedulerClient::new(mid)
        .chat(request)
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let chunks = events.map(|event| match event?.event {
        Some(Event::Delta(delta)) => Ok::<_, Status>(Bytes::from(delta.content)),
        _ => Ok(Bytes::new()),
    });
    Ok(Body::from_stream(chunks))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse() {
        Args::Mid { listen, upstream } => {
            let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
            let mid = Mid {
                http,
                url: format!("{upstream}/v1/chat/completions"),
            };
            let incoming = tonic::transport::server::TcpIncoming::bind(listen.parse()?)?
                .with_nodelay(Some(true));
            Server::builder()
                .add_service(SchedulerServer::new(mid))
                .serve_with_incoming(incoming)
                .await?;
        }
        Args::Edge { listen, mid } => {
            let channel = Endpoint::from_shared(mid)?.tcp_nodelay(true).connect_lazy();
            let app = axum::Router::new()
                .route("/v1/chat/completions", post(edge))
                .with_state(channel);
            let listener = tokio::net::TcpListener::bind(listen).await?.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await?;
        }
    }
    Ok(())
}
