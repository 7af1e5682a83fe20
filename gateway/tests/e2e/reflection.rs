//! The scheduler serves gRPC server reflection in both versions clients use: v1 (current tools)
//! and v1alpha (grpcurl 1.8, Python's grpcio-reflection), each listing the Scheduler, health and
//! reflection services.

use crate::support::{Stack, quick_sim};

const EXPECTED: [&str; 2] = ["llmgw.scheduler.v1.Scheduler", "grpc.health.v1.Health"];

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let stack = Stack::start(quick_sim()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", stack.scheduler))
        .unwrap()
        .connect()
        .await
        .unwrap();

    use tonic_reflection::pb::v1 as current;
    let mut client =
        current::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = current::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            current::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(current::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in EXPECTED {
        assert!(names.iter().any(|n| n == expected), "v1 lists {names:?}");
    }

    use tonic_reflection::pb::v1alpha as alpha;
    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in EXPECTED {
        assert!(
            names.iter().any(|n| n == expected),
            "v1alpha lists {names:?}"
        );
    }
}
