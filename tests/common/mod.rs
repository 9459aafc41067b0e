//! Test harness: starts an Antom simulator and a gateway on 127.0.0.1:0 and hands out
//! real tonic clients. Everything talks over real TCP.
#![allow(dead_code)]

pub mod nats;
pub mod process;
pub mod provision;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::collections::HashMap;

use paygate::idempotency::{self, Idempotency};
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::pb::subscription_service_client::SubscriptionServiceClient;
use paygate::providers::Provider;
use paygate::providers::antom::Antom;
use paygate::providers::antom::client::Settings;
use paygate::providers::antom::signing::{Signer, Verifier};
use paygate::server::Auth;
use paygate::server::GuardSettings;
use paygate::server::Rate;
use paygate::server::{self, Gateway, Running};
use paygate::server::{ApiSettings, Shared};
use paygate::sim::Simulator as _;
use paygate::sim::antom::{AntomSim, Payment, PaymentStatus, SimServer, Subscription};
use tonic::transport::Channel;
use tonic::transport::ServerTlsConfig;

pub const CLIENT_ID: &str = "SANDBOX_TEST_CLIENT";

/// The merchant's key pair (a fixture, also used for the openssl comparison).
pub fn merchant_pem() -> &'static str {
    include_str!("../fixtures/test_merchant_key.pem")
}

/// Antom's key pair: generated once per test binary.
pub fn antom_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| Signer::generate().unwrap().private_key_pem())
}

/// Another key pair nobody trusts.
pub fn stranger_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| Signer::generate().unwrap().private_key_pem())
}

pub fn public_of(private_pem: &str) -> Verifier {
    Verifier::from_der(
        &Signer::from_bytes(private_pem.as_bytes())
            .unwrap()
            .public_key_der(),
    )
    .unwrap()
}

/// How the gateway's account is set up.
pub struct Options {
    /// Private key the gateway signs with.
    pub merchant_key: &'static str,
    /// Private key whose public half the gateway trusts for answers.
    pub trusted_antom_key: &'static str,
    /// Per-attempt cap.
    pub attempt_timeout: Duration,
    pub max_request_time: Duration,
    pub shutdown_grace: Duration,
    /// Store URL; `None` = a fresh SQLite file in a temporary directory.
    pub store_url: Option<String>,
    /// The account's rate limit, in-flight cap and breaker.
    pub guard: GuardSettings,
    /// Caller authentication and policies.
    pub auth: Auth,
    /// Default and per-caller rates.
    pub caller_rate: Option<Rate>,
    pub caller_rates: HashMap<String, Rate>,
    pub max_in_flight: usize,
    pub max_queue: Duration,
    /// Caps on open event streams, in total and per caller.
    pub max_streams: usize,
    pub max_streams_per_caller: usize,
    pub tls: Option<ServerTlsConfig>,
    /// How long completed keys are kept.
    pub retention: Duration,
    /// Receive provider notifications on a loopback port.
    pub notify: bool,
    /// The Antom account's `notify_url`.
    pub antom_notify_url: Option<String>,
    /// The notification freshness window (also how long events are kept at least).
    pub notify_max_age: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            merchant_key: merchant_pem(),
            trusted_antom_key: antom_pem(),
            attempt_timeout: Duration::from_secs(5),
            max_request_time: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
            store_url: None,
            guard: GuardSettings::default(),
            auth: Auth::default(),
            caller_rate: None,
            caller_rates: HashMap::new(),
            max_in_flight: 1024,
            max_queue: Duration::from_millis(250),
            max_streams: paygate::server::DEFAULT_MAX_STREAMS,
            max_streams_per_caller: paygate::server::DEFAULT_MAX_STREAMS_PER_CALLER,
            tls: None,
            retention: paygate::idempotency::DEFAULT_RETENTION,
            notify: false,
            antom_notify_url: None,
            notify_max_age: paygate::server::NotifyLimits::default().max_age,
        }
    }
}

pub struct Env {
    pub sim: SimServer,
    pub dir: tempfile::TempDir,
    pub idempotency: Idempotency,
    pub gateway: Option<Running>,
    pub refunds: RefundServiceClient<Channel>,
    pub subscriptions: SubscriptionServiceClient<Channel>,
    pub channel: Channel,
    /// The notification listener, when `Options::notify`.
    pub notify_addr: Option<std::net::SocketAddr>,
    pub shared: Arc<Shared>,
}

impl Env {
    pub fn sim(&self) -> &Arc<AntomSim> {
        &self.sim.sim
    }

    pub fn gateway(&self) -> &Running {
        self.gateway.as_ref().unwrap()
    }
}

pub async fn start() -> Env {
    start_with(Options::default()).await
}

