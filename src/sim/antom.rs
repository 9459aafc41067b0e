//! An Antom simulator: verifies request signatures, signs its answers, keeps payments,
//! refunds (with Antom's refund rules and refundRequestId idempotency) and subscriptions, and
//! misbehaves on request (result codes, `U`, latency, HTTP errors, bad or missing
//! signatures, malformed bodies, answers lost after executing).
//!
//! Control endpoints for a simulator run on its own (`paygate sim`): `POST /sim/payments`,
//! `POST /sim/subscriptions`, `POST /sim/faults`, `GET /sim/stats`.

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
}

/// A stored refund answer for a refundRequestId: the request's key fields and the outcome.
#[derive(Debug, Clone)]
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
    faults: Vec<Fault>,
    stats: Stats,
    call_times: Vec<(String, std::time::Instant)>,
    traceparents: Vec<String>,
    next_id: u64,
    deliveries: Vec<Delivery>,
}

/// The simulator's shared state and keys.
pub struct AntomSim {
    client_id: String,
    merchant_key: Verifier,
    antom_key: Signer,
    state: Mutex<SimState>,
    fast: Option<FastMode>,
    me: Weak<AntomSim>,
    notify: Mutex<Option<NotifyTarget>>,
    http: reqwest::Client,
}

/// Antom's resending of an unacknowledged notification: the waits before each of the up to
/// 8 resends (0 s, 2 min, 10 min, 10 min, 1 h, 2 h, 6 h, 15 h).
pub const ANTOM_RESEND_SCHEDULE: [Duration; 8] = [
    Duration::from_secs(0),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
    Duration::from_secs(21600),
    Duration::from_secs(54000),
];

/// Where and how the simulator sends notifications.
#[derive(Debug, Clone)]
pub struct NotifyTarget {
    /// `http://host:port/notify/<account>`; the kind (`refund`, `subscription`, `payment`) is
    /// appended.
    pub base_url: String,
    /// Waits before each resend of an unacknowledged notification.
    pub resend: Vec<Duration>,
    /// Settle PROCESSING refunds as succeeded after this long (dev mode).
    pub auto_settle: Option<Duration>,
}

/// One notification the simulator sent, and how it went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `refund`, `subscription` or `payment`.
    pub kind: String,
    /// The JSON body.
    pub body: String,
    /// POSTs made so far.
    pub attempts: u32,
    /// Whether the exact acknowledgement came back.
    pub acked: bool,
    /// The HTTP status of each attempt (0 = no answer).
    pub statuses: Vec<u16>,
}

/// Benchmark mode: canned answers signed once per endpoint, no verification, no state, an
/// optional fixed delay. Its answers cost the simulator almost nothing.
#[derive(Debug, Default)]
struct FastMode {
    delay: Duration,
    canned: Mutex<HashMap<String, (Bytes, String, String)>>,
}

impl std::fmt::Debug for AntomSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AntomSim")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A running Antom simulator.
pub type SimServer = super::server::SimServer<AntomSim>;

type Answer = Response;

