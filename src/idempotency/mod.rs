//! Idempotency that never refunds twice. Every mutating RPC runs through [`Idempotency::run`]:
//!
//! - a key is (caller, method, request_id), with a fingerprint of everything else in the request;
//! - the first attempt takes a *lease* (a row in `in_flight` state) before the provider is called;
//! - definitive outcomes (success, provider refusals) are stored and replayed, marked
//!   `idempotent-replayed: true`; the same key with other parameters is refused
//!   (`IDEMPOTENCY_KEY_REUSED`) without touching the stored outcome;
//! - a duplicate arriving while the lease is live waits for the outcome within its own deadline,
//!   or gets ABORTED with RetryInfo; it never reaches the provider;
//! - an unknown outcome (timeout, `U`, lost answer, crash) leaves the key `unknown` (or its lease
//!   expires); the next attempt *resumes*: it must settle the earlier attempt before acting.
//!   Providers that deduplicate (Antom) settle by sending the identical request again; others
//!   never resend blindly;
//! - retryable failures (nothing executed) and validation errors are not stored.
//!
//! Stores: embedded SQLite (default) and PostgreSQL (several replicas), behind [`Store`].

mod attention;
mod decide;
mod lease;
pub mod operator;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::domain::{CancelOutcome, Notice, ProviderResult, Reconcile, RefundRecord, RefundState};
use crate::error::{ErrorContext, GatewayError, StoreUse, refusal_code, refusal_of_code};
use crate::providers::{Disposition, ProviderError, Refusal, Resolution};
use crate::retry;
use crate::telemetry::{idempotency_event, store_op};

pub use self::attention::{ATTENTION_EVERY, attention_loop};
use self::decide::{Created, Step, created, decide, next_wait};
use self::lease::{Lease, Start};

use crate::store::{
    Change, Completion, EventSource, Inserted, KeyState, NewKey, PaymentClaim, RefundRow, Retention,
};
pub use crate::store::{INSTANCE_STALE, Key, Store, StoreError};

/// The method whose keys name refunds: the scope of refund keys.
pub const CREATE_REFUND: &str = crate::store::KEY_METHODS[0];
/// The method whose keys name cancellations.
pub const CANCEL_SUBSCRIPTION: &str = crate::store::KEY_METHODS[1];

/// Default retention of completed keys.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default retention of completed keys on providers without an idempotency key of their own
/// (PayXpert): 395 days, longer than the 13 months card schemes allow for a refund, so a late
/// retry of a completed refund replays instead of refunding again.
pub const DEFAULT_UNKEYED_RETENTION: Duration = Duration::from_secs(395 * 24 * 3600);
/// How much longer than the call's own deadline a lease lives, so a crashed attempt's key is
/// taken over soon after the caller gave up on it.
pub const LEASE_SLACK: Duration = Duration::from_secs(2);
/// How often a serving process writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// A duplicate waiting for a live lease answers this long before its own deadline.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// Completed outcomes kept in memory: a done key never changes, so a replay needs no store
/// read. Bounded; the oldest entries go first.
struct DoneCache {
    inner: std::sync::Mutex<(DoneMap, std::collections::VecDeque<Key>)>,
    capacity: usize,
}

/// Key -> (fingerprint, outcome, when cached).
type DoneMap = std::collections::HashMap<Key, (String, Arc<Outcome>, Instant)>;

impl DoneCache {
    fn new(capacity: usize) -> Self {
        Self {
            inner: std::sync::Mutex::new(Default::default()),
            capacity,
        }
    }

    /// The cached outcome, unless it is older than `max_age` (then it may have been purged).
    fn get(&self, key: &Key, max_age: Duration) -> Option<(String, Arc<Outcome>)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (fp, o, at) = g.0.get(key)?;
        (at.elapsed() < max_age).then(|| (fp.clone(), o.clone()))
    }

    fn put(&self, key: &Key, fingerprint: &str, outcome: Arc<Outcome>) {
        if self.capacity == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *g;
        if map
            .insert(
                key.clone(),
                (fingerprint.to_owned(), outcome, Instant::now()),
            )
            .is_none()
        {
            order.push_back(key.clone());
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }
}

/// A definitive provider refusal, as stored for replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRefusal {
    /// Why, by name. Absent in refusals stored by releases before it (they have `code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// The gRPC code it was answered with: read only where `refusal` is absent, and still
    /// written for the previous release, which reads nothing else, during a rolling update.
    pub code: i32,
    /// ErrorInfo reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// The provider's raw result.
    pub result: Option<ProviderResult>,
}

/// A final outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// A refund was created (or accepted and processing).
    Refund(RefundRecord),
    /// A cancellation was accepted.
    Cancel(CancelOutcome),
    /// The provider refused for good.
    Refused(StoredRefusal),
}

