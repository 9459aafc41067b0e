//! An Antom simulator: verifies request signatures, signs its answers, keeps payments,
//! refunds (with Antom's refund rules and refundRequestId idempotency) and subscriptions, and
//! misbehaves on request (result codes, `U`, latency, HTTP errors, bad or missing
//! signatures, malformed bodies, answers lost after executing).
//!
//! Control endpoints for a simulator run on its own (`paygate sim`): `POST /sim/payments`,
//! `POST /sim/subscriptions`, `POST /sim/faults`, `GET /sim/stats`.
//!
//! This file holds the simulator's state and what tests do with it; `rules.rs` Antom's rules
//! for refunds, inquiries and cancellations; `notify.rs` the notifications it sends and
//! resends; `http.rs` its HTTP side (signatures, faults, control endpoints).

mod http;
mod notify;
mod rules;

pub use self::notify::{ANTOM_RESEND_SCHEDULE, Delivery, NotifyTarget};
use self::rules::{empty, now, param_illegal, result};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;

use super::control::{Controls, Counters, Simulator};
use crate::providers::antom::signing::{self, Signer, Verifier};

/// How long after payment a refund is still allowed.
pub const REFUND_WINDOW: time::Duration = time::Duration::days(365);

/// Payment states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Paid; refundable.
    #[default]
    Success,
    /// Still processing.
    Processing,
    /// Failed.
    Fail,
    /// Cancelled.
    Cancelled,
}

/// A payment the simulator knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// Antom's payment id.
    pub payment_id: String,
    /// Currency.
    pub currency: String,
    /// Amount paid, minor units.
    pub amount: i64,
    /// State.
    #[serde(default)]
    pub status: PaymentStatus,
    /// Days since payment (the refund window is 365 days).
    #[serde(default)]
    pub paid_days_ago: i64,
    /// Whether several refunds are allowed.
    #[serde(default = "yes")]
    pub multiple_refunds: bool,
    /// Whether refunds stay PROCESSING (answered `REFUND_IN_PROCESS`) until settled.
    #[serde(default)]
    pub async_refunds: bool,
}

fn yes() -> bool {
    true
}

/// A subscription the simulator knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Antom's subscription id.
    pub subscription_id: String,
    /// Merchant's subscription request id.
    pub subscription_request_id: String,
    /// `ACTIVE`, `CANCELLED` or `TERMINATED`.
    #[serde(default = "active")]
    pub status: String,
}

fn active() -> String {
    "ACTIVE".into()
}

pub use super::fault::{Fault, FaultKind};

/// A refund the simulator executed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SimRefund {
    /// Antom's refund id.
    pub refund_id: String,
    /// Merchant's request id.
    pub refund_request_id: String,
    /// Payment refunded.
    pub payment_id: String,
    /// Currency.
    pub currency: String,
    /// Minor units.
    pub value: i64,
    /// `SUCCESS`, `PROCESSING` or `FAIL`.
    pub status: String,
    /// When it was executed (RFC 3339).
    pub time: String,
    /// The request's `refundNotifyUrl`, where its notifyRefund goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

/// What the simulator has seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Requests with a valid signature, by endpoint name.
    pub calls: HashMap<String, u64>,
    /// Requests refused for a bad signature or client id.
    pub rejected_signatures: u64,
    /// Refunds executed (each refundRequestId at most once).
    pub refunds_executed: u64,
    /// Cancellations executed.
    pub cancels_executed: u64,
    /// Valid requests by the merchant key version their signature named (1 when none).
    pub merchant_key_versions: std::collections::BTreeMap<u32, u64>,
}

impl Counters for Stats {
    fn calls_mut(&mut self) -> &mut HashMap<String, u64> {
        &mut self.calls
    }
}

/// A stored refund answer for a refundRequestId: the request's key fields and the outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefundKey {
    payment_id: String,
    currency: String,
    value: i64,
    /// The refund, if one was executed.
    refund_id: Option<String>,
    /// The final failure, if it was refused.
    failure: Option<(String, String)>,
}

#[derive(Debug, Default)]
struct SimState {
    payments: HashMap<String, Payment>,
    refunds: HashMap<String, SimRefund>,
    by_request_id: HashMap<String, RefundKey>,
    subscriptions: Vec<Subscription>,
    controls: Controls<Stats>,
    call_times: Vec<(String, std::time::Instant)>,
    traceparents: Vec<String>,
    next_id: u64,
    deliveries: Vec<Delivery>,
}