fn empty(status: StatusCode) -> Answer {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

fn result(code: &str, status: &str, message: &str) -> Value {
    json!({"resultCode": code, "resultStatus": status, "resultMessage": message})
}

fn param_illegal(message: &str) -> Value {
    json!({"result": result("PARAM_ILLEGAL", "F", message)})
}

/// Reads an optional string field; numbers, booleans and empty strings are illegal (Antom
/// wants strings, and an empty optional field must be omitted).
fn text(v: &Value, name: &str, max: usize) -> Result<Option<String>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{name} is empty")),
        Some(Value::String(s)) if s.chars().count() > max => Err(format!("{name} too long")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn required(v: &Value, name: &str, max: usize) -> Result<String, String> {
    text(v, name, max)?.ok_or_else(|| format!("{name} is required"))
}

fn amount(v: &Value, name: &str) -> Result<(String, i64), String> {
    let a = v.get(name).ok_or_else(|| format!("{name} is required"))?;
    let currency = required(a, "currency", 3)?;
    let value = required(a, "value", 20)?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("{name}.currency is not an ISO code"));
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name}.value is not an integer string"));
    }
    let value: i64 = value
        .parse()
        .map_err(|_| format!("{name}.value out of range"))?;
    if value <= 0 {
        return Err(format!("{name}.value must be positive"));
    }
    Ok((currency, value))
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

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
            merchant_key,
            antom_key,
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
            merchant_key: Verifier::from_der(&antom_key.public_key_der())
                .expect("a generated key parses"),
            client_id,
            antom_key,
            state: Mutex::new(SimState::default()),
            fast: Some(FastMode {
                delay,
                canned: Mutex::new(HashMap::new()),
            }),
            me: me.clone(),
            notify: Mutex::new(None),
            http: reqwest::Client::new(),
        })
    }

    fn canned(&self, fast: &FastMode, endpoint: &str, uri: &str) -> Answer {
        let (body, time, sig) = {
            let mut c = fast.canned.lock().unwrap_or_else(|e| e.into_inner());
            c.entry(uri.to_owned())
                .or_insert_with(|| {
                    let answer = match endpoint {
                        "refund" => json!({
                            "result": result("SUCCESS", "S", "success"),
                            "refundId": "2026BENCH0000000001",
                            "refundRequestId": "bench",
                            "paymentId": "PAY_BENCH",
                            "refundAmount": {"currency": "USD", "value": "100"},
                            "refundTime": "2026-11-23T00:00:00Z",
                        }),
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

    /// Queues a fault.
    pub fn inject(&self, f: Fault) {
        self.state().faults.push(f);
    }

    /// Drops queued faults.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.state().stats.clone()
    }

    /// Verified calls to `endpoint` so far.
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.state().stats.calls.get(endpoint).copied().unwrap_or(0)
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

    /// Sends notifications to `target` from now on.
    pub fn notify_to(&self, target: NotifyTarget) {
        *self.notify.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
    }

    /// Every notification sent so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.clone()
    }

    /// Charges a subscription period and sends notifyPayment.
    pub fn charge_period(
        &self,
        subscription_id: &str,
        payment_id: &str,
        (currency, value): (&str, i64),
        success: bool,
    ) -> Option<usize> {
        let srid = self
            .state()
            .subscriptions
            .iter()
            .find(|s| s.subscription_id == subscription_id)?
            .subscription_request_id
            .clone();
        let t = now();
        let mut body = json!({
            "notifyType": "PAYMENT_RESULT",
            "result": if success { result("SUCCESS", "S", "success") } else { result("PAYMENT_FAIL", "F", "payment failed") },
            "paymentId": payment_id,
            "paymentAmount": {"currency": currency, "value": value.to_string()},
            "paymentCreateTime": t,
            "subscriptionRequestId": srid,
            "subscriptionId": subscription_id,
            "periodStartTime": t,
            "periodEndTime": t,
            "phaseNo": "2",
        });
        if success {
            body["paymentTime"] = json!(t);
        }
        self.notify("payment", body)
    }

    /// Sends notification `index` again, as Antom does when it did not see the
    /// acknowledgement (a new request time and signature, the same body).
    pub fn resend(&self, index: usize) -> bool {
        let Some(d) = self.state().deliveries.get(index).cloned() else {
            return false;
        };
        let (Some(me), Some(target)) = (self.me.upgrade(), self.target()) else {
            return false;
        };
        let url = format!("{}/{}", target.base_url.trim_end_matches('/'), d.kind);
        tokio::spawn(async move { me.deliver(index, url, d.body, Vec::new()).await });
        true
    }

    fn target(&self) -> Option<NotifyTarget> {
        self.notify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Queues a notification of `kind`, delivered in the background with Antom's resends;
    /// returns its index in [`Self::deliveries`]. Without a target nothing is sent.
    fn notify(&self, kind: &str, body: Value) -> Option<usize> {
        let base = self.target()?.base_url;
        self.notify_at(format!("{}/{kind}", base.trim_end_matches('/')), kind, body)
    }

    /// Like [`Self::notify`], to `url` (a request's own notify URL), with the target's
    /// resends (Antom's schedule when there is no target).
    fn notify_at(&self, url: String, kind: &str, body: Value) -> Option<usize> {
        let resend = self
            .target()
            .map_or_else(|| ANTOM_RESEND_SCHEDULE.to_vec(), |t| t.resend);
        let me = self.me.upgrade()?;
        let body = body.to_string();
        let index = {
            let mut st = self.state();
            st.deliveries.push(Delivery {
                kind: kind.into(),
                body: body.clone(),
                attempts: 0,
                acked: false,
                statuses: Vec::new(),
            });
            st.deliveries.len() - 1
        };
        tokio::spawn(async move { me.deliver(index, url, body, resend).await });
        Some(index)
    }

    /// POSTs a signed notification until the exact acknowledgement comes back or the resends
    /// run out.
    async fn deliver(&self, index: usize, url: String, body: String, resend: Vec<Duration>) {
        let path = match reqwest::Url::parse(&url) {
            Ok(u) => match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            },
            Err(_) => return,
        };
        for wait in std::iter::once(Duration::ZERO).chain(resend) {
            tokio::time::sleep(wait).await;
            let t = now();
            let sig = self.antom_key.sign(&signing::content(
                &path,
                &self.client_id,
                &t,
                body.as_bytes(),
            ));
            let sent = self
                .http
                .post(&url)
                .header("content-type", "application/json; charset=UTF-8")
                .header("client-id", &self.client_id)
                .header("request-time", &t)
                .header("signature", signing::signature_header(1, &sig))
                .body(body.clone())
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let (status, acked) = match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let answer: Option<Value> = r
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    let acked = status == 200
                        && answer.is_some_and(|a| {
                            a["result"]["resultCode"] == "SUCCESS"
                                && a["result"]["resultStatus"] == "S"
                        });
                    (status, acked)
                }
                Err(_) => (0, false),
            };
            {
                let mut st = self.state();
                if let Some(d) = st.deliveries.get_mut(index) {
                    d.attempts += 1;
                    d.statuses.push(status);
                    d.acked |= acked;
                }
            }
            if acked {
                return;
            }
        }
    }

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

    /// Serves on `listener` until stopped.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<SimServer> {
        let app = Router::new().fallback(handle).with_state(self.clone());
        SimServer::start(self.clone(), listener, app)
    }

    /// Binds `addr` and serves.
    pub async fn bind(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SimServer> {
        self.serve(TcpListener::bind(addr).await?)
    }

    fn take_fault(&self, endpoint: &str) -> Option<FaultKind> {
        super::fault::take_fault(&mut self.state().faults, endpoint)
    }

    fn sign_answer(&self, uri: &str, body: &[u8]) -> (String, String) {
        let t = now();
        let sig = self
            .antom_key
            .sign(&signing::content(uri, &self.client_id, &t, body));
        (t, signing::signature_header(1, &sig))
    }

    fn unsigned(&self, body: Value) -> Answer {
        let mut r = Response::new(Body::from(body.to_string()));
        r.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        r
    }

    fn execute(&self, endpoint: &str, req: &Value) -> Value {
        match endpoint {
            "refund" => self.refund(req),
            "inquiryRefund" => self.inquiry(req),
            _ => self.cancel(req),
        }
    }

    fn refund(&self, req: &Value) -> Value {
        let parsed = (|| {
            Ok::<_, String>((
                required(req, "refundRequestId", 64)?,
                required(req, "paymentId", 64)?,
                amount(req, "refundAmount")?,
                text(req, "refundReason", 256)?,
                text(req, "referenceRefundId", 64)?,
                text(req, "refundNotifyUrl", 1024)?,
            ))
        })();
        let (rrid, payment_id, (currency, value), _reason, _reference, notify_url) = match parsed {
            Ok(p) => p,
            Err(m) => return param_illegal(&m),
        };
        let mut st = self.state();
        if let Some(prev) = st.by_request_id.get(&rrid).cloned() {
            if prev.payment_id != payment_id || prev.currency != currency || prev.value != value {
                return json!({"result": result("REPEAT_REQ_INCONSISTENT", "F",
                    "the same refundRequestId was used with different fields")});
            }
            if let Some((code, message)) = prev.failure {
                return json!({"result": result(&code, "F", &message)});
            }
            if let Some(id) = prev.refund_id
                && let Some(r) = st.refunds.get(&id)
            {
                return refund_answer(r);
            }
        }
        let refusal = match st.payments.get(&payment_id) {
            None => Some(("ORDER_NOT_EXIST", "payment not found")),
            Some(p) if p.status != PaymentStatus::Success => Some((
                "ORDER_STATUS_INVALID",
                "payment is not in a refundable state",
            )),
            Some(p) if p.currency != currency => Some((
                "CURRENCY_NOT_SUPPORT",
                "refund currency differs from payment currency",
            )),
            Some(p) if time::Duration::days(p.paid_days_ago) > REFUND_WINDOW => {
                Some(("REFUND_WINDOW_EXCEED", "refund window has passed"))
            }
            Some(p)
                if !p.multiple_refunds
                    && st.refunds.values().any(|r| r.payment_id == payment_id) =>
            {
                Some((
                    "MULTIPLE_REFUNDS_NOT_SUPPORTED",
                    "only one refund is allowed",
                ))
            }
            Some(p) => {
                let refunded: i64 = st
                    .refunds
                    .values()
                    .filter(|r| r.payment_id == payment_id && r.status != "FAIL")
                    .map(|r| r.value)
                    .sum();
                (refunded + value > p.amount).then_some((
                    "REFUND_AMOUNT_EXCEED",
                    "refunds would exceed the amount paid",
                ))
            }
        };
        if let Some((code, message)) = refusal {
            st.by_request_id.insert(
                rrid,
                RefundKey {
                    payment_id,
                    currency,
                    value,
                    refund_id: None,
                    failure: Some((code.into(), message.into())),
                },
            );
            return json!({"result": result(code, "F", message)});
        }
        let is_async = st
            .payments
            .get(&payment_id)
            .is_some_and(|p| p.async_refunds);
        st.next_id += 1;
        let refund_id = format!("2026{:016}", st.next_id);
        let r = SimRefund {
            refund_id: refund_id.clone(),
            refund_request_id: rrid.clone(),
            payment_id: payment_id.clone(),
            currency: currency.clone(),
            value,
            status: if is_async { "PROCESSING" } else { "SUCCESS" }.into(),
            time: now(),
            notify_url,
        };
        let answer = refund_answer(&r);
        if is_async
            && let (Some(after), Some(me)) =
                (self.target().and_then(|t| t.auto_settle), self.me.upgrade())
        {
            let id = refund_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                me.settle_refund(&id, true);
            });
        }
        st.refunds.insert(refund_id.clone(), r);
        st.by_request_id.insert(
            rrid,
            RefundKey {
                payment_id,
                currency,
                value,
                refund_id: Some(refund_id),
                failure: None,
            },
        );
        st.stats.refunds_executed += 1;
        answer
    }

    fn inquiry(&self, req: &Value) -> Value {
        let ids = (|| {
            Ok::<_, String>((
                text(req, "refundId", 64)?,
                text(req, "refundRequestId", 64)?,
            ))
        })();
        let (refund_id, rrid) = match ids {
            Ok((None, None)) => return param_illegal("refundId or refundRequestId is required"),
            Ok(v) => v,
            Err(m) => return param_illegal(&m),
        };
        let st = self.state();
        let id = refund_id.or_else(|| {
            rrid.and_then(|k| st.by_request_id.get(&k).and_then(|e| e.refund_id.clone()))
        });
        match id.and_then(|i| st.refunds.get(&i)) {
            Some(r) => {
                let mut a = json!({
                    "result": result("SUCCESS", "S", "success"),
                    "refundId": r.refund_id,
                    "refundRequestId": r.refund_request_id,
                    "refundAmount": {"currency": r.currency, "value": r.value.to_string()},
                    "refundStatus": r.status,
                });
                if r.status == "SUCCESS" {
                    a["refundTime"] = json!(r.time);
                }
                a
            }
            None => json!({"result": result("REFUND_NOT_EXIST", "F", "refund not found")}),
        }
    }

    fn cancel(&self, req: &Value) -> Value {
        let parsed = (|| {
            Ok::<_, String>((
                text(req, "subscriptionId", 64)?,
                text(req, "subscriptionRequestId", 64)?,
                required(req, "cancellationType", 32)?,
            ))
        })();
        let (sid, srid, kind) = match parsed {
            Ok((None, None, _)) => {
                return param_illegal("subscriptionId or subscriptionRequestId is required");
            }
            Ok(p) => p,
            Err(m) => return param_illegal(&m),
        };
        let new_status = match kind.as_str() {
            "CANCEL" => "CANCELLED",
            "TERMINATE" => "TERMINATED",
            _ => return param_illegal("cancellationType must be CANCEL or TERMINATE"),
        };
        let mut st = self.state();
        let found = st.subscriptions.iter_mut().find(|s| {
            sid.as_deref().is_none_or(|i| i == s.subscription_id)
                && srid
                    .as_deref()
                    .is_none_or(|i| i == s.subscription_request_id)
        });
        let Some(sub) = found else {
            return json!({"result": result("SUBSCRIPTION_NOT_EXIST", "F", "subscription not found")});
        };
        // Terminated is final; cancelling again answers success without changing it.
        let changed = sub.status != "TERMINATED" && sub.status != new_status;
        if sub.status != "TERMINATED" {
            sub.status = new_status.into();
        }
        let t = OffsetDateTime::now_utc();
        let end = if kind == "CANCEL" {
            t + time::Duration::days(30)
        } else {
            t
        };
        let notice = json!({
            "subscriptionRequestId": sub.subscription_request_id,
            "subscriptionId": sub.subscription_id,
            "subscriptionStatus": sub.status,
            "subscriptionNotificationType": kind,
            "subscriptionStartTime": (t - time::Duration::days(60)).format(&Rfc3339).unwrap_or_default(),
            "subscriptionEndTime": end.format(&Rfc3339).unwrap_or_default(),
        });
        st.stats.cancels_executed += 1;
        drop(st);
        if changed {
            self.notify("subscription", notice);
        }
        json!({"result": result("SUCCESS", "S", "success")})
    }
}

