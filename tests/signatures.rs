//! Signature failures both ways: requests the provider cannot verify, and answers the gateway
//! cannot verify. An unverifiable answer is never a success.

mod common;

use std::time::Duration;

use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use tonic::Code;

#[tokio::test]
async fn a_request_signed_with_the_wrong_key_is_internal_and_executes_nothing() {
    let mut env = start_with(Options {
        merchant_key: stranger_pem(),
        ..Default::default()
    })
    .await;
    let e = env
        .refunds
        .create(refund_req("s-1", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(reason(&e), "INVALID_SIGNATURE");
    assert_eq!(retry_delay(&e), None);
    let st = env.sim().stats();
    assert_eq!(st.rejected_signatures, 1);
    assert_eq!(st.refunds_executed, 0);
}

#[tokio::test]
async fn answers_signed_by_an_untrusted_key_are_never_success() {
    let mut env = start_with(Options {
        trusted_antom_key: stranger_pem(),
        ..Default::default()
    })
    .await;
    let e = env
        .refunds
        .create(refund_req("s-2", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    assert_eq!(retry_delay(&e), Some(Duration::from_secs(1)));
    // The refund did execute at the provider, once, however many times it was resent.
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

#[tokio::test]
async fn bad_missing_or_malformed_answers_are_unknown_until_a_good_one_arrives() {
    let mut env = start().await;
    for (i, kind) in [
        FaultKind::BadSignature,
        FaultKind::NoSignature,
        FaultKind::MalformedBody,
    ]
    .into_iter()
    .enumerate()
    {
        env.sim().clear_faults();
        env.sim()
            .inject(Fault::on("refund", kind.clone()).times(10));
        let rid = format!("s-bad-{i}");
        let e = env
            .refunds
            .create(refund_req(&rid, "PAY_USD_100", 100))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{kind:?}");
        assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{kind:?}");
        // Once answers verify again, the same request id yields the one refund made.
        env.sim().clear_faults();
        let r = env
            .refunds
            .create(refund_req(&rid, "PAY_USD_100", 100))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    }
    assert_eq!(env.sim().stats().refunds_executed, 3);
    assert_eq!(env.sim().refunds_of("PAY_USD_100").len(), 3);
}

#[tokio::test]
async fn a_single_bad_answer_is_settled_by_the_resend() {
    let mut env = start().await;
    env.sim()
        .inject(Fault::on("refund", FaultKind::BadSignature));
    let r = env
        .refunds
        .create(refund_req("s-3", "PAY_USD_100", 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert_eq!(env.sim().calls("refund"), 2);
    assert_eq!(env.sim().stats().refunds_executed, 1);
}
