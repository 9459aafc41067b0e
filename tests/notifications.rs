//! Antom notifications: verified, stored once, acted on (refund final states, confirmed
//! cancellations), and delivered in order by EventService.Watch with a resume cursor, on one
//! gateway and across two gateways sharing PostgreSQL.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::TestDatabase;
use common::*;
use paygate::pb;
use paygate::pb::event_service_client::EventServiceClient;
use paygate::providers::antom::signing::{self, Signer};
use paygate::sim::Simulator as _;
use paygate::sim::antom::NotifyTarget;
use tonic::Code;
use tonic::transport::Channel;

/// A refund of the EUR payment whose refunds stay PROCESSING until settled.
fn async_refund(request_id: &str, value: i64) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        amount: money("EUR", value),
        ..refund_req(request_id, "PAY_ASYNC", value)
    }
}

async fn create_async(
    client: &paygate::pb::refund_service_client::RefundServiceClient<Channel>,
    request_id: &str,
    value: i64,
) -> pb::Refund {
    client
        .clone()
        .create(async_refund(request_id, value))
        .await
        .unwrap()
        .into_inner()
}

const QUICK: Duration = Duration::from_millis(50);

async fn env_with_notifications() -> Env {
    let env = start_with(Options {
        notify: true,
        ..Options::default()
    })
    .await;
    target(&env, env.notify_addr.unwrap(), "main", 8);
    env
}

/// Points the simulator at `addr` for `account`, with `resends` quick resends.
fn target(env: &Env, addr: SocketAddr, account: &str, resends: usize) {
    env.sim().notify_to(NotifyTarget {
        base_url: format!("http://{addr}/notify/{account}"),
        resend: vec![QUICK; resends],
        auto_settle: None,
    });
}

/// Waits until delivery `index` is over: acknowledged, or out of resends.
async fn delivered(env: &Env, index: usize, attempts: u32) -> paygate::sim::antom::Delivery {
    for _ in 0..200 {
        if let Some(d) = env.sim().deliveries().get(index)
            && (d.acked || d.attempts >= attempts)
        {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "delivery {index} never finished: {:?}",
        env.sim().deliveries()
    );
}

/// POSTs a notification body signed with `key` (PEM) as `client_id`.
async fn post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    key: Option<&str>,
    client_id: &str,
) -> (u16, String) {
    post_signed_for(addr, path, path, body, key, client_id).await
}

