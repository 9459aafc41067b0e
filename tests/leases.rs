//! Leases across processes: they are judged by the store's clock (a replica whose clock is
//! off never takes a live lease), they name the instance that holds them (a crashed holder's
//! lease is taken over within seconds), and a duplicate waiting for one answers before its
//! own deadline.

mod common;

use std::time::{Duration, Instant};

use common::process::{
    GatewayProcess, TestDatabase, faketime, spawn_gateway_with, spawn_payxpert_gateway,
};
use common::*;
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::sim::Simulator as _;
use paygate::sim::payxpert::PayXpertSim;
use paygate::sim::{Fault, FaultKind, SimServer};
use tonic::Code;
use tonic::transport::Channel;

fn with_deadline<T>(msg: T, d: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(d);
    r
}

async fn px_sim() -> SimServer<PayXpertSim> {
    let sim = PayXpertSim::new(common::process::PX_ORIGINATOR, common::process::PX_PASSWORD);
    sim.add_sale("1001", 10_000, "EUR", None);
    sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn px_refund(request_id: &str) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: "1001".into(),
        amount: money("EUR", 500),
        ..Default::default()
    }
}

/// Two PayXpert replicas on one PostgreSQL; the one that takes the key first is slow at the
/// provider, and the other gets the same key meanwhile.
async fn skewed_replicas(holder_env: &[(&str, String)], duplicate_env: &[(&str, String)]) {
    let db = TestDatabase::create().await;
    let sim = px_sim().await;
    let (dh, dd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spawn = |dir: &tempfile::TempDir, env: &[(&str, String)]| {
        spawn_payxpert_gateway(
            dir.path(),
            &sim.base_url(),
            &db.url,
            Duration::from_millis(2_000),
            Duration::from_millis(3_000),
            env,
        )
    };
    let holder = spawn(&dh, holder_env);
    let duplicate = spawn(&dd, duplicate_env);
    let h = holder.client().await;
    let d = duplicate.client().await;
    // The holder's attempt waits 1.2 s at PayXpert before executing.
    sim.sim
        .inject(Fault::on("refund", FaultKind::Latency { ms: 1_200 }));
    let first = tokio::spawn({
        let mut h = h.clone();
        async move {
            h.create(with_deadline(px_refund("skew-1"), Duration::from_secs(10)))
                .await
                .map(|r| r.into_inner())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The duplicate on the other replica: it waits for the live lease (or is told to retry),
    // and never refunds on its own.
    let second = d
        .clone()
        .create(with_deadline(px_refund("skew-1"), Duration::from_secs(3)))
        .await
        .map(|r| r.into_inner());
    let first = first.await.unwrap().unwrap();
    match second {
        Ok(r) => assert_eq!(r.refund_id, first.refund_id),
        Err(e) => assert_eq!(reason(&e), "REQUEST_IN_FLIGHT", "{e:?}"),
    }
    let again = d
        .clone()
        .create(with_deadline(px_refund("skew-1"), Duration::from_secs(3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.refund_id, first.refund_id);
    assert_eq!(sim.sim.stats().refunds_executed, 1, "one refund");
}

#[tokio::test]
async fn a_replica_whose_clock_runs_ahead_never_takes_a_live_lease() {
    skewed_replicas(&[], &faketime("+30s")).await;
}

#[tokio::test]
async fn a_replica_whose_clock_runs_behind_never_has_its_live_lease_taken() {
    skewed_replicas(&faketime("-30s"), &[]).await;
}

/// Retries `request_id` with a 5 s deadline until a final answer; returns it and how long
/// it took.
async fn answer_within(
    client: &RefundServiceClient<Channel>,
    request_id: &str,
) -> (pb::Refund, Duration) {
    let start = Instant::now();
    for _ in 0..40 {
        match client
            .clone()
            .create(with_deadline(
                refund_req(request_id, "PAY_USD_100", 600),
                Duration::from_secs(5),
            ))
            .await
        {
            Ok(r) => return (r.into_inner(), start.elapsed()),
            Err(e) => {
                assert!(
                    matches!(
                        e.code(),
                        Code::Aborted | Code::Unavailable | Code::DeadlineExceeded
                    ),
                    "{e:?}"
                );
                tokio::time::sleep(retry_delay(&e).unwrap_or(Duration::from_millis(100))).await;
            }
        }
    }
    panic!("no final answer for {request_id}");
}

/// Starts a call that hangs at the provider, then SIGKILLs the gateway under it.
async fn kill_mid_call(gw: &mut GatewayProcess, sim: &paygate::sim::antom::SimServer, id: &str) {
    sim.sim
        .inject(Fault::on("refund", FaultKind::Latency { ms: 30_000 }));
    let c = gw.client().await;
    let call = refund_held_at_provider(sim, c, id, Duration::from_secs(20)).await;
    gw.sigkill();
    let _ = call.await;
    sim.sim.clear_faults();
}

#[tokio::test]
async fn after_a_crash_a_retry_is_answered_within_seconds_of_the_restart() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("paygate.db").display());
    let spawn = || {
        spawn_gateway_with(
            dir.path(),
            &sim.base_url(),
            &store,
            &[],
            std::process::Stdio::inherit(),
        )
    };
    let mut gw = spawn();
    kill_mid_call(&mut gw, &sim, "crash-1").await;
    let gw = spawn();
    let client = gw.client().await;
    let (r, took) = answer_within(&client, "crash-1").await;
    println!(
        "after SIGKILL and restart, the retry's final answer came {} ms after the restart",
        took.as_millis()
    );
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(sim.sim.stats().refunds_executed, 1);
}

#[tokio::test]
async fn after_a_replica_dies_the_other_answers_within_seconds() {
    let db = TestDatabase::create().await;
    let sim = shared_antom_sim().await;
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = spawn_gateway_with(
        da.path(),
        &sim.base_url(),
        &db.url,
        &[],
        std::process::Stdio::inherit(),
    );
    let b = spawn_gateway_with(
        db_dir.path(),
        &sim.base_url(),
        &db.url,
        &[],
        std::process::Stdio::inherit(),
    );
    let bc = b.client().await;
    kill_mid_call(&mut a, &sim, "replica-1").await;
    let died = Instant::now();
    let (r, _) = answer_within(&bc, "replica-1").await;
    let took = died.elapsed();
    println!(
        "replica A killed mid-call: replica B's final answer came {} ms after A's death",
        took.as_millis()
    );
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(sim.sim.stats().refunds_executed, 1);
}

#[tokio::test]
async fn a_duplicate_waiting_on_a_live_lease_answers_before_its_deadline() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("paygate.db").display());
    let gw = spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &[],
        std::process::Stdio::inherit(),
    );
    let c = gw.client().await;
    sim.sim
        .inject(Fault::on("refund", FaultKind::Latency { ms: 3_000 }));
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            c.clone()
                .create(with_deadline(
                    refund_req("wait-1", "PAY_USD_100", 600),
                    Duration::from_secs(10),
                ))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for deadline_ms in [300u64, 700, 1_000] {
        let start = Instant::now();
        let e = c
            .clone()
            .create(with_deadline(
                refund_req("wait-1", "PAY_USD_100", 600),
                Duration::from_millis(deadline_ms),
            ))
            .await
            .unwrap_err();
        let took = start.elapsed();
        println!(
            "a duplicate with a {deadline_ms} ms deadline answered {:?} after {} ms",
            e.code(),
            took.as_millis()
        );
        assert_eq!(e.code(), Code::Aborted, "{e:?}");
        assert_eq!(reason(&e), "REQUEST_IN_FLIGHT");
        assert!(retry_delay(&e).is_some());
        assert!(
            took + Duration::from_millis(50) <= Duration::from_millis(deadline_ms),
            "answered {} ms into a {deadline_ms} ms deadline",
            took.as_millis()
        );
    }
    first.await.unwrap().unwrap();
    assert_eq!(sim.sim.stats().refunds_executed, 1);
}
