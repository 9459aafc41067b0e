//! Every provider answer is bound to the request it answers, through the binary. A validly
//! signed Antom answer about another refund (another request, another payment, another
//! amount), an inquiry answered with another refund, and a PayXpert answer naming a refund of
//! another sale are never a success: the outcome is unknown, the anomaly is counted in
//! `paygate_answer_mismatches_total`, and the provider's own rule settles the key (Antom: the
//! identical request again; PayXpert: its export after the quiet period).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{
    GatewayProcess, PX_ORIGINATOR, PX_PASSWORD, free_port, spawn_gateway_with,
    spawn_payxpert_gateway,
};
use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind, Payment, PaymentStatus, SimServer};
use paygate::sim::payxpert::PayXpertSim;
use serde_json::json;

/// A signed success of another refund, as Antom would answer it to that refund's request.
fn answer_of_another_refund(request_id: &str, payment_id: &str, value: i64) -> Vec<u8> {
    json!({
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
        "refundId": "2026OTHERREFUND000001",
        "refundRequestId": request_id,
        "paymentId": payment_id,
        "refundAmount": {"currency": "USD", "value": value.to_string()},
        "refundTime": "2026-12-01T10:00:00Z",
    })
    .to_string()
    .into_bytes()
}

fn substituted(body: Vec<u8>) -> Fault {
    // Every resend of the gateway meets the same substituted answer.
    Fault::on(
        "refund",
        FaultKind::Raw {
            body,
            sign: true,
            headers: vec![],
        },
    )
    .times(50)
}

/// A gateway process on `sim`, and its metrics port.
fn antom_gateway(sim: &SimServer, dir: &std::path::Path) -> (GatewayProcess, u16) {
    let metrics = free_port();
    let store = format!("sqlite://{}", dir.join("p.db").display());
    let env = [("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}"))];
    let gw = spawn_gateway_with(dir, &sim.base_url(), &store, &env, Stdio::inherit());
    (gw, metrics)
}

fn mismatches(scrape: &str, provider: &str) -> f64 {
    metric_value(
        scrape,
        "paygate_answer_mismatches_total",
        &[("provider", provider)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_signed_antom_answer_about_another_refund_is_never_ok() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, metrics) = antom_gateway(&sim, dir.path());
    let client = gw.client().await;
    assert_eq!(mismatches(&scrape(metrics).await, "antom"), 0.0);
    let cases = [
        // Another request, another payment, USD 43.21 for a request of 1.00.
        (
            "bind-1",
            answer_of_another_refund("other-req", "PAY_OTHER", 4321),
        ),
        // This request's id, another payment.
        (
            "bind-2",
            answer_of_another_refund("bind-2", "PAY_OTHER", 100),
        ),
        // This request and payment, 100 times the amount.
        (
            "bind-3",
            answer_of_another_refund("bind-3", "PAY_BIND_3", 10_000),
        ),
    ];
    for (i, (id, body)) in cases.into_iter().enumerate() {
        let payment = format!("PAY_BIND_{}", i + 1);
        sim.sim.add_payment(Payment {
            payment_id: payment.clone(),
            currency: "USD".into(),
            amount: 10_000,
            status: PaymentStatus::Success,
            paid_days_ago: 1,
            multiple_refunds: true,
            async_refunds: false,
        });
        sim.sim.clear_faults();
        sim.sim.inject(substituted(body));
        let got = client
            .clone()
            .create(with_timeout(
                refund_req(id, &payment, 100),
                Duration::from_secs(2),
            ))
            .await;
        let e = got.expect_err("an answer about another refund answered OK");
        assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{e:?}");
        assert!(
            mismatches(&scrape(metrics).await, "antom") >= (i + 1) as f64,
            "the mismatch is not counted"
        );
        // Nothing was refunded for this request; the provider's own rule (the identical
        // request again) settles it once the provider answers truly.
        assert!(sim.sim.refunds_of(&payment).is_empty());
        sim.sim.clear_faults();
        let r = client
            .clone()
            .create(refund_req(id, &payment, 100))
            .await
            .unwrap()
            .into_inner();
        let executed = sim.sim.refunds_of(&payment);
        assert_eq!(executed.len(), 1, "{executed:?}");
        assert_eq!(r.refund_id, executed[0].refund_id);
        assert_eq!(r.amount, money("USD", 100));
        assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    }
}

#[tokio::test]
async fn an_antom_inquiry_answered_with_another_refund_is_never_ok() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, metrics) = antom_gateway(&sim, dir.path());
    let mut client = gw.client().await;
    let a = client
        .create(refund_req("inq-a", "PAY_USD_100", 100))
        .await
        .unwrap()
        .into_inner();
    let b = client
        .create(refund_req("inq-b", "PAY_USD_100", 200))
        .await
        .unwrap()
        .into_inner();
    let other = json!({
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
        "refundId": b.refund_id,
        "refundRequestId": "inq-b",
        "refundAmount": {"currency": "USD", "value": "200"},
        "refundStatus": "SUCCESS",
        "refundTime": "2026-12-01T10:00:00Z",
    });
    for (query, what) in [
        (
            pb::InquireRefundRequest {
                request_id: "inq-a".into(),
                ..Default::default()
            },
            "by request id",
        ),
        (
            pb::InquireRefundRequest {
                refund_id: a.refund_id.clone(),
                ..Default::default()
            },
            "by refund id",
        ),
    ] {
        sim.sim.clear_faults();
        sim.sim.inject(
            Fault::on(
                "inquiryRefund",
                FaultKind::Raw {
                    body: other.to_string().into_bytes(),
                    sign: true,
                    headers: vec![],
                },
            )
            .times(50),
        );
        let got = client
            .inquire(with_timeout(query.clone(), Duration::from_secs(2)))
            .await;
        let e = got.expect_err(&format!("Inquire {what} answered another refund"));
        assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{e:?}");
        sim.sim.clear_faults();
        let r = client.inquire(query).await.unwrap().into_inner();
        assert_eq!(r.refund_id, a.refund_id, "{what}");
        assert_eq!(r.request_id, "inq-a", "{what}");
    }
    assert!(mismatches(&scrape(metrics).await, "antom") >= 2.0);
    // What Create answered stays what it was.
    let replay = client
        .create(refund_req("inq-a", "PAY_USD_100", 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.refund_id, a.refund_id);
}

