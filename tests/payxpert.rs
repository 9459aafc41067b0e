//! PayXpert through the same gRPC API: cancel with reason codes, refunds (full, partial,
//! multiple, over-refund, currency), status, authentication, every code-table row, and the hard
//! case: a refund whose answer is lost after it executed, with no provider idempotency key.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use paygate::error::{provider_code, refusal_code};
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::pb::subscription_service_client::SubscriptionServiceClient;
use paygate::providers::payxpert::client::Settings;
use paygate::providers::payxpert::{PayXpert, codes};
use paygate::providers::{Disposition, Meaning};
use paygate::server::GuardSettings;
use paygate::sim::Simulator as _;
use paygate::sim::payxpert::{PayXpertSim, Tx};
use paygate::sim::{Fault, FaultKind, SimServer};
use tonic::Code;
use tonic::transport::Channel;

const ORIGINATOR: &str = "ORIG1";
const PASSWORD: &str = "px-password";
/// The quiet period of the in-process gateways (the binary insists on more than its attempt
/// timeout; these tests use a short one).
const QUIET: Duration = Duration::from_millis(1_000);

struct Px {
    sim: SimServer<PayXpertSim>,
    /// Keeps the gateway running for the test's life.
    _served: Served,
    refunds: RefundServiceClient<Channel>,
    subs: SubscriptionServiceClient<Channel>,
}

impl Px {
    fn sim(&self) -> &Arc<PayXpertSim> {
        &self.sim.sim
    }
}

async fn px_sim() -> SimServer<PayXpertSim> {
    let sim = PayXpertSim::new(ORIGINATOR, PASSWORD);
    sim.add_sale("1001", 10_000, "EUR", Some("3001"));
    sim.add_sale("1002", 5_000, "EUR", None);
    sim.add_sale("1003", 2_000, "USD", None);
    for (id, days) in [("3001", 20), ("3002", 10), ("3003", 5)] {
        sim.add_active_subscription(id, days);
    }
    sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn gateway_for(sim: &SimServer<PayXpertSim>, password: &str, o: Options) -> Served {
    let provider = PayXpert::new(Settings {
        base_url: sim.base_url(),
        originator_id: ORIGINATOR.into(),
        password: paygate::secret::SecretFile::fixed(password.into()),
        timeout: Duration::from_secs(3),
        quiet_period: QUIET,
    })
    .unwrap();
    serve_account("px", Arc::new(provider), o).await
}

async fn start_px(password: &str, o: Options) -> Px {
    let sim = px_sim().await;
    let served = gateway_for(&sim, password, o).await;
    Px {
        refunds: RefundServiceClient::new(served.channel.clone()),
        subs: SubscriptionServiceClient::new(served.channel.clone()),
        sim,
        _served: served,
    }
}

fn refund(request_id: &str, payment: &str, value: i64, currency: &str) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: payment.into(),
        amount: money(currency, value),
        ..Default::default()
    }
}

fn cancel(
    request_id: &str,
    sub: &str,
    kind: pb::CancellationType,
    reason: i32,
) -> pb::CancelSubscriptionRequest {
    pb::CancelSubscriptionRequest {
        request_id: request_id.into(),
        subscription_id: sub.into(),
        cancellation_type: kind as i32,
        cancel_reason: reason,
        ..Default::default()
    }
}

