//! The caller's deadline is honoured end to end and expiry answers DEADLINE_EXCEEDED.

mod common;

use std::time::{Duration, Instant};

use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use tonic::Code;

#[tokio::test]
async fn a_slow_provider_ends_in_deadline_exceeded_not_cancelled() {
    let mut env = start().await;
    env.sim()
        .inject(Fault::on("refund", FaultKind::Latency { ms: 3_000 }));
    let started = Instant::now();
    let e = env
        .refunds
        .create(with_timeout(
            refund_req("d-1", "PAY_USD_100", 100),
            Duration::from_millis(400),
        ))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(
        reason(&e),
        "OUTCOME_UNKNOWN",
        "the refund may have executed"
    );
    assert_eq!(
        retry_delay(&e),
        None,
        "DEADLINE_EXCEEDED is never retried automatically"
    );
    assert!(
        took < Duration::from_millis(2_000),
        "answered after {took:?}"
    );

    // The simulator finished the refund after the caller gave up; the retry finds it.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let r = env
        .refunds
        .create(refund_req("d-1", "PAY_USD_100", 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

#[tokio::test]
async fn reads_too() {
    let mut env = start().await;
    env.sim()
        .inject(Fault::on("inquiryRefund", FaultKind::Latency { ms: 2_000 }));
    let e = env
        .refunds
        .inquire(with_timeout(
            pb::InquireRefundRequest {
                request_id: "x".into(),
                ..Default::default()
            },
            Duration::from_millis(300),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn the_account_timeout_caps_each_attempt_and_the_deadline_allows_resends() {
    let mut env = start_with(Options {
        attempt_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    // The first attempt times out (unknown outcome); the resend answers.
    env.sim()
        .inject(Fault::on("refund", FaultKind::Latency { ms: 1_000 }));
    let r = env
        .refunds
        .create(with_timeout(
            refund_req("d-2", "PAY_USD_100", 100),
            Duration::from_secs(5),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert_eq!(env.sim().calls("refund"), 2);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(env.sim().stats().refunds_executed, 1);
}