impl Outcome {
    /// What it says, in a line, for a key's history (what a caller would be answered: no
    /// secret, as logs have it).
    pub fn summary(&self) -> String {
        let said =
            |r: &ProviderResult| format!("{} {} {}: {}", r.provider, r.status, r.code, r.message);
        match self {
            Outcome::Refund(r) => format!(
                "refund {} {} on payment {} ({})",
                r.refund_id.as_deref().unwrap_or("(no id yet)"),
                state_name(r.state).to_uppercase(),
                r.payment_id.as_deref().unwrap_or("?"),
                said(&r.result)
            ),
            Outcome::Cancel(c) => format!("cancellation {:?} ({})", c.status, said(&c.result)),
            Outcome::Refused(r) => format!("refused for good: {}: {}", r.reason, r.message),
        }
    }
}

/// A success value that can be stored and replayed.
pub trait Storable: Sized {
    /// As a stored outcome.
    fn to_outcome(&self) -> Outcome;
    /// Back from a stored outcome; `None` if it is of another kind.
    fn from_outcome(o: Outcome) -> Option<Self>;
}

impl StoredRefusal {
    /// A refusal to store: by name, with the code the previous release reads.
    pub fn new(
        refusal: Refusal,
        reason: String,
        message: String,
        result: Option<ProviderResult>,
    ) -> Self {
        Self {
            refusal: Some(refusal),
            code: refusal_code(refusal) as i32,
            reason,
            message,
            result,
        }
    }

    /// Why: its name, or what an older release's stored code stands for.
    pub fn refusal(&self) -> Refusal {
        self.refusal.unwrap_or_else(|| refusal_of_code(self.code))
    }
}

impl Storable for RefundRecord {
    fn to_outcome(&self) -> Outcome {
        Outcome::Refund(self.clone())
    }
    fn from_outcome(o: Outcome) -> Option<Self> {
        match o {
            Outcome::Refund(r) => Some(r),
            _ => None,
        }
    }
}

impl Storable for CancelOutcome {
    fn to_outcome(&self) -> Outcome {
        Outcome::Cancel(self.clone())
    }
    fn from_outcome(o: Outcome) -> Option<Self> {
        match o {
            Outcome::Cancel(c) => Some(c),
            _ => None,
        }
    }
}

/// A value and whether it was replayed from the store.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The answer.
    pub value: T,
    /// True when it came from the store without a provider call.
    pub replayed: bool,
}

impl<T> Reply<T> {
    /// A freshly computed answer.
    pub fn fresh(value: T) -> Self {
        Self {
            value,
            replayed: false,
        }
    }
}

/// SHA-256 (hex) of the canonical JSON of `(account, request)`. Callers pass the request with
/// its request id blanked, so the fingerprint covers every other field.
pub fn fingerprint<T: Serialize>(account: &str, request: &T) -> String {
    let bytes = serde_json::to_vec(&(account, request)).unwrap_or_default();
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref())
}