fn refund_answer(r: &SimRefund) -> Value {
    let (code, status) = match r.status.as_str() {
        "SUCCESS" => ("SUCCESS", "S"),
        "PROCESSING" => ("REFUND_IN_PROCESS", "U"),
        _ => ("PROCESS_FAIL", "F"),
    };
    let mut a = json!({
        "result": result(code, status, if status == "S" { "success" } else { "refund is processing" }),
        "refundRequestId": r.refund_request_id,
        "paymentId": r.payment_id,
        "refundAmount": {"currency": r.currency, "value": r.value.to_string()},
        "refundTime": r.time,
    });
    if status == "S" {
        a["refundId"] = json!(r.refund_id);
    }
    a
}

fn endpoint_of(path: &str) -> Option<&'static str> {
    let rest = path
        .strip_prefix("/ams/api")
        .or_else(|| path.strip_prefix("/ams/sandbox/api"))?;
    match rest {
        "/v1/payments/refund" => Some("refund"),
        "/v1/payments/inquiryRefund" => Some("inquiryRefund"),
        "/v1/subscriptions/cancel" => Some("cancel"),
        _ => None,
    }
}

async fn handle(
    State(sim): State<Arc<AntomSim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let path = uri.path();
    if path.starts_with("/sim/") {
        return control(&sim, &method, path, &body);
    }
    let Some(endpoint) = endpoint_of(path) else {
        return empty(StatusCode::NOT_FOUND);
    };
    if let Some(fast) = &sim.fast {
        if !fast.delay.is_zero() {
            tokio::time::sleep(fast.delay).await;
        }
        return sim.canned(fast, endpoint, path);
    }
    if method != Method::POST {
        return sim.unsigned(json!({"result": result("METHOD_NOT_SUPPORTED", "F", "POST only")}));
    }
    let signed_uri = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.to_owned());
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if h("client-id") != Some(sim.client_id.as_str()) {
        sim.state().stats.rejected_signatures += 1;
        return sim.unsigned(json!({"result": result("INVALID_CLIENT", "F", "unknown client id")}));
    }
    let verified = match (h("request-time"), h("signature")) {
        (Some(t), Some(s)) => signing::parse_signature_header(s).is_some_and(|sig| {
            sim.merchant_key.verify(
                &signing::content(&signed_uri, &sim.client_id, t, &body),
                &sig,
            )
        }),
        _ => false,
    };
    if !verified {
        sim.state().stats.rejected_signatures += 1;
        return sim.unsigned(
            json!({"result": result("INVALID_SIGNATURE", "F", "signature does not verify")}),
        );
    }
    {
        let mut st = sim.state();
        *st.stats.calls.entry(endpoint.into()).or_default() += 1;
        st.call_times
            .push((endpoint.into(), std::time::Instant::now()));
        if let Some(tp) = h("traceparent") {
            st.traceparents.push(tp.to_owned());
        }
    }

    let fault = sim.take_fault(endpoint);
    match &fault {
        Some(FaultKind::Latency { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Some(FaultKind::HttpStatus { status }) => {
            return empty(StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY));
        }
        _ => {}
    }
    if let Some(FaultKind::Raw {
        body: raw,
        sign,
        headers: extra,
    }) = &fault
    {
        let mut r = Response::new(Body::from(raw.clone()));
        if *sign {
            let (time, signature) = sim.sign_answer(&signed_uri, raw);
            for (k, v) in [("response-time", time), ("signature", signature)] {
                if let Ok(v) = v.parse() {
                    r.headers_mut().insert(k, v);
                }
            }
        }
        for (k, v) in extra {
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                axum::http::HeaderValue::from_bytes(v.as_bytes()),
            ) {
                r.headers_mut().insert(k, v);
            }
        }
        return r;
    }
    let answer = match &fault {
        Some(FaultKind::Result { code, status }) => {
            json!({"result": result(code, status, "injected")})
        }
        _ => match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => sim.execute(endpoint, &v),
            _ => param_illegal("body is not a JSON object"),
        },
    };
    if let Some(FaultKind::SlowAnswer { ms }) = &fault {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
    let mut bytes = answer.to_string().into_bytes();
    if fault == Some(FaultKind::MalformedBody) {
        bytes.truncate(bytes.len() / 2);
    }
    if let Some(FaultKind::HugeBody { bytes: n }) = &fault {
        bytes = vec![b' '; *n];
    }
    if fault == Some(FaultKind::NeverFinish) {
        let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
        let stream = tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok::<_, std::io::Error>(half)),
            tokio_stream::pending(),
        );
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    if fault == Some(FaultKind::LoseAnswer) {
        let broken = broken_stream();
        let mut r = Response::new(Body::from_stream(broken));
        r.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let (time, mut signature) = sim.sign_answer(&signed_uri, &bytes);
    if fault == Some(FaultKind::BadSignature) {
        // Sign something else: a well-formed signature that does not match this body.
        signature = sim.sign_answer(&signed_uri, b"{}").1;
    }
    let mut r = Response::new(Body::from(bytes));
    let hm = r.headers_mut();
    hm.insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    if let Ok(v) = sim.client_id.parse() {
        hm.insert("client-id", v);
    }
    if fault != Some(FaultKind::NoSignature) {
        if let Ok(v) = time.parse() {
            hm.insert("response-time", v);
        }
        if let Ok(v) = signature.parse() {
            hm.insert("signature", v);
        }
    }
    r
}

