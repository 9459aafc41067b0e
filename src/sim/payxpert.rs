//! A PayXpert Gateway API simulator: checks HTTP Basic auth, keeps sale and refund
//! transactions and subscriptions, applies the refund rules (sum of refunds <= amount, only
//! sales are refundable, `cancelSubscription` defaulting to true) and the cancel-reason timing
//! (codes up to 1004 end at once, higher ones at the end of the paid period), serves the refund
//! export, and misbehaves on request, including "refund executed, answer lost".
//!
//! Choices where PayXpert's behaviour is not documented: unknown transactions answer `012`,
//! unknown subscriptions `678`, a bad cancel reason `030`, a repeated cancel `000` with the
//! current subscription, bad credentials HTTP 401.
//!
//! The refund export honours `startDate`, `endDate` and `transactionErrorCode`.
//!
//! Control endpoints: `POST /sim/transactions`, `POST /sim/subscriptions`, `POST /sim/faults`,
//! `DELETE /sim/faults`, `GET /sim/stats`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::control::common_control;
use super::control::{Controls, Counters, Simulator};
use super::fault::FaultKind;
use super::server::SimServer;

/// A transaction (sale or refund).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Tx {
    /// Id.
    #[serde(rename = "transactionID")]
    pub transaction_id: String,
    /// `sale`, `refund`, ...
    #[serde(default = "sale")]
    pub operation: String,
    /// The transaction a refund refers to.
    #[serde(default, rename = "referralID")]
    pub referral_id: Option<String>,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// `000` for a successful transaction.
    #[serde(default = "ok_code")]
    pub error_code: String,
    /// Unix seconds.
    #[serde(default)]
    pub date: i64,
    /// The subscription it belongs to.
    #[serde(default, rename = "subscriptionID")]
    pub subscription_id: Option<String>,
}

fn sale() -> String {
    "sale".into()
}

fn ok_code() -> String {
    "000".into()
}

/// A subscription.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Sub {
    /// Id.
    #[serde(rename = "subscriptionID")]
    pub subscription_id: String,
    /// `active`, `canceled`, ...
    #[serde(default = "active")]
    pub state: String,
    /// Unix seconds, once cancelled.
    #[serde(default)]
    pub cancel_date: Option<i64>,
    /// Reason code, once cancelled.
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// End of the paid period, Unix seconds.
    #[serde(default)]
    pub period_end: i64,
}

fn active() -> String {
    "active".into()
}

/// Counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Authenticated requests by endpoint (`refund`, `status`, `export`, `cancel`).
    pub calls: HashMap<String, u64>,
    /// Requests with wrong credentials.
    pub auth_failures: u64,
    /// Refunds executed.
    pub refunds_executed: u64,
    /// Cancels executed.
    pub cancels_executed: u64,
}

impl Counters for Stats {
    fn calls_mut(&mut self) -> &mut HashMap<String, u64> {
        &mut self.calls
    }
}

#[derive(Debug, Default)]
struct PxState {
    txs: BTreeMap<String, Tx>,
    subs: HashMap<String, Sub>,
    controls: Controls<Stats>,
    next_id: u64,
}

/// What the simulator knows of its merchant's business, kept across runs by `paygate dev
/// --keep`: transactions, subscriptions and the id counter. Not its faults or statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayXpertData {
    txs: BTreeMap<String, Tx>,
    subs: HashMap<String, Sub>,
    next_id: u64,
}

/// The simulator.
pub struct PayXpertSim {
    originator: String,
    passwords: Mutex<Vec<String>>,
    state: Mutex<PxState>,
}

impl Simulator for PayXpertSim {
    type Stats = Stats;

    fn with_controls<R>(&self, f: impl FnOnce(&mut Controls<Stats>) -> R) -> R {
        f(&mut self.state().controls)
    }
}