/// The key of a mutating call and the fingerprint of the request. `rest` is the request with its
/// request id blanked, so that only the other fields count.
pub fn keyed<T: Serialize>(
    caller: String,
    method: &'static str,
    request_id: &str,
    account: &str,
    rest: &T,
) -> (Key, String) {
    let key = Key {
        caller,
        method,
        request_id: request_id.to_owned(),
    };
    (key, fingerprint(account, rest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn token() -> String {
    let mut b = [0u8; 16];
    // The system RNG does not fail on supported platforms; a zero token still works, it
    // only loses uniqueness against a concurrent attempt, which the state checks also guard.
    let _ = aws_lc_rs::rand::fill(&mut b);
    hex(&b)
}

pub(crate) fn state_name(s: RefundState) -> &'static str {
    match s {
        RefundState::Succeeded => "Succeeded",
        RefundState::Processing => "Processing",
        RefundState::Failed => "Failed",
    }
}

/// What a refund's state row is written with: the record's JSON and the event reporting a
/// change of its state, owned here so the row can borrow them.
struct RefundWrite<'a> {
    account: &'a str,
    refund: &'a RefundRecord,
    record: String,
    event_id: String,
    payload: String,
}

impl<'a> RefundWrite<'a> {
    /// For `outcome` when it is a refund with a request id.
    fn of(account: &'a str, outcome: &'a Outcome) -> Option<Self> {
        match outcome {
            Outcome::Refund(r) => Self::new(account, r),
            _ => None,
        }
    }

    fn new(account: &'a str, r: &'a RefundRecord) -> Option<Self> {
        let request_id = r.request_id.as_deref()?;
        // One event per change: a refund's states only move forward, so (refund, state) names
        // a change once.
        let event_id = format!(
            "{}/{account}/refund/{request_id}/{}",
            r.result.provider,
            state_name(r.state).to_uppercase()
        );
        Some(Self {
            account,
            refund: r,
            record: serde_json::to_string(r).ok()?,
            event_id,
            payload: serde_json::to_string(&Notice::Refund(r.clone())).ok()?,
        })
    }

    /// The row, with the event written if it changes the refund's state.
    fn row(&self, source: EventSource, caller: Option<&'a str>) -> RefundRow<'_> {
        let r = self.refund;
        RefundRow {
            account: self.account,
            request_id: r.request_id.as_deref().unwrap_or_default(),
            payment_id: r.payment_id.as_deref(),
            refund_id: r.refund_id.as_deref(),
            state: state_name(r.state),
            record: &self.record,
            change: Some(Change {
                event_id: &self.event_id,
                provider: &r.result.provider,
                source,
                payload: &self.payload,
                caller,
            }),
        }
    }
}

/// The caller a key names, `None` when authentication is off.
fn caller_of(key: &Key) -> Option<&str> {
    Some(key.caller.as_str()).filter(|c| !c.is_empty())
}

/// The idempotency layer over a store.
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn Store>,
    retention: Duration,
    unkeyed_retention: Duration,
    done: Arc<DoneCache>,
    /// This process's instance id, named by every lease it takes.
    instance: Arc<str>,
    /// Events are kept at least this long: the notification freshness window (the server
    /// sets it from the notification listener's limits).
    event_window: Duration,
    /// Whether the store takes writes, as the heartbeat finds it.
    writable: Arc<tokio::sync::watch::Sender<bool>>,
    /// Slots for the store work that admits a call (see [`STORE_ADMISSION_WAIT`]).
    admissions: Arc<tokio::sync::Semaphore>,
}

/// Store work that admits a call (reading its key, claiming it, taking it over) runs in one
/// of the store's admission slots ([`crate::store::KeyStore::admissions`]). A call that finds
/// every slot busy for [`STORE_ADMISSION_WAIT`] is shed before it holds anything
/// (`RESOURCE_EXHAUSTED`, reason `OVERLOADED`, RetryInfo; `paygate_shed_total{reason=
/// "store_busy"}`): past the store's knee, calls queue here, not for the store's
/// connections, so the writes that finish a claimed key (which never wait for a slot) find
/// a connection and no key is left half-way.
pub const STORE_ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// Consecutive heartbeats that must fail (or take longer than [`HEARTBEAT_TIMEOUT`]) before
/// the store counts as not writable: one slow write does not make a replica unready.
pub const UNWRITABLE_AFTER: u32 = 3;
/// Longest a heartbeat write may take before it counts as failed.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// How many completed outcomes are kept in memory.
pub const DONE_CACHE_CAPACITY: usize = 100_000;

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("store", &self.store.name())
            .field("retention", &self.retention)
            .field("unkeyed_retention", &self.unkeyed_retention)
            .field("instance", &self.instance)
            .finish()
    }
}

fn store_error(ctx: &ErrorContext, e: StoreError) -> GatewayError {
    GatewayError::store(&e, StoreUse::Keys, ctx)
}

/// A mutating use case that runs at most once per idempotency key: how it is sent, and how an
/// earlier attempt of the same key whose outcome is unknown is settled before anything is sent
/// again. The refund and cancel use cases implement it (`ops/`); [`Idempotency::run`] decides
/// when each is called.
pub trait Operation: Sync {
    /// What it answers: stored when final, and replayed.
    type Output: Storable + Send;

    /// Settles an earlier attempt whose outcome is unknown (`reconcile`: what the store knows
    /// that the provider's answer must be judged against): resend, adopt what it did, or
    /// leave it to a person.
    fn settle(
        &self,
        reconcile: Reconcile,
    ) -> impl Future<Output = Result<Resolution<Self::Output>, ProviderError>> + Send;

    /// Sends it (the provider call, with the resends that are safe within the call).
    fn send(&self) -> impl Future<Output = Result<Self::Output, ProviderError>> + Send;
}

/// An [`Operation`] made of two closures, for tests, benchmarks and tools.
pub struct FnOperation<S, F> {
    /// [`Operation::settle`].
    pub settle: S,
    /// [`Operation::send`].
    pub send: F,
}

impl<T, S, SFut, F, Fut> Operation for FnOperation<S, F>
where
    T: Storable + Send,
    S: Fn(Reconcile) -> SFut + Sync,
    SFut: Future<Output = Result<Resolution<T>, ProviderError>> + Send,
    F: Fn() -> Fut + Sync,
    Fut: Future<Output = Result<T, ProviderError>> + Send,
{
    type Output = T;

    fn settle(
        &self,
        reconcile: Reconcile,
    ) -> impl Future<Output = Result<Resolution<T>, ProviderError>> + Send {
        (self.settle)(reconcile)
    }

    fn send(&self) -> impl Future<Output = Result<T, ProviderError>> + Send {
        (self.send)()
    }
}

/// What a call's key is, and what the call is about: the request of [`Idempotency::run`].
#[derive(Debug, Clone, Copy)]
pub struct Keyed<'a> {
    /// The key: caller, RPC and request id.
    pub key: &'a Key,
    /// The request's fingerprint ([`fingerprint`]).
    pub fingerprint: &'a str,
    /// The provider account the request resolved to.
    pub account: &'a str,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// What errors are about.
    pub ctx: &'a ErrorContext,
    /// The payment of a refund (`None` for other operations).
    pub refund: Option<RefundScope<'a>>,
}

