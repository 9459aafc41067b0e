//! OK only when durable, through the binary: a refund the provider executed while the SQLite
//! store cannot be written (another process holds its write lock past the busy timeout, as a
//! full disk or a stuck volume would refuse it) is answered as unknown with RetryInfo, never
//! OK; the retry settles it to the same refund, and the provider executed one.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::spawn_gateway_with;
use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use sqlx::Connection;
use tonic::Code;

#[tokio::test]
async fn an_outcome_the_store_cannot_hold_is_answered_unknown_and_settled_by_the_retry() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let store = format!("sqlite://{}", db.display());
    let gw = spawn_gateway_with(dir.path(), &sim.base_url(), &store, &[], Stdio::inherit());
    let client = gw.client().await;
    // The provider holds the request for a while, then executes it and answers.
    sim.sim
        .inject(Fault::on("refund", FaultKind::SlowAnswer { ms: 1_000 }));
    let call =
        refund_held_at_provider(&sim, client.clone(), "durable-1", Duration::from_secs(30)).await;
    // Meanwhile the store stops taking writes: another process holds its write lock for
    // longer than the gateway's busy timeout (10 s).
    let mut blocker = sqlx::SqliteConnection::connect(&store).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let got = call.await.unwrap();
    let e = got.expect_err("an outcome the store does not hold was answered OK");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{e:?}");
    assert!(retry_delay(&e).is_some(), "no RetryInfo: {e:?}");
    let executed = sim.sim.refunds_of("PAY_USD_100");
    assert_eq!(executed.len(), 1, "{executed:?}");
    // The store takes writes again; the retry settles the key to the refund that executed.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    drop(blocker);
    let r = client
        .clone()
        .create(refund_req("durable-1", "PAY_USD_100", 600))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.refund_id, executed[0].refund_id);
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert_eq!(sim.sim.refunds_of("PAY_USD_100").len(), 1);
    // And it is now what the store holds: replayed as it was.
    let again = client
        .clone()
        .create(refund_req("durable-1", "PAY_USD_100", 600))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner().refund_id, executed[0].refund_id);
}
