//! Every row of Antom's code table, driven through the simulator over real TCP, plus the
//! transport rows (HTTP 5xx, 429, lost answers, unknown codes by status).

mod common;

use std::time::Duration;

use common::*;
use paygate::error::{provider_code, refusal_code};
use paygate::pb;
use paygate::providers::antom::codes::{self, Meaning};
use paygate::providers::{Disposition, NotExecuted};
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use tonic::Code;
use tonic_types::StatusExt;

fn injected(code: &str, status: &str, times: u32) -> Fault {
    Fault::on(
        "refund",
        FaultKind::Result {
            code: code.into(),
            status: status.into(),
        },
    )
    .times(times)
}

#[tokio::test]
async fn every_table_row_maps_as_documented() {
    let mut env = start().await;
    for (i, (code, meaning)) in codes::TABLE.iter().enumerate() {
        env.sim().clear_faults();
        // Unknown outcomes are resent to settle them, so the fault must outlast the retries.
        env.sim().inject(injected(code, "F", 10));
        let rid = format!("row-{i}");
        let got = env
            .refunds
            .create(refund_req(&rid, "PAY_USD_100", 100))
            .await;
        match meaning {
            Meaning::Success => {
                assert_eq!(
                    got.unwrap().into_inner().status(),
                    pb::RefundStatus::Succeeded,
                    "{code}"
                );
            }
            Meaning::Processing => {
                assert_eq!(
                    got.unwrap().into_inner().status(),
                    pb::RefundStatus::Processing,
                    "{code}"
                );
            }
            Meaning::Definitive(refusal) => {
                let e = got.unwrap_err();
                assert_eq!(e.code(), refusal_code(*refusal), "{code}");
                assert_eq!(reason(&e), *code);
                assert_eq!(retry_delay(&e), None, "{code}");
                assert!(e.metadata().get("grpc-retry-pushback-ms").is_none());
            }
            Meaning::Retryable(why, after) => {
                let e = got.unwrap_err();
                let d = Disposition::Retryable {
                    why: *why,
                    after: *after,
                };
                assert_eq!(e.code(), provider_code(&d), "{code}");
                assert_eq!(reason(&e), *code);
                assert_eq!(retry_delay(&e), Some(*after), "{code}");
                assert_eq!(
                    e.metadata().get("grpc-retry-pushback-ms").unwrap(),
                    after.as_millis().to_string().as_str()
                );
                if *why == NotExecuted::Throttled {
                    // The provider throttled the account: it backs off for that long.
                    tokio::time::sleep(*after).await;
                }
            }
            Meaning::Misconfigured => {
                let e = got.unwrap_err();
                assert_eq!(e.code(), Code::Internal, "{code}");
                assert_eq!(reason(&e), *code);
                assert_eq!(retry_delay(&e), None, "{code}");
            }
            Meaning::Unknown => {
                let e = got.unwrap_err();
                assert_eq!(e.code(), Code::Unavailable, "{code}");
                assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
                assert_eq!(retry_delay(&e), Some(Duration::from_secs(1)));
                let d = e.get_error_details();
                assert_eq!(d.error_info().unwrap().metadata["resultCode"], *code);
            }
        }
        assert_eq!(
            env.sim().stats().refunds_executed,
            0,
            "injected answers never execute a refund"
        );
    }
}

#[tokio::test]
async fn unknown_codes_are_classified_by_status() {
    let mut env = start().await;
    env.sim().inject(injected("BRAND_NEW_REFUSAL", "F", 1));
    let e = env
        .refunds
        .create(refund_req("n-1", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "BRAND_NEW_REFUSAL");

    env.sim().inject(injected("BRAND_NEW_OK", "S", 1));
    let r = env
        .refunds
        .create(refund_req("n-2", "PAY_USD_100", 100))
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);

    env.sim().inject(injected("BRAND_NEW_MAYBE", "U", 10));
    let e = env
        .refunds
        .create(refund_req("n-3", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
}

#[tokio::test]
async fn a_transient_unknown_is_settled_inside_the_call() {
    let mut env = start().await;
    // One U answer, then one lost answer after executing, then the real answer.
    env.sim().inject(injected("UNKNOWN_EXCEPTION", "U", 1));
    env.sim().inject(Fault::on("refund", FaultKind::LoseAnswer));
    let r = env
        .refunds
        .create(refund_req("settle-1", "PAY_USD_100", 300))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert_eq!(env.sim().calls("refund"), 3);
    assert_eq!(
        env.sim().stats().refunds_executed,
        1,
        "the repeat was deduplicated"
    );
    assert_eq!(
        env.sim().refunds_of("PAY_USD_100")[0].refund_id,
        r.refund_id
    );
}

#[tokio::test]
async fn persistent_5xx_is_unavailable_with_retry_info_and_never_double_refunds() {
    let mut env = start().await;
    env.sim()
        .inject(Fault::on("refund", FaultKind::HttpStatus { status: 503 }).times(10));
    let e = env
        .refunds
        .create(refund_req("h-1", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    assert_eq!(retry_delay(&e), Some(Duration::from_secs(1)));
    assert_eq!(e.metadata().get("grpc-retry-pushback-ms").unwrap(), "1000");
    assert_eq!(env.sim().calls("refund"), 4, "first call and three resends");
    env.sim().clear_faults();
    // The caller retries as told: exactly one refund.
    let r = env
        .refunds
        .create(refund_req("h-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

#[tokio::test]
async fn http_429_is_resource_exhausted_with_retry_info() {
    let mut env = start().await;
    env.sim()
        .inject(Fault::on("refund", FaultKind::HttpStatus { status: 429 }));
    let e = env
        .refunds
        .create(refund_req("q-1", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(reason(&e), "PROVIDER_RATE_LIMITED");
    assert!(retry_delay(&e).is_some());
    assert_eq!(env.sim().stats().refunds_executed, 0);
}

#[tokio::test]
async fn inquiry_and_cancel_use_the_same_table() {
    let mut env = start().await;
    env.sim().inject(Fault::on(
        "inquiryRefund",
        FaultKind::Result {
            code: "ACCESS_DENIED".into(),
            status: "F".into(),
        },
    ));
    let e = env
        .refunds
        .inquire(pb::InquireRefundRequest {
            request_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason(&e), "ACCESS_DENIED");

    env.sim().inject(Fault::on(
        "cancel",
        FaultKind::Result {
            code: "PROCESS_FAIL".into(),
            status: "F".into(),
        },
    ));
    let e = env
        .subscriptions
        .cancel(pb::CancelSubscriptionRequest {
            request_id: "c".into(),
            subscription_id: "SUB_1".into(),
            cancellation_type: pb::CancellationType::Cancel as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "PROCESS_FAIL");
    assert_eq!(
        env.sim().subscription_status("SUB_1").as_deref(),
        Some("ACTIVE")
    );
}
