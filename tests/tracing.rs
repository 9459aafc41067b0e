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

// Multi-threaded: the collector must keep answering while this thread waits for the gateway
// process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_with_the_callers_trace_id() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    seed(&sim);
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut gw = spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
            ("OTEL_SERVICE_NAME", "paygate-test".into()),
            ("RUST_LOG", "info".into()),
        ],
        Stdio::null(),
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
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref()?.value.clone())
                    .map(|v| format!("{v:?}"))
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
    assert!(spans.iter().all(|(svc, _)| svc.contains("paygate-test")));
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
}
