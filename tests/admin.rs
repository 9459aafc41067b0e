//! Operators see and settle every key that needs a person, through the `paygate` binary on
//! SQLite and PostgreSQL: a PayXpert refund whose answer was lost while someone refunded the
//! same payment and amount by hand is left unresolved and blocks its payment; the admin service
//! lists it (by state and by payment), shows its attempts and the two candidate refunds,
//! refuses what it must (no reason, a non-admin caller, no credentials, a live key, a second
//! settle), settles it for an admin caller with an audit entry and an event, and the gauge of
//! keys needing a person goes 1 -> 0.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{
    GatewayProcess, PX_ORIGINATOR, PX_PASSWORD, TestDatabase, free_port, gateway_binary,
    spawn_configured,
};
use common::{metric_value, money, reason, retry_delay, scrape};
use paygate::pb;
use paygate::pb::admin as apb;
use paygate::pb::admin::admin_service_client::AdminServiceClient;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::sim::Simulator as _;
use paygate::sim::payxpert::{PayXpertSim, Tx};
use paygate::sim::{Fault, FaultKind, SimServer};
use tonic::Code;
use tonic::transport::Channel;

const BILLING_TOKEN: &str = "billing-token";
const OPS_TOKEN: &str = "ops-token";
const STUCK: &str = "keys/billing/RefundService.Create/stuck-1";

/// A PayXpert gateway with two callers: `billing` refunds, `ops` operates.
struct Env {
    sim: SimServer<PayXpertSim>,
    gw: GatewayProcess,
    metrics: u16,
    dir: tempfile::TempDir,
}

fn write_config(dir: &Path, px_url: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("px-password"), PX_PASSWORD).unwrap();
    let tokens = format!(
        "billing {}\nops {}\n",
        paygate::server::hash_token(BILLING_TOKEN),
        paygate::server::hash_token(OPS_TOKEN)
    );
    std::fs::write(dir.join("tokens"), tokens).unwrap();
    std::fs::write(dir.join("ops.token"), format!("{OPS_TOKEN}\n")).unwrap();
    std::fs::write(dir.join("billing.token"), BILLING_TOKEN).unwrap();
    let config = dir.join("paygate.toml");
    std::fs::write(
        &config,
        format!(
            "default_account = \"payxpert\"\n\
             [accounts.payxpert]\n\
             provider = \"payxpert\"\n\
             base_url = \"{px_url}\"\n\
             originator_id = \"{PX_ORIGINATOR}\"\n\
             password_file = \"{}\"\n\
             timeout_ms = 1000\n\
             [callers.billing]\n\
             methods = [\"RefundService.Create\", \"RefundService.Inquire\", \"EventService.Watch\"]\n\
             [callers.ops]\n\
             methods = [\"AdminService.ListKeys\", \"AdminService.GetKey\", \"AdminService.SettleKey\", \"AdminService.ListAuditEntries\"]\n",
            dir.join("px-password").display(),
        ),
    )
    .unwrap();
    config
}

async fn start(store_url: Option<String>) -> Env {
    let sim = PayXpertSim::new(PX_ORIGINATOR, PX_PASSWORD);
    for id in ["1001", "1002"] {
        sim.add_sale(id, 10_000, "EUR", None);
    }
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim.base_url());
    let store =
        store_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("px.db").display()));
    let metrics = free_port();
    let gw = spawn_configured(
        &config,
        &store,
        &[
            ("PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS", "2500".into()),
            (
                "PAYGATE_AUTH_TOKENS_FILE",
                dir.path().join("tokens").display().to_string(),
            ),
            ("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
        ],
    );
    gw.client().await;
    Env {
        sim,
        gw,
        metrics,
        dir,
    }
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

fn refund(request_id: &str, payment: &str, value: i64) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: payment.into(),
        amount: money("EUR", value),
        ..Default::default()
    }
}

