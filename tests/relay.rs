//! Events reach NATS JetStream, through the binary, against a real nats-server of each test's
//! own, counting what the broker holds:
//! - each state change arrives once, as a CloudEvent, with the ids Watch streams, in order;
//! - the broker stopped during 10 refunds: every call is answered, every event arrives once it
//!   is back;
//! - the gateway killed (SIGKILL) during a burst of 40 refunds and started again: nothing is
//!   missing, nothing arrives twice;
//! - two replicas on PostgreSQL: the relaying one killed, the other takes over.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::nats::{Held, Nats};
use common::process::{GatewayProcess, TestDatabase, spawn_gateway_with};
use common::*;
use paygate::pb;
use paygate::sim::SimServer;
use paygate::sim::Simulator as _;

const STREAM: &str = "PAYGATE_EVENTS";

fn spawn(dir: &Path, sim: &SimServer, store_url: &str, nats: &Nats) -> GatewayProcess {
    let env = [
        ("PAYGATE_EVENTS_NATS_URL", nats.url()),
        ("RUST_LOG", "warn".to_string()),
    ];
    spawn_gateway_with(dir, &sim.base_url(), store_url, &env, Stdio::inherit())
}

fn sqlite(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("paygate.db").display())
}

/// Every event Watch streams from the start, until quiet.
async fn watched(gw: &GatewayProcess) -> Vec<pb::Event> {
    gw.client().await; // up
    let channel = tonic::transport::Channel::from_shared(gw.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    watch_until_quiet(&channel, pb::WatchEventsRequest::default()).await
}

fn ids(held: &[Held]) -> Vec<String> {
    held.iter()
        .map(|h| h.header("Nats-Msg-Id").unwrap_or_default().to_owned())
        .collect()
}

/// Creates refund `id` of `value` on PAY_USD_100, retrying what the gateway says is safe to
/// retry, until it is answered.
async fn refund(gw: &GatewayProcess, id: &str, value: i64) -> pb::Refund {
    let mut client = gw.client().await;
    for _ in 0..50 {
        match client.create(refund_req(id, "PAY_USD_100", value)).await {
            Ok(r) => return r.into_inner(),
            Err(e) => match retry_delay(&e) {
                Some(d) => tokio::time::sleep(d).await,
                None => panic!("{id}: {e:?}"),
            },
        }
    }
    panic!("{id}: never answered");
}

#[tokio::test]
async fn each_change_arrives_once_as_a_cloudevent_with_the_ids_watch_streams() {
    let nats = Nats::start();
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(dir.path(), &sim, &sqlite(dir.path()), &nats);
    let now = refund(&gw, "relay-now", 100).await;
    assert_eq!(now.status(), pb::RefundStatus::Succeeded);
    refund(&gw, "relay-now", 100).await; // a replay: no event
    let mut client = gw.client().await;
    let later = client
        .create(pb::CreateRefundRequest {
            amount: money("EUR", 300),
            ..refund_req("relay-later", "PAY_ASYNC", 300)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(later.status(), pb::RefundStatus::Processing);

    let held = nats.wait_for(STREAM, 2, Duration::from_secs(10)).await;
    let watched = watched(&gw).await;
    let watched_ids: Vec<_> = watched.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(watched_ids.len(), 2, "{watched_ids:?}");
    assert_eq!(
        ids(&held),
        watched_ids,
        "the broker holds what Watch streams, in order"
    );

    let first = &held[0];
    assert_eq!(first.subject, "paygate.events.antom.refund");
    assert_eq!(first.header("ce-specversion"), Some("1.0"));
    assert_eq!(first.header("ce-id"), Some(watched_ids[0].as_str()));
    assert_eq!(first.header("ce-type"), Some("paygate.v1.refund"));
    assert_eq!(first.header("ce-source"), Some("paygate/antom/antom"));
    assert_eq!(first.header("ce-subject"), Some("refund/relay-now"));
    assert_eq!(first.header("Content-Type"), Some("application/json"));
    assert!(first.header("ce-time").is_some_and(|t| t.ends_with('Z')));
    // The body is the Event in the protobuf JSON mapping.
    assert_eq!(first.body["eventId"], watched_ids[0].as_str());
    assert_eq!(first.body["refund"]["status"], "REFUND_STATUS_SUCCEEDED");
    assert_eq!(first.body["refund"]["refundId"], now.refund_id.as_str());
    assert_eq!(first.body["source"], "EVENT_SOURCE_PROVIDER_ANSWER");
    assert_eq!(held[1].body["refund"]["status"], "REFUND_STATUS_PROCESSING");
}

#[tokio::test]
async fn the_broker_down_during_ten_refunds_answers_every_call_and_loses_no_event() {
    let mut nats = Nats::start();
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(dir.path(), &sim, &sqlite(dir.path()), &nats);
    refund(&gw, "up-0", 10).await;
    assert_eq!(
        nats.wait_for(STREAM, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );

    nats.stop();
    for i in 1..=10 {
        let r = refund(&gw, &format!("down-{i}"), 10).await;
        assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    }
    // Down for longer than a publish acknowledgement is awaited (5 s): the relay's rounds fail
    // and it reconnects, rather than the client riding the outage out in its buffer.
    tokio::time::sleep(Duration::from_secs(8)).await;
    nats.start_again();
    let held = nats.wait_for(STREAM, 11, Duration::from_secs(30)).await;
    let watched: Vec<_> = watched(&gw).await.into_iter().map(|e| e.event_id).collect();
    assert_eq!(ids(&held), watched, "every event, once, in order");
    assert_eq!(held.len(), 11);
}

#[tokio::test]
async fn a_gateway_killed_during_a_burst_of_forty_refunds_loses_and_repeats_nothing() {
    let nats = Nats::start();
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let mut gw = spawn(dir.path(), &sim, &store, &nats);
    let client = gw.client().await;
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.create(refund_req(&format!("burst-{i}"), "PAY_USD_100", 5))
                    .await
            })
        })
        .collect();
    // Killed while the burst is under way.
    while sim.sim.calls("refund") < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.sigkill();
    for c in calls {
        let _ = c.await;
    }

    // Started again on the same store; every caller retries until answered (a refund whose
    // outcome the crash left unknown is settled first). Every refund is then one event on the
    // broker: nothing missing, nothing twice, in the store's order.
    let gw = spawn(dir.path(), &sim, &store, &nats);
    for i in 0..40 {
        refund(&gw, &format!("burst-{i}"), 5).await;
    }
    let held = nats.wait_for(STREAM, 40, Duration::from_secs(30)).await;
    let held_ids = ids(&held);
    let distinct: BTreeSet<_> = held_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        held_ids.len(),
        "nothing twice: {held_ids:?}"
    );
    assert_eq!(held.len(), 40, "one event per refund: {held_ids:?}");
    let watched: Vec<_> = watched(&gw).await.into_iter().map(|e| e.event_id).collect();
    assert_eq!(held_ids, watched, "in the store's order");
    // And the provider refunded each once.
    assert_eq!(sim.sim.refunds_of("PAY_USD_100").len(), 40);
}

#[tokio::test]
async fn with_two_replicas_the_other_takes_over_when_the_relaying_one_dies() {
    let nats = Nats::start();
    let sim = shared_antom_sim().await;
    let db = TestDatabase::create().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = spawn(dir_a.path(), &sim, &db.url, &nats);
    refund(&a, "pg-0", 10).await;
    assert_eq!(
        nats.wait_for(STREAM, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    let b = spawn(dir_b.path(), &sim, &db.url, &nats);
    refund(&b, "pg-1", 10).await;
    assert_eq!(
        nats.wait_for(STREAM, 2, Duration::from_secs(10))
            .await
            .len(),
        2
    );

    // Whichever relays is killed; the one left relays within seconds.
    a.sigkill();
    for i in 2..=5 {
        refund(&b, &format!("pg-{i}"), 10).await;
    }
    let held = nats.wait_for(STREAM, 6, Duration::from_secs(20)).await;
    let watched: Vec<_> = watched(&b).await.into_iter().map(|e| e.event_id).collect();
    assert_eq!(ids(&held), watched);
    assert_eq!(held.len(), 6);
}
