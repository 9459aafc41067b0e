//! A store outage answers at once, through the binary: with its PostgreSQL killed, every RPC
//! that sent nothing answers UNAVAILABLE `STORE_UNAVAILABLE` with RetryInfo within a second,
//! whatever the caller's deadline, and nothing reaches the provider.

mod common;

use std::time::{Duration, Instant};

use common::process::{OwnPostgres, spawn_gateway_with};
use common::*;
use paygate::pb;
use paygate::pb::event_service_client::EventServiceClient;
use paygate::pb::subscription_service_client::SubscriptionServiceClient;
use paygate::sim::Simulator as _;
use tonic::Code;

fn with_deadline<T>(msg: T, d: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(d);
    r
}

fn assert_store_unavailable(what: &str, e: &tonic::Status, took: Duration) {
    println!(
        "{what}: {:?} {} after {} ms",
        e.code(),
        reason(e),
        took.as_millis()
    );
    assert_eq!(e.code(), Code::Unavailable, "{what}: {e:?}");
    assert_eq!(reason(e), "STORE_UNAVAILABLE", "{what}");
    assert!(retry_delay(e).is_some(), "{what}: RetryInfo");
    assert!(took < Duration::from_secs(1), "{what} took {took:?}");
}

#[tokio::test]
async fn with_postgres_down_every_call_answers_store_unavailable_at_once() {
    let pg = OwnPostgres::start();
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &pg.url,
        &[],
        std::process::Stdio::inherit(),
    );
    let mut refunds = gw.client().await;
    refunds
        .create(refund_req("up-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    pg.kill();
    let calls = sim.sim.calls("refund");

    for deadline in [Duration::from_secs(2), Duration::from_secs(5)] {
        let start = Instant::now();
        let e = refunds
            .create(with_deadline(
                refund_req(&format!("down-{}", deadline.as_secs()), "PAY_USD_100", 100),
                deadline,
            ))
            .await
            .unwrap_err();
        assert_store_unavailable(
            &format!("Create, {deadline:?} deadline"),
            &e,
            start.elapsed(),
        );
    }
    let start = Instant::now();
    let e = refunds
        .create(with_deadline(
            refund_req("up-1", "PAY_USD_100", 100),
            Duration::from_secs(5),
        ))
        .await;
    // A replay this process has cached needs no store; otherwise the store is unavailable.
    if let Err(e) = e {
        assert_store_unavailable("Create replay", &e, start.elapsed());
    }
    let mut subs = SubscriptionServiceClient::connect(gw.url()).await.unwrap();
    let start = Instant::now();
    let e = subs
        .cancel(with_deadline(
            pb::CancelSubscriptionRequest {
                request_id: "down-cancel".into(),
                subscription_id: "SUB_1".into(),
                cancellation_type: pb::CancellationType::Cancel as i32,
                ..Default::default()
            },
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert_store_unavailable("Cancel", &e, start.elapsed());
    let start = Instant::now();
    let e = subs
        .get(with_deadline(
            pb::GetSubscriptionRequest {
                subscription_id: "SUB_1".into(),
                ..Default::default()
            },
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert_store_unavailable("Get", &e, start.elapsed());
    let start = Instant::now();
    let e = EventServiceClient::connect(gw.url())
        .await
        .unwrap()
        .watch(with_deadline(
            pb::WatchEventsRequest::default(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert_store_unavailable("Watch", &e, start.elapsed());
    assert_eq!(sim.sim.calls("refund"), calls, "nothing was sent");
    assert_eq!(sim.sim.calls("cancel"), 0, "nothing was sent");
}
