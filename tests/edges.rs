//! Errors at the edge are paygate errors, through the binary: undecodable and oversized request
//! messages and an oversized `account` are INVALID_ARGUMENT with ErrorInfo, the `Bearer` scheme
//! is case-insensitive and a second `authorization` header is refused, and a PayXpert refusal
//! sent with a non-2xx status is mapped through the code table.

mod common;

use std::time::Duration;

use common::process::{antom_env, spawn_configured, spawn_payxpert_gateway};
use common::*;
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::sim::Simulator as _;
use paygate::sim::payxpert::PayXpertSim;
use paygate::sim::{Fault, FaultKind};
use tonic::Code;

#[tokio::test]
async fn oversized_accounts_and_authorization_headers() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        format!("alpha {}\n", paygate::server::hash_token("alpha-token")),
    )
    .unwrap();
    let config = dir.path().join("paygate.toml");
    std::fs::write(&config, "").unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let mut env = antom_env(dir.path(), &sim.base_url());
    env.push(("PAYGATE_AUTH_TOKENS_FILE", d("tokens")));
    let gw = spawn_configured(&config, &format!("sqlite://{}", d("paygate.db")), &env);
    gw.client().await;
    let mut c = RefundServiceClient::connect(gw.url()).await.unwrap();
    let with_auth = |values: &[&str], req: pb::CreateRefundRequest| {
        let mut r = tonic::Request::new(req);
        for v in values {
            r.metadata_mut().append("authorization", v.parse().unwrap());
        }
        r.set_timeout(Duration::from_secs(5));
        r
    };
    // A 10 kB account: INVALID_ARGUMENT with ErrorInfo, not a trailer too large to send.
    let mut req = refund_req("edge-1", "PAY_USD_100", 100);
    req.account = "a".repeat(10_000);
    let e = c
        .create(with_auth(&["Bearer alpha-token"], req))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(reason(&e), "INVALID_REQUEST");
    // The scheme in any case.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        c.create(with_auth(
            &[&format!("{scheme} alpha-token")],
            refund_req(&format!("edge-{scheme}"), "PAY_USD_100", 100),
        ))
        .await
        .unwrap();
    }
    // Two authorization headers: refused, even when one is valid.
    let e = c
        .create(with_auth(
            &["Bearer alpha-token", "Bearer other"],
            refund_req("edge-2", "PAY_USD_100", 100),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(reason(&e), "INVALID_TOKEN");
    assert_eq!(sim.sim.calls("refund"), 3);
}

#[tokio::test]
async fn a_payxpert_refusal_with_an_error_status_is_mapped_through_the_code_table() {
    let sim = PayXpertSim::new(common::process::PX_ORIGINATOR, common::process::PX_PASSWORD);
    sim.add_sale("1001", 10_000, "EUR", None);
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("px.db").display());
    let gw = spawn_payxpert_gateway(
        dir.path(),
        &sim.base_url(),
        &store,
        Duration::from_millis(1_000),
        Duration::from_millis(1_500),
        &[],
    );
    let mut c = gw.client().await;
    let req = || pb::CreateRefundRequest {
        request_id: "px-400".into(),
        payment_id: "1001".into(),
        amount: money("EUR", 20_000),
        ..Default::default()
    };
    sim.sim.inject(Fault::on(
        "refund",
        FaultKind::StatusWithBody {
            status: 400,
            body: r#"{"errorCode":"064","errorMessage":"referencing amount exceeds original"}"#
                .into(),
        },
    ));
    let e = c.create(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(reason(&e), "PAYXPERT_064");
    assert_eq!(retry_delay(&e), None);
    // Stored as final: the replay says the same, nothing is sent or reconciled.
    let again = c.create(req()).await.unwrap_err();
    assert_eq!(reason(&again), "PAYXPERT_064");
    assert_eq!(sim.sim.calls("refund"), 1);
    assert_eq!(sim.sim.calls("export"), 0);
    // A non-2xx answer without a definitive code stays an unknown outcome.
    sim.sim.inject(Fault::on(
        "refund",
        FaultKind::StatusWithBody {
            status: 503,
            body: r#"{"errorCode":"096","errorMessage":"acquirer error"}"#.into(),
        },
    ));
    let e = c
        .create(pb::CreateRefundRequest {
            request_id: "px-503".into(),
            amount: money("EUR", 100),
            ..req()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
}

/// Sends request bytes as they are, and reads answer bytes as they are.
#[derive(Debug, Clone, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

#[tokio::test]
async fn undecodable_and_oversized_messages_are_invalid_arguments() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("paygate.db").display());
    let gw = common::process::spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &[],
        std::process::Stdio::inherit(),
    );
    gw.client().await;
    let channel = tonic::transport::Channel::from_shared(gw.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(16 << 20);
    let cases: [(&str, Vec<u8>); 4] = [
        ("garbage", vec![0xff, 0xff, 0xff, 0xff]),
        ("a truncated varint", vec![0x10, 0x80]),
        ("invalid UTF-8", vec![0x12, 0x02, 0xc3, 0x28]),
        ("5 MiB", {
            let mut v = vec![0x12, 0x80, 0x80, 0xc0, 0x02];
            v.resize(5 << 20, b'a');
            v
        }),
    ];
    for (what, bytes) in cases {
        grpc.ready().await.unwrap();
        let e = grpc
            .unary::<Vec<u8>, Vec<u8>, Raw>(
                tonic::Request::new(bytes),
                "/paygate.v1.RefundService/Create".parse().unwrap(),
                Raw,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert_eq!(reason(&e), "INVALID_REQUEST", "{what}");
    }
    assert_eq!(sim.sim.calls("refund"), 0);
}

#[tokio::test]
async fn calls_abandoned_when_the_shutdown_grace_ends_get_an_answer() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("paygate.db").display());
    let mut gw = common::process::spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &[],
        std::process::Stdio::inherit(),
    );
    let c = gw.client().await;
    // A refund that hangs at Antom longer than the shutdown grace (1 s in process tests).
    sim.sim
        .inject(Fault::on("refund", FaultKind::Latency { ms: 10_000 }));
    let call = refund_held_at_provider(&sim, c, "grace-1", Duration::from_secs(20)).await;
    let start = std::time::Instant::now();
    gw.sigterm_and_wait();
    let e = call.await.unwrap().unwrap_err();
    println!(
        "abandoned at the end of the grace: {:?} {} after {} ms",
        e.code(),
        reason(&e),
        start.elapsed().as_millis()
    );
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(reason(&e), "SHUTTING_DOWN");
    assert!(retry_delay(&e).is_some(), "RetryInfo");
}
