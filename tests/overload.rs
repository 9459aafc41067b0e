//! Past the store's knee, through the binary on PostgreSQL: a burst of first calls far beyond
//! what the store takes at once is either served or shed at admission, with
//! `RESOURCE_EXHAUSTED`, reason `OVERLOADED` and RetryInfo, before the call holds anything.
//! No call fails half-way through its key (no `STORE_UNAVAILABLE`, no unknown outcome), and
//! afterwards every key in the store is done, one per call that succeeded.

mod common;

use std::time::Duration;

use common::process::{TestDatabase, antom_env, free_port, spawn_configured};
use common::*;
use paygate::pb::refund_service_client::RefundServiceClient;
use sqlx::Connection;
use tonic::transport::Channel;

/// Calls at once: far more than PostgreSQL's connections (16) and admission slots (32), and
/// than it takes within the admission wait (1 s).
const BURST: usize = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_knee_is_served_or_shed_at_admission() {
    let sim = antom_sim_with_large_payment("PAY_BURST").await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    // The gateway's and the account's own caps out of the way: the store is the limit.
    let config = dir.path().join("paygate.toml");
    std::fs::write(
        &config,
        "max_in_flight_requests = 8192\n[accounts.antom]\nprovider = \"antom\"\nmax_in_flight = 4096\nmax_calls = 4096\n",
    )
    .unwrap();
    let metrics = free_port();
    let mut env = antom_env(dir.path(), &sim.base_url());
    env.push(("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}")));
    let gw = spawn_configured(&config, &db.url, &env);
    gw.client().await;
    let mut channels = Vec::new();
    for _ in 0..16 {
        channels.push(
            Channel::from_shared(gw.url())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }

    let calls: Vec<_> = (0..BURST)
        .map(|i| {
            let ch: Channel = channels[i % channels.len()].clone();
            tokio::spawn(async move {
                let req = refund_req(&format!("burst-{i}"), "PAY_BURST", 100);
                RefundServiceClient::new(ch)
                    .create(with_timeout(req, Duration::from_secs(30)))
                    .await
            })
        })
        .collect();
    let (mut served, mut shed) = (0usize, 0usize);
    let mut other = Vec::new();
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => served += 1,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                assert_eq!(reason(&s), "OVERLOADED", "{s:?}");
                assert!(
                    retry_delay(&s).is_some(),
                    "a shed call says when to retry: {s:?}"
                );
                shed += 1;
            }
            Err(s) => other.push(format!("{:?} {}", s.code(), reason(&s))),
        }
    }
    let by_store = metric_value(
        &scrape(metrics).await,
        "paygate_shed_total",
        &[("reason", "store_busy")],
    )
    .unwrap_or(0.0);
    eprintln!(
        "{BURST} at once: {served} served, {shed} shed ({by_store} by the store's admission)"
    );
    assert!(
        other.is_empty(),
        "{} calls failed otherwise than shed at admission, e.g. {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert!(served > 0);

    // Nothing half-way: every key is done, one per call served.
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM idempotency_keys GROUP BY state")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(states, vec![("done".to_string(), served as i64)]);
}