/// A body stream that fails at once: the server aborts the connection mid-answer.
fn broken_stream() -> impl tokio_stream::Stream<Item = Result<Bytes, std::io::Error>> {
    tokio_stream::once(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "answer lost",
    )))
}

fn control(sim: &AntomSim, method: &Method, path: &str, body: &[u8]) -> Answer {
    let ok = |v: Value| {
        let mut r = Response::new(Body::from(v.to_string()));
        r.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        r
    };
    let bad = |m: String| {
        let mut r = Response::new(Body::from(m));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    match (method.as_str(), path) {
        ("GET", "/sim/stats") => ok(serde_json::to_value(sim.stats()).unwrap_or_default()),
        ("POST", "/sim/payments") => match serde_json::from_slice::<Payment>(body) {
            Ok(p) => {
                sim.add_payment(p);
                ok(json!({}))
            }
            Err(e) => bad(e.to_string()),
        },
        ("POST", "/sim/subscriptions") => match serde_json::from_slice::<Subscription>(body) {
            Ok(s) => {
                sim.add_subscription(s);
                ok(json!({}))
            }
            Err(e) => bad(e.to_string()),
        },
        ("POST", "/sim/faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                sim.inject(f);
                ok(json!({}))
            }
            Err(e) => bad(e.to_string()),
        },
        ("GET", "/sim/refunds") => {
            let mut all: Vec<SimRefund> = sim.state().refunds.values().cloned().collect();
            all.sort_by(|a, b| a.refund_id.cmp(&b.refund_id));
            ok(serde_json::to_value(all).unwrap_or_default())
        }
        ("GET", "/sim/deliveries") => {
            ok(serde_json::to_value(sim.deliveries()).unwrap_or_default())
        }
        ("POST", "/sim/settle") => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Settle {
                refund_id: String,
                success: bool,
            }
            match serde_json::from_slice::<Settle>(body) {
                Ok(s) if sim.settle_refund(&s.refund_id, s.success) => ok(json!({})),
                Ok(_) => bad("no such PROCESSING refund".into()),
                Err(e) => bad(e.to_string()),
            }
        }
        ("DELETE", "/sim/faults") => {
            sim.clear_faults();
            ok(json!({}))
        }
        _ => empty(StatusCode::NOT_FOUND),
    }
}
