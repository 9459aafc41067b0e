//! A notification is bound to its time and to the order of states, through the binary:
//! - one signed outside the freshness window (a captured one re-posted days later, after the
//!   events it produced were purged) is refused and changes nothing; within the window a
//!   replay is a duplicate, because events are kept at least as long as the window;
//! - a refund's final state is final: a later FAIL for a refund recorded SUCCEEDED changes no
//!   replay and no Watch event, and is recorded and counted as an anomaly;
//! - TERMINATE dominates CANCEL: a late CANCEL never regresses a terminated subscription, and
//!   a TERMINATE notification racing the Cancel answer is never lost.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{GatewayProcess, faketime, free_port, spawn_gateway_with};
use common::*;
use paygate::pb;
use paygate::pb::event_service_client::EventServiceClient;
use paygate::pb::subscription_service_client::SubscriptionServiceClient;
use paygate::sim::antom::{NotifyTarget, Subscription};

/// A gateway process with its notification and metrics ports.
struct Gw {
    process: GatewayProcess,
    notify: u16,
    metrics: u16,
}

fn spawn(dir: &std::path::Path, sim_url: &str, extra: &[(&str, String)]) -> Gw {
    let (notify, metrics) = (free_port(), free_port());
    let store = format!("sqlite://{}", dir.join("p.db").display());
    let mut env = vec![
        ("PAYGATE_NOTIFY_ADDR", format!("127.0.0.1:{notify}")),
        ("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
    ];
    env.extend(extra.iter().cloned());
    let process = spawn_gateway_with(dir, sim_url, &store, &env, Stdio::inherit());
    Gw {
        process,
        notify,
        metrics,
    }
}

/// A SubscriptionService client of `gw`, once it is up.
async fn subscriptions(gw: &Gw) -> SubscriptionServiceClient<tonic::transport::Channel> {
    gw.process.client().await;
    let channel = tonic::transport::Channel::from_shared(gw.process.url())
        .unwrap()
        .connect_lazy();
    SubscriptionServiceClient::new(channel)
}

fn get(id: &str) -> pb::GetSubscriptionRequest {
    pb::GetSubscriptionRequest {
        subscription_id: id.into(),
        ..Default::default()
    }
}

/// POSTs a notification to `gw`, signed by Antom with `request_time`; the HTTP status.
async fn post(gw: &Gw, kind: &str, body: &str, request_time: &str) -> u16 {
    for _ in 0..50 {
        if let Some(status) = post_notification(gw.notify, kind, body, request_time).await {
            return status;
        }
        // The listener may still be starting.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the notification port never answered");
}

/// Every event after `cursor` that arrives before the stream is quiet for 700 ms.
async fn events_after(gw: &Gw, cursor: &str) -> Vec<pb::Event> {
    let channel = tonic::transport::Channel::from_shared(gw.process.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stream = EventServiceClient::new(channel)
        .watch(pb::WatchEventsRequest {
            after_cursor: cursor.into(),
            accounts: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Events from notifications only: the Creates' answers are events too (tests/feed.rs).
    let mut got = Vec::new();
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(700), stream.message()).await
    {
        if e.source() == pb::EventSource::Notification {
            got.push(e);
        }
    }
    got
}

fn refund_states(events: &[pb::Event]) -> Vec<i32> {
    events
        .iter()
        .filter_map(|e| match e.payload.as_ref()? {
            pb::event::Payload::Refund(r) => Some(r.status),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_final_refund_state_is_final_and_a_stale_notification_changes_nothing() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(dir.path(), &sim.base_url(), &[]);
    let mut client = gw.process.client().await;
    let req = pb::CreateRefundRequest {
        request_id: "order-1".into(),
        payment_id: "PAY_ASYNC".into(),
        amount: money("EUR", 500),
        ..Default::default()
    };
    let r = client.create(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Processing);
    let refund_id = sim.sim.refunds_of("PAY_ASYNC")[0].refund_id.clone();

    // Signed nine days ago: refused, nothing changes.
    let success = refund_notice("order-1", &refund_id, "SUCCESS", ("EUR", 500));
    let old = ms_ago(Duration::from_secs(9 * 86_400));
    assert_eq!(post(&gw, "refund", &success, &old).await, 400);
    let replay = client.create(req.clone()).await.unwrap().into_inner();
    assert_eq!(replay.status(), pb::RefundStatus::Processing);
    assert!(events_after(&gw, "").await.is_empty());

    // Fresh: the refund succeeded.
    assert_eq!(
        post(&gw, "refund", &success, &ms_ago(Duration::ZERO)).await,
        200
    );
    let replay = client.create(req.clone()).await.unwrap().into_inner();
    assert_eq!(replay.status(), pb::RefundStatus::Succeeded);

    // A later FAIL contradicts a final state: acknowledged, recorded, counted; no change of
    // answer, no event.
    let fail = refund_notice("order-1", &refund_id, "FAIL", ("EUR", 500));
    assert_eq!(
        post(&gw, "refund", &fail, &ms_ago(Duration::ZERO)).await,
        200
    );
    let replay = client.create(req.clone()).await.unwrap().into_inner();
    assert_eq!(replay.status(), pb::RefundStatus::Succeeded);
    // A read that still finds it processing at the provider never moves it back either.
    client
        .inquire(pb::InquireRefundRequest {
            request_id: "order-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let replay = client.create(req.clone()).await.unwrap().into_inner();
    assert_eq!(replay.status(), pb::RefundStatus::Succeeded);
    let events = events_after(&gw, "").await;
    assert_eq!(
        refund_states(&events),
        vec![pb::RefundStatus::Succeeded as i32],
        "{events:?}"
    );
    let scrape = scrape(gw.metrics).await;
    assert_eq!(
        metric_value(
            &scrape,
            "paygate_state_anomalies_total",
            &[("kind", "refund_notification")]
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        metric_value(
            &scrape,
            "paygate_notifications_total",
            &[("kind", "refund"), ("outcome", "stale")]
        ),
        Some(1.0)
    );
    // The anomaly is in the store, for a person.
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.path().join("p.db").display()
    ))
    .await
    .unwrap();
    let (recorded, reported): (String, String) =
        sqlx::query_as("SELECT recorded, reported FROM anomalies WHERE subject = 'order-1'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(
        (recorded.as_str(), reported.as_str()),
        ("Succeeded", "Failed")
    );
}

#[tokio::test]
async fn a_captured_notification_replayed_later_is_a_duplicate_or_stale_never_a_new_event() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    // Keys and refund states are kept for one hour only; events at least the freshness
    // window (26 h by default).
    let short = [("PAYGATE_IDEMPOTENCY_RETENTION_HOURS", "1".to_string())];
    let mut gw = spawn(dir.path(), &sim.base_url(), &short);
    let subscription = subscription_notice("SUB_1", "SUBREQ_1", "CANCEL");
    let signed_at = ms_ago(Duration::ZERO);
    assert_eq!(
        post(&gw, "subscription", &subscription, &signed_at).await,
        200
    );
    let first = events_after(&gw, "").await;
    assert_eq!(first.len(), 1, "{first:?}");
    gw.process.sigterm_and_wait();

    // The same bytes, captured and posted again later, on replicas whose clocks (and so the
    // store's, for SQLite) are ahead: the purge runs as each starts.
    for (ahead, status) in [("+25h", 200), ("+27h", 400)] {
        let mut env = short.to_vec();
        env.extend(faketime(ahead));
        let gw = spawn(dir.path(), &sim.base_url(), &env);
        gw.process.client().await;
        // Let the purge that runs at start finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            post(&gw, "subscription", &subscription, &signed_at).await,
            status,
            "{ahead}"
        );
        let later = events_after(&gw, &first[0].cursor).await;
        assert!(later.is_empty(), "{ahead}: acted on again: {later:?}");
        drop(gw);
    }
}

#[tokio::test]
async fn terminate_dominates_cancel_in_any_order() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(dir.path(), &sim.base_url(), &[]);
    let mut subs = subscriptions(&gw).await;

    // TERMINATE, then Antom resends a CANCEL it had not seen acknowledged.
    let now = ms_ago(Duration::ZERO);
    let terminate = subscription_notice("SUB_2", "SUBREQ_2", "TERMINATE");
    assert_eq!(post(&gw, "subscription", &terminate, &now).await, 200);
    let cancel = subscription_notice("SUB_2", "SUBREQ_2", "CANCEL");
    assert_eq!(
        post(&gw, "subscription", &cancel, &ms_ago(Duration::ZERO)).await,
        200
    );
    let s = subs.get(get("SUB_2")).await.unwrap().into_inner();
    assert_eq!(s.cancellation_type(), pb::CancellationType::Terminate);
    assert_eq!(s.cancellation_status(), pb::CancellationStatus::Confirmed);
    assert_eq!(s.subscription_state, "TERMINATED");
}

#[tokio::test]
async fn a_terminate_notification_racing_the_cancel_answer_is_never_lost() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(dir.path(), &sim.base_url(), &[]);
    let mut subs = subscriptions(&gw).await;
    let n = 48;
    for i in 0..n {
        sim.sim.add_subscription(Subscription {
            subscription_id: format!("SUB_RACE_{i}"),
            subscription_request_id: format!("SUBREQ_RACE_{i}"),
            status: "ACTIVE".into(),
        });
    }
    sim.sim.notify_to(NotifyTarget {
        base_url: format!("http://127.0.0.1:{}/notify/antom", gw.notify),
        resend: vec![Duration::from_millis(50); 5],
        auto_settle: None,
    });
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut subs = subs.clone();
            tokio::spawn(async move {
                subs.cancel(pb::CancelSubscriptionRequest {
                    request_id: format!("race-{i}"),
                    subscription_id: format!("SUB_RACE_{i}"),
                    cancellation_type: pb::CancellationType::Terminate as i32,
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    for _ in 0..100 {
        if sim.sim.deliveries().iter().filter(|d| d.acked).count() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lost = Vec::new();
    for i in 0..n {
        let s = subs
            .get(get(&format!("SUB_RACE_{i}")))
            .await
            .unwrap()
            .into_inner();
        if s.cancellation_status() != pb::CancellationStatus::Confirmed
            || s.cancellation_type() != pb::CancellationType::Terminate
        {
            lost.push((i, s.cancellation_status(), s.cancellation_type()));
        }
    }
    assert!(lost.is_empty(), "updates lost: {lost:?}");
}
