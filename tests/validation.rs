//! Bad input: every violation at once as INVALID_ARGUMENT + BadRequest, nothing sent to the
//! provider, no panic.

mod common;

use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use tonic::Code;
use tonic_types::StatusExt;

fn fields(e: &tonic::Status) -> Vec<String> {
    let mut f: Vec<String> = e
        .get_error_details()
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    f.sort();
    f
}

#[tokio::test]
async fn all_refund_violations_are_reported_together() {
    let mut env = start().await;
    let e = env
        .refunds
        .create(pb::CreateRefundRequest {
            account: "nope".into(),
            request_id: "has space".into(),
            payment_id: "x".repeat(65),
            amount: Some(pb::Money {
                currency: "usd".into(),
                value: -5,
            }),
            reason: "r".repeat(257),
            reference_refund_id: "tab\there".into(),
            cancel_subscription: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "INVALID_REQUEST");
    assert_eq!(
        fields(&e),
        [
            "account",
            "amount.currency",
            "amount.value",
            "payment_id",
            "reason",
            "reference_refund_id",
            "request_id"
        ]
    );
    assert_eq!(
        env.sim().stats().calls.len(),
        0,
        "nothing reached the provider"
    );
}

#[tokio::test]
async fn edge_cases() {
    let mut env = start().await;
    let mut cases: Vec<(pb::CreateRefundRequest, &[&str])> = Vec::new();
    cases.push((
        pb::CreateRefundRequest::default(),
        &["amount", "payment_id", "request_id"],
    ));
    let ok = refund_req("ok-id", "PAY_USD_100", 100);
    cases.push((
        pb::CreateRefundRequest {
            request_id: "a".repeat(65),
            ..ok.clone()
        },
        &["request_id"],
    ));
    cases.push((
        pb::CreateRefundRequest {
            amount: money("XYZ", 100),
            ..ok.clone()
        },
        &["amount.currency"],
    ));
    cases.push((
        pb::CreateRefundRequest {
            amount: money("US", 100),
            ..ok.clone()
        },
        &["amount.currency"],
    ));
    cases.push((
        pb::CreateRefundRequest {
            amount: money("USD", 0),
            ..ok.clone()
        },
        &["amount.value"],
    ));
    cases.push((
        pb::CreateRefundRequest {
            amount: money("IDR", 150),
            ..ok.clone()
        },
        &["amount.value"],
    ));
    cases.push((
        pb::CreateRefundRequest {
            payment_id: "pay\u{e9}".into(),
            ..ok.clone()
        },
        &["payment_id"],
    ));
    cases.push((
        pb::CreateRefundRequest {
            reason: "line\nbreak".into(),
            ..ok.clone()
        },
        &["reason"],
    ));
    for (req, want) in cases {
        let e = env.refunds.create(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert_eq!(fields(&e), want, "{req:?}");
    }
    // 256 characters of non-ASCII text is a valid reason.
    let r = env
        .refunds
        .create(pb::CreateRefundRequest {
            reason: "\u{fc}".repeat(256),
            ..ok
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);
    assert_eq!(env.sim().calls("refund"), 1);
}

#[tokio::test]
async fn cancel_and_inquire_violations() {
    let mut env = start().await;
    let e = env
        .subscriptions
        .cancel(pb::CancelSubscriptionRequest {
            cancellation_type: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        fields(&e),
        ["cancellation_type", "request_id", "subscription_id"]
    );
    let e = env
        .subscriptions
        .cancel(pb::CancelSubscriptionRequest {
            request_id: "c".into(),
            subscription_id: "S".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&e), ["cancellation_type"]);
    let e = env
        .refunds
        .inquire(pb::InquireRefundRequest::default())
        .await
        .unwrap_err();
    assert_eq!(fields(&e), ["refund_id"]);
    assert_eq!(env.sim().stats().calls.len(), 0);
}
