//! Callers sharing an account, through the binary: a request id belongs to the caller that
//! used it first (Antom would otherwise hand one caller's refund to another), and a caller
//! reads only its own refunds unless its policy says `read_others`.

mod common;

use std::time::Duration;

use common::process::{spawn_configured, write_keys};
use common::*;
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use tonic::Code;

#[tokio::test]
async fn request_ids_and_reads_belong_to_their_caller() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let tokens: String = ["alpha", "beta", "support"]
        .iter()
        .map(|c| format!("{c} {}\n", paygate::auth::hash_token(&format!("{c}-token"))))
        .collect();
    std::fs::write(dir.path().join("tokens"), tokens).unwrap();
    let config = dir.path().join("paygate.toml");
    std::fs::write(
        &config,
        "[callers.alpha]\n\
         methods = [\"RefundService.Create\", \"RefundService.Inquire\"]\n\
         [callers.beta]\n\
         methods = [\"RefundService.Create\", \"RefundService.Inquire\"]\n\
         [callers.support]\n\
         methods = [\"RefundService.Inquire\"]\n\
         read_others = true\n",
    )
    .unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let store = format!("sqlite://{}", d("paygate.db"));
    let gw = spawn_configured(
        &config,
        &store,
        &[
            ("PAYGATE_ANTOM_BASE_URL", sim.base_url()),
            ("PAYGATE_ANTOM_CLIENT_ID", CLIENT_ID.to_string()),
            ("PAYGATE_ANTOM_PRIVATE_KEY_FILE", d("merchant.pem")),
            ("PAYGATE_ANTOM_PUBLIC_KEY_FILE", d("antom_public.pem")),
            ("PAYGATE_AUTH_TOKENS_FILE", d("tokens")),
        ],
    );
    gw.client().await;
    let c = RefundServiceClient::connect(gw.url()).await.unwrap();
    let t = Duration::from_secs(5);
    let create = |caller: &str, value: i64| {
        authed(
            refund_req("shared-1", "PAY_USD_100", value),
            &format!("{caller}-token"),
            t,
        )
    };
    let inquire =
        |caller: &str, q: pb::InquireRefundRequest| authed(q, &format!("{caller}-token"), t);
    let by_request = || pb::InquireRefundRequest {
        request_id: "shared-1".into(),
        ..Default::default()
    };

    let a = c
        .clone()
        .create(create("alpha", 100))
        .await
        .unwrap()
        .into_inner();
    // Beta with alpha's request id, the same or other fields: refused, never sent.
    for value in [100, 999] {
        let e = c.clone().create(create("beta", value)).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        assert_eq!(reason(&e), "REQUEST_ID_CLAIMED");
    }
    assert_eq!(sim.sim.calls("refund"), 1);
    // Beta cannot read alpha's refund; alpha and support can.
    let by_id = || pb::InquireRefundRequest {
        refund_id: a.refund_id.clone(),
        ..Default::default()
    };
    for q in [by_request(), by_id()] {
        let e = c
            .clone()
            .inquire(inquire("beta", q.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(reason(&e), "REFUND_NOT_RECORDED");
        assert_eq!(
            c.clone()
                .inquire(inquire("alpha", q.clone()))
                .await
                .unwrap()
                .into_inner()
                .refund_id,
            a.refund_id
        );
        assert_eq!(
            c.clone()
                .inquire(inquire("support", q))
                .await
                .unwrap()
                .into_inner()
                .refund_id,
            a.refund_id
        );
    }
    // Alpha's retry replays.
    let again = c.clone().create(create("alpha", 100)).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(sim.sim.stats().refunds_executed, 1);
}
