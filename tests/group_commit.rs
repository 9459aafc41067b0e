//! The SQLite store commits queued writes in groups (`src/store/writer.rs`). A gateway process
//! is SIGKILLed while calls stream in, so that group commits are in flight when it dies. After
//! a restart, every call that was answered OK replays that answer from the store, and the
//! provider is not called again for any of them: no caller was answered from a commit that did
//! not reach the disk.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::process::spawn_gateway;
use common::*;
use paygate::sim::Simulator as _;

/// Callers sending Creates one after another.
const CALLERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_group_commits_loses_no_answered_write() {
    let sim = antom_sim_with_large_payment("PAY_GROUP").await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("group.db").display());

    // Every (request id, refund id) answered OK before a kill.
    let mut answered: Vec<(String, String)> = Vec::new();
    for round in 0..3u64 {
        let mut gw = spawn_gateway(dir.path(), &sim.base_url(), &store);
        let client = gw.client().await;
        let stop = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let (mut client, stop) = (client.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let id = format!("group-{round}-{c}-{i}");
                        let req =
                            with_timeout(refund_req(&id, "PAY_GROUP", 1), Duration::from_secs(5));
                        match client.create(req).await {
                            Ok(r) => got.push((id, r.into_inner().refund_id)),
                            Err(_) => break, // the gateway died
                        }
                    }
                    got
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(800 + 300 * round)).await;
        gw.sigkill();
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            answered.extend(c.await.unwrap());
        }
    }
    assert!(
        answered.len() >= 100,
        "too few calls were answered to test anything: {}",
        answered.len()
    );

    let gw = spawn_gateway(dir.path(), &sim.base_url(), &store);
    let mut client = gw.client().await;
    let sent = sim.sim.calls("refund");
    for (id, refund_id) in &answered {
        let r = client
            .create(with_timeout(
                refund_req(id, "PAY_GROUP", 1),
                Duration::from_secs(5),
            ))
            .await
            .unwrap_or_else(|e| panic!("{id} was answered before the kill, now: {e:?}"));
        assert_eq!(
            r.metadata()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap()),
            Some("true"),
            "{id} was answered OK before the kill but its outcome is not in the store"
        );
        assert_eq!(&r.into_inner().refund_id, refund_id, "{id}");
    }
    assert_eq!(
        sim.sim.calls("refund"),
        sent,
        "a call answered before the kill reached the provider again"
    );
    println!(
        "group commit: {} answered calls replayed from the store after 3 SIGKILLs",
        answered.len()
    );
}