impl Env {
    async fn channel(&self) -> Channel {
        Channel::from_shared(self.gw.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn create(&self, req: pb::CreateRefundRequest) -> Result<pb::Refund, tonic::Status> {
        RefundServiceClient::new(self.channel().await)
            .create(authed(req, BILLING_TOKEN))
            .await
            .map(|r| r.into_inner())
    }

    /// Retries as a well-behaved client does until an answer without RetryInfo.
    async fn create_until_final(
        &self,
        req: pb::CreateRefundRequest,
    ) -> Result<pb::Refund, tonic::Status> {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match self.create(req.clone()).await {
                Err(e) if retry_delay(&e).is_some_and(|d| Instant::now() + d < end) => {
                    tokio::time::sleep(retry_delay(&e).unwrap()).await
                }
                other => return other,
            }
        }
    }

    async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// `paygate admin ARGS` against this gateway with the token in `token`, printed as an
    /// operator's terminal shows it (`cargo test --test admin -- --nocapture`).
    fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        let out = Command::new(gateway_binary())
            .arg("admin")
            .arg("--address")
            .arg(self.gw.url())
            .arg("--token-file")
            .arg(self.dir.path().join(token))
            .args(args)
            .output()
            .unwrap();
        let quoted: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') || a.contains('\'') {
                    format!("{a:?}")
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        println!(
            "$ paygate admin --address {} --token-file {token} {}\n{}{}",
            self.gw.url(),
            quoted.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Waits until the gauge of keys needing a person reads `want` for unresolved keys.
    async fn gauge_reaches(&self, want: f64) {
        let labels = [("account", "payxpert"), ("state", "unresolved")];
        let mut seen = None;
        for _ in 0..100 {
            let s = scrape(self.metrics).await;
            seen = metric_value(&s, "paygate_keys_needing_attention", &labels);
            if seen == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("paygate_keys_needing_attention unresolved: {seen:?}, wanted {want}");
    }
}

/// The lost answer, the refund made by hand, and the retry that cannot tell them apart.
async fn make_stuck_key(env: &Env) -> (String, String) {
    env.sim
        .sim
        .inject(Fault::on("refund", FaultKind::LoseAnswer));
    let e = env
        .create(refund("stuck-1", "1001", 700))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{e:?}");
    let lost = env.sim.sim.refunds_of("1001")[0].transaction_id.clone();
    let by_hand = "9100001".to_owned();
    env.sim.sim.add_transaction(Tx {
        transaction_id: by_hand.clone(),
        operation: "refund".into(),
        referral_id: Some("1001".into()),
        amount: 700,
        currency: "EUR".into(),
        error_code: "000".into(),
        date: time::OffsetDateTime::now_utc().unix_timestamp(),
        subscription_id: None,
    });
    let e = env
        .create_until_final(refund("stuck-1", "1001", 700))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "OUTCOME_UNKNOWN"),
        "{e:?}"
    );
    (lost, by_hand)
}

async fn an_operator_finds_reads_and_settles_a_stuck_key(store_url: Option<String>) {
    let env = start(store_url).await;
    let (lost, by_hand) = make_stuck_key(&env).await;
    // The key blocks every other refund of its payment.
    let e = env
        .create(refund("other-1", "1001", 300))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "PAYMENT_REFUND_PENDING", "{e:?}");
    env.gauge_reaches(1.0).await;