/// What the simulator knows of its merchant's business, kept across runs by `paygate dev
/// --keep`: payments, refunds (by refund id and by refundRequestId), subscriptions and the id
/// counter. Not its faults, statistics or notifications.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntomData {
    payments: HashMap<String, Payment>,
    refunds: HashMap<String, SimRefund>,
    by_request_id: HashMap<String, RefundKey>,
    subscriptions: Vec<Subscription>,
    next_id: u64,
}

/// The simulator's shared state and keys.
pub struct AntomSim {
    client_id: String,
    keys: Mutex<SimKeys>,
    state: Mutex<SimState>,
    fast: Option<FastMode>,
    me: Weak<AntomSim>,
    notify: Mutex<Option<NotifyTarget>>,
    http: reqwest::Client,
}

/// The merchant public keys Antom trusts, by version, and Antom's own signing keys, by
/// version, with the one it signs with now: Antom rotates its key, and trusts what the
/// merchant registers, version by version.
struct SimKeys {
    merchant: std::collections::BTreeMap<u32, Verifier>,
    antom: std::collections::BTreeMap<u32, Arc<Signer>>,
    signing: u32,
}

impl SimKeys {
    fn new(merchant_key: Verifier, antom_key: Signer) -> Mutex<Self> {
        Mutex::new(Self {
            merchant: [(1, merchant_key)].into(),
            antom: [(1, Arc::new(antom_key))].into(),
            signing: 1,
        })
    }
}

/// Benchmark mode: no verification, no state, an optional fixed delay. Inquiries and
/// cancellations get a canned answer signed once per endpoint; each refund gets its own refund
/// id (`2026BENCH` and a counter) and names its own request, signed ahead by
/// [`AntomSim::presign_refunds`] so that its
/// answers cost the simulator almost nothing (or signed on the spot once those run out).
#[derive(Debug, Default)]
struct FastMode {
    delay: Duration,
    canned: Mutex<HashMap<String, SignedAnswer>>,
    refunds: Mutex<HashMap<String, SignedAnswer>>,
    next_refund: std::sync::atomic::AtomicU64,
}

/// An answer's body, `response-time` and `signature`.
type SignedAnswer = (Bytes, String, String);

/// The production refund path, which the benchmarks call.
const REFUND_PATH: &str = "/ams/api/v1/payments/refund";

impl std::fmt::Debug for AntomSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AntomSim")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Simulator for AntomSim {
    type Stats = Stats;

    fn with_controls<R>(&self, f: impl FnOnce(&mut Controls<Stats>) -> R) -> R {
        f(&mut self.state().controls)
    }
}

/// A running Antom simulator.
pub type SimServer = super::server::SimServer<AntomSim>;

type Answer = Response;