/// What a refund key is about. On a provider without an idempotency key of its own
/// (`quiet` set), the payment is held while the key is unsettled, so at most one refund
/// attempt per payment is in flight or unknown, and "not found at the provider" counts as
/// "not executed" only `quiet` after the last request may have left.
#[derive(Debug, Clone, Copy)]
pub struct RefundScope<'a> {
    /// The refunded payment.
    pub payment_id: &'a str,
    /// The provider's quiet period; `None` when the provider deduplicates by itself.
    pub quiet: Option<Duration>,
}

/// The payment and quiet period of a refund on a provider without its own key.
#[derive(Debug, Clone, Copy)]
struct Unkeyed<'a> {
    payment_id: &'a str,
    quiet: Duration,
}

/// What one run is about.
#[derive(Clone, Copy)]
struct Run<'a> {
    key: &'a Key,
    /// When the caller stops waiting: nothing of this run is sent after it.
    deadline: Instant,
    fingerprint: &'a str,
    account: &'a str,
    tok: &'a str,
    ctx: &'a ErrorContext,
    unkeyed: Option<Unkeyed<'a>>,
    payment_id: Option<&'a str>,
}

impl Run<'_> {
    fn claim(&self) -> Option<PaymentClaim<'_>> {
        self.unkeyed.map(|u| PaymentClaim {
            account: self.account,
            payment_id: u.payment_id,
        })
    }
}

/// The time left before `deadline` minus the answer margin, if any.
fn time_to_wait(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(ANSWER_MARGIN)
}

impl Idempotency {
    /// Uses `store`, keeping completed keys for `retention` (and keys of providers without
    /// their own idempotency key for [`DEFAULT_UNKEYED_RETENTION`]).
    pub fn new(store: Arc<dyn Store>, retention: Duration) -> Self {
        let admissions = store.admissions().max(1);
        Self {
            store,
            retention,
            unkeyed_retention: DEFAULT_UNKEYED_RETENTION.max(retention),
            done: Arc::new(DoneCache::new(DONE_CACHE_CAPACITY)),
            instance: token().into(),
            event_window: Duration::ZERO,
            writable: Arc::new(tokio::sync::watch::Sender::new(true)),
            admissions: Arc::new(tokio::sync::Semaphore::new(admissions)),
        }
    }

