//! Subscription Cancel end to end.

mod common;

use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use tonic::Code;

fn cancel(
    request_id: &str,
    sub: &str,
    kind: pb::CancellationType,
) -> pb::CancelSubscriptionRequest {
    pb::CancelSubscriptionRequest {
        request_id: request_id.into(),
        subscription_id: sub.into(),
        cancellation_type: kind as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn cancel_and_terminate() {
    let mut env = start().await;
    let r = env
        .subscriptions
        .cancel(cancel("c-1", "SUB_1", pb::CancellationType::Cancel))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::CancellationStatus::Accepted);
    assert_eq!(r.cancellation_type(), pb::CancellationType::Cancel);
    assert_eq!(r.subscription_id, "SUB_1");
    assert_eq!(r.provider_result.unwrap().code, "SUCCESS");
    assert_eq!(
        env.sim().subscription_status("SUB_1").as_deref(),
        Some("CANCELLED")
    );

    // By the merchant's subscription request id, stopping at once.
    let r = env
        .subscriptions
        .cancel(pb::CancelSubscriptionRequest {
            request_id: "c-2".into(),
            subscription_request_id: "SUBREQ_2".into(),
            cancellation_type: pb::CancellationType::Terminate as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.subscription_request_id, "SUBREQ_2");
    assert_eq!(
        env.sim().subscription_status("SUB_2").as_deref(),
        Some("TERMINATED")
    );
}

#[tokio::test]
async fn unknown_subscription_is_not_found() {
    let mut env = start().await;
    let e = env
        .subscriptions
        .cancel(cancel("c-3", "SUB_NOPE", pb::CancellationType::Cancel))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(reason(&e), "SUBSCRIPTION_NOT_EXIST");
}

#[tokio::test]
async fn a_lost_cancel_answer_is_settled_by_resending() {
    use paygate::sim::antom::{Fault, FaultKind};
    let mut env = start().await;
    env.sim().inject(Fault::on("cancel", FaultKind::LoseAnswer));
    let r = env
        .subscriptions
        .cancel(cancel("c-4", "SUB_4", pb::CancellationType::Terminate))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::CancellationStatus::Accepted);
    assert_eq!(env.sim().calls("cancel"), 2);
    assert_eq!(
        env.sim().subscription_status("SUB_4").as_deref(),
        Some("TERMINATED")
    );
}
