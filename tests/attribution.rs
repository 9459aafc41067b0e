//! PayXpert has no idempotency key and no merchant reference on a refund, so the gateway alone
//! decides which provider refund belongs to which request. These tests drive the `paygate`
//! binary against the PayXpert simulator through the ways that decision used to go wrong: a
//! read that attributed money, another request's slow answer, two retries adopting one
//! refund, a provider still processing after the gateway hung up, a reconciliation window
//! anchored at the retry, an operator settling a live key, retention shorter than the refund
//! window, and an export too large to read. Each counts what the simulator executed.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{GatewayProcess, faketime, gateway_binary, spawn_payxpert_gateway};
use common::{money, reason, retry_delay};
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::sim::payxpert::{PayXpertSim, Tx};
use paygate::sim::{Fault, FaultKind, SimServer};
use tonic::Code;
use tonic::transport::Channel;

use common::process::{PX_ORIGINATOR as ORIGINATOR, PX_PASSWORD as PASSWORD};
use paygate::sim::Simulator as _;
/// The account's attempt timeout and quiet period in these tests (the binary insists that the
/// quiet period is longer than the attempt timeout).
const TIMEOUT_MS: u64 = 1_000;
const QUIET: Duration = Duration::from_millis(2_500);

/// A PayXpert simulator with sales, and a directory for the gateway's store and settings.
struct Px {
    sim: SimServer<PayXpertSim>,
    dir: tempfile::TempDir,
}

impl Px {
    async fn new() -> Self {
        let sim = PayXpertSim::new(ORIGINATOR, PASSWORD);
        for (id, amount) in [("1001", 10_000), ("1002", 10_000), ("1003", 10_000)] {
            sim.add_sale(id, amount, "EUR", None);
        }
        sim.add_active_subscription("3001", 20);
        let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        Self { sim, dir }
    }

    fn sim(&self) -> &Arc<PayXpertSim> {
        &self.sim.sim
    }

    fn store(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("px.db").display())
    }

    /// `paygate serve` with one PayXpert account, the default one.
    fn spawn(&self, extra_env: &[(&str, String)]) -> GatewayProcess {
        let timeout = Duration::from_millis(TIMEOUT_MS);
        spawn_payxpert_gateway(
            self.dir.path(),
            &self.sim.base_url(),
            &self.store(),
            timeout,
            QUIET,
            extra_env,
        )
    }

    fn executed(&self) -> u64 {
        self.sim().stats().refunds_executed
    }
}

fn refund(request_id: &str, payment: &str, value: i64) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: payment.into(),
        amount: money("EUR", value),
        ..Default::default()
    }
}

fn with_deadline<T>(msg: T, d: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(d);
    r
}

async fn create(
    c: &RefundServiceClient<Channel>,
    req: pb::CreateRefundRequest,
    deadline: Duration,
) -> Result<pb::Refund, tonic::Status> {
    c.clone()
        .create(with_deadline(req, deadline))
        .await
        .map(|r| r.into_inner())
}

/// Retries `req` as a well-behaved client does (after each RetryInfo) until it answers OK or
/// a final error, within `within`.
async fn settle(
    c: &RefundServiceClient<Channel>,
    req: pb::CreateRefundRequest,
    within: Duration,
) -> Result<pb::Refund, tonic::Status> {
    let end = Instant::now() + within;
    loop {
        match create(c, req.clone(), Duration::from_secs(5)).await {
            Ok(r) => return Ok(r),
            Err(e) => match retry_delay(&e) {
                Some(d) if Instant::now() + d < end => tokio::time::sleep(d).await,
                _ => return Err(e),
            },
        }
    }
}