impl AntomSim {
    /// A simulator for merchant `client_id`, verifying with the merchant's public key and
    /// signing with Antom's private key.
    pub fn new(
        client_id: impl Into<String>,
        merchant_key: Verifier,
        antom_key: Signer,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            client_id: client_id.into(),
            keys: SimKeys::new(merchant_key, antom_key),
            state: Mutex::new(SimState::default()),
            fast: None,
            me: me.clone(),
            notify: Mutex::new(None),
            http: reqwest::Client::new(),
        })
    }

    /// A simulator in benchmark mode (see [`FastMode`]): every call succeeds with a canned
    /// answer after `delay`.
    pub fn fast(client_id: impl Into<String>, antom_key: Signer, delay: Duration) -> Arc<Self> {
        let client_id = client_id.into();
        Arc::new_cyclic(|me| Self {
            keys: SimKeys::new(
                Verifier::from_der(&antom_key.public_key_der()).expect("a generated key parses"),
                antom_key,
            ),
            client_id,
            state: Mutex::new(SimState::default()),
            fast: Some(FastMode {
                delay,
                ..FastMode::default()
            }),
            me: me.clone(),
            notify: Mutex::new(None),
            http: reqwest::Client::new(),
        })
    }

    /// Signs ahead (fast mode only), on every core, the answers to the refunds
    /// `<prefix>-0` .. `<prefix>-<n-1>` of USD 1.00 on `PAY_BENCH`, so that a benchmark's
    /// refunds each get their own refund id, and an answer about their own request, without
    /// the simulator signing while it is timed.
    pub fn presign_refunds(&self, prefix: &str, n: usize) {
        let Some(fast) = &self.fast else {
            return;
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let signed: Vec<(String, SignedAnswer)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t..n)
                            .step_by(threads)
                            .map(|i| {
                                let id = format!("{prefix}-{i}");
                                let a = self.fast_refund(fast, REFUND_PATH, &id);
                                (id, a)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        fast.refunds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(signed);
    }

    /// An answer to the refund `request_id` (USD 1.00 on `PAY_BENCH`) with the next refund
    /// id, signed for `uri`.
    fn fast_refund(&self, fast: &FastMode, uri: &str, request_id: &str) -> SignedAnswer {
        let n = fast
            .next_refund
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = json!({
            "result": result("SUCCESS", "S", "success"),
            "refundId": format!("2026BENCH{n:010}"),
            "refundRequestId": request_id,
            "paymentId": "PAY_BENCH",
            "refundAmount": {"currency": "USD", "value": "100"},
            "refundTime": "2026-11-23T00:00:00Z",
        });
        let bytes = Bytes::from(answer.to_string());
        let (t, s) = self.sign_answer(uri, &bytes);
        (bytes, t, s)
    }

    fn canned(&self, fast: &FastMode, endpoint: &str, uri: &str, request: &[u8]) -> Answer {
        let (body, time, sig) = if endpoint == "refund" {
            let request_id = serde_json::from_slice::<Value>(request)
                .ok()
                .and_then(|v| v.get("refundRequestId")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            let ahead = (uri == REFUND_PATH)
                .then(|| {
                    fast.refunds
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&request_id)
                })
                .flatten();
            ahead.unwrap_or_else(|| self.fast_refund(fast, uri, &request_id))
        } else {
            let mut c = fast.canned.lock().unwrap_or_else(|e| e.into_inner());
            c.entry(uri.to_owned())
                .or_insert_with(|| {
                    let answer = match endpoint {
                        "inquiryRefund" => json!({
                            "result": result("SUCCESS", "S", "success"),
                            "refundId": "2026BENCH0000000001",
                            "refundRequestId": "bench",
                            "refundAmount": {"currency": "USD", "value": "100"},
                            "refundStatus": "SUCCESS",
                            "refundTime": "2026-11-23T00:00:00Z",
                        }),
                        _ => json!({"result": result("SUCCESS", "S", "success")}),
                    };
                    let bytes = Bytes::from(answer.to_string());
                    let (t, s) = self.sign_answer(uri, &bytes);
                    (bytes, t, s)
                })
                .clone()
        };
        let mut r = Response::new(Body::from(body));
        let hm = r.headers_mut();
        hm.insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        for (k, v) in [("response-time", time), ("signature", sig)] {
            if let Ok(v) = v.parse() {
                hm.insert(k, v);
            }
        }
        r
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters to a simulator; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a payment.
    pub fn add_payment(&self, p: Payment) {
        self.state().payments.insert(p.payment_id.clone(), p);
    }

    /// Adds a subscription.
    pub fn add_subscription(&self, s: Subscription) {
        self.state().subscriptions.push(s);
    }

    /// The W3C `traceparent` headers of the verified calls, in arrival order.
    pub fn traceparents(&self) -> Vec<String> {
        self.state().traceparents.clone()
    }

    /// When each verified call to `endpoint` arrived.
    pub fn call_times(&self, endpoint: &str) -> Vec<std::time::Instant> {
        self.state()
            .call_times
            .iter()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Refunds executed against `payment_id`.
    pub fn refunds_of(&self, payment_id: &str) -> Vec<SimRefund> {
        let mut v: Vec<_> = self
            .state()
            .refunds
            .values()
            .filter(|r| r.payment_id == payment_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.refund_id.cmp(&b.refund_id));
        v
    }

    /// A subscription's current status.
    pub fn subscription_status(&self, subscription_id: &str) -> Option<String> {
        self.state()
            .subscriptions
            .iter()
            .find(|s| s.subscription_id == subscription_id)
            .map(|s| s.status.clone())
    }

    /// Finishes a PROCESSING refund as SUCCESS or FAIL, and sends notifyRefund.
    pub fn settle_refund(&self, refund_id: &str, success: bool) -> bool {
        let mut st = self.state();
        let Some(r) = st.refunds.get_mut(refund_id) else {
            return false;
        };
        if r.status != "PROCESSING" {
            return false;
        }
        // A failed refund stops counting against the amount paid.
        r.status = if success { "SUCCESS" } else { "FAIL" }.into();
        r.time = now();
        let (code, status, message) = if success {
            ("SUCCESS", "S", "success")
        } else {
            ("PROCESS_FAIL", "F", "refund failed")
        };
        let body = json!({
            "notifyType": "REFUND_RESULT",
            "result": result(code, status, message),
            "refundStatus": r.status,
            "refundRequestId": r.refund_request_id,
            "refundId": r.refund_id,
            "refundAmount": {"currency": r.currency, "value": r.value.to_string()},
            "refundTime": r.time,
        });
        let url = r.notify_url.clone();
        drop(st);
        match url {
            Some(url) => self.notify_at(url, "refund", body),
            None => self.notify("refund", body),
        };
        true
    }
}

impl AntomSim {
    /// Seeds the demo data used by `paygate dev` and the README.
    pub fn seed_demo(&self) {
        self.add_payment(Payment {
            payment_id: "PAY_DEMO_0001".into(),
            currency: "USD".into(),
            amount: 10_000,
            status: PaymentStatus::Success,
            paid_days_ago: 3,
            multiple_refunds: true,
            async_refunds: false,
        });
        self.add_payment(Payment {
            payment_id: "PAY_DEMO_ASYNC".into(),
            currency: "EUR".into(),
            amount: 5_000,
            status: PaymentStatus::Success,
            paid_days_ago: 1,
            multiple_refunds: true,
            async_refunds: true,
        });
        self.add_subscription(Subscription {
            subscription_id: "SUB_DEMO_0001".into(),
            subscription_request_id: "SUBREQ_DEMO_0001".into(),
            status: "ACTIVE".into(),
        });
    }

    /// A copy of what it knows (see [`AntomData`]).
    pub fn data(&self) -> AntomData {
        let st = self.state();
        AntomData {
            payments: st.payments.clone(),
            refunds: st.refunds.clone(),
            by_request_id: st.by_request_id.clone(),
            subscriptions: st.subscriptions.clone(),
            next_id: st.next_id,
        }
    }

    /// Replaces what it knows with `data` (from [`AntomSim::data`] of an earlier run).
    pub fn restore(&self, data: AntomData) {
        let mut st = self.state();
        st.payments = data.payments;
        st.refunds = data.refunds;
        st.by_request_id = data.by_request_id;
        st.subscriptions = data.subscriptions;
        st.next_id = st.next_id.max(data.next_id);
    }

    /// Starts its refund ids above every id an earlier run can have given: its counter
    /// starts at `start` (e.g. derived from the clock) unless it is already past it.
    pub fn ids_from(&self, start: u64) {
        let mut st = self.state();
        st.next_id = st.next_id.max(start);
    }

    /// The PROCESSING refunds, by refund id.
    pub fn processing_refunds(&self) -> Vec<String> {
        let st = self.state();
        st.refunds
            .values()
            .filter(|r| r.status == "PROCESSING")
            .map(|r| r.refund_id.clone())
            .collect()
    }

    /// Serves on `listener` until stopped.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<SimServer> {
        let app = Router::new()
            .fallback(http::handle)
            .with_state(self.clone());
        SimServer::start(self.clone(), listener, app)
    }

    /// Binds `addr` and serves.
    pub async fn bind(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SimServer> {
        self.serve(TcpListener::bind(addr).await?)
    }

    fn sign_answer(&self, uri: &str, body: &[u8]) -> (String, String) {
        let t = now();
        let header = self.sign(&signing::content(uri, &self.client_id, &t, body));
        (t, header)
    }

    /// `content` signed with Antom's current key: the `Signature` header naming its version.
    pub(crate) fn sign(&self, content: &[u8]) -> String {
        let (version, key) = {
            let k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            (k.signing, k.antom[&k.signing].clone())
        };
        signing::signature_header(version, &key.sign(content))
    }

    /// Whether the merchant signed `content` with a key version Antom trusts: the version
    /// the header names (1 when it names none); that version when it did.
    pub(crate) fn verify_merchant(&self, header: &str, content: &[u8]) -> Option<u32> {
        let version = signing::key_version_of(header).unwrap_or(1);
        let sig = signing::parse_signature_header(header)?;
        let k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.merchant
            .get(&version)
            .is_some_and(|key| key.verify(content, &sig))
            .then_some(version)
    }

    /// Antom trusts the merchant's public key `key` as version `version` (the merchant
    /// registered it in the dashboard).
    pub fn trust_merchant_key(&self, version: u32, key: Verifier) {
        let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.merchant.insert(version, key);
    }

    /// Antom no longer trusts the merchant's key `version` (the merchant retired it).
    pub fn distrust_merchant_key(&self, version: u32) {
        let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.merchant.remove(&version);
    }

    /// Antom signs with `key` as version `version` from now on (it rotated its own key).
    pub fn sign_with(&self, version: u32, key: Signer) {
        let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.antom.insert(version, Arc::new(key));
        k.signing = version;
    }

    fn unsigned(&self, body: Value) -> Answer {
        let mut r = Response::new(Body::from(body.to_string()));
        r.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        r
    }
}