impl std::fmt::Debug for PayXpertSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayXpertSim")
            .field("originator", &self.originator)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn answer(status: StatusCode, v: Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

fn code(c: &str, message: &str) -> Value {
    json!({"errorCode": c, "errorMessage": message})
}

fn tx_json(t: &Tx) -> Value {
    json!({
        "transactionID": t.transaction_id,
        "operation": t.operation,
        "referralID": t.referral_id,
        "amount": t.amount,
        "currency": t.currency,
        "errorCode": t.error_code,
        "date": t.date,
        "subscriptionID": t.subscription_id,
        "status": if t.error_code == "000" { "Authorized" } else { "Not authorized" },
    })
}

fn sub_json(s: &Sub) -> Value {
    json!({
        "subscriptionID": s.subscription_id,
        "state": s.state,
        "cancelDate": s.cancel_date.map(|d| d.to_string()),
        "cancelReason": s.cancel_reason,
        "periodEnd": s.period_end.to_string(),
    })
}

impl PayXpertSim {
    /// A simulator accepting `originator`:`password`.
    pub fn new(originator: impl Into<String>, password: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            originator: originator.into(),
            passwords: Mutex::new(vec![password.into()]),
            state: Mutex::new(PxState {
                next_id: 5_000_000,
                ..Default::default()
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, PxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a transaction (a sale, normally).
    pub fn add_transaction(&self, t: Tx) {
        self.state().txs.insert(t.transaction_id.clone(), t);
    }

    /// A successful sale.
    pub fn add_sale(&self, id: &str, amount: i64, currency: &str, subscription: Option<&str>) {
        self.add_transaction(Tx {
            transaction_id: id.into(),
            operation: "sale".into(),
            referral_id: None,
            amount,
            currency: currency.into(),
            error_code: "000".into(),
            date: now() - 86_400,
            subscription_id: subscription.map(str::to_owned),
        });
    }

    /// Adds a subscription.
    pub fn add_subscription(&self, s: Sub) {
        self.state().subs.insert(s.subscription_id.clone(), s);
    }

    /// An active subscription whose paid period ends in `days`.
    pub fn add_active_subscription(&self, id: &str, days: i64) {
        self.add_subscription(Sub {
            subscription_id: id.into(),
            state: "active".into(),
            cancel_date: None,
            cancel_reason: None,
            period_end: now() + days * 86_400,
        });
    }

    /// Refund transactions of `payment`.
    pub fn refunds_of(&self, payment: &str) -> Vec<Tx> {
        self.state()
            .txs
            .values()
            .filter(|t| t.operation == "refund" && t.referral_id.as_deref() == Some(payment))
            .cloned()
            .collect()
    }

    /// A subscription.
    pub fn subscription(&self, id: &str) -> Option<Sub> {
        self.state().subs.get(id).cloned()
    }

    /// Demo data for `paygate dev`.
    pub fn seed_demo(&self) {
        self.add_sale("1000001", 10_000, "EUR", Some("2000001"));
        self.add_sale("1000002", 5_000, "EUR", None);
        self.add_active_subscription("2000001", 20);
    }

    /// A copy of what it knows (see [`PayXpertData`]).
    pub fn data(&self) -> PayXpertData {
        let st = self.state();
        PayXpertData {
            txs: st.txs.clone(),
            subs: st.subs.clone(),
            next_id: st.next_id,
        }
    }

    /// Replaces what it knows with `data` (from [`PayXpertSim::data`] of an earlier run).
    pub fn restore(&self, data: PayXpertData) {
        let mut st = self.state();
        st.txs = data.txs;
        st.subs = data.subs;
        st.next_id = st.next_id.max(data.next_id);
    }

    /// Starts its transaction ids above every id an earlier run can have given (see
    /// [`crate::sim::antom::AntomSim::ids_from`]).
    pub fn ids_from(&self, start: u64) {
        let mut st = self.state();
        st.next_id = st.next_id.max(start);
    }

    /// Serves on `listener`.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<SimServer<Self>> {
        let app = Router::new().fallback(handle).with_state(self.clone());
        SimServer::start(self.clone(), listener, app)
    }

    /// Binds `addr` and serves.
    pub async fn bind(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SimServer<Self>> {
        self.serve(TcpListener::bind(addr).await?)
    }

    /// From now on the originator's password is any of `passwords` (PayXpert's back office
    /// takes a new one; during a rotation both work).
    pub fn accept_passwords(&self, passwords: &[&str]) {
        let mut p = self.passwords.lock().unwrap_or_else(|e| e.into_inner());
        *p = passwords.iter().map(|s| (*s).to_owned()).collect();
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "));
        let p = self.passwords.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().any(|pw| {
            let expected = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{pw}", self.originator));
            given == Some(expected.as_str())
        })
    }

    fn refund(&self, id: &str, body: &[u8]) -> Value {
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return code("030", "body is not JSON");
        };
        let Some(amount) = req.get("amount").and_then(Value::as_i64).filter(|a| *a > 0) else {
            return code("013", "invalid amount");
        };
        let body_id = match req.get("transactionID") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return code("030", "transactionID is required"),
        };
        if body_id != id {
            return code("030", "transactionID differs from the path");
        }
        let cancel_sub = match req.get("cancelSubscription") {
            None => true, // PayXpert's default
            Some(Value::Bool(b)) => *b,
            Some(_) => return code("030", "cancelSubscription must be a boolean"),
        };
        let mut st = self.state();
        let Some(original) = st.txs.get(id).cloned() else {
            return code("012", "invalid transaction");
        };
        if !["sale", "capture", "rebill"].contains(&original.operation.as_str())
            || original.error_code != "000"
        {
            return code("012", "transaction cannot be refunded");
        }
        let refunded: i64 = st
            .txs
            .values()
            .filter(|t| {
                t.operation == "refund"
                    && t.referral_id.as_deref() == Some(id)
                    && t.error_code == "000"
            })
            .map(|t| t.amount)
            .sum();
        if refunded + amount > original.amount {
            return code("064", "referencing amount exceeds original");
        }
        st.next_id += 1;
        let new_id = st.next_id.to_string();
        st.txs.insert(
            new_id.clone(),
            Tx {
                transaction_id: new_id.clone(),
                operation: "refund".into(),
                referral_id: Some(id.to_owned()),
                amount,
                currency: original.currency.clone(),
                error_code: "000".into(),
                date: now(),
                subscription_id: original.subscription_id.clone(),
            },
        );
        st.controls.stats.refunds_executed += 1;
        if cancel_sub
            && let Some(sid) = &original.subscription_id
            && let Some(sub) = st.subs.get_mut(sid)
            && sub.cancel_date.is_none()
        {
            sub.state = "canceled".into();
            sub.cancel_date = Some(now());
            sub.cancel_reason = Some("1001".into());
        }
        json!({"transactionID": new_id, "errorCode": "000", "errorMessage": "Transaction successfully completed"})
    }

    fn cancel(&self, id: &str, body: &[u8]) -> Value {
        let reason = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("cancelReason").and_then(Value::as_i64));
        let Some(reason) = reason.filter(|r| (1000..=1099).contains(r)) else {
            return code("030", "cancelReason must be 1000-1099");
        };
        let mut st = self.state();
        let Some(sub) = st.subs.get_mut(id) else {
            return code("678", "invalid subscription ID");
        };
        if sub.cancel_date.is_none() {
            if reason <= 1004 {
                sub.state = "canceled".into();
                sub.cancel_date = Some(now());
            } else {
                // Ends after the paid period; until then it stays active.
                sub.cancel_date = Some(sub.period_end);
            }
            sub.cancel_reason = Some(reason.to_string());
        }
        let v = json!({"errorCode": "000", "errorMessage": "Subscription canceled", "subscription": sub_json(sub)});
        st.controls.stats.cancels_executed += 1;
        v
    }

    fn status(&self, id: &str) -> Value {
        match self.state().txs.get(id) {
            Some(t) => json!({"errorCode": "000", "errorMessage": "", "transaction": tx_json(t)}),
            None => code("012", "invalid transaction"),
        }
    }

    fn export(&self, uri: &Uri) -> Value {
        let q: HashMap<String, String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let parse = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
        let (Some(from), Some(to)) = (parse("startDate"), parse("endDate")) else {
            return code("030", "startDate and endDate are required");
        };
        // `transactionErrorCode` narrows the list to transactions with that result code.
        let code = q.get("transactionErrorCode").cloned();
        let list: Vec<Value> = self
            .state()
            .txs
            .values()
            .filter(|t| t.operation == "refund" && t.date >= from && t.date <= to)
            .filter(|t| code.as_ref().is_none_or(|c| *c == t.error_code))
            .map(tx_json)
            .collect();
        json!({"errorCode": "000", "errorMessage": "", "transactionList": list})
    }
}

/// (endpoint name, id) of a request path.
fn route(method: &Method, path: &str) -> Option<(&'static str, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["transaction", id, "refund"]) => Some(("refund", id.to_string())),
        ("GET", ["transaction", id]) => Some(("status", id.to_string())),
        ("GET", ["transactions", "refund"]) => Some(("export", String::new())),
        ("POST", ["subscription", id, "cancel"]) => Some(("cancel", id.to_string())),
        _ => None,
    }
}