/// Every key answered OK names its own refund, no refund is answered to two keys, and the
/// simulator executed exactly one refund per key answered OK (and no others).
fn assert_one_refund_per_key(px: &Px, payment: &str, answers: &[(&str, &pb::Refund)]) {
    let executed = px.sim().refunds_of(payment);
    let mut ids: Vec<&str> = answers.iter().map(|(_, r)| r.refund_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        answers.len(),
        "one refund answered to two keys: {answers:?}"
    );
    for (key, r) in answers {
        assert!(
            executed.iter().any(|t| t.transaction_id == r.refund_id),
            "{key} was answered {} which PayXpert never executed",
            r.refund_id
        );
    }
    assert_eq!(
        executed.len(),
        answers.len(),
        "refunds executed {executed:?} for keys answered {answers:?}"
    );
}

#[tokio::test]
async fn a_read_never_attributes_money() {
    let px = Px::new().await;
    let gw = px.spawn(&[]);
    let c = gw.client().await;
    // Create's answer is lost after PayXpert executed the refund.
    px.sim().inject(Fault::on("refund", FaultKind::LoseAnswer));
    let e = create(&c, refund("lost-a", "1001", 700), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    let executed = px.sim().refunds_of("1001");
    assert_eq!(executed.len(), 1);
    // Someone inquires that refund by its id, naming the lost request's id.
    let q = c
        .clone()
        .inquire(pb::InquireRefundRequest {
            refund_id: executed[0].transaction_id.clone(),
            request_id: "lost-a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.refund_id, executed[0].transaction_id);
    // The retried Create adopts that refund instead of refunding again.
    let r = settle(&c, refund("lost-a", "1001", 700), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r.refund_id, executed[0].transaction_id);
    assert_one_refund_per_key(&px, "1001", &[("lost-a", &r)]);
}

#[tokio::test]
async fn another_requests_slow_answer_is_never_adopted() {
    let px = Px::new().await;
    let gw = px.spawn(&[]);
    let c = gw.client().await;
    // A: nothing executed, but the outcome is unknown (HTTP 502).
    px.sim()
        .inject(Fault::on("refund", FaultKind::HttpStatus { status: 502 }));
    let e = create(&c, refund("slow-a", "1002", 500), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    // B: same payment and amount; PayXpert would execute it at once and answer late, within
    // the attempt timeout.
    px.sim()
        .inject(Fault::on("refund", FaultKind::SlowAnswer { ms: 800 }));
    let b = tokio::spawn({
        let c = c.clone();
        async move { create(&c, refund("slow-b", "1002", 500), Duration::from_secs(6)).await }
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    // A retries while B's answer may be on its way.
    let a = settle(&c, refund("slow-a", "1002", 500), Duration::from_secs(15)).await;
    let b = b.await.unwrap();
    px.sim().clear_faults();
    let b = match b {
        Ok(r) => r,
        Err(_) => settle(&c, refund("slow-b", "1002", 500), Duration::from_secs(15))
            .await
            .unwrap(),
    };
    let a = a.unwrap();
    assert_one_refund_per_key(&px, "1002", &[("slow-a", &a), ("slow-b", &b)]);
}

#[tokio::test]
async fn two_retries_never_adopt_the_same_refund() {
    let px = Px::new().await;
    let gw = px.spawn(&[]);
    let c = gw.client().await;
    // A executes and its answer is lost; B gets a 502 (or is held back).
    px.sim().inject(Fault::on("refund", FaultKind::LoseAnswer));
    create(&c, refund("pair-a", "1003", 400), Duration::from_secs(5))
        .await
        .unwrap_err();
    px.sim()
        .inject(Fault::on("refund", FaultKind::HttpStatus { status: 502 }));
    create(&c, refund("pair-b", "1003", 400), Duration::from_secs(2))
        .await
        .unwrap_err();
    px.sim().clear_faults();
    // Both retry at once, as a client library's retry policy does.
    let (a, b) = tokio::join!(
        settle(&c, refund("pair-a", "1003", 400), Duration::from_secs(20)),
        settle(&c, refund("pair-b", "1003", 400), Duration::from_secs(20)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_one_refund_per_key(&px, "1003", &[("pair-a", &a), ("pair-b", &b)]);
}

#[tokio::test]
async fn not_yet_in_the_export_is_not_taken_for_not_executed() {
    let px = Px::new().await;
    let gw = px.spawn(&[]);
    let c = gw.client().await;
    // PayXpert keeps processing after the gateway hung up at the caller's deadline, and
    // decides within the quiet period (2.5 s): 1.6 s leaves the immediate retry below 1.1 s
    // after the deadline to find it not yet in the export, and the export 0.9 s to show it
    // before the quiet period ends, on a slow, loaded machine too.
    px.sim()
        .inject(Fault::on("refund", FaultKind::ExecuteLate { ms: 1_600 }));
    let e = create(
        &c,
        refund("late-1", "1001", 300),
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert_eq!(px.executed(), 0, "not executed yet");
    // An immediate retry: not in the export, but too early for that to mean anything.
    let e = create(&c, refund("late-1", "1001", 300), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN");
    let wait = retry_delay(&e).expect("RetryInfo says when it becomes decidable");
    assert!(wait <= QUIET, "{wait:?}");
    let r = settle(&c, refund("late-1", "1001", 300), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(px.sim().calls("refund"), 1, "never sent again");
    assert_one_refund_per_key(&px, "1001", &[("late-1", &r)]);
}

#[tokio::test]
async fn the_quiet_period_counts_from_when_the_refund_can_still_leave() {
    let px = Px::new().await;
    let gw = px.spawn(&[]);
    let c = gw.client().await;
    // The send is recorded, then the status read takes 0.9 s, so the refund leaves 0.9 s
    // after that record; PayXpert keeps processing after the gateway hung up (at the
    // caller's 2 s deadline) and decides 2.4 s after the request left, within the documented
    // quiet period, but 3.3 s after the send was recorded.
    px.sim()
        .inject(Fault::on("status", FaultKind::Latency { ms: 900 }));
    px.sim()
        .inject(Fault::on("refund", FaultKind::ExecuteLate { ms: 2_400 }));
    let started = Instant::now();
    let e = create(&c, refund("leave-1", "1003", 400), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{e:?}");
    // Retries as a well-behaved client does: none may send again before PayXpert decided.
    let r = settle(&c, refund("leave-1", "1003", 400), Duration::from_secs(15))
        .await
        .unwrap();
    // Whatever was sent late has been decided by now.
    let decided = started + Duration::from_millis(4_500);
    tokio::time::sleep(decided.saturating_duration_since(Instant::now())).await;
    assert_eq!(
        px.sim().calls("refund"),
        1,
        "sent again before PayXpert decided"
    );
    assert_one_refund_per_key(&px, "1003", &[("leave-1", &r)]);
}

#[tokio::test]
async fn the_export_is_searched_from_the_first_attempt() {
    let px = Px::new().await;
    let mut gw = px.spawn(&[]);
    let c = gw.client().await;
    px.sim().inject(Fault::on("refund", FaultKind::LoseAnswer));
    create(&c, refund("old-1", "1002", 900), Duration::from_secs(5))
        .await
        .unwrap_err();
    gw.sigterm_and_wait();
    // The retry comes four days later.
    let gw = px.spawn(&faketime("+4d"));
    let c = gw.client().await;
    let r = settle(&c, refund("old-1", "1002", 900), Duration::from_secs(10))
        .await
        .unwrap();
    assert_one_refund_per_key(&px, "1002", &[("old-1", &r)]);
}

#[tokio::test]
async fn an_operator_never_settles_a_live_key() {
    let px = Px::new().await;
    let gw = px.spawn(&[]);
    let c = gw.client().await;
    // The attempt executes and takes its time answering.
    px.sim()
        .inject(Fault::on("refund", FaultKind::SlowAnswer { ms: 800 }));
    let call = tokio::spawn({
        let c = c.clone();
        async move { create(&c, refund("live-1", "1003", 200), Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = Command::new(gateway_binary())
        .args([
            "settle",
            "--store-url",
            &px.store(),
            "--account",
            "payxpert",
        ])
        .args([
            "--request-id",
            "live-1",
            "--failed",
            "--reason",
            "looks stuck",
        ])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "settle must refuse a key whose attempt is live"
    );
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    // Later replays say what happened: that refund, not "settled as failed".
    for _ in 0..2 {
        let again = create(&c, refund("live-1", "1003", 200), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(again.refund_id, r.refund_id);
    }
    assert_one_refund_per_key(&px, "1003", &[("live-1", &r)]);
}

#[tokio::test]
async fn a_late_retry_of_a_completed_refund_replays() {
    let px = Px::new().await;
    let mut gw = px.spawn(&[]);
    let c = gw.client().await;
    let r = create(&c, refund("done-1", "1001", 600), Duration::from_secs(5))
        .await
        .unwrap();
    gw.sigterm_and_wait();
    // Eight days later: past the 7-day retention of other keys.
    let gw = px.spawn(&faketime("+8d"));
    let c = gw.client().await;
    // The purge runs at start and every 10 minutes; PAYGATE_TEST_PURGE_WAIT_MS lets a run
    // against an older build wait for its first purge.
    let wait = std::env::var("PAYGATE_TEST_PURGE_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let again = create(&c, refund("done-1", "1001", 600), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again.refund_id, r.refund_id);
    assert_one_refund_per_key(&px, "1001", &[("done-1", &r)]);
}

#[tokio::test]
async fn a_busy_merchants_export_is_read() {
    let px = Px::new().await;
    // 10,000 refunds of other payments in the last ten minutes (about 2 MB of export).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for i in 0..10_000i64 {
        let payment = format!("{}", 7_000_000 + i);
        px.sim().add_transaction(Tx {
            transaction_id: format!("{}", 8_000_000 + i),
            operation: "refund".into(),
            referral_id: Some(payment),
            amount: 100 + i % 900,
            currency: "EUR".into(),
            error_code: "000".into(),
            date: now - i % 600,
            subscription_id: None,
        });
    }
    let gw = px.spawn(&[]);
    let c = gw.client().await;
    px.sim().inject(Fault::on("refund", FaultKind::LoseAnswer));
    create(&c, refund("busy-1", "1002", 100), Duration::from_secs(5))
        .await
        .unwrap_err();
    let r = settle(&c, refund("busy-1", "1002", 100), Duration::from_secs(10))
        .await
        .unwrap();
    assert_one_refund_per_key(&px, "1002", &[("busy-1", &r)]);
    assert_eq!(px.sim().calls("refund"), 1);
}

#[tokio::test]
async fn a_cancel_answer_tells_what_payxpert_kept() {
    use paygate::pb::subscription_service_client::SubscriptionServiceClient;
    let px = Px::new().await;
    let gw = px.spawn(&[]);
    gw.client().await;
    let mut subs = SubscriptionServiceClient::connect(gw.url()).await.unwrap();
    let cancel =
        |request_id: &str, kind: pb::CancellationType, reason: i32| pb::CancelSubscriptionRequest {
            request_id: request_id.into(),
            subscription_id: "3001".into(),
            cancellation_type: kind as i32,
            cancel_reason: reason,
            ..Default::default()
        };
    let first = subs
        .cancel(cancel("px-c1", pb::CancellationType::Cancel, 1099))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.effect(), pb::CancellationEffect::EndOfPeriod);
    // PayXpert keeps the deferred cancel: a TERMINATE afterwards changes nothing, and the
    // answer must say so.
    let second = subs
        .cancel(cancel("px-c2", pb::CancellationType::Terminate, 0))
        .await
        .unwrap()
        .into_inner();
    let sub = px.sim().subscription("3001").unwrap();
    assert_eq!(sub.state, "active");
    assert_eq!(second.subscription_state, "active");
    assert_eq!(second.effect(), pb::CancellationEffect::EndOfPeriod);
    assert_eq!(second.cancel_reason, 1099);
    assert_eq!(second.cancel_time.unwrap().seconds, sub.period_end);
}
