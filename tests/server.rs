//! Health, reflection (v1 and v1alpha) and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn health_reports_every_service() {
    let env = start().await;
    let mut health = HealthClient::new(env.channel.clone());
    for service in [
        "",
        "paygate.v1.RefundService",
        "paygate.v1.SubscriptionService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services_and_resolve_imports() {
    let env = start().await;
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut c = ServerReflectionClient::new(env.channel.clone());
        let reqs = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(
                    "google.rpc.ErrorInfo".into(),
                )),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileByFilename(
                    "google/protobuf/timestamp.proto".into(),
                )),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileByFilename(
                    "google/rpc/status.proto".into(),
                )),
            },
        ];
        let mut answers = c
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.next().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "paygate.v1.RefundService",
            "paygate.v1.SubscriptionService",
            "paygate.admin.v1.AdminService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
        // The error details every error carries, under their canonical file names, so that
        // grpcurl resolves them and prints their fields.
        let mut files = Vec::new();
        for _ in 0..3 {
            let m = answers.next().await.unwrap().unwrap().message_response;
            let Some(MessageResponse::FileDescriptorResponse(f)) = m else {
                panic!("{m:?}");
            };
            use prost::Message;
            let first =
                prost_types::FileDescriptorProto::decode(&f.file_descriptor_proto[0][..]).unwrap();
            files.push(first);
        }
        assert_eq!(files[0].name(), "google/rpc/error_details.proto");
        let messages: Vec<_> = files[0].message_type.iter().map(|m| m.name()).collect();
        for want in ["ErrorInfo", "RetryInfo", "BadRequest"] {
            assert!(messages.contains(&want), "{messages:?}");
        }
        assert_eq!(files[2].name(), "google/rpc/status.proto");
        assert_eq!(files[2].dependency, ["google/protobuf/any.proto"]);
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut c = ServerReflectionClient::new(env.channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "paygate.v1.RefundService".into(),
            )),
        };
        let mut answers = c
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let m = answers.next().await.unwrap().unwrap().message_response;
        assert!(matches!(
            m,
            Some(MessageResponse::FileDescriptorResponse(_))
        ));
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls() {
    let mut env = start().await;
    env.sim()
        .inject(Fault::on("refund", FaultKind::Latency { ms: 600 }));
    let mut client = env.refunds.clone();
    let in_flight = tokio::spawn(async move {
        client
            .create(refund_req("drain-1", "PAY_USD_100", 100))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gw = env.gateway.take().unwrap();
    let addr = gw.addr;
    gw.stop().await;
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight call completed");
    assert!(!r.into_inner().refund_id.is_empty());
    // New connections are refused once the server has stopped.
    let refused = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await;
    assert!(refused.is_err());
}