async fn handle(
    State(sim): State<Arc<PayXpertSim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path.starts_with("/sim/") {
        return control(&sim, &method, &path, &body);
    }
    let Some((endpoint, id)) = route(&method, &path) else {
        return answer(StatusCode::NOT_FOUND, code("404", "no such call"));
    };
    if !sim.authorized(&headers) {
        sim.state().controls.stats.auth_failures += 1;
        return answer(
            StatusCode::UNAUTHORIZED,
            code("401", "authentication failed"),
        );
    }
    let fault = sim.state().controls.call(endpoint);
    match &fault {
        Some(FaultKind::Latency { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Some(FaultKind::HttpStatus { status }) => {
            return answer(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                json!({}),
            );
        }
        Some(FaultKind::Result { code: c, .. }) => {
            return answer(StatusCode::OK, code(c, "injected"));
        }
        Some(FaultKind::StatusWithBody { status, body }) => {
            let mut r = Response::new(Body::from(body.clone()));
            *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            return r;
        }
        _ => {}
    }
    if let Some(FaultKind::ExecuteLate { ms }) = &fault {
        // Executed by a task of its own: a caller hanging up does not stop it.
        let (sim, ms, endpoint, id, uri) = (sim.clone(), *ms, endpoint, id.clone(), uri.clone());
        let run = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            match endpoint {
                "refund" => sim.refund(&id, &body),
                "cancel" => sim.cancel(&id, &body),
                "status" => sim.status(&id),
                _ => sim.export(&uri),
            }
        });
        let v = run
            .await
            .unwrap_or_else(|_| code("096", "simulator task failed"));
        return answer(StatusCode::OK, v);
    }
    let v = match endpoint {
        "refund" => sim.refund(&id, &body),
        "cancel" => sim.cancel(&id, &body),
        "status" => sim.status(&id),
        _ => sim.export(&uri),
    };
    if let Some(FaultKind::SlowAnswer { ms }) = &fault {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
    let mut bytes = v.to_string().into_bytes();
    match fault {
        Some(FaultKind::LoseAnswer) => {
            let broken = tokio_stream::once(Err::<Bytes, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "answer lost",
            )));
            return Response::new(Body::from_stream(broken));
        }
        Some(FaultKind::MalformedBody) => bytes.truncate(bytes.len() / 2),
        Some(FaultKind::HugeBody { bytes: n }) => bytes = vec![b' '; n],
        _ => {}
    }
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

fn control(sim: &PayXpertSim, method: &Method, path: &str, body: &[u8]) -> Response {
    let bad =
        |e: serde_json::Error| answer(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
    if let Some(done) = common_control(sim, method, path, body) {
        return done.map_or_else(bad, |v| answer(StatusCode::OK, v));
    }
    match (method.as_str(), path) {
        ("POST", "/sim/transactions") => match serde_json::from_slice::<Tx>(body) {
            Ok(t) => {
                sim.add_transaction(t);
                answer(StatusCode::OK, json!({}))
            }
            Err(e) => bad(e),
        },
        ("POST", "/sim/subscriptions") => match serde_json::from_slice::<Sub>(body) {
            Ok(s) => {
                sim.add_subscription(s);
                answer(StatusCode::OK, json!({}))
            }
            Err(e) => bad(e),
        },
        _ => answer(StatusCode::NOT_FOUND, json!({})),
    }
}
