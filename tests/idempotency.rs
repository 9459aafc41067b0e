//! The idempotency guarantees, with real SQLite files, a real PostgreSQL, real gateway
//! processes and the simulator: one provider call per key, replays, key reuse, final failures,
//! restarts and SIGKILL mid-call.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::process::{TestDatabase, spawn_gateway};
use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use tonic::Code;

/// Fires `n` identical Create calls at once; returns the distinct refund ids and the number
/// of ABORTED answers (each checked for RetryInfo).
async fn storm(env: &Env, n: usize, request_id: &str) -> (HashSet<String>, usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut c = env.refunds.clone();
        let req = refund_req(request_id, "PAY_USD_100", 700);
        tasks.push(tokio::spawn(async move {
            c.create(with_timeout(req, Duration::from_secs(10))).await
        }));
    }
    let mut ids = HashSet::new();
    let mut aborted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                ids.insert(r.into_inner().refund_id);
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Aborted, "{e:?}");
                assert!(retry_delay(&e).is_some());
                aborted += 1;
            }
        }
    }
    (ids, aborted)
}

async fn fifty_concurrent_calls_make_one_provider_call(store_url: Option<String>) {
    let env = start_with(Options {
        store_url,
        ..Default::default()
    })
    .await;
    env.sim()
        .inject(Fault::on("refund", FaultKind::Latency { ms: 300 }));
    let (ids, aborted) = storm(&env, 50, "storm-1").await;
    assert_eq!(env.sim().calls("refund"), 1, "exactly one provider call");
    assert_eq!(env.sim().stats().refunds_executed, 1);
    assert_eq!(ids.len(), 1, "every answer is the same refund: {ids:?}");
    assert!(aborted < 50);
}

#[tokio::test]
async fn fifty_concurrent_identical_creates_sqlite() {
    fifty_concurrent_calls_make_one_provider_call(None).await;
}

#[tokio::test]
async fn fifty_concurrent_identical_creates_postgres() {
    let db = TestDatabase::create().await;
    fifty_concurrent_calls_make_one_provider_call(Some(db.url.clone())).await;
}

#[tokio::test]
async fn a_final_failure_is_replayed_with_no_provider_call() {
    let mut env = start().await;
    let e1 = env
        .refunds
        .create(refund_req("too-much", "PAY_USD_100", 20_000))
        .await
        .unwrap_err();
    assert_eq!(reason(&e1), "REFUND_AMOUNT_EXCEED");
    assert!(e1.metadata().get("idempotent-replayed").is_none());
    let e2 = env
        .refunds
        .create(refund_req("too-much", "PAY_USD_100", 20_000))
        .await
        .unwrap_err();
    assert_eq!(e2.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e2), "REFUND_AMOUNT_EXCEED");
    assert_eq!(e2.message(), e1.message());
    assert_eq!(e2.metadata().get("idempotent-replayed").unwrap(), "true");
    use tonic_types::StatusExt;
    let (d1, d2) = (e1.get_error_details(), e2.get_error_details());
    let (i1, i2) = (d1.error_info().unwrap(), d2.error_info().unwrap());
    assert_eq!(
        (&i1.reason, &i1.domain, &i1.metadata),
        (&i2.reason, &i2.domain, &i2.metadata)
    );
    assert_eq!(env.sim().calls("refund"), 1);
}

