//! OpenTelemetry traces: the gateway exports over OTLP to a collector (a tonic server in this
//! test), continues the caller's W3C trace, and passes it on to the provider.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::spawn_gateway_with;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use paygate::providers::antom::signing::Signer;
use paygate::sim::antom::AntomSim;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::BoolValue(b) => b.to_string(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How the gateway exports to the test's collector.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// OTLP/gRPC, plaintext.
    Grpc,
    /// OTLP/gRPC over TLS (`https://`), the collector's CA in OTEL_EXPORTER_OTLP_CERTIFICATE.
    GrpcTls,
    /// OTLP/HTTP with protobuf bodies, to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
    HttpProtobuf,
}

/// Starts a collector for `transport`; answers the gateway environment that points at it.
async fn start_collector(
    transport: Transport,
    collector: Collector,
    dir: &std::path::Path,
) -> Vec<(&'static str, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    match transport {
        Transport::Grpc => {
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector))
                    .serve_with_incoming(incoming),
            );
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))]
        }
        Transport::GrpcTls => {
            let key = rcgen::KeyPair::generate().unwrap();
            let ca_params = {
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p
            };
            let ca = ca_params.self_signed(&key).unwrap();
            let issuer = rcgen::Issuer::new(ca_params, &key);
            let server_key = rcgen::KeyPair::generate().unwrap();
            let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .signed_by(&server_key, &issuer)
                .unwrap();
            let ca_file = dir.join("collector-ca.pem");
            std::fs::write(&ca_file, ca.pem()).unwrap();
            let identity =
                tonic::transport::Identity::from_pem(server.pem(), server_key.serialize_pem());
            tokio::spawn(
                tonic::transport::Server::builder()
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    .unwrap()
                    .add_service(TraceServiceServer::new(collector))
                    .serve_with_incoming(incoming),
            );
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("https://localhost:{}", otlp.port()),
                ),
                (
                    "OTEL_EXPORTER_OTLP_CERTIFICATE",
                    ca_file.display().to_string(),
                ),
            ]
        }
        Transport::HttpProtobuf => {
            use prost::Message;
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let collector = collector.clone();
                    async move {
                        let req = ExportTraceServiceRequest::decode(body).unwrap();
                        collector.0.lock().unwrap().push(req);
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                            ExportTraceServiceResponse {
                                partial_success: None,
                            }
                            .encode_to_vec(),
                        )
                    }
                }),
            );
            let listener = incoming.into_inner();
            tokio::spawn(async move { axum::serve(listener, app).await });
            vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    format!("http://{otlp}/v1/traces"),
                ),
            ]
        }
    }
}

// Multi-threaded: the collector must keep answering while this thread waits for the gateway
// process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_with_the_callers_trace_id() {
    traced(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_otlp_grpc_with_tls() {
    traced(Transport::GrpcTls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_otlp_http_protobuf() {
    traced(Transport::HttpProtobuf).await;
}

/// Two Creates with the caller's trace context, exported over `transport`: the spans, their
/// resource (service name and OTEL_RESOURCE_ATTRIBUTES) and the JSON log lines' trace ids.
async fn traced(transport: Transport) {
    let collector = Collector::default();
    let dir = tempfile::tempdir().unwrap();
    let mut env = start_collector(transport, collector.clone(), dir.path()).await;
    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    seed(&sim);
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    env.extend([
        ("OTEL_SERVICE_NAME", "paygate-test".to_string()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=ci,service.name=overridden".into(),
        ),
        ("RUST_LOG", "info".into()),
        ("PAYGATE_LOG_FORMAT", "json".into()),
    ]);
    let log = dir.path().join("gateway.log");
    let mut gw = spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &env,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let mut client = gw.client().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    for _ in 0..2 {
        let mut req = tonic::Request::new(refund_req("traced-1", "PAY_USD_100", 100));
        req.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        client.create(req).await.unwrap();
    }
    // The provider call carried the same trace.
    let tps = sim.sim.traceparents();
    assert_eq!(tps.len(), 1, "one provider call: {tps:?}");
    assert!(tps[0].contains(trace_id), "{tps:?}");

    gw.sigterm_and_wait(); // flushes the exporter
    let mut spans: Vec<(String, Span)> = Vec::new();
    for _ in 0..50 {
        spans = collector
            .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| {
                let service = rs
                    .resource
                    .as_ref()
                    .map(|r| format!("{:?}", r.attributes))
                    .unwrap_or_default();
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter().cloned())
                    .map(move |s| (service.clone(), s))
            })
            .collect();
        if spans.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rpcs: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "RefundService.Create")
        .collect();
    assert_eq!(
        rpcs.len(),
        2,
        "{:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    assert!(
        spans.iter().all(|(res, _)| res.contains("\"paygate-test\"")
            && !res.contains("overridden")
            && res.contains("deployment.environment")
            && res.contains("\"ci\"")),
        "{transport:?}: resource {:?}",
        spans.first().map(|(r, _)| r)
    );
    for s in &rpcs {
        assert_eq!(hex(&s.trace_id), trace_id);
        assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(attr(s, "account").as_deref(), Some("antom"));
        assert_eq!(attr(s, "request_id").as_deref(), Some("traced-1"));
        assert_eq!(attr(s, "grpc.code").as_deref(), Some("OK"));
    }
    let replayed: Vec<String> = rpcs.iter().filter_map(|s| attr(s, "replayed")).collect();
    assert_eq!(
        replayed.iter().filter(|r| *r == "true").count(),
        1,
        "{replayed:?}"
    );
    let call = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "refund")
        .expect("a provider_call span");
    assert_eq!(hex(&call.trace_id), trace_id);
    assert_eq!(attr(call, "provider").as_deref(), Some("antom"));
    assert_eq!(attr(call, "attempt").as_deref(), Some("1"));
    assert_eq!(attr(call, "result").as_deref(), Some("ok"));
    assert!(
        rpcs.iter().any(|r| r.span_id == call.parent_span_id),
        "the provider span is a child of the RPC span"
    );

    // The JSON log lines of each RPC carry its trace and span ids, so logs and traces join.
    let text = std::fs::read_to_string(&log).unwrap();
    let rpc_lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["message"] == "rpc")
        .collect();
    assert_eq!(rpc_lines.len(), 2, "{text}");
    let rpc_span_ids: Vec<String> = rpcs.iter().map(|s| hex(&s.span_id)).collect();
    for line in &rpc_lines {
        assert_eq!(line["trace_id"], trace_id, "{line}");
        let span_id = line["span_id"].as_str().unwrap_or_default().to_owned();
        assert!(
            rpc_span_ids.contains(&span_id),
            "{line} not in {rpc_span_ids:?}"
        );
    }
    // Lines outside any RPC (start-up) have none.
    assert!(
        text.lines()
            .filter(|l| l.contains("paygate listening"))
            .all(|l| !l.contains("trace_id"))
    );
}
