//! Callers sharing an account, through the binary: a request id belongs to the caller that
//! used it first (Antom would otherwise hand one caller's refund to another), a caller reads
//! only its own refunds and their events unless its policy says `read_others`, and what the
//! gateway says of a refund or subscription is the provider's truth even when notifications
//! and requests cross.

mod common;

use std::time::Duration;

use common::process::{GatewayProcess, antom_env, free_port, spawn_configured};
use common::*;
use paygate::pb;
use paygate::pb::event_service_client::EventServiceClient;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::pb::subscription_service_client::SubscriptionServiceClient;
use paygate::sim::Simulator as _;
use paygate::sim::antom::NotifyTarget;
use paygate::sim::{Fault, FaultKind};
use tonic::Code;

/// A gateway process with one Antom account (`antom`), callers alpha and beta (their own
/// refunds only) and support (`read_others`), receiving notifications on `notify_port`.
fn spawn_with_callers(
    dir: &std::path::Path,
    antom_url: &str,
    notify_port: Option<u16>,
    extra_env: &[(&'static str, String)],
) -> GatewayProcess {
    let tokens: String = ["alpha", "beta", "support"]
        .iter()
        .map(|c| {
            format!(
                "{c} {}\n",
                paygate::server::hash_token(&format!("{c}-token"))
            )
        })
        .collect();
    std::fs::write(dir.join("tokens"), tokens).unwrap();
    let config = dir.join("paygate.toml");
    std::fs::write(
        &config,
        "[callers.alpha]\n\
         methods = [\"RefundService.Create\", \"RefundService.Inquire\", \"SubscriptionService.Cancel\", \"SubscriptionService.Get\", \"EventService.Watch\"]\n\
         [callers.beta]\n\
         methods = [\"RefundService.Create\", \"RefundService.Inquire\", \"SubscriptionService.Cancel\", \"SubscriptionService.Get\", \"EventService.Watch\"]\n\
         [callers.support]\n\
         methods = [\"RefundService.Inquire\", \"EventService.Watch\"]\n\
         read_others = true\n",
    )
    .unwrap();
    let d = |f: &str| dir.join(f).display().to_string();
    let mut env = antom_env(dir, antom_url);
    env.push(("PAYGATE_AUTH_TOKENS_FILE", d("tokens")));
    if let Some(port) = notify_port {
        env.push(("PAYGATE_NOTIFY_ADDR", format!("127.0.0.1:{port}")));
    }
    env.extend(extra_env.iter().cloned());
    spawn_configured(&config, &format!("sqlite://{}", d("paygate.db")), &env)
}

#[tokio::test]
async fn request_ids_and_reads_belong_to_their_caller() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn_with_callers(dir.path(), &sim.base_url(), None, &[]);
    gw.client().await;
    let c = RefundServiceClient::connect(gw.url()).await.unwrap();
    let t = Duration::from_secs(5);
    let create = |caller: &str, value: i64| {
        authed(
            refund_req("shared-1", "PAY_USD_100", value),
            &format!("{caller}-token"),
            t,
        )
    };
    let inquire =
        |caller: &str, q: pb::InquireRefundRequest| authed(q, &format!("{caller}-token"), t);
    let by_request = || pb::InquireRefundRequest {
        request_id: "shared-1".into(),
        ..Default::default()
    };

    let a = c
        .clone()
        .create(create("alpha", 100))
        .await
        .unwrap()
        .into_inner();
    // Beta with alpha's request id, the same or other fields: refused, never sent.
    for value in [100, 999] {
        let e = c.clone().create(create("beta", value)).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        assert_eq!(reason(&e), "REQUEST_ID_CLAIMED");
    }
    assert_eq!(sim.sim.calls("refund"), 1);
    // Beta cannot read alpha's refund; alpha and support can.
    let by_id = || pb::InquireRefundRequest {
        refund_id: a.refund_id.clone(),
        ..Default::default()
    };
    for q in [by_request(), by_id()] {
        let e = c
            .clone()
            .inquire(inquire("beta", q.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(reason(&e), "REFUND_NOT_RECORDED");
        assert_eq!(
            c.clone()
                .inquire(inquire("alpha", q.clone()))
                .await
                .unwrap()
                .into_inner()
                .refund_id,
            a.refund_id
        );
        assert_eq!(
            c.clone()
                .inquire(inquire("support", q))
                .await
                .unwrap()
                .into_inner()
                .refund_id,
            a.refund_id
        );
    }
    // Alpha's retry replays.
    let again = c.clone().create(create("alpha", 100)).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(sim.sim.stats().refunds_executed, 1);
}

/// Waits until the simulator's notification `index` is acknowledged.
async fn acked(sim: &paygate::sim::antom::SimServer, index: usize) {
    for _ in 0..250 {
        if sim.sim.deliveries().get(index).is_some_and(|d| d.acked) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "notification {index} not acknowledged: {:?}",
        sim.sim.deliveries()
    );
}

/// The events a caller's Watch delivers within `quiet`.
async fn watched(url: &str, caller: &str) -> Vec<pb::Event> {
    let mut c = EventServiceClient::connect(url.to_string()).await.unwrap();
    let mut s = c
        .watch(authed(
            pb::WatchEventsRequest::default(),
            &format!("{caller}-token"),
            Duration::from_secs(30),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(500), s.message())
        .await
        .map(|m| m.transpose())
    {
        got.push(e);
    }
    got
}

#[tokio::test]
async fn events_and_states_tell_the_providers_truth_to_the_right_caller() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    sim.sim.notify_to(NotifyTarget {
        base_url: format!("http://127.0.0.1:{port}/notify/antom"),
        resend: vec![Duration::from_millis(100); 8],
        auto_settle: None,
    });
    let gw = spawn_with_callers(dir.path(), &sim.base_url(), Some(port), &[]);
    gw.client().await;
    let t = Duration::from_secs(10);
    let mut refunds = RefundServiceClient::connect(gw.url()).await.unwrap();

    // Alpha's refund settles by notification while its Create still waits for Antom's answer.
    sim.sim
        .inject(Fault::on("refund", FaultKind::SlowAnswer { ms: 1_500 }));
    let create = tokio::spawn(async move {
        refunds
            .create(authed(
                pb::CreateRefundRequest {
                    amount: money("EUR", 200),
                    ..refund_req("alpha-async", "PAY_ASYNC", 200)
                },
                "alpha-token",
                t,
            ))
            .await
    });
    let mut refund_id = None;
    for _ in 0..200 {
        refund_id = sim
            .sim
            .refunds_of("PAY_ASYNC")
            .into_iter()
            .find(|r| r.refund_request_id == "alpha-async")
            .map(|r| r.refund_id);
        if refund_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sim.sim.settle_refund(&refund_id.unwrap(), true));
    acked(&sim, 0).await;
    assert!(!create.is_finished(), "the notification came first");
    create.await.unwrap().unwrap();

    // The event carries the payment, and goes to alpha and support, not to beta.
    let alpha = watched(&gw.url(), "alpha").await;
    assert_eq!(alpha.len(), 1, "{alpha:?}");
    match alpha[0].payload.as_ref().unwrap() {
        pb::event::Payload::Refund(r) => assert_eq!(r.payment_id, "PAY_ASYNC"),
        other => panic!("{other:?}"),
    }
    assert_eq!(watched(&gw.url(), "support").await, alpha);
    assert!(watched(&gw.url(), "beta").await.is_empty());

    // A confirmed TERMINATE is not replaced by a later CANCEL of the same subscription.
    let mut subs = SubscriptionServiceClient::connect(gw.url()).await.unwrap();
    let cancel = |request_id: &str, kind: pb::CancellationType| {
        authed(
            pb::CancelSubscriptionRequest {
                request_id: request_id.into(),
                subscription_id: "SUB_2".into(),
                cancellation_type: kind as i32,
                ..Default::default()
            },
            "alpha-token",
            t,
        )
    };
    subs.cancel(cancel("alpha-terminate", pb::CancellationType::Terminate))
        .await
        .unwrap();
    acked(&sim, 1).await;
    subs.cancel(cancel("alpha-cancel", pb::CancellationType::Cancel))
        .await
        .unwrap();
    let got = subs
        .get(authed(
            pb::GetSubscriptionRequest {
                subscription_id: "SUB_2".into(),
                ..Default::default()
            },
            "alpha-token",
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.cancellation_status(), pb::CancellationStatus::Confirmed);
    assert_eq!(got.cancellation_type(), pb::CancellationType::Terminate);
}

#[tokio::test]
async fn payxpert_refunds_are_read_by_their_caller_or_by_read_others() {
    use common::process::{PX_ORIGINATOR, PX_PASSWORD};
    let antom = shared_antom_sim().await;
    let px = paygate::sim::payxpert::PayXpertSim::new(PX_ORIGINATOR, PX_PASSWORD);
    px.add_sale("1001", 10_000, "EUR", None);
    let px = px.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("px-password"), PX_PASSWORD).unwrap();
    let gw = spawn_with_callers(
        dir.path(),
        &antom.base_url(),
        None,
        &[
            ("PAYGATE_PAYXPERT_BASE_URL", px.base_url()),
            ("PAYGATE_PAYXPERT_ORIGINATOR_ID", PX_ORIGINATOR.to_string()),
            (
                "PAYGATE_PAYXPERT_PASSWORD_FILE",
                dir.path().join("px-password").display().to_string(),
            ),
        ],
    );
    gw.client().await;
    let c = RefundServiceClient::connect(gw.url()).await.unwrap();
    let t = Duration::from_secs(5);
    let made = c
        .clone()
        .create(authed(
            pb::CreateRefundRequest {
                account: "payxpert".into(),
                request_id: "px-shared".into(),
                payment_id: "1001".into(),
                amount: money("EUR", 100),
                ..Default::default()
            },
            "alpha-token",
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    let by_request = |caller: &str| {
        authed(
            pb::InquireRefundRequest {
                account: "payxpert".into(),
                request_id: "px-shared".into(),
                ..Default::default()
            },
            &format!("{caller}-token"),
            t,
        )
    };
    let e = c.clone().inquire(by_request("beta")).await.unwrap_err();
    assert_eq!(reason(&e), "REFUND_NOT_RECORDED");
    for caller in ["alpha", "support"] {
        let r = c
            .clone()
            .inquire(by_request(caller))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.refund_id, made.refund_id, "{caller}");
    }
}