pub async fn start_with(o: Options) -> Env {
    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    seed(&sim);
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let settings = Settings {
        base_url: sim.base_url(),
        client_id: CLIENT_ID.into(),
        sandbox: true,
        timeout: o.attempt_timeout,
        keys: paygate::providers::antom::keys::Keys::fixed(
            paygate::providers::antom::keys::KeyRing::single(
                1,
                Signer::from_bytes(o.merchant_key.as_bytes()).unwrap(),
                public_of(o.trusted_antom_key),
            ),
        ),
        notify_url: o.antom_notify_url.clone(),
    };
    let g = serve_account("main", Arc::new(Antom::new(settings).unwrap()), o).await;
    Env {
        sim,
        dir: g.dir,
        idempotency: g.idempotency,
        gateway: Some(g.running),
        refunds: RefundServiceClient::new(g.channel.clone()),
        subscriptions: SubscriptionServiceClient::new(g.channel.clone()),
        channel: g.channel,
        notify_addr: g.notify_addr,
        shared: g.shared,
    }
}

/// A gateway serving one account (the default), in this process, built as the library's
/// users build one.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub idempotency: Idempotency,
    pub running: Running,
    pub channel: Channel,
    pub notify_addr: Option<std::net::SocketAddr>,
    pub shared: Arc<Shared>,
}

pub async fn serve_account(name: &str, provider: Arc<dyn Provider>, o: Options) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let url = o
        .store_url
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("paygate.db").display()));
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let gateway = Gateway::builder(paygate::store::open(&url).await.unwrap())
        .account(name, provider, &o.guard)
        .retention(o.retention, idempotency::DEFAULT_UNKEYED_RETENTION)
        .auth(o.auth)
        .caller_rates(o.caller_rate, o.caller_rates)
        .api(ApiSettings {
            max_request_time: o.max_request_time,
            max_in_flight: o.max_in_flight,
            max_queue: o.max_queue,
            max_streams: o.max_streams,
            max_streams_per_caller: o.max_streams_per_caller,
        })
        .tls(o.tls.clone())
        .listen(loopback, o.notify.then_some(loopback))
        .notify_limits(paygate::server::NotifyLimits {
            max_age: o.notify_max_age,
            ..Default::default()
        })
        .shutdown(o.shutdown_grace, Duration::ZERO)
        .build();
    let idempotency = gateway.idempotency().clone();
    let shared = gateway.shared();
    let bound = gateway.bind().await.unwrap();
    let notify_addr = bound.notify_addr();
    let running = server::spawn(bound).unwrap();
    let channel = if o.tls.is_some() {
        // TLS tests build their own channels.
        Channel::from_shared(running.url()).unwrap().connect_lazy()
    } else {
        Channel::from_shared(running.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    Served {
        dir,
        idempotency,
        running,
        channel,
        notify_addr,
        shared,
    }
}

/// Payments and subscriptions every test can use.
pub fn seed(sim: &AntomSim) {
    let pay = |id: &str, currency: &str, amount: i64| Payment {
        payment_id: id.into(),
        currency: currency.into(),
        amount,
        status: PaymentStatus::Success,
        paid_days_ago: 1,
        multiple_refunds: true,
        async_refunds: false,
    };
    sim.add_payment(pay("PAY_USD_100", "USD", 10_000));
    sim.add_payment(pay("PAY_JPY", "JPY", 5_000));
    sim.add_payment(Payment {
        async_refunds: true,
        ..pay("PAY_ASYNC", "EUR", 5_000)
    });
    sim.add_payment(Payment {
        paid_days_ago: 400,
        ..pay("PAY_OLD", "USD", 10_000)
    });
    sim.add_payment(Payment {
        multiple_refunds: false,
        ..pay("PAY_SINGLE", "USD", 10_000)
    });
    sim.add_payment(Payment {
        status: PaymentStatus::Processing,
        ..pay("PAY_PENDING", "USD", 10_000)
    });
    for i in 1..=5 {
        sim.add_subscription(Subscription {
            subscription_id: format!("SUB_{i}"),
            subscription_request_id: format!("SUBREQ_{i}"),
            status: "ACTIVE".into(),
        });
    }
}

pub fn money(currency: &str, value: i64) -> Option<pb::Money> {
    Some(pb::Money {
        currency: currency.into(),
        value,
    })
}

pub fn refund_req(request_id: &str, payment_id: &str, value: i64) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: payment_id.into(),
        amount: money("USD", value),
        ..Default::default()
    }
}

pub fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// The ErrorInfo reason of a status (every error must have one).
pub fn reason(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    s.get_error_details()
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {s:?}"))
        .reason
        .clone()
}

pub fn retry_delay(s: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    s.get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
}

/// A request carrying `authorization: Bearer <token>` and a deadline.
pub fn authed<T>(msg: T, token: &str, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.set_timeout(timeout);
    r
}