#[tokio::test]
async fn cancel_immediately_or_at_the_end_of_the_paid_period() {
    let mut px = start_px(PASSWORD, Options::default()).await;
    // TERMINATE without a reason: 1000, immediate.
    let r = px
        .subs
        .cancel(cancel("pc-1", "3002", pb::CancellationType::Terminate, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.effect(), pb::CancellationEffect::Immediate);
    assert_eq!(r.status(), pb::CancellationStatus::Confirmed);
    assert_eq!(r.cancel_reason, 1000);
    assert_eq!(r.account, "px");
    assert_eq!(r.subscription_state, "canceled");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((r.cancel_time.unwrap().seconds - now).abs() < 60);
    assert_eq!(
        px.sim()
            .subscription("3002")
            .unwrap()
            .cancel_reason
            .as_deref(),
        Some("1000")
    );

    // CANCEL with "too expensive": ends after the paid period.
    let r = px
        .subs
        .cancel(cancel("pc-2", "3003", pb::CancellationType::Cancel, 1016))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.effect(), pb::CancellationEffect::EndOfPeriod);
    assert_eq!(r.subscription_state, "active");
    let end = px.sim().subscription("3003").unwrap().period_end;
    assert_eq!(r.cancel_time.unwrap().seconds, end);
    // Named as Subscription names it, too.
    assert_eq!(r.end_time, r.cancel_time);
    assert!(end > now + 4 * 86_400);

    // CANCEL without a reason sends 1099.
    let r = px
        .subs
        .cancel(cancel("pc-3", "3001", pb::CancellationType::Cancel, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.cancel_reason, 1099);
    assert_eq!(px.sim().stats().cancels_executed, 3);
}

#[tokio::test]
async fn bad_cancel_reasons_never_reach_payxpert() {
    let mut px = start_px(PASSWORD, Options::default()).await;
    for (kind, reason) in [
        (pb::CancellationType::Cancel, 999),
        (pb::CancellationType::Cancel, 1100),
        (pb::CancellationType::Cancel, 1003),
        (pb::CancellationType::Terminate, 1016),
    ] {
        let e = px
            .subs
            .cancel(cancel("bad", "3001", kind, reason))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{reason}");
    }
    let e = px
        .subs
        .cancel(pb::CancelSubscriptionRequest {
            request_id: "bad-2".into(),
            subscription_request_id: "merchant-ref".into(),
            cancellation_type: pb::CancellationType::Cancel as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = px
        .subs
        .cancel(cancel(
            "unknown-sub",
            "9999",
            pb::CancellationType::Cancel,
            0,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(reason(&e), "PAYXPERT_678");
    assert_eq!(
        px.sim().calls("cancel"),
        1,
        "only the unknown subscription was sent"
    );
}

#[tokio::test]
async fn refunds_full_partial_multiple_over_and_currency() {
    let mut px = start_px(PASSWORD, Options::default()).await;
    let a = px
        .refunds
        .create(refund("pr-1", "1002", 2_000, "EUR"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status(), pb::RefundStatus::Succeeded);
    assert_eq!(a.provider_result.as_ref().unwrap().code, "000");
    let b = px
        .refunds
        .create(refund("pr-2", "1002", 3_000, "EUR"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.refund_id, b.refund_id);
    let e = px
        .refunds
        .create(refund("pr-3", "1002", 1, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "PAYXPERT_064");
    // A full refund of another payment.
    px.refunds
        .create(refund("pr-4", "1003", 2_000, "USD"))
        .await
        .unwrap();
    // The currency must be the original transaction's.
    let e = px
        .refunds
        .create(refund("pr-5", "1003", 100, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "CURRENCY_MISMATCH");
    let e = px
        .refunds
        .create(refund("pr-6", "7777", 100, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "PAYXPERT_012");
    assert_eq!(px.sim().refunds_of("1002").len(), 2);
    assert_eq!(px.sim().refunds_of("1003").len(), 1);
    assert_eq!(px.sim().stats().refunds_executed, 3);
}

#[tokio::test]
async fn refunds_leave_the_subscription_alone_unless_asked() {
    let mut px = start_px(PASSWORD, Options::default()).await;
    px.refunds
        .create(refund("ps-1", "1001", 1_000, "EUR"))
        .await
        .unwrap();
    assert_eq!(
        px.sim().subscription("3001").unwrap().state,
        "active",
        "PayXpert's default would cancel it"
    );
    let mut req = refund("ps-2", "1001", 1_000, "EUR");
    req.cancel_subscription = true;
    px.refunds.create(req).await.unwrap();
    assert_eq!(px.sim().subscription("3001").unwrap().state, "canceled");
}

#[tokio::test]
async fn inquire_by_refund_id_or_by_the_recorded_request_id() {
    let mut px = start_px(PASSWORD, Options::default()).await;
    let r = px
        .refunds
        .create(refund("pi-1", "1002", 1_500, "EUR"))
        .await
        .unwrap()
        .into_inner();
    for q in [
        pb::InquireRefundRequest {
            refund_id: r.refund_id.clone(),
            ..Default::default()
        },
        pb::InquireRefundRequest {
            request_id: "pi-1".into(),
            ..Default::default()
        },
    ] {
        let got = px.refunds.inquire(q).await.unwrap().into_inner();
        assert_eq!(got.refund_id, r.refund_id);
        assert_eq!(got.status(), pb::RefundStatus::Succeeded);
        assert_eq!(got.payment_id, "1002");
        assert_eq!(got.amount, money("EUR", 1_500));
        assert!(got.refund_time.is_some());
    }
    let e = px
        .refunds
        .inquire(pb::InquireRefundRequest {
            request_id: "never-made".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(reason(&e), "REFUND_NOT_RECORDED");
    let e = px
        .refunds
        .inquire(pb::InquireRefundRequest {
            refund_id: "1002".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a sale is not a refund");
}

#[tokio::test]
async fn wrong_credentials_are_our_misconfiguration() {
    let mut px = start_px("wrong-password", Options::default()).await;
    let e = px
        .refunds
        .create(refund("pa-1", "1002", 100, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(reason(&e), "PROVIDER_AUTH_FAILED");
    assert_eq!(retry_delay(&e), None);
    assert!(px.sim().stats().auth_failures > 0);
    assert_eq!(px.sim().stats().refunds_executed, 0);
}

#[tokio::test]
async fn every_code_table_row() {
    let mut px = start_px(
        PASSWORD,
        Options {
            guard: GuardSettings {
                breaker_threshold: 100,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    for (i, (code, meaning)) in codes::TABLE.iter().enumerate() {
        // A payment per row: a row whose outcome is unknown keeps its payment held.
        let payment = format!("{}", 4000 + i);
        px.sim().add_sale(&payment, 10_000, "EUR", None);
        px.sim().clear_faults();
        px.sim().inject(Fault::on(
            "refund",
            FaultKind::Result {
                code: code.to_string(),
                status: String::new(),
            },
        ));
        let got = px
            .refunds
            .create(refund(&format!("row-{i}"), &payment, 10, "EUR"))
            .await;
        match meaning {
            Meaning::Success => {
                // An injected "000" without a transaction id cannot be trusted.
                let e = got.unwrap_err();
                assert_eq!(e.code(), Code::Unavailable, "{code}");
            }
            Meaning::Definitive(refusal) => {
                let e = got.unwrap_err();
                assert_eq!(e.code(), refusal_code(*refusal), "{code}");
                assert_eq!(reason(&e), codes::reason(code));
                assert_eq!(retry_delay(&e), None);
            }
            Meaning::Retryable(why, after) => {
                let e = got.unwrap_err();
                let d = Disposition::Retryable {
                    why: *why,
                    after: *after,
                };
                assert_eq!(e.code(), provider_code(&d), "{code}");
                assert_eq!(retry_delay(&e), Some(*after));
            }
            Meaning::Misconfigured => {
                let e = got.unwrap_err();
                assert_eq!(e.code(), Code::Internal, "{code}");
            }
            Meaning::Unknown | Meaning::Processing => {
                let e = got.unwrap_err();
                assert_eq!(e.code(), Code::Unavailable, "{code}");
                assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
            }
        }
    }
    // An unknown code is a definitive refusal with the code as reason.
    px.sim().inject(Fault::on(
        "refund",
        FaultKind::Result {
            code: "777".into(),
            status: String::new(),
        },
    ));
    let e = px
        .refunds
        .create(refund("row-x", "1002", 10, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "PAYXPERT_777");
    assert_eq!(px.sim().stats().refunds_executed, 0);
}

#[tokio::test]
async fn a_lost_refund_answer_is_reconciled_never_resent() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("px.db").display());
    let sim = px_sim().await;
    // Another refund of the same payment, recorded by the gateway, must not be mistaken for
    // the lost one.
    let o = || Options {
        store_url: Some(store.clone()),
        ..Default::default()
    };
    let served = gateway_for(&sim, PASSWORD, o()).await;
    let mut refunds = RefundServiceClient::new(served.channel.clone());
    let other = refunds
        .create(refund("other", "1001", 700, "EUR"))
        .await
        .unwrap()
        .into_inner();

    sim.sim.inject(Fault::on("refund", FaultKind::LoseAnswer));
    let e = refunds
        .create(refund("lost-1", "1001", 700, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    assert_eq!(sim.sim.stats().refunds_executed, 2, "it did execute");
    assert_eq!(
        sim.sim.calls("refund"),
        2,
        "and was not resent within the call"
    );

    // Retrying settles it from PayXpert's refund export: the caller gets that refund.
    let got = refunds
        .create(refund("lost-1", "1001", 700, "EUR"))
        .await
        .unwrap()
        .into_inner();
    let executed = sim.sim.refunds_of("1001");
    assert_eq!(executed.len(), 2);
    let lost = executed
        .iter()
        .find(|t| t.transaction_id != other.refund_id)
        .unwrap();
    assert_eq!(got.refund_id, lost.transaction_id);
    assert_eq!(got.status(), pb::RefundStatus::Succeeded);
    for _ in 0..3 {
        let again = refunds
            .create(refund("lost-1", "1001", 700, "EUR"))
            .await
            .unwrap();
        assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
        assert_eq!(again.into_inner().refund_id, got.refund_id);
    }
    // And after a gateway restart.
    served.running.stop().await;
    let served = gateway_for(&sim, PASSWORD, o()).await;
    let mut refunds = RefundServiceClient::new(served.channel.clone());
    let again = refunds
        .create(refund("lost-1", "1001", 700, "EUR"))
        .await
        .unwrap();
    assert_eq!(again.into_inner().refund_id, got.refund_id);
    assert_eq!(sim.sim.calls("refund"), 2, "never sent a second time");
    assert_eq!(sim.sim.refunds_of("1001").len(), 2);
}

#[tokio::test]
async fn a_refund_lost_before_executing_is_sent_once_after_reconciling() {
    let mut px = start_px(PASSWORD, Options::default()).await;
    px.sim()
        .inject(Fault::on("refund", FaultKind::HttpStatus { status: 502 }));
    let e = px
        .refunds
        .create(refund("gw-1", "1002", 900, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    assert_eq!(px.sim().stats().refunds_executed, 0);
    // Not in the export yet means "not executed" only after the quiet period: until then the
    // retry is told when it becomes decidable, and nothing is sent.
    let e = px
        .refunds
        .create(refund("gw-1", "1002", 900, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    let wait = retry_delay(&e).unwrap();
    assert!(
        wait <= QUIET && wait >= Duration::from_millis(500),
        "{wait:?}"
    );
    assert_eq!(px.sim().calls("refund"), 1);
    tokio::time::sleep(wait).await;
    let r = px
        .refunds
        .create(refund("gw-1", "1002", 900, "EUR"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    assert_eq!(
        px.sim().calls("export"),
        2,
        "reconciled before sending again"
    );
    assert_eq!(px.sim().refunds_of("1002").len(), 1);
}

#[tokio::test]
async fn an_undecidable_refund_waits_for_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("px.db").display());
    let mut px = start_px(
        PASSWORD,
        Options {
            store_url: Some(store.clone()),
            ..Default::default()
        },
    )
    .await;
    px.sim().inject(Fault::on("refund", FaultKind::LoseAnswer));
    px.refunds
        .create(refund("amb-1", "1002", 800, "EUR"))
        .await
        .unwrap_err();
    // Someone refunds the same amount in PayXpert's back office: two candidates.
    px.sim().add_transaction(Tx {
        transaction_id: "8000001".into(),
        operation: "refund".into(),
        referral_id: Some("1002".into()),
        amount: 800,
        currency: "EUR".into(),
        error_code: "000".into(),
        date: time::OffsetDateTime::now_utc().unix_timestamp(),
        subscription_id: None,
    });
    for _ in 0..3 {
        let e = px
            .refunds
            .create(refund("amb-1", "1002", 800, "EUR"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
        assert_eq!(retry_delay(&e), None, "not retryable: an operator must act");
    }
    assert_eq!(px.sim().calls("refund"), 1, "never resent");
    assert_eq!(
        px.sim().calls("export"),
        1,
        "undecided once, then left to the operator"
    );

    // The operator checks PayXpert and settles the key with the gateway's own command.
    let ours = px
        .sim()
        .refunds_of("1002")
        .into_iter()
        .find(|t| t.transaction_id != "8000001")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args([
            "settle",
            "--store-url",
            &store,
            "--account",
            "px",
            "--request-id",
            "amb-1",
        ])
        .args([
            "--refund-id",
            &ours.transaction_id,
            "--payment-id",
            "1002",
            "--amount",
            "800",
            "--currency",
            "EUR",
            "--reason",
            "back office: the other refund was made by hand",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = px
        .refunds
        .create(refund("amb-1", "1002", 800, "EUR"))
        .await
        .unwrap();
    assert_eq!(r.metadata().get("idempotent-replayed").unwrap(), "true");
    let r = r.into_inner();
    assert_eq!(r.refund_id, ours.transaction_id);
    assert_eq!(r.provider_result.unwrap().provider, "operator");
    // The settle is the refund's one event: the lost answer and the undecided attempts
    // changed no state.
    let got = watch_until_quiet(&px._served.channel, pb::WatchEventsRequest::default()).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].source(), pb::EventSource::Operator);
    assert_eq!(got[0].account, "px");
    match got[0].payload.as_ref() {
        Some(pb::event::Payload::Refund(e)) => {
            assert_eq!(e.refund_id, ours.transaction_id);
            assert_eq!(e.status(), pb::RefundStatus::Succeeded);
        }
        other => panic!("not a refund event: {other:?}"),
    }
    // Settling twice is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args([
            "settle",
            "--store-url",
            &store,
            "--account",
            "px",
            "--request-id",
            "amb-1",
            "--failed",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A PayXpert refund and a cancel are one event each, from the provider's answer; their
/// replays add none.
#[tokio::test]
async fn payxpert_refunds_and_cancels_are_one_event_each() {
    let mut px = start_px(PASSWORD, Options::default()).await;
    for _ in 0..2 {
        px.refunds
            .create(refund("ev-1", "1002", 300, "EUR"))
            .await
            .unwrap();
        px.subs
            .cancel(cancel("ev-c", "3002", pb::CancellationType::Terminate, 0))
            .await
            .unwrap();
    }
    let got = watch_until_quiet(&px._served.channel, pb::WatchEventsRequest::default()).await;
    let seen: Vec<_> = got
        .iter()
        .map(|e| (e.provider.as_str(), e.source(), e.event_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "payxpert",
                pb::EventSource::ProviderAnswer,
                "payxpert/px/refund/ev-1/SUCCEEDED"
            ),
            (
                "payxpert",
                pb::EventSource::ProviderAnswer,
                "payxpert/px/subscription/3002/Confirmed-4"
            ),
        ],
        "{got:?}"
    );
}
