//! Refund Create and Inquire end to end: tonic client -> paygate -> Antom simulator.

mod common;

use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use tonic::Code;

#[tokio::test]
async fn full_partial_and_multiple_refunds() {
    let mut env = start().await;
    let r = env
        .refunds
        .create(refund_req("r-partial-1", "PAY_USD_100", 2_500))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert!(!r.refund_id.is_empty());
    assert_eq!(r.request_id, "r-partial-1");
    assert_eq!(r.payment_id, "PAY_USD_100");
    assert_eq!(r.amount, money("USD", 2_500));
    assert!(r.refund_time.is_some());
    let pr = r.provider_result.unwrap();
    assert_eq!(
        (pr.provider.as_str(), pr.code.as_str(), pr.status.as_str()),
        ("antom", "SUCCESS", "S")
    );

    let r2 = env
        .refunds
        .create(refund_req("r-partial-2", "PAY_USD_100", 7_500))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r2.status(), pb::RefundStatus::Succeeded);
    assert_ne!(r2.refund_id, r.refund_id);

    // The payment is now fully refunded: one more cent is refused for good.
    let e = env
        .refunds
        .create(refund_req("r-partial-3", "PAY_USD_100", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "REFUND_AMOUNT_EXCEED");
    assert_eq!(retry_delay(&e), None);
    assert_eq!(env.sim().refunds_of("PAY_USD_100").len(), 2);
}

#[tokio::test]
async fn a_repeated_request_id_is_replayed_without_a_provider_call() {
    let mut env = start().await;
    let a = env
        .refunds
        .create(refund_req("r-same", "PAY_USD_100", 1_000))
        .await
        .unwrap();
    assert!(a.metadata().get("idempotent-replayed").is_none());
    let b = env
        .refunds
        .create(refund_req("r-same", "PAY_USD_100", 1_000))
        .await
        .unwrap();
    assert_eq!(b.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(a.into_inner(), b.into_inner());
    assert_eq!(env.sim().calls("refund"), 1);

    // Same request id, other amount: refused by the gateway, nothing sent, stored outcome kept.
    let e = env
        .refunds
        .create(refund_req("r-same", "PAY_USD_100", 2_000))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(env.sim().calls("refund"), 1);
    let c = env
        .refunds
        .create(refund_req("r-same", "PAY_USD_100", 1_000))
        .await
        .unwrap();
    assert_eq!(c.into_inner().amount, money("USD", 1_000));
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

#[tokio::test]
async fn business_refusals_are_failed_precondition_or_not_found() {
    let mut env = start().await;
    let cases = [
        (
            "PAY_OLD",
            "USD",
            100,
            Code::FailedPrecondition,
            "REFUND_WINDOW_EXCEED",
        ),
        (
            "PAY_JPY",
            "USD",
            100,
            Code::FailedPrecondition,
            "CURRENCY_NOT_SUPPORT",
        ),
        (
            "PAY_PENDING",
            "USD",
            100,
            Code::FailedPrecondition,
            "ORDER_STATUS_INVALID",
        ),
        ("PAY_NOPE", "USD", 100, Code::NotFound, "ORDER_NOT_EXIST"),
    ];
    for (i, (payment, currency, value, code, why)) in cases.into_iter().enumerate() {
        let mut req = refund_req(&format!("refusal-{i}"), payment, value);
        req.amount = money(currency, value);
        let e = env.refunds.create(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{payment}: {e:?}");
        assert_eq!(reason(&e), why);
        assert_eq!(
            retry_delay(&e),
            None,
            "a definitive refusal is not retryable"
        );
        use tonic_types::StatusExt;
        let details = e.get_error_details();
        let md = &details.error_info().unwrap().metadata;
        assert_eq!(md["provider"], "antom");
        assert_eq!(md["account"], "main");
        assert_eq!(md["resultCode"], why);
        assert_eq!(md["resultStatus"], "F");
        assert_eq!(md["requestId"], format!("refusal-{i}"));
    }
    // Only one refund per payment for some methods.
    env.refunds
        .create(refund_req("single-1", "PAY_SINGLE", 100))
        .await
        .unwrap();
    let e = env
        .refunds
        .create(refund_req("single-2", "PAY_SINGLE", 100))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "MULTIPLE_REFUNDS_NOT_SUPPORTED");
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

#[tokio::test]
async fn processing_refunds_are_inquired_until_settled() {
    let mut env = start().await;
    let mut req = refund_req("r-async", "PAY_ASYNC", 1_000);
    req.amount = money("EUR", 1_000);
    req.reason = "damaged item".into();
    req.reference_refund_id = "my-ref-1".into();
    let r = env.refunds.create(req).await.unwrap().into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Processing);
    assert_eq!(
        r.provider_result.as_ref().unwrap().code,
        "REFUND_IN_PROCESS"
    );
    assert_eq!(r.reference_refund_id, "my-ref-1");
    assert_eq!(r.account, "main");

    let q = env
        .refunds
        .inquire(pb::InquireRefundRequest {
            request_id: "r-async".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.status(), pb::RefundStatus::Processing);
    assert!(!q.refund_id.is_empty());
    assert!(q.refund_time.is_none());
    // The payment the Create named, which Antom's inquiry does not echo.
    assert_eq!(q.payment_id, "PAY_ASYNC");
    // Antom's PROCESSING answer gives no refund id; once the gateway learned it, a replay of
    // the Create carries it.
    assert!(r.refund_id.is_empty());
    let mut again = refund_req("r-async", "PAY_ASYNC", 1_000);
    again.amount = money("EUR", 1_000);
    again.reason = "damaged item".into();
    again.reference_refund_id = "my-ref-1".into();
    let replay = env.refunds.create(again).await.unwrap().into_inner();
    assert_eq!(replay.status(), pb::RefundStatus::Processing);
    assert_eq!(replay.refund_id, q.refund_id);
    assert_eq!(replay.payment_id, "PAY_ASYNC");

    assert!(env.sim().settle_refund(&q.refund_id, true));
    let done = env
        .refunds
        .inquire(pb::InquireRefundRequest {
            refund_id: q.refund_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), pb::RefundStatus::Succeeded);
    assert_eq!(done.request_id, "r-async");
    assert_eq!(done.payment_id, "PAY_ASYNC");
    assert_eq!(done.account, "main");
    assert_eq!(done.amount, money("EUR", 1_000));
    assert!(done.refund_time.is_some());

    let mut failing = refund_req("r-async-2", "PAY_ASYNC", 500);
    failing.amount = money("EUR", 500);
    env.refunds.create(failing).await.unwrap();
    let id = env.sim().refunds_of("PAY_ASYNC")[1].refund_id.clone();
    env.sim().settle_refund(&id, false);
    let failed = env
        .refunds
        .inquire(pb::InquireRefundRequest {
            request_id: "r-async-2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.status(), pb::RefundStatus::Failed);
}

#[tokio::test]
async fn inquiring_an_unknown_refund_is_not_found() {
    let mut env = start().await;
    let e = env
        .refunds
        .inquire(pb::InquireRefundRequest {
            refund_id: "2026999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(reason(&e), "REFUND_NOT_EXIST");
}