#[tokio::test]
async fn rejections_that_executed_nothing_are_not_stored() {
    let mut env = start().await;
    // A validation error stores nothing: the same key with valid fields goes through.
    let mut bad = refund_req("k-1", "PAY_USD_100", 100);
    bad.amount = money("usd", 100);
    assert_eq!(
        env.refunds.create(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // A provider throttle stores nothing either.
    env.sim()
        .inject(Fault::on("refund", FaultKind::HttpStatus { status: 429 }));
    let e = env
        .refunds
        .create(refund_req("k-1", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    // The account backs off as the provider asked; honouring RetryInfo gets through.
    tokio::time::sleep(retry_delay(&e).unwrap()).await;
    let r = env
        .refunds
        .create(refund_req("k-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    assert!(r.metadata().get("idempotent-replayed").is_none());
    assert_eq!(env.sim().calls("refund"), 2);
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

#[tokio::test]
async fn cancel_keys_replay_and_refuse_reuse() {
    let mut env = start().await;
    let req = pb::CancelSubscriptionRequest {
        request_id: "cancel-k".into(),
        subscription_id: "SUB_3".into(),
        cancellation_type: pb::CancellationType::Cancel as i32,
        ..Default::default()
    };
    env.subscriptions.cancel(req.clone()).await.unwrap();
    let again = env.subscriptions.cancel(req.clone()).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    let e = env
        .subscriptions
        .cancel(pb::CancelSubscriptionRequest {
            cancellation_type: pb::CancellationType::Terminate as i32,
            ..req
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(env.sim().calls("cancel"), 1);
    assert_eq!(
        env.sim().subscription_status("SUB_3").as_deref(),
        Some("CANCELLED")
    );
}

#[tokio::test]
async fn inquire_records_the_state_that_replays_then_report() {
    let mut env = start().await;
    let mut req = refund_req("async-k", "PAY_ASYNC", 900);
    req.amount = money("EUR", 900);
    let first = env.refunds.create(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.status(), pb::RefundStatus::Processing);
    let id = env.sim().refunds_of("PAY_ASYNC")[0].refund_id.clone();
    env.sim().settle_refund(&id, true);
    let q = env
        .refunds
        .inquire(pb::InquireRefundRequest {
            request_id: "async-k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.status(), pb::RefundStatus::Succeeded);
    let replay = env.refunds.create(req).await.unwrap();
    assert_eq!(
        replay.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );
    let replay = replay.into_inner();
    assert_eq!(replay.status(), pb::RefundStatus::Succeeded);
    assert_eq!(replay.refund_id, id);
    assert_eq!(env.sim().calls("refund"), 1);
}

#[tokio::test]
async fn purged_keys_are_gone_after_retention() {
    let env = start_with(Options {
        retention: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let mut c = env.refunds.clone();
    c.create(refund_req("old-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    // Within the retention nothing is purged and the key replays.
    assert_eq!(env.idempotency.purge_expired().await.unwrap(), 0);
    let r = c
        .create(refund_req("old-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    assert_eq!(r.metadata().get("idempotent-replayed").unwrap(), "true");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.idempotency.purge_expired().await.unwrap(),
        3,
        "the key, its attribution and the refund row"
    );
    // The key is new again; Antom itself still deduplicates the refundRequestId.
    let r = c
        .create(refund_req("old-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    assert!(r.metadata().get("idempotent-replayed").is_none());
    assert_eq!(env.sim().calls("refund"), 2);
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

#[tokio::test]
async fn a_completed_key_is_replayed_after_a_restart() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("paygate.db").display());
    let mut gw = spawn_gateway(dir.path(), &sim.base_url(), &store);
    let first = gw
        .client()
        .await
        .create(refund_req("restart-1", "PAY_USD_100", 400))
        .await
        .unwrap()
        .into_inner();
    gw.sigterm_and_wait();
    let gw = spawn_gateway(dir.path(), &sim.base_url(), &store);
    let again = gw
        .client()
        .await
        .create(refund_req("restart-1", "PAY_USD_100", 400))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner(), first);
    assert_eq!(
        sim.sim.calls("refund"),
        1,
        "no provider call after the restart"
    );
}

/// Retries `request_id` until the gateway gives a final answer, as a client following the
/// RetryInfo would.
async fn retry_until_final(gw: &common::process::GatewayProcess, request_id: &str) -> pb::Refund {
    let mut client = gw.client().await;
    for _ in 0..60 {
        match client
            .create(with_timeout(
                refund_req(request_id, "PAY_USD_100", 600),
                Duration::from_secs(3),
            ))
            .await
        {
            Ok(r) => return r.into_inner(),
            Err(e) => {
                assert!(
                    matches!(
                        e.code(),
                        Code::Aborted | Code::Unavailable | Code::DeadlineExceeded
                    ),
                    "{e:?}"
                );
                let wait = retry_delay(&e).unwrap_or(Duration::from_millis(200));
                tokio::time::sleep(wait).await;
            }
        }
    }
    panic!("no final answer for {request_id}");
}

async fn sigkill_mid_call(kind: FaultKind) {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("paygate.db").display());
    let mut gw = spawn_gateway(dir.path(), &sim.base_url(), &store);
    let client = gw.client().await;
    sim.sim.inject(Fault::on("refund", kind));
    // Kill the gateway while the simulator holds the refund call.
    let call = refund_held_at_provider(&sim, client, "killed-1", Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.sigkill();
    assert!(call.await.unwrap().is_err(), "the caller lost its answer");

    let gw = spawn_gateway(dir.path(), &sim.base_url(), &store);
    let refund = retry_until_final(&gw, "killed-1").await;
    assert_eq!(refund.status(), pb::RefundStatus::Succeeded);
    // Give any late simulator work time to land before counting.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let refunds = sim.sim.refunds_of("PAY_USD_100");
    assert_eq!(refunds.len(), 1, "exactly one refund: {refunds:?}");
    assert_eq!(refunds[0].refund_id, refund.refund_id);
}

#[tokio::test]
async fn sigkill_after_the_provider_executed_yields_one_refund() {
    sigkill_mid_call(FaultKind::SlowAnswer { ms: 1_000 }).await;
}

#[tokio::test]
async fn sigkill_before_the_provider_executed_yields_one_refund() {
    sigkill_mid_call(FaultKind::Latency { ms: 1_000 }).await;
}

#[tokio::test]
async fn two_gateways_sharing_postgres_make_one_provider_call_per_key() {
    let sim = shared_antom_sim().await;
    let db = TestDatabase::create().await;
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = spawn_gateway(dir_a.path(), &sim.base_url(), &db.url);
    let b = spawn_gateway(dir_b.path(), &sim.base_url(), &db.url);
    let clients = [a.client().await, b.client().await];
    sim.sim
        .inject(Fault::on("refund", FaultKind::Latency { ms: 50 }).times(1000));
    const KEYS: usize = 20;
    const PER_KEY: usize = 10;
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        for i in 0..PER_KEY {
            let mut c = clients[i % 2].clone();
            let results = results.clone();
            tasks.push(tokio::spawn(async move {
                let r = c
                    .create(with_timeout(
                        refund_req(&format!("pg-key-{k}"), "PAY_USD_100", 10),
                        Duration::from_secs(10),
                    ))
                    .await;
                results
                    .lock()
                    .unwrap()
                    .push((k, r.map(|r| r.into_inner().refund_id)));
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        sim.sim.calls("refund"),
        KEYS as u64,
        "one provider call per key"
    );
    assert_eq!(sim.sim.stats().refunds_executed, KEYS as u64);
    let results = results.lock().unwrap();
    for k in 0..KEYS {
        let ids: HashSet<_> = results
            .iter()
            .filter(|(key, _)| *key == k)
            .filter_map(|(_, r)| match r {
                Ok(id) => Some(id.clone()),
                Err(e) => {
                    assert_eq!(e.code(), Code::Aborted, "{e:?}");
                    None
                }
            })
            .collect();
        assert_eq!(ids.len(), 1, "key {k}: {ids:?}");
    }
}