/// POSTs to `path` a body signed as if posted to `signed_path`.
async fn post_signed_for(
    addr: SocketAddr,
    path: &str,
    signed_path: &str,
    body: &[u8],
    key: Option<&str>,
    client_id: &str,
) -> (u16, String) {
    let t = &request_time_now();
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("client-id", client_id)
        .header("request-time", t)
        .body(body.to_vec());
    if let Some(pem) = key {
        let signer = Signer::from_bytes(pem.as_bytes()).unwrap();
        let sig = signer.sign(&signing::content(signed_path, client_id, t, body));
        req = req.header("signature", signing::signature_header(1, &sig));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

const ACK: &str =
    r#"{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}"#;

fn watch_req(after: &str) -> pb::WatchEventsRequest {
    pb::WatchEventsRequest {
        after_cursor: after.into(),
        accounts: vec![],
        ..Default::default()
    }
}

/// Every event the stream yields until it is quiet for `quiet`.
/// Every event from a notification the stream yields until it is quiet for `quiet` (the
/// events of the Creates' and Cancels' answers are `tests/feed.rs`'s).
async fn drain(stream: &mut tonic::Streaming<pb::Event>, quiet: Duration) -> Vec<pb::Event> {
    let mut got = Vec::new();
    while let Ok(next) = tokio::time::timeout(quiet, stream.message()).await {
        match next.unwrap() {
            Some(e) if e.source() == pb::EventSource::Notification => got.push(e),
            Some(_) => {}
            None => break,
        }
    }
    got
}

async fn watch(channel: &Channel, after: &str) -> tonic::Streaming<pb::Event> {
    EventServiceClient::new(channel.clone())
        .watch(watch_req(after))
        .await
        .unwrap()
        .into_inner()
}

/// The simulator's id of the refund created with `request_id` (a PROCESSING answer has none).
fn sim_refund_id(env: &Env, request_id: &str) -> String {
    env.sim()
        .refunds_of("PAY_ASYNC")
        .into_iter()
        .find(|r| r.refund_request_id == request_id)
        .unwrap()
        .refund_id
}

fn refund_of(e: &pb::Event) -> &pb::Refund {
    match e.payload.as_ref().unwrap() {
        pb::event::Payload::Refund(r) => r,
        other => panic!("not a refund event: {other:?}"),
    }
}

#[tokio::test]
async fn a_processing_refund_becomes_final_by_notification_once() {
    let env = env_with_notifications().await;
    let mut refunds = env.refunds.clone();
    let created = create_async(&refunds, "async-1", 700).await;
    assert_eq!(created.status, pb::RefundStatus::Processing as i32);

    assert!(
        env.sim()
            .settle_refund(&sim_refund_id(&env, &created.request_id), true)
    );
    let d = delivered(&env, 0, 9).await;
    assert!(d.acked, "{d:?}");
    assert_eq!((d.kind.as_str(), d.attempts), ("refund", 1));

    // The replay reports the final state the notification brought; no provider call.
    let calls = env.sim().calls("refund");
    let replay = refunds.create(async_refund("async-1", 700)).await.unwrap();
    assert_eq!(
        replay.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );
    let replay = replay.into_inner();
    assert_eq!(replay.status, pb::RefundStatus::Succeeded as i32);
    let refund_id = sim_refund_id(&env, "async-1");
    assert_eq!(replay.refund_id, refund_id);
    assert_eq!(replay.payment_id, "PAY_ASYNC");
    assert_eq!(env.sim().calls("refund"), calls);
    let inquired = refunds
        .inquire(pb::InquireRefundRequest {
            request_id: "async-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inquired.status, pb::RefundStatus::Succeeded as i32);

    // Antom sends it again, twice: acknowledged each time, nothing changes.
    assert!(env.sim().resend(0));
    assert!(env.sim().resend(0));
    for _ in 0..100 {
        if env.sim().deliveries()[0].attempts == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = &env.sim().deliveries()[0];
    assert_eq!(
        (d.attempts, d.statuses.as_slice()),
        (3, &[200, 200, 200][..])
    );

    let mut stream = watch(&env.channel, "").await;
    let events = drain(&mut stream, Duration::from_millis(700)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.event_id, format!("antom/main/refund/{refund_id}/SUCCESS"));
    assert_eq!((e.account.as_str(), e.provider.as_str()), ("main", "antom"));
    assert_eq!(e.provider_event_type, "REFUND_RESULT");
    let r = refund_of(e);
    assert_eq!(r.status, pb::RefundStatus::Succeeded as i32);
    assert_eq!(r.request_id, "async-1");
    assert_eq!(
        r.payment_id, "PAY_ASYNC",
        "the event carries what Create recorded"
    );
    assert_eq!(r.amount.as_ref().unwrap().value, 700);
}

#[tokio::test]
async fn an_event_carries_the_payment_when_the_notification_outruns_create() {
    use paygate::sim::{Fault, FaultKind};
    let env = env_with_notifications().await;
    // Antom executes, then takes its time answering; the refund settles and its notification
    // arrives while the Create still waits for its answer.
    env.sim()
        .inject(Fault::on("refund", FaultKind::SlowAnswer { ms: 1_500 }));
    let create = tokio::spawn({
        let refunds = env.refunds.clone();
        async move { create_async(&refunds, "outrun-1", 200).await }
    });
    let mut id = None;
    for _ in 0..100 {
        if let Some(r) = env
            .sim()
            .refunds_of("PAY_ASYNC")
            .into_iter()
            .find(|r| r.refund_request_id == "outrun-1")
        {
            id = Some(r.refund_id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(env.sim().settle_refund(&id.unwrap(), true));
    assert!(delivered(&env, 0, 9).await.acked);
    assert!(!create.is_finished(), "the notification came first");
    let mut stream = watch(&env.channel, "").await;
    let events = drain(&mut stream, Duration::from_millis(500)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(refund_of(&events[0]).payment_id, "PAY_ASYNC");
    create.await.unwrap();
}

#[tokio::test]
async fn a_failed_refund_is_reported_failed() {
    let env = env_with_notifications().await;
    let refunds = env.refunds.clone();
    let created = create_async(&refunds, "async-fail", 300).await;
    assert!(
        env.sim()
            .settle_refund(&sim_refund_id(&env, &created.request_id), false)
    );
    assert!(delivered(&env, 0, 9).await.acked);
    let replay = create_async(&refunds, "async-fail", 300).await;
    assert_eq!(replay.status, pb::RefundStatus::Failed as i32);
    assert_eq!(replay.provider_result.unwrap().code, "PROCESS_FAIL");
}

#[tokio::test]
async fn forged_malformed_and_misdirected_notifications_are_refused_and_change_nothing() {
    let env = env_with_notifications().await;
    let addr = env.notify_addr.unwrap();
    let refunds = env.refunds.clone();
    create_async(&refunds, "async-forged", 200).await;
    let refund_id = sim_refund_id(&env, "async-forged");
    let body = serde_json::json!({
        "notifyType": "REFUND_RESULT",
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
        "refundStatus": "SUCCESS",
        "refundRequestId": "async-forged",
        "refundId": refund_id,
        "refundAmount": {"currency": "EUR", "value": "200"},
    })
    .to_string();
    let path = "/notify/main/refund";
    let cases: Vec<(&str, u16, (u16, String))> = vec![
        (
            "unsigned",
            401,
            post(addr, path, body.as_bytes(), None, CLIENT_ID).await,
        ),
        (
            "signed by another key",
            401,
            post(addr, path, body.as_bytes(), Some(stranger_pem()), CLIENT_ID).await,
        ),
        (
            "signed by the merchant's own key",
            401,
            post(addr, path, body.as_bytes(), Some(merchant_pem()), CLIENT_ID).await,
        ),
        (
            "another client id",
            401,
            post(
                addr,
                path,
                body.as_bytes(),
                Some(antom_pem()),
                "SANDBOX_OTHER",
            )
            .await,
        ),
        (
            "signed for another path",
            401,
            post_signed_for(
                addr,
                "/notify/main/refund?x=1",
                path,
                body.as_bytes(),
                Some(antom_pem()),
                CLIENT_ID,
            )
            .await,
        ),
        (
            "signed, not JSON",
            400,
            post(addr, path, b"{not json", Some(antom_pem()), CLIENT_ID).await,
        ),
        (
            "signed, not final",
            400,
            post(
                addr,
                path,
                body.replace(
                    r#""refundStatus":"SUCCESS""#,
                    r#""refundStatus":"PROCESSING""#,
                )
                .as_bytes(),
                Some(antom_pem()),
                CLIENT_ID,
            )
            .await,
        ),
        (
            "signed, no refund id",
            400,
            post(
                addr,
                path,
                body.replace(&refund_id, "").as_bytes(),
                Some(antom_pem()),
                CLIENT_ID,
            )
            .await,
        ),
        (
            "unknown account",
            404,
            post(
                addr,
                "/notify/nobody/refund",
                body.as_bytes(),
                Some(antom_pem()),
                CLIENT_ID,
            )
            .await,
        ),
        (
            "unknown kind",
            404,
            post(
                addr,
                "/notify/main/dispute",
                body.as_bytes(),
                Some(antom_pem()),
                CLIENT_ID,
            )
            .await,
        ),
        (
            "100 KiB body",
            413,
            post(
                addr,
                path,
                &vec![b' '; 100 * 1024],
                Some(antom_pem()),
                CLIENT_ID,
            )
            .await,
        ),
    ];
    for (what, want, (status, answer)) in &cases {
        assert_eq!(status, want, "{what}: {answer}");
        assert_ne!(answer, ACK, "{what} was acknowledged");
    }
    // Nothing was stored and the refund is still processing.
    let mut stream = watch(&env.channel, "").await;
    assert!(
        drain(&mut stream, Duration::from_millis(400))
            .await
            .is_empty()
    );
    let replay = create_async(&refunds, "async-forged", 200).await;
    assert_eq!(replay.status, pb::RefundStatus::Processing as i32);
    // The genuine article, signed by Antom's key, is accepted.
    let (status, answer) = post(addr, path, body.as_bytes(), Some(antom_pem()), CLIENT_ID).await;
    assert_eq!((status, answer.as_str()), (200, ACK));
    assert_eq!(
        drain(&mut stream, Duration::from_millis(700)).await.len(),
        1
    );
}

#[tokio::test]
async fn antom_resends_until_the_gateway_acknowledges() {
    // Nothing listens at first: the simulator resends, as Antom does.
    let env = start().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], common::process::free_port()));
    env.sim().notify_to(NotifyTarget {
        base_url: format!("http://{addr}/notify/main"),
        resend: vec![Duration::from_millis(150); 8],
        auto_settle: None,
    });
    let created = create_async(&env.refunds, "async-late", 100).await;
    env.sim()
        .settle_refund(&sim_refund_id(&env, &created.request_id), true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(paygate::server::serve_notifications(
        env.shared.clone(),
        listener,
    ));
    let d = delivered(&env, 0, 9).await;
    assert!(d.acked, "{d:?}");
    assert!(d.attempts >= 2, "{d:?}");
    assert_eq!(d.statuses.last(), Some(&200));
    assert!(d.statuses[..d.statuses.len() - 1].iter().all(|s| *s == 0));

    // A wrong address is never acknowledged: all nine attempts are made, then Antom stops.
    target(&env, addr, "nobody", 8);
    let created = create_async(&env.refunds, "async-lost", 100).await;
    env.sim()
        .settle_refund(&sim_refund_id(&env, &created.request_id), true);
    let d = delivered(&env, 1, 9).await;
    assert_eq!((d.acked, d.attempts), (false, 9), "{d:?}");
    assert!(d.statuses.iter().all(|s| *s == 404));
    let mut stream = watch(&env.channel, "").await;
    assert_eq!(
        drain(&mut stream, Duration::from_millis(500)).await.len(),
        1
    );
}

#[tokio::test]
async fn a_cancellation_is_confirmed_by_notification_and_read_with_get() {
    let env = env_with_notifications().await;
    let mut subs = env.subscriptions.clone();
    let get = |id: &str, rid: &str| pb::GetSubscriptionRequest {
        account: String::new(),
        subscription_id: id.into(),
        subscription_request_id: rid.into(),
    };
    let err = subs.get(get("SUB_2", "")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "SUBSCRIPTION_NOT_RECORDED");
    let err = subs.get(get("", "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let answer = subs
        .cancel(pb::CancelSubscriptionRequest {
            request_id: "cancel-sub-2".into(),
            subscription_id: "SUB_2".into(),
            cancellation_type: pb::CancellationType::Terminate as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, pb::CancellationStatus::Accepted as i32);
    let d = delivered(&env, 0, 9).await;
    assert!(d.acked && d.kind == "subscription", "{d:?}");

    let s = subs.get(get("SUB_2", "")).await.unwrap().into_inner();
    assert_eq!(
        s.cancellation_status,
        pb::CancellationStatus::Confirmed as i32
    );
    assert_eq!(s.cancellation_type, pb::CancellationType::Terminate as i32);
    assert_eq!(s.subscription_state, "TERMINATED");
    assert_eq!(s.last_notification_type, "TERMINATE");
    assert_eq!(s.subscription_request_id, "SUBREQ_2");
    assert!(s.end_time.is_some() && s.update_time.is_some());
    let by_merchant_id = subs.get(get("", "SUBREQ_2")).await.unwrap().into_inner();
    assert_eq!(by_merchant_id, s);
    // A later CANCEL (another request id) of the terminated subscription does not replace
    // the confirmed TERMINATE.
    subs.cancel(pb::CancelSubscriptionRequest {
        request_id: "cancel-sub-2-later".into(),
        subscription_id: "SUB_2".into(),
        cancellation_type: pb::CancellationType::Cancel as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let after = subs.get(get("SUB_2", "")).await.unwrap().into_inner();
    assert_eq!(
        after.cancellation_type,
        pb::CancellationType::Terminate as i32
    );
    assert_eq!(
        after.cancellation_status,
        pb::CancellationStatus::Confirmed as i32
    );
    assert_eq!(after.end_time, s.end_time);

    // A cancel that was only accepted so far reads as ACCEPTED.
    env.sim().notify_to(NotifyTarget {
        base_url: "http://127.0.0.1:9/notify/main".into(),
        resend: vec![],
        auto_settle: None,
    });
    subs.cancel(pb::CancelSubscriptionRequest {
        request_id: "cancel-sub-3".into(),
        subscription_id: "SUB_3".into(),
        cancellation_type: pb::CancellationType::Cancel as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let s = subs.get(get("SUB_3", "")).await.unwrap().into_inner();
    assert_eq!(
        s.cancellation_status,
        pb::CancellationStatus::Accepted as i32
    );
    assert_eq!(s.cancellation_type, pb::CancellationType::Cancel as i32);

    let mut stream = watch(&env.channel, "").await;
    let events = drain(&mut stream, Duration::from_millis(500)).await;
    assert_eq!(events.len(), 1);
    match events[0].payload.as_ref().unwrap() {
        pb::event::Payload::Subscription(s) => {
            assert_eq!(s.subscription_id, "SUB_2");
            assert_eq!(
                s.cancellation_status,
                pb::CancellationStatus::Confirmed as i32
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_watcher_that_reconnects_from_its_cursor_gets_every_event_once_in_order() {
    let env = env_with_notifications().await;
    let charge = |n: usize| {
        let i = env
            .sim()
            .charge_period(
                "SUB_1",
                &format!("PAYSUB_{n}"),
                ("USD", 999),
                !n.is_multiple_of(3),
            )
            .unwrap();
        assert_eq!(i, n);
    };
    for n in 0..4 {
        charge(n);
        assert!(delivered(&env, n, 9).await.acked);
    }
    // The consumer processes two events, then crashes.
    let mut stream = watch(&env.channel, "").await;
    let first = stream.message().await.unwrap().unwrap();
    let second = stream.message().await.unwrap().unwrap();
    drop(stream);
    // Meanwhile more arrive, one of them twice.
    for n in 4..7 {
        charge(n);
        assert!(delivered(&env, n, 9).await.acked);
    }
    env.sim().resend(5);

    let mut resumed = watch(&env.channel, &second.cursor).await;
    // While it watches, one more arrives live.
    charge(7);
    let rest = drain(&mut resumed, Duration::from_millis(800)).await;
    let mut all = vec![first, second];
    all.extend(rest);
    let payments: Vec<String> = all
        .iter()
        .map(|e| match e.payload.as_ref().unwrap() {
            pb::event::Payload::SubscriptionPayment(p) => p.payment_id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<String> = (0..8).map(|n| format!("PAYSUB_{n}")).collect();
    assert_eq!(payments, want);
    let cursors: Vec<i64> = all.iter().map(|e| e.cursor.parse().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    let ids: std::collections::HashSet<_> = all.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), 8);
    match all[3].payload.as_ref().unwrap() {
        pb::event::Payload::SubscriptionPayment(p) => {
            assert_eq!(p.status, pb::SubscriptionPaymentStatus::Failed as i32);
            assert_eq!(p.amount.as_ref().unwrap().value, 999);
            assert_eq!(p.subscription_request_id, "SUBREQ_1");
        }
        other => panic!("{other:?}"),
    }

    // Resuming from the last cursor gives nothing more.
    let mut after_all = watch(&env.channel, &all[7].cursor).await;
    assert!(
        drain(&mut after_all, Duration::from_millis(400))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn watch_refuses_bad_cursors_and_accounts_and_expired_cursors() {
    let env = start_with(Options {
        notify: true,
        retention: Duration::from_millis(1),
        // Events are kept at least the freshness window.
        notify_max_age: Duration::from_millis(800),
        ..Options::default()
    })
    .await;
    target(&env, env.notify_addr.unwrap(), "main", 8);
    let mut client = EventServiceClient::new(env.channel.clone());
    for bad in ["abc", "-1", "1.5", " 1"] {
        let err = client.watch(watch_req(bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
    let err = client
        .watch(pb::WatchEventsRequest {
            after_cursor: String::new(),
            accounts: vec!["nobody".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    for n in 0..3 {
        env.sim()
            .charge_period("SUB_1", &format!("P{n}"), ("USD", 100), true);
        assert!(delivered(&env, n, 9).await.acked);
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    env.idempotency.purge_expired().await.unwrap();
    let err = client.watch(watch_req("1")).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(reason(&err), "CURSOR_EXPIRED");
    // From the start: what is retained (nothing), then live events.
    let mut stream = watch(&env.channel, "").await;
    env.sim().charge_period("SUB_1", "P3", ("USD", 100), true);
    let got = drain(&mut stream, Duration::from_millis(600)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].cursor, "4");
}

#[tokio::test]
async fn shutdown_ends_a_watch_with_unavailable_and_retry_info() {
    let mut env = env_with_notifications().await;
    let mut stream = watch(&env.channel, "").await;
    env.gateway.take().unwrap().stop().await;
    let err = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ended")
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(reason(&err), "SHUTTING_DOWN");
    assert!(retry_delay(&err).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgres_share_events_and_store_each_once() {
    let db = TestDatabase::create().await;
    let options = || Options {
        notify: true,
        store_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = start_with(options()).await;
    let b = start_with(options()).await;
    // The simulator behind replica A notifies replica A.
    target(&a, a.notify_addr.unwrap(), "main", 8);
    let mut on_b = watch(&b.channel, "").await;

    let created = create_async(&a.refunds, "pg-async", 400).await;
    a.sim()
        .settle_refund(&sim_refund_id(&a, &created.request_id), true);
    assert!(delivered(&a, 0, 9).await.acked);

    // The same notification reaches both replicas at once, several times.
    let body = a.sim().deliveries()[0].body.clone();
    let mut posts = Vec::new();
    for i in 0..10 {
        let addr = if i % 2 == 0 {
            a.notify_addr
        } else {
            b.notify_addr
        }
        .unwrap();
        let body = body.clone();
        posts.push(tokio::spawn(async move {
            post(
                addr,
                "/notify/main/refund",
                body.as_bytes(),
                Some(antom_pem()),
                CLIENT_ID,
            )
            .await
        }));
    }
    for p in posts {
        assert_eq!(p.await.unwrap(), (200, ACK.to_owned()));
    }
    // And a payment notification arrives at B only.
    let payment = serde_json::json!({
        "notifyType": "PAYMENT_RESULT",
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
        "paymentId": "PG_PAY_1",
        "paymentAmount": {"currency": "USD", "value": "500"},
        "subscriptionRequestId": "SUBREQ_1",
        "subscriptionId": "SUB_1",
    })
    .to_string();
    let (status, _) = post(
        b.notify_addr.unwrap(),
        "/notify/main/payment",
        payment.as_bytes(),
        Some(antom_pem()),
        CLIENT_ID,
    )
    .await;
    assert_eq!(status, 200);

    let got = drain(&mut on_b, Duration::from_millis(1000)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(refund_of(&got[0]).refund_id, sim_refund_id(&a, "pg-async"));
    let mut on_a = watch(&a.channel, "").await;
    let from_a = drain(&mut on_a, Duration::from_millis(700)).await;
    assert_eq!(from_a, got);
    // Live: a notification received by B reaches A's open stream (A polls the store).
    let live = payment.replace("PG_PAY_1", "PG_PAY_2");
    let sent = std::time::Instant::now();
    let (status, _) = post(
        b.notify_addr.unwrap(),
        "/notify/main/payment",
        live.as_bytes(),
        Some(antom_pem()),
        CLIENT_ID,
    )
    .await;
    assert_eq!(status, 200);
    let e = tokio::time::timeout(Duration::from_secs(3), on_a.message())
        .await
        .expect("replica A delivers B's event")
        .unwrap()
        .unwrap();
    println!(
        "a notification received by replica B reached a watcher on replica A after {} ms",
        sent.elapsed().as_millis()
    );
    assert!(e.event_id.ends_with("payment/PG_PAY_2/S"), "{e:?}");
    // Replica B replays the refund's final state, learned by replica A.
    let replay = create_async(&b.refunds, "pg-async", 400).await;
    assert_eq!(replay.status, pb::RefundStatus::Succeeded as i32);
}

#[tokio::test]
async fn refunds_carry_the_accounts_notify_url_and_antom_uses_it() {
    let addr = SocketAddr::from(([127, 0, 0, 1], common::process::free_port()));
    // No notification target in the simulator: only the refund's own refundNotifyUrl.
    let env = start_with(Options {
        antom_notify_url: Some(format!("http://{addr}/notify/main")),
        ..Options::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(paygate::server::serve_notifications(
        env.shared.clone(),
        listener,
    ));
    create_async(&env.refunds, "own-url", 250).await;
    let sim_refund = env
        .sim()
        .refunds_of("PAY_ASYNC")
        .into_iter()
        .find(|r| r.refund_request_id == "own-url")
        .unwrap();
    assert_eq!(
        sim_refund.notify_url.as_deref(),
        Some(format!("http://{addr}/notify/main/refund").as_str())
    );
    assert!(env.sim().settle_refund(&sim_refund.refund_id, true));
    let d = delivered(&env, 0, 1).await;
    assert!(d.acked, "{d:?}");
    let replay = create_async(&env.refunds, "own-url", 250).await;
    assert_eq!(replay.status, pb::RefundStatus::Succeeded as i32);
}

#[tokio::test]
async fn watch_follows_caller_policies() {
    use paygate::server::Policy;
    let env = start_with(Options {
        notify: true,
        auth: token_auth(&[
            (
                "ledger",
                Policy {
                    methods: Some(vec!["EventService.Watch".into()]),
                    accounts: Some(vec!["main".into()]),
                    read_others: false,
                },
            ),
            (
                "elsewhere",
                Policy {
                    methods: Some(vec!["EventService.Watch".into()]),
                    accounts: Some(vec!["other".into()]),
                    read_others: false,
                },
            ),
            (
                "refunds-only",
                Policy {
                    methods: Some(vec!["RefundService.Create".into()]),
                    accounts: None,
                    read_others: false,
                },
            ),
            (
                "maker",
                Policy {
                    methods: Some(vec![
                        "RefundService.Create".into(),
                        "EventService.Watch".into(),
                    ]),
                    accounts: None,
                    read_others: false,
                },
            ),
            (
                "finance",
                Policy {
                    methods: Some(vec!["EventService.Watch".into()]),
                    accounts: None,
                    read_others: true,
                },
            ),
        ]),
        ..Options::default()
    })
    .await;
    target(&env, env.notify_addr.unwrap(), "main", 8);
    env.sim()
        .charge_period("SUB_1", "AUTH_PAY", ("USD", 100), true);
    assert!(delivered(&env, 0, 9).await.acked);
    let mut client = EventServiceClient::new(env.channel.clone());
    let long = Duration::from_secs(30);

    let err = client.watch(watch_req("")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .watch(authed(watch_req(""), "refunds-only-token", long))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .watch(authed(
            pb::WatchEventsRequest {
                after_cursor: String::new(),
                accounts: vec!["main".into()],
                ..Default::default()
            },
            "elsewhere-token",
            long,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A caller sees only its accounts' events.
    let mut theirs = client
        .watch(authed(watch_req(""), "elsewhere-token", long))
        .await
        .unwrap()
        .into_inner();
    assert!(
        drain(&mut theirs, Duration::from_millis(400))
            .await
            .is_empty()
    );
    let mut ours = client
        .watch(authed(watch_req(""), "ledger-token", long))
        .await
        .unwrap()
        .into_inner();
    let got = drain(&mut ours, Duration::from_millis(400)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].account, "main");

    // A refund's event goes to the caller that made it and to callers allowed to read
    // others' refunds; the payment event (no caller) to every watcher of the account.
    let mut refunds = env.refunds.clone();
    let made = refunds
        .create(authed(async_refund("maker-1", 300), "maker-token", long))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.status, pb::RefundStatus::Processing as i32);
    let sim_refund = env
        .sim()
        .refunds_of("PAY_ASYNC")
        .into_iter()
        .find(|r| r.refund_request_id == "maker-1")
        .unwrap();
    assert!(env.sim().settle_refund(&sim_refund.refund_id, true));
    assert!(delivered(&env, 1, 9).await.acked);
    let kinds = |events: &[pb::Event]| -> Vec<String> {
        events.iter().map(|e| e.event_id.clone()).collect()
    };
    let watch_as = |token: &'static str| {
        let mut c = client.clone();
        async move {
            let mut s = c
                .watch(authed(watch_req(""), token, long))
                .await
                .unwrap()
                .into_inner();
            drain(&mut s, Duration::from_millis(500)).await
        }
    };
    let maker = watch_as("maker-token").await;
    let finance = watch_as("finance-token").await;
    let ledger = watch_as("ledger-token").await;
    assert_eq!(maker.len(), 2, "{:?}", kinds(&maker));
    assert_eq!(kinds(&finance), kinds(&maker));
    assert_eq!(ledger.len(), 1, "only the payment: {:?}", kinds(&ledger));
    assert!(kinds(&maker)[1].contains("/refund/"));
    assert_eq!(refund_of(&maker[1]).payment_id, "PAY_ASYNC");
}

#[tokio::test]
async fn the_simulator_resends_until_the_acknowledgement_is_exact() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A receiver that answers 200 with a wrong acknowledgement twice, then the right one.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => r#"{"result":{"resultCode":"SUCCESS","resultStatus":"U"}}"#.to_owned(),
                1 => "OK".to_owned(),
                _ => ACK.to_owned(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let env = start().await;
    target(&env, addr, "main", 8);
    env.sim()
        .charge_period("SUB_1", "ACK_PAY", ("USD", 100), true);
    let d = delivered(&env, 0, 9).await;
    assert!(d.acked, "{d:?}");
    assert_eq!(d.attempts, 3);
    assert_eq!(d.statuses, [200, 200, 200]);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}