#[tokio::test]
async fn a_payxpert_answer_naming_a_refund_of_another_sale_is_never_ok() {
    let sim = PayXpertSim::new(PX_ORIGINATOR, PX_PASSWORD);
    for sale in ["7001", "7002", "7003"] {
        sim.add_sale(sale, 10_000, "EUR", None);
    }
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let store = format!("sqlite://{}", dir.path().join("px.db").display());
    let quiet = Duration::from_millis(2_500);
    let gw = spawn_payxpert_gateway(
        dir.path(),
        &sim.base_url(),
        &store,
        Duration::from_millis(1_000),
        quiet,
        &[("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}"))],
    );
    let client = gw.client().await;
    let req = |id: &str, payment: &str, value: i64| pb::CreateRefundRequest {
        request_id: id.into(),
        payment_id: payment.into(),
        amount: money("EUR", value),
        ..Default::default()
    };
    // A real refund of the other sale, whose transaction id the substituted answer names.
    let other = client
        .clone()
        .create(req("px-other", "7002", 300))
        .await
        .unwrap()
        .into_inner();
    for (id, sale, body) in [
        // A refund of another sale.
        (
            "px-bind-1",
            "7001",
            json!({"transactionID": other.refund_id, "errorCode": "000",
                   "errorMessage": "Transaction successfully completed"}),
        ),
        // The sale itself, not a refund of it.
        (
            "px-bind-2",
            "7003",
            json!({"transactionID": "7003", "errorCode": "000",
                   "errorMessage": "Transaction successfully completed"}),
        ),
    ] {
        sim.sim.inject(Fault::on(
            "refund",
            FaultKind::StatusWithBody {
                status: 200,
                body: body.to_string(),
            },
        ));
        let e = client
            .clone()
            .create(with_timeout(req(id, sale, 500), Duration::from_secs(3)))
            .await
            .expect_err("an answer naming another sale's refund answered OK");
        assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{e:?}");
        assert!(sim.sim.refunds_of(sale).is_empty());
        // The retry settles it by PayXpert's rule: nothing of this payment is in the export
        // after the quiet period, so the refund is sent, once.
        let end = Instant::now() + Duration::from_secs(15);
        let r = loop {
            match client
                .clone()
                .create(with_timeout(req(id, sale, 500), Duration::from_secs(3)))
                .await
            {
                Ok(r) => break r.into_inner(),
                Err(e) => match retry_delay(&e) {
                    Some(d) if Instant::now() + d < end => tokio::time::sleep(d).await,
                    _ => panic!("{id} did not settle: {e:?}"),
                },
            }
        };
        let executed = sim.sim.refunds_of(sale);
        assert_eq!(executed.len(), 1, "{executed:?}");
        assert_eq!(r.refund_id, executed[0].transaction_id);
        assert_ne!(r.refund_id, other.refund_id);
    }
    assert!(mismatches(&scrape(metrics).await, "payxpert") >= 2.0);
}
