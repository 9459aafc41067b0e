//! Readiness says whether the gateway can do its job, through the binary: while its store
//! takes no writes (another process holds SQLite's write lock), readiness (gRPC health of
//! `paygate.v1.RefundService`) turns NOT_SERVING, and SERVING again once writes go through;
//! one slow moment does not make it flap. Liveness ("") stays SERVING throughout.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::spawn_gateway_with;
use common::*;
use sqlx::Connection;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    });
    req.set_timeout(Duration::from_millis(500));
    client
        .check(req)
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown)
}

/// Readiness's status over `span`, every 100 ms.
async fn watch(
    client: &mut HealthClient<tonic::transport::Channel>,
    span: Duration,
) -> Vec<ServingStatus> {
    let end = Instant::now() + span;
    let mut seen = Vec::new();
    while Instant::now() < end {
        seen.push(status(client, "paygate.v1.RefundService").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_whether_the_store_takes_writes() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let gw = spawn_gateway_with(dir.path(), &sim.base_url(), &store, &[], Stdio::inherit());
    gw.client().await;
    let channel = tonic::transport::Channel::from_shared(gw.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    assert_eq!(
        status(&mut health, "paygate.v1.RefundService").await,
        ServingStatus::Serving
    );

    // One slow moment (a write held up for 0.8 s): readiness does not flap.
    let mut blocker = sqlx::SqliteConnection::connect(&store).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let seen = watch(&mut health, Duration::from_millis(800)).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let seen_after = watch(&mut health, Duration::from_millis(1500)).await;
    assert!(
        seen.iter()
            .chain(&seen_after)
            .all(|s| *s == ServingStatus::Serving),
        "flapped: {seen:?} {seen_after:?}"
    );

    // The store takes no writes for good: NOT_SERVING within a few heartbeats.
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let seen = watch(&mut health, Duration::from_secs(6)).await;
    assert_eq!(
        seen.last(),
        Some(&ServingStatus::NotServing),
        "still ready while the store takes no writes: {seen:?}"
    );
    assert_eq!(
        status(&mut health, "").await,
        ServingStatus::Serving,
        "liveness"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    drop(blocker);
    // Writes go through again: SERVING again.
    let seen = watch(&mut health, Duration::from_secs(12)).await;
    assert_eq!(seen.last(), Some(&ServingStatus::Serving), "{seen:?}");
}
