//! The event feed is complete: every change of a refund's or a subscription's state the
//! gateway learns or causes is one event, whatever its source (a Create's or Cancel's answer,
//! an Inquire that found a new state), and a replay or a repeated Inquire adds none. Watch
//! filters by kind.

mod common;

use common::*;
use paygate::pb;
use paygate::pb::event_service_client::EventServiceClient;

/// Every event after `after` of `kinds` (empty: all), until the stream is quiet.
async fn events(env: &Env, after: &str, kinds: &[pb::EventKind]) -> Vec<pb::Event> {
    let req = pb::WatchEventsRequest {
        after_cursor: after.into(),
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        ..Default::default()
    };
    watch_until_quiet(&env.channel, req).await
}

fn refund(e: &pb::Event) -> &pb::Refund {
    match e.payload.as_ref() {
        Some(pb::event::Payload::Refund(r)) => r,
        other => panic!("not a refund event: {other:?}"),
    }
}

#[tokio::test]
async fn every_state_change_is_one_event_whatever_its_source() {
    let env = start().await;
    let mut refunds = env.refunds.clone();

    // Answered SUCCEEDED at once: one event, from the answer; the replay adds none.
    let now = refunds
        .create(refund_req("feed-now", "PAY_USD_100", 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.status(), pb::RefundStatus::Succeeded);
    refunds
        .create(refund_req("feed-now", "PAY_USD_100", 100))
        .await
        .unwrap();
    let got = events(&env, "", &[]).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].source(), pb::EventSource::ProviderAnswer);
    assert_eq!(got[0].provider_event_type, "");
    assert_eq!(got[0].event_id, "antom/main/refund/feed-now/SUCCEEDED");
    assert_eq!(refund(&got[0]).refund_id, now.refund_id);
    assert_eq!(refund(&got[0]).status(), pb::RefundStatus::Succeeded);
    let cursor = got[0].cursor.clone();

    // Answered PROCESSING: an event; the provider settles it without a notification, and the
    // Inquire that finds it is the next event; a second Inquire adds none.
    let later = refunds
        .create(pb::CreateRefundRequest {
            amount: money("EUR", 300),
            ..refund_req("feed-later", "PAY_ASYNC", 300)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(later.status(), pb::RefundStatus::Processing);
    let sim_id = env.sim().refunds_of("PAY_ASYNC")[0].refund_id.clone();
    assert!(env.sim().settle_refund(&sim_id, true));
    for _ in 0..2 {
        let inquired = refunds
            .inquire(pb::InquireRefundRequest {
                request_id: "feed-later".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(inquired.status(), pb::RefundStatus::Succeeded);
    }
    let got = events(&env, &cursor, &[]).await;
    let seen: Vec<_> = got
        .iter()
        .map(|e| (e.source(), refund(e).status()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                pb::EventSource::ProviderAnswer,
                pb::RefundStatus::Processing
            ),
            (pb::EventSource::Inquiry, pb::RefundStatus::Succeeded),
        ],
        "{got:?}"
    );
    assert_eq!(refund(&got[1]).refund_id, sim_id);

    // A cancel's answer: one subscription event; its replay adds none.
    let mut subs = env.subscriptions.clone();
    for _ in 0..2 {
        subs.cancel(pb::CancelSubscriptionRequest {
            request_id: "feed-cancel".into(),
            subscription_id: "SUB_1".into(),
            cancellation_type: pb::CancellationType::Cancel as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let got = events(&env, "", &[pb::EventKind::Subscription]).await;
    assert_eq!(got.len(), 1, "only the subscription's: {got:?}");
    assert_eq!(got[0].source(), pb::EventSource::ProviderAnswer);
    match got[0].payload.as_ref() {
        Some(pb::event::Payload::Subscription(s)) => {
            assert_eq!(s.subscription_id, "SUB_1");
            assert_eq!(s.cancellation_status(), pb::CancellationStatus::Accepted);
        }
        other => panic!("not a subscription event: {other:?}"),
    }
    assert_eq!(events(&env, "", &[pb::EventKind::Refund]).await.len(), 3);
    assert_eq!(events(&env, "", &[]).await.len(), 4);

    // A kind that is not one is refused.
    let err = EventServiceClient::new(env.channel.clone())
        .watch(pb::WatchEventsRequest {
            kinds: vec![pb::EventKind::Unspecified as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