    // Listed by state (the CLI, as an operator types it) and by payment (the API).
    let out = env.cli("ops.token", &["list", "--state", "unresolved"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{listed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listed.contains(STUCK), "{listed}");
    assert!(listed.contains("blocks its payment: yes"), "{listed}");
    let mut admin = env.admin().await;
    let by_payment = admin
        .list_keys(authed(
            apb::ListKeysRequest {
                payment_id: "1001".into(),
                ..Default::default()
            },
            OPS_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_payment.keys.len(), 1, "{by_payment:?}");
    let k = &by_payment.keys[0];
    assert_eq!(
        (
            k.name.as_str(),
            k.state(),
            k.account.as_str(),
            k.caller.as_str()
        ),
        (STUCK, apb::KeyState::Unresolved, "payxpert", "billing")
    );
    assert!(k.blocks_payment && !k.lease_holder_alive);
    assert_eq!(k.attempts, 2);
    for id in [&lost, &by_hand] {
        assert!(k.last_failure_reason.contains(id.as_str()), "{k:?}");
    }

    // Its history: both attempts, and the two candidates the export held.
    let got = admin
        .get_key(authed(apb::GetKeyRequest { name: STUCK.into() }, OPS_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = got
        .history
        .iter()
        .map(|h| (h.attempt, h.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, "created"),
            (1, "sent"),
            (1, "unknown"),
            (2, "taken_over"),
            (2, "unresolved")
        ],
        "{got:?}"
    );
    let unresolved = &got.history[4].detail;
    assert!(
        unresolved.contains(&lost) && unresolved.contains(&by_hand),
        "{unresolved}"
    );
    let out = env.cli("ops.token", &["show", STUCK]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("taken_over") && shown.contains(&by_hand),
        "{shown}"
    );

    // Refused: a non-admin caller, no credentials, no reason (API and CLI).
    let e = admin
        .list_keys(authed(apb::ListKeysRequest::default(), BILLING_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = admin
        .list_keys(apb::ListKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let settle = |reason: &str| apb::SettleKeyRequest {
        name: STUCK.into(),
        outcome: apb::SettleOutcome::Executed as i32,
        refund_id: lost.clone(),
        reason: reason.into(),
    };
    let e = admin
        .settle_key(authed(settle("  "), OPS_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let out = env.cli("ops.token", &["settle", STUCK, "--refund-id", &lost]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--reason"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = admin
        .settle_key(authed(settle("checked"), BILLING_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Settled by the admin caller (the CLI): the payment is free, the retry replays.
    let why = "OPS-1: PayXpert back office shows the lost refund; 9100001 was the desk's";
    let out = env.cli(
        "ops.token",
        &["settle", STUCK, "--refund-id", &lost, "--reason", why],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = env.create(refund("stuck-1", "1001", 700)).await.unwrap();
    assert_eq!(replay.refund_id, lost);
    let other = env.create(refund("other-1", "1001", 300)).await.unwrap();
    assert_ne!(other.refund_id, lost);
    // A refund answered at once: its creation and its answer, from the key's own row.
    let plain = admin
        .get_key(authed(
            apb::GetKeyRequest {
                name: "keys/billing/RefundService.Create/other-1".into(),
            },
            OPS_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = plain.history.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["created", "sent", "answered"], "{plain:?}");
    assert!(
        plain.history[2].detail.contains(&other.refund_id),
        "{plain:?}"
    );
    assert_eq!(
        env.sim.sim.refunds_of("1001").len(),
        3,
        "lost, by hand, other"
    );

    // The audit entry names the caller and the reason; a second settle is refused.
    let audit = admin
        .list_audit_entries(authed(
            apb::ListAuditEntriesRequest {
                key: STUCK.into(),
                ..Default::default()
            },
            OPS_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.audit_entries.len(), 1, "{audit:?}");
    let a = &audit.audit_entries[0];
    assert_eq!(
        (a.actor.as_str(), a.reason.as_str(), a.refund_id.as_str()),
        ("caller:ops", why, lost.as_str())
    );
    assert_eq!(
        (a.state_before(), a.state_after(), a.outcome()),
        (
            apb::KeyState::Unresolved,
            apb::KeyState::Done,
            apb::SettleOutcome::Executed
        )
    );
    let e = admin
        .settle_key(authed(settle("again"), OPS_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(reason(&e), "KEY_NOT_SETTLEABLE");
    env.gauge_reaches(0.0).await;
    let out = env.cli("ops.token", &["audit", "--key", STUCK]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("caller:ops"));
    let out = env.cli("ops.token", &["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 key(s)"));

    // The settle's effect is an event, from the operator.
    let events = common::watch_until_quiet(
        &env.channel().await,
        authed(pb::WatchEventsRequest::default(), BILLING_TOKEN),
    )
    .await;
    assert!(
        events.iter().any(|e| e.source() == pb::EventSource::Operator
            && matches!(&e.payload, Some(pb::event::Payload::Refund(r)) if r.refund_id == lost)),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_operator_settles_a_stuck_key_on_sqlite() {
    an_operator_finds_reads_and_settles_a_stuck_key(None).await;
}

#[tokio::test]
async fn an_operator_settles_a_stuck_key_on_postgres() {
    let db = TestDatabase::create().await;
    an_operator_finds_reads_and_settles_a_stuck_key(Some(db.url.clone())).await;
}

/// A settle racing a live retry is refused: the attempt that holds the key decides it.
#[tokio::test]
async fn a_settle_racing_a_live_attempt_is_refused() {
    let env = start(None).await;
    env.sim
        .sim
        .inject(Fault::on("refund", FaultKind::SlowAnswer { ms: 800 }));
    let call = tokio::spawn({
        let channel = env.channel().await;
        async move {
            RefundServiceClient::new(channel)
                .create(authed(refund("live-1", "1002", 200), BILLING_TOKEN))
                .await
        }
    });
    let mut admin = env.admin().await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let name = "keys/billing/RefundService.Create/live-1";
    let e = admin
        .settle_key(authed(
            apb::SettleKeyRequest {
                name: name.into(),
                outcome: apb::SettleOutcome::NotExecuted as i32,
                refund_id: String::new(),
                reason: "looks stuck".into(),
            },
            OPS_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "KEY_NOT_SETTLEABLE"),
        "{e:?}"
    );
    assert!(e.message().contains("in flight"), "{e:?}");
    let r = call.await.unwrap().unwrap().into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);
    let audit = admin
        .list_audit_entries(authed(apb::ListAuditEntriesRequest::default(), OPS_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit.audit_entries.is_empty(),
        "nothing was settled: {audit:?}"
    );
    let e = admin
        .get_key(authed(
            apb::GetKeyRequest {
                name: "keys/billing/RefundService.Create/never".into(),
            },
            OPS_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// Without authentication the admin service answers only on a loopback-only gateway.
#[tokio::test]
async fn without_authentication_the_admin_service_is_off_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let sim = PayXpertSim::new(PX_ORIGINATOR, PX_PASSWORD)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    std::fs::write(dir.path().join("px-password"), PX_PASSWORD).unwrap();
    let config = dir.path().join("paygate.toml");
    std::fs::write(
        &config,
        format!(
            "default_account = \"payxpert\"\n[accounts.payxpert]\nprovider = \"payxpert\"\n\
             base_url = \"{}\"\noriginator_id = \"{PX_ORIGINATOR}\"\npassword_file = \"{}\"\n",
            sim.base_url(),
            dir.path().join("px-password").display()
        ),
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path().join("a.db").display());
    for (listen, answers) in [("127.0.0.1", true), ("0.0.0.0", false)] {
        let port = free_port();
        let mut gw = spawn_configured(
            &config,
            &store,
            &[("PAYGATE_LISTEN_ADDR", format!("{listen}:{port}"))],
        );
        gw.port = port;
        gw.client().await;
        let mut admin = AdminServiceClient::connect(gw.url()).await.unwrap();
        let r = admin.list_keys(apb::ListKeysRequest::default()).await;
        match (answers, r) {
            (true, Ok(_)) => {}
            (false, Err(e)) => {
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                assert_eq!(reason(&e), "ADMIN_DISABLED");
            }
            (_, other) => panic!("{listen}: {other:?}"),
        }
    }
}

/// `paygate settle`, on the store with no gateway in between, writes the same audit entry,
/// naming the operating-system user; the key replays the settled outcome.
#[tokio::test]
async fn settling_on_the_store_is_audited_as_the_os_user() {
    let env = start(None).await;
    make_stuck_key(&env).await;
    let store = format!("sqlite://{}", env.dir.path().join("px.db").display());
    let out = Command::new(gateway_binary())
        .args(["settle", "--store-url", &store, "--account", "payxpert"])
        .args(["--caller", "billing", "--request-id", "stuck-1", "--failed"])
        .args(["--reason", "OPS-2: neither refund is this request's"])
        .env("USER", "alice")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = env
        .create(refund("stuck-1", "1001", 700))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "SETTLED_AS_FAILED", "{e:?}");
    let audit = env
        .admin()
        .await
        .list_audit_entries(authed(apb::ListAuditEntriesRequest::default(), OPS_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let a = &audit.audit_entries[..];
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (a[0].actor.as_str(), a[0].key.as_str(), a[0].outcome()),
        ("os:alice", STUCK, apb::SettleOutcome::NotExecuted)
    );
    assert_eq!(a[0].reason, "OPS-2: neither refund is this request's");
}