/// Auth settings with one token per caller (the token is the caller's name + "-token").
pub fn token_auth(callers: &[(&str, paygate::server::Policy)]) -> Auth {
    let mut a = Auth::default();
    for (name, policy) in callers {
        a.token_hashes.insert(
            paygate::server::hash_token(&format!("{name}-token")),
            name.to_string(),
        );
        a.policies.insert(name.to_string(), policy.clone());
    }
    a
}

/// An Antom simulator with the shared seed data, for gateway processes to reach.
pub async fn shared_antom_sim() -> SimServer {
    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    seed(&sim);
    sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// An Antom simulator (no seed data) with one paid payment `payment_id` large enough for any
/// number of refunds, for load and crash tests.
pub async fn antom_sim_with_large_payment(payment_id: &str) -> SimServer {
    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    sim.add_payment(Payment {
        payment_id: payment_id.into(),
        currency: "USD".into(),
        amount: 1_000_000_000,
        status: PaymentStatus::Success,
        paid_days_ago: 1,
        multiple_refunds: true,
        async_refunds: false,
    });
    sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// Starts a Create of `request_id` (PAY_USD_100, 600) with `deadline` on `client`, and returns
/// once the simulator has received it, so that a fault injected beforehand holds it there.
pub async fn refund_held_at_provider(
    sim: &SimServer,
    mut client: RefundServiceClient<Channel>,
    request_id: &str,
    deadline: Duration,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::Refund>, tonic::Status>> {
    let before = sim.sim.calls("refund");
    let mut req = tonic::Request::new(refund_req(request_id, "PAY_USD_100", 600));
    req.set_timeout(deadline);
    let call = tokio::spawn(async move { client.create(req).await });
    for _ in 0..250 {
        if sim.sim.calls("refund") > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call
}

/// The value of the series `name` with (at least) `labels` in a Prometheus scrape, if present.
pub fn metric_value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `/metrics` of a gateway whose metrics listen on `port`.
pub async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics listener")
        .text()
        .await
        .unwrap()
}

/// Now as Antom writes `request-time`: Unix milliseconds.
pub fn request_time_now() -> String {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).to_string()
}

/// Unix ms, `ago` before now, as Antom writes `request-time`.
pub fn ms_ago(ago: Duration) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    (now - ago.as_millis() as i128).to_string()
}

/// POSTs `body` to a gateway's `/notify/antom/<kind>` on `port`, signed by Antom with
/// `request_time`; the HTTP status, or `None` when nothing answered.
pub async fn post_notification(
    port: u16,
    kind: &str,
    body: &str,
    request_time: &str,
) -> Option<u16> {
    use paygate::providers::antom::signing;
    let path = format!("/notify/antom/{kind}");
    let signer = Signer::from_bytes(antom_pem().as_bytes()).unwrap();
    let sig = signer.sign(&signing::content(
        &path,
        CLIENT_ID,
        request_time,
        body.as_bytes(),
    ));
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json")
        .header("client-id", CLIENT_ID)
        .header("request-time", request_time)
        .header("signature", signing::signature_header(1, &sig))
        .timeout(Duration::from_secs(5))
        .body(body.to_owned())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// An Antom notifyRefund body.
pub fn refund_notice(
    request_id: &str,
    refund_id: &str,
    status: &str,
    amount: (&str, i64),
) -> String {
    let (code, result) = if status == "SUCCESS" {
        ("SUCCESS", "S")
    } else {
        ("PROCESS_FAIL", "F")
    };
    serde_json::json!({
        "notifyType": "REFUND_RESULT",
        "result": {"resultCode": code, "resultStatus": result, "resultMessage": "x"},
        "refundStatus": status,
        "refundRequestId": request_id,
        "refundId": refund_id,
        "refundAmount": {"currency": amount.0, "value": amount.1.to_string()},
        "refundTime": "2026-12-05T10:00:00Z",
    })
    .to_string()
}

/// An Antom notifySubscription body of `kind` (`CANCEL` or `TERMINATE`).
pub fn subscription_notice(id: &str, request_id: &str, kind: &str) -> String {
    let status = if kind == "TERMINATE" {
        "TERMINATED"
    } else {
        "CANCELLED"
    };
    serde_json::json!({
        "subscriptionRequestId": request_id,
        "subscriptionId": id,
        "subscriptionStatus": status,
        "subscriptionNotificationType": kind,
        "subscriptionStartTime": "2026-10-01T00:00:00Z",
        "subscriptionEndTime": "2026-12-05T00:00:00Z",
    })
    .to_string()
}

/// Every event `Watch` streams for `req` (a message, or a request with metadata) on
/// `channel`, until the stream is quiet for 700 ms.
pub async fn watch_until_quiet(
    channel: &tonic::transport::Channel,
    req: impl tonic::IntoRequest<pb::WatchEventsRequest>,
) -> Vec<pb::Event> {
    let mut stream = pb::event_service_client::EventServiceClient::new(channel.clone())
        .watch(req)
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(700), stream.message()).await
    {
        got.push(e);
    }
    got
}