    /// One of the store's admission slots, held while a call reads and claims (or takes
    /// over) its key and released before it calls a provider or waits; or the call is shed
    /// when none frees within [`STORE_ADMISSION_WAIT`].
    async fn admission(&self) -> Result<tokio::sync::SemaphorePermit<'_>, GatewayError> {
        let wait = tokio::time::timeout(STORE_ADMISSION_WAIT, self.admissions.acquire());
        match wait.await {
            Ok(Ok(slot)) => Ok(slot),
            _ => {
                metrics::counter!("paygate_shed_total", "reason" => "store_busy").increment(1);
                Err(GatewayError::Overloaded {
                    retry_after: retry::STORE_BUSY,
                })
            }
        }
    }

    /// Whether the store takes writes: false once [`UNWRITABLE_AFTER`] heartbeats in a row
    /// failed, true again at the next one that succeeds. Only a serving process heartbeats.
    pub fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.writable.subscribe()
    }

    /// Keeps events at least `window` (the notification freshness window), so that a
    /// notification replayed within it is recognised.
    pub fn with_event_window(mut self, window: Duration) -> Self {
        self.event_window = window;
        self
    }

    /// Keeps completed keys of providers without their own idempotency key for `d` (never
    /// less than the retention of other keys).
    pub fn with_unkeyed_retention(mut self, d: Duration) -> Self {
        self.unkeyed_retention = d.max(self.retention);
        self
    }

    /// This process's instance id (what its leases name).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Writes this instance's heartbeat every [`HEARTBEAT_EVERY`], forever. Only a serving
    /// process runs it; leases of an instance that never heartbeat live until they expire.
    pub async fn heartbeat_loop(self) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = 0u32;
        loop {
            tick.tick().await;
            let beat =
                tokio::time::timeout(HEARTBEAT_TIMEOUT, self.store.heartbeat(&self.instance))
                    .await
                    .unwrap_or_else(|_| Err(StoreError::from(sqlx::Error::PoolTimedOut)));
            // Logged once when it starts failing and once when it works again.
            match beat {
                Err(e) => {
                    if failed == 0 {
                        tracing::warn!(error = %e,
                            "cannot write this instance's heartbeat; other replicas may take over its leases");
                    }
                    failed = failed.saturating_add(1);
                    if failed == UNWRITABLE_AFTER {
                        tracing::error!(
                            "the store takes no writes: readiness is NOT_SERVING until it does"
                        );
                        self.writable.send_replace(false);
                    }
                }
                Ok(()) => {
                    if failed > 0 {
                        tracing::info!("this instance's heartbeat is written again");
                    }
                    failed = 0;
                    self.writable
                        .send_if_modified(|w| !std::mem::replace(w, true));
                }
            }
        }
    }

    /// Runs `op` at most once per key while its outcome is known, as described in the module
    /// documentation: the key's row decides ([`decide`]), and this carries the step out.
    pub async fn run<O: Operation>(
        &self,
        req: &Keyed<'_>,
        op: &O,
    ) -> Result<Reply<O::Output>, GatewayError> {
        let Keyed {
            key,
            fingerprint,
            account,
            deadline,
            ctx,
            refund,
        } = *req;
        if let Some((fp, outcome)) = self.done.get(key, self.retention) {
            if fp != fingerprint {
                idempotency_event("conflict");
                return Err(GatewayError::KeyReused(ctx.clone()));
            }
            return self.replay(Some((*outcome).clone()), ctx);
        }
        let mut wait = decide::FIRST_WAIT;
        loop {
            let lease_ms = (deadline.saturating_duration_since(Instant::now()) + LEASE_SLACK)
                .as_millis() as i64;
            let tok = token();
            let run = Run {
                key,
                deadline,
                fingerprint,
                account,
                tok: &tok,
                ctx,
                unkeyed: refund.and_then(|r| {
                    r.quiet.map(|quiet| Unkeyed {
                        payment_id: r.payment_id,
                        quiet,
                    })
                }),
                payment_id: refund.map(|r| r.payment_id),
            };
            // Read first: a replay then costs one indexed read and no write.
            let slot = self.admission().await?;
            let row = self
                .store
                .load(key)
                .await
                .map_err(|e| store_error(ctx, e))?;
            match decide(row.as_ref(), fingerprint, time_to_wait(deadline), wait) {
                Step::Create => {
                    let inserted = self.create(&run, lease_ms).await?;
                    drop(slot);
                    match created(inserted, time_to_wait(deadline), wait) {
                        Created::Attempt => {
                            let lease = Lease::new(self.store.clone(), key, &tok, Start::Fresh);
                            return self.attempt(run, lease, op).await;
                        }
                        Created::Reread => {}
                        Created::Claimed => {
                            idempotency_event("claimed");
                            return Err(GatewayError::RequestIdClaimed(ctx.clone()));
                        }
                        Created::PaymentBusy(retry_after) => {
                            idempotency_event("payment_busy");
                            return Err(GatewayError::PaymentBusy {
                                retry_after,
                                ctx: ctx.clone(),
                            });
                        }
                        Created::PaymentWait(d) => {
                            // Another key's refund of this payment is unsettled: wait for it
                            // within the deadline, never alongside it.
                            idempotency_event("payment_wait");
                            tokio::time::sleep(d).await;
                            wait = next_wait(wait, decide::MAX_PAYMENT_WAIT);
                        }
                    }
                }
                Step::Conflict => {
                    idempotency_event("conflict");
                    return Err(GatewayError::KeyReused(ctx.clone()));
                }
                Step::Replay => {
                    let outcome = row.as_ref().and_then(|r| r.outcome.as_deref());
                    return self.replay_stored(&run, outcome);
                }
                Step::Unresolved => {
                    idempotency_event("unresolved");
                    return Err(GatewayError::OutcomeUnresolved(ctx.clone()));
                }
                Step::Abort(retry_after) => {
                    idempotency_event("aborted");
                    return Err(GatewayError::InFlight {
                        retry_after,
                        ctx: ctx.clone(),
                    });
                }
                Step::Wait(d) => {
                    idempotency_event("in_flight_wait");
                    drop(slot);
                    tokio::time::sleep(d).await;
                    wait = next_wait(wait, decide::MAX_LEASE_WAIT);
                }
                Step::TakeOver => {
                    let taken = self
                        .store
                        .take_over(key, &tok, lease_ms, &self.instance)
                        .await
                        .map_err(|e| store_error(ctx, e))?;
                    drop(slot);
                    if taken {
                        idempotency_event("resumed");
                        tracing::warn!(method = key.method, request_id = %key.request_id,
                            "resuming a key whose earlier attempt has an unknown outcome");
                        let lease = Lease::new(self.store.clone(), key, &tok, Start::Resume);
                        return self.resume(run, lease, op).await;
                    }
                }
            }
        }
    }

    /// Creates the run's key with its lease (and, for a refund on a provider without an
    /// idempotency key, its payment), in one transaction.
    async fn create(&self, run: &Run<'_>, lease_ms: i64) -> Result<Inserted, GatewayError> {
        let new = NewKey {
            key: run.key,
            account: run.account,
            claim_keep_ms: self.keep_ms(true),
            payment_id: run.payment_id,
            fingerprint: run.fingerprint,
            token: run.tok,
            lease_ms,
            instance: &self.instance,
            payment: run.claim(),
        };
        store_op("insert", self.store.insert(new))
            .await
            .map_err(|e| store_error(run.ctx, e))
    }

    /// Replays a done key's stored `outcome` (JSON), keeping it in memory for the next replay.
    fn replay_stored<T: Storable>(
        &self,
        run: &Run<'_>,
        outcome: Option<&str>,
    ) -> Result<Reply<T>, GatewayError> {
        let outcome: Option<Outcome> = outcome.and_then(|o| serde_json::from_str(o).ok());
        if let Some(o) = &outcome {
            self.done.put(run.key, run.fingerprint, Arc::new(o.clone()));
        }
        self.replay(outcome, run.ctx)
    }

    /// Settles an earlier attempt with an unknown outcome before acting again.
    async fn resume<O: Operation>(
        &self,
        run: Run<'_>,
        lease: Lease,
        op: &O,
    ) -> Result<Reply<O::Output>, GatewayError> {
        let Run { key, ctx, .. } = run;
        let mut held = None;
        let mut reconcile = Reconcile::default();
        if let (Some(claim), Some(u)) = (run.claim(), run.unkeyed) {
            let attempt = match self.store.hold_payment(key, claim).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    // A key from before payments were held, and another key holds the payment.
                    lease
                        .unknown("another key holds the payment; nothing was sent")
                        .await;
                    return Err(GatewayError::PaymentBusy {
                        retry_after: retry::PAYMENT_PENDING,
                        ctx: ctx.clone(),
                    });
                }
                Err(e) => {
                    lease.unknown(&format!("the store failed: {e}")).await;
                    return Err(store_error(ctx, e));
                }
            };
            let known = match self.store.known_refunds(run.account, u.payment_id).await {
                Ok(k) => k,
                Err(e) => {
                    lease.unknown(&format!("the store failed: {e}")).await;
                    return Err(store_error(ctx, e));
                }
            };
            reconcile = Reconcile {
                since_ms: Some(attempt.started_at),
                known,
            };
            held = Some((attempt, u.quiet));
        }
        match op.settle(reconcile).await {
            Ok(Resolution::Resend) => {
                // Not found at the provider means not executed only once the provider has had
                // the quiet period to show what the last request did.
                // `last_sent_at` is the last moment the earlier request could leave, which may
                // still be ahead.
                if let Some((a, quiet)) = held
                    && let Some(sent) = a.last_sent_at
                {
                    let decidable_at = sent.saturating_add(quiet.as_millis() as i64);
                    if a.now < decidable_at {
                        idempotency_event("quiet_period");
                        let left = Duration::from_millis((decidable_at - a.now) as u64);
                        lease.unknown(&format!(
                            "the provider's export found no refund, but the earlier request may still show: decidable in {} ms",
                            left.as_millis()
                        )).await;
                        return Err(GatewayError::NotYetDecidable {
                            retry_after: left.max(retry::MIN_DELAY),
                            ctx: ctx.clone(),
                        });
                    }
                }
                self.attempt(run, lease, op).await
            }
            Ok(Resolution::Adopt(value)) => {
                idempotency_event("adopted");
                tracing::warn!(method = key.method, request_id = %key.request_id,
                    "an earlier attempt with an unknown outcome had executed; adopting its result");
                let mut lease = lease;
                lease.adopting();
                self.conclude(&run, lease, value).await
            }
            Ok(Resolution::Undecidable(why)) => {
                idempotency_event("unresolved");
                tracing::error!(method = key.method, request_id = %key.request_id, why = %why,
                    "outcome cannot be settled automatically; an operator must settle the key");
                lease.unresolved(&why).await;
                Err(GatewayError::OutcomeUnresolved(ctx.clone()))
            }
            Err(e) => {
                // Settling failed (nothing new was sent): the key stays unknown.
                let why = format!(
                    "settling with the provider failed: {}: {}",
                    e.reason, e.message
                );
                lease.unknown(&why).await;
                Err(GatewayError::provider(
                    retry::settling_failed(e),
                    ctx.clone(),
                ))
            }
        }
    }

    /// Sends the operation under `lease`, and ends the lease as the answer says.
    async fn attempt<O: Operation>(
        &self,
        run: Run<'_>,
        mut lease: Lease,
        op: &O,
    ) -> Result<Reply<O::Output>, GatewayError> {
        let ctx = run.ctx;
        if run.unkeyed.is_some() {
            // Fenced: the send is recorded only while this attempt holds the live lease, and a
            // takeover waits the quiet period after it.
            // The request may leave until the call's deadline, after which nothing of this
            // attempt is sent; the quiet period counts from then, or from when the attempt's
            // request ended, whichever is first.
            let window_ms = run
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as i64;
            match lease.begin_send(window_ms).await {
                Ok(true) => {}
                Ok(false) => {
                    idempotency_event("lease_lost");
                    lease.lost();
                    return Err(GatewayError::InFlight {
                        retry_after: retry::IN_FLIGHT,
                        ctx: ctx.clone(),
                    });
                }
                Err(e) => {
                    lease.release(&format!("the store failed: {e}")).await;
                    return Err(store_error(ctx, e));
                }
            }
        }
        lease.sending();
        let e = match op.send().await {
            Ok(value) => return self.conclude(&run, lease, value).await,
            Err(e) => e,
        };
        match e.disposition {
            Disposition::Definitive(refusal) => {
                let refusal = Outcome::Refused(StoredRefusal::new(
                    refusal,
                    e.reason.clone(),
                    e.message.clone(),
                    e.result.as_deref().cloned(),
                ));
                if self.finish(&run, lease, refusal).await? != Completion::Done {
                    // Not stored: the attempt that took the key over answers it.
                    return Err(GatewayError::InFlight {
                        retry_after: retry::IN_FLIGHT_COMPLETING,
                        ctx: ctx.clone(),
                    });
                }
            }
            Disposition::Unknown { .. } => {
                idempotency_event("unknown");
                lease.unknown(&format!("{}: {}", e.reason, e.message)).await;
            }
            // Nothing executed this time; an earlier unknown attempt stays unknown.
            Disposition::Retryable { .. } | Disposition::Misconfigured => {
                lease.release(&format!("{}: {}", e.reason, e.message)).await
            }
        }
        Err(GatewayError::provider(e, ctx.clone()))
    }

    fn keep_ms(&self, unkeyed: bool) -> i64 {
        let d = if unkeyed {
            self.unkeyed_retention
        } else {
            self.retention
        };
        d.as_millis() as i64
    }

    /// Stores `value` as the outcome and answers it: a success is answered only once the
    /// store holds it. When the lease was lost meanwhile, nothing was written, and the answer
    /// is what the store says if the key is done, else that another attempt is settling the
    /// key; never this attempt's value, which may be an adopted refund that belongs to the
    /// key that held the payment after it (the protocol model in `model/` found that case).
    async fn conclude<T: Storable>(
        &self,
        run: &Run<'_>,
        lease: Lease,
        value: T,
    ) -> Result<Reply<T>, GatewayError> {
        if self.finish(run, lease, value.to_outcome()).await? == Completion::Done {
            return Ok(Reply::fresh(value));
        }
        match self.store.load(run.key).await {
            Ok(Some(row)) if row.state == KeyState::Done => {
                let stored = row
                    .outcome
                    .as_deref()
                    .and_then(|o| serde_json::from_str(o).ok());
                self.replay(stored, run.ctx)
            }
            Ok(_) => Err(GatewayError::InFlight {
                retry_after: retry::IN_FLIGHT_COMPLETING,
                ctx: run.ctx.clone(),
            }),
            Err(e) => Err(store_error(run.ctx, e)),
        }
    }

    /// Stores the final outcome, ending `lease`. A completion that lost its lease writes
    /// nothing and says `LeaseLost`: the next holder settles the key. One that could not reach
    /// the store is answered as unknown ([`GatewayError::NotStored`]). A refund already
    /// attributed to another key is never answered to this one.
    async fn finish(
        &self,
        run: &Run<'_>,
        lease: Lease,
        outcome: Outcome,
    ) -> Result<Completion, GatewayError> {
        let key = run.key;
        let json = match serde_json::to_string(&outcome) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an outcome; the key is left unknown");
                lease
                    .unknown(&format!("the outcome could not be encoded: {e}"))
                    .await;
                return Ok(Completion::LeaseLost);
            }
        };
        let write = RefundWrite::of(run.account, &outcome);
        let refund = write
            .as_ref()
            .map(|w| w.row(EventSource::Answer, caller_of(key)));
        let keep = self.keep_ms(run.unkeyed.is_some());
        let detail = outcome.summary();
        match store_op("complete", lease.complete(&json, keep, refund, &detail)).await {
            Ok(Completion::Done) => {
                self.done.put(key, run.fingerprint, Arc::new(outcome));
                Ok(Completion::Done)
            }
            Ok(Completion::LeaseLost) => {
                tracing::warn!(method = key.method, request_id = %key.request_id,
                    "lease lost before the outcome was stored; nothing was written, the next attempt settles it");
                Ok(Completion::LeaseLost)
            }
            Ok(Completion::AttributedElsewhere) => {
                // The lease ended unresolved.
                tracing::error!(method = key.method, request_id = %key.request_id,
                    "the provider's refund is attributed to another request; an operator must settle this key");
                Err(GatewayError::OutcomeUnresolved(run.ctx.clone()))
            }
            Err(e) => {
                // An answer the store does not hold could be contradicted by whoever settles
                // the key later: the caller hears the truth, that the outcome is unknown, and
                // its retry settles it. The lease ended unknown, in the background.
                tracing::error!(error = %e, method = key.method, request_id = %key.request_id,
                "cannot store an outcome; answering it as unknown, a retry settles it");
                idempotency_event("not_stored");
                Err(GatewayError::NotStored {
                    retry_after: retry::UNKNOWN_OUTCOME,
                    ctx: run.ctx.clone(),
                })
            }
        }
    }

    fn replay<T: Storable>(
        &self,
        outcome: Option<Outcome>,
        ctx: &ErrorContext,
    ) -> Result<Reply<T>, GatewayError> {
        idempotency_event("replay");
        match outcome {
            Some(Outcome::Refused(r)) => {
                let err = ProviderError {
                    disposition: Disposition::Definitive(r.refusal()),
                    reason: r.reason,
                    message: r.message,
                    result: r.result.map(Box::new),
                    quota: None,
                };
                Err(GatewayError::Replayed(Box::new(GatewayError::provider(
                    err,
                    ctx.clone(),
                ))))
            }
            Some(o) => match T::from_outcome(o) {
                Some(value) => Ok(Reply {
                    value,
                    replayed: true,
                }),
                None => Err(GatewayError::Internal(
                    "stored outcome is of another kind".into(),
                )),
            },
            None => Err(GatewayError::Internal(
                "stored outcome cannot be read".into(),
            )),
        }
    }

    /// Refreshes what a read (Inquire) learned about a refund already recorded under its
    /// request id. It never records a refund under a request id, so no read decides which
    /// refund belongs to which request.
    pub async fn refresh_refund(&self, account: &str, r: &RefundRecord) {
        let (Some(request_id), Some(_)) = (r.request_id.as_deref(), r.refund_id.as_deref()) else {
            return;
        };
        let Some(write) = RefundWrite::new(account, r) else {
            return;
        };
        // The event of a new state concerns the caller whose Create claimed the refund.
        let claimant = match r.state {
            RefundState::Processing => None,
            _ => self
                .store
                .claimant(account, CREATE_REFUND, request_id)
                .await
                .ok()
                .flatten()
                .map(|(caller, _)| caller)
                .filter(|c| !c.is_empty()),
        };
        if let Err(e) = self
            .store
            .refresh_refund(write.row(EventSource::Inquiry, claimant.as_deref()))
            .await
        {
            tracing::warn!(error = %e, "cannot record a refund's state");
        }
    }

    /// The caller that claimed `request_id` for `method` on `account`, and the payment a
    /// refund key recorded with its claim.
    pub async fn claimant(
        &self,
        account: &str,
        method: &str,
        request_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        self.store.claimant(account, method, request_id).await
    }

    /// The caller a refund is attributed to on `account`.
    pub async fn refund_owner(
        &self,
        account: &str,
        refund_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.store.refund_owner(account, refund_id).await
    }

    /// The refund attributed to `caller`'s `request_id` on `account` (`None`: whoever's).
    pub async fn attributed_refund(
        &self,
        account: &str,
        caller: Option<&str>,
        request_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.store
            .attributed_refund(account, caller, request_id)
            .await
    }

    /// The latest recorded state of a refund, if any (a record this gateway cannot read counts
    /// as none). A store failure is an error, never "none".
    pub async fn latest_refund(
        &self,
        account: &str,
        request_id: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let json = self.store.load_refund(account, request_id).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Deletes completed keys past their keep time; returns how many rows went.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let ms = |d: Duration| d.as_millis() as i64;
        self.store
            .purge(Retention {
                keys_ms: ms(self.retention),
                events_ms: ms(self.retention.max(self.event_window)),
                anomalies_ms: ms(self.unkeyed_retention),
            })
            .await
    }

    /// Purges expired keys now and then every `every`, forever.
    pub async fn purge_loop(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match self.purge_expired().await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "purged expired idempotency keys"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals are stored by name, with the code the previous release reads; refusals stored
    /// by a release before the name still read back by their code.
    #[test]
    fn refusals_are_stored_by_name_and_old_ones_still_read() {
        let stored = serde_json::to_value(Outcome::Refused(StoredRefusal::new(
            Refusal::NotFound,
            "ORDER_NOT_EXIST".into(),
            "no such order".into(),
            None,
        )))
        .unwrap();
        assert_eq!(stored["Refused"]["refusal"], "not_found");
        assert_eq!(
            stored["Refused"]["code"], 5,
            "the previous release reads the code"
        );
        let old = serde_json::json!({"Refused": {"code": 7, "reason": "ACCESS_DENIED",
            "message": "denied", "result": null}});
        let Outcome::Refused(r) = serde_json::from_value(old).unwrap() else {
            panic!("not a refusal");
        };
        assert_eq!(r.refusal(), Refusal::PermissionDenied);
        for refusal in [
            Refusal::InvalidRequest,
            Refusal::NotFound,
            Refusal::Precondition,
            Refusal::PermissionDenied,
        ] {
            let r = StoredRefusal::new(refusal, String::new(), String::new(), None);
            let back: StoredRefusal =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back.refusal(), refusal);
        }
    }
}
