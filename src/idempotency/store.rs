//! What the idempotency layer asks of a store: the [`Store`] trait and the rows it reads and
//! writes. `sql.rs` implements it once for both backends; `sqlite.rs` and `postgres.rs`
//! open them.

use std::future::Future;
use std::pin::Pin;

/// A boxed store future.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store could not do what was asked: unreachable, a statement failed, or a row broke.
/// Every store error reaches the caller as UNAVAILABLE `STORE_UNAVAILABLE` (nothing was sent
/// to a provider because of it); which backend failed, and how, is for the logs.
#[derive(Debug)]
pub struct StoreError(sqlx::Error);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self(e)
    }
}

/// The scope of an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The authenticated caller, or empty when authentication is off.
    pub caller: String,
    /// The RPC, e.g. `RefundService.Create`.
    pub method: &'static str,
    /// The caller's request id.
    pub request_id: String,
}

/// A stored key as read back, judged by the store's clock.
#[derive(Debug, Clone)]
pub struct Row {
    /// Fingerprint of the first request.
    pub fingerprint: String,
    /// `in_flight`, `unknown`, `unresolved` or `done`.
    pub state: String,
    /// Milliseconds an `in_flight` lease has left (negative once expired).
    pub lease_left_ms: i64,
    /// The final outcome (JSON of [`Outcome`](super::Outcome)) when `done`.
    pub outcome: Option<String>,
    /// True while an `in_flight` lease is live: not expired, and its instance heartbeating.
    pub live: bool,
}

/// A key to create.
#[derive(Debug, Clone, Copy)]
pub struct NewKey<'a> {
    /// The key.
    pub key: &'a Key,
    /// The provider account; the key's caller claims its request id there.
    pub account: &'a str,
    /// How long the claim of the request id is kept.
    pub claim_keep_ms: i64,
    /// The payment a refund key is about, recorded with the claim.
    pub payment_id: Option<&'a str>,
    /// Fingerprint of the request.
    pub fingerprint: &'a str,
    /// The lease token of this attempt.
    pub token: &'a str,
    /// How long the lease lives, from the store's now.
    pub lease_ms: i64,
    /// The process instance holding the lease.
    pub instance: &'a str,
    /// The payment this key claims, on providers without an idempotency key.
    pub payment: Option<PaymentClaim<'a>>,
}

/// A payment a refund key holds while its attempt is in flight or unsettled.
#[derive(Debug, Clone, Copy)]
pub struct PaymentClaim<'a> {
    /// Provider account.
    pub account: &'a str,
    /// The payment.
    pub payment_id: &'a str,
}

/// What inserting a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Created, with its lease (and its payment).
    Created,
    /// The key exists already; nothing changed.
    Exists,
    /// Another caller claimed this request id on the account; nothing changed.
    Claimed,
    /// Another key's refund of the same payment is unsettled; nothing changed.
    PaymentBusy,
}

/// A key's unsettled attempt on a payment, by the store's clock.
#[derive(Debug, Clone, Copy)]
pub struct PaymentAttempt {
    /// When the key's first attempt started.
    pub started_at: i64,
    /// When a request last may have left (`None`: none ever did).
    pub last_sent_at: Option<i64>,
    /// The store's now.
    pub now: i64,
}

/// What storing a final outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Stored, with the attribution and the refund's state.
    Done,
    /// The lease (or, for `settle`, the unresolved state) was gone: nothing was written.
    LeaseLost,
    /// The refund is attributed to another key: nothing was written.
    AttributedElsewhere,
}

/// Durable key storage. Each method is one atomic statement or transaction. Every time is the
/// store's own clock.
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// The store's clock, Unix ms.
    fn now(&self) -> StoreFuture<'_, i64>;
    /// Creates the key in `in_flight` with a lease and, when asked, claims its payment, in
    /// one transaction.
    fn insert<'a>(&'a self, new: NewKey<'a>) -> StoreFuture<'a, Inserted>;
    /// Reads the key.
    fn load<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<Row>>;
    /// Takes the lease of a key that is `unknown` or whose lease is dead.
    fn take_over<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        lease_ms: i64,
        instance: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// The key's attempt on its payment, claiming the payment first for a key that predates
    /// claims; `None` when another key holds the payment.
    fn hold_payment<'a>(
        &'a self,
        key: &'a Key,
        payment: PaymentClaim<'a>,
    ) -> StoreFuture<'a, Option<PaymentAttempt>>;
    /// Records that a request is about to leave for the key's payment; false (and nothing
    /// recorded) unless `token` holds the key's live lease.
    fn begin_send<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool>;
    /// Stores the final outcome if `token` still holds the lease, kept `keep_ms`, together with
    /// the refund's attribution and state, and releases the payment.
    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        outcome: &'a str,
        keep_ms: i64,
        refund: Option<RefundRow<'a>>,
    ) -> StoreFuture<'a, Completion>;
    /// Marks the key `unknown` and frees the lease (the payment stays held).
    fn mark_unknown<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool>;
    /// Marks the key `unresolved`: an operator must settle it (the payment stays held).
    fn mark_unresolved<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool>;
    /// An operator's decision on an `unresolved` key (never a live or unknown one), with the
    /// refund's attribution; releases the payment.
    fn settle<'a>(
        &'a self,
        key: &'a Key,
        outcome: &'a str,
        keep_ms: i64,
        refund: Option<RefundRow<'a>>,
    ) -> StoreFuture<'a, Completion>;
    /// The caller that claimed `request_id` for `method` on `account`, and the payment a
    /// refund key recorded with its claim.
    fn claimant<'a>(
        &'a self,
        account: &'a str,
        method: &'a str,
        request_id: &'a str,
    ) -> StoreFuture<'a, Option<(String, Option<String>)>>;
    /// Refund ids attributed to keys for a payment of an account.
    fn known_refunds<'a>(
        &'a self,
        account: &'a str,
        payment_id: &'a str,
    ) -> StoreFuture<'a, Vec<String>>;
    /// The caller a refund is attributed to on an account.
    fn refund_owner<'a>(
        &'a self,
        account: &'a str,
        refund_id: &'a str,
    ) -> StoreFuture<'a, Option<String>>;
    /// The refund attributed to `caller`'s `request_id` on an account (`None`: whoever's).
    fn attributed_refund<'a>(
        &'a self,
        account: &'a str,
        caller: Option<&'a str>,
        request_id: &'a str,
    ) -> StoreFuture<'a, Option<String>>;
    /// Deletes a key whose attempt executed nothing, and releases its payment.
    fn delete<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool>;
    /// Deletes what is past its keep time (`retention_ms` for rows without one); returns how
    /// many rows went.
    fn purge(&self, retention_ms: i64) -> StoreFuture<'_, u64>;
    /// Records that `instance` is alive.
    fn heartbeat<'a>(&'a self, instance: &'a str) -> StoreFuture<'a, ()>;
    /// Records the latest state of a refund.
    fn save_refund<'a>(&'a self, refund: RefundRow<'a>) -> StoreFuture<'a, ()>;
    /// Refreshes the recorded state of a refund already recorded under its request id with
    /// that refund id; never records a refund anew. True if it changed something.
    fn refresh_refund<'a>(&'a self, refund: RefundRow<'a>) -> StoreFuture<'a, bool>;
    /// The latest recorded state of a refund (JSON of `RefundRecord`).
    fn load_refund<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
    ) -> StoreFuture<'a, Option<String>>;
    /// Stores a provider notification as the next event, unless one with its `event_id` is
    /// stored already, and applies its effect in the same transaction. Returns the event's
    /// sequence number, or `None` for a duplicate (nothing changed).
    fn record_event<'a>(
        &'a self,
        event: EventRow<'a>,
        effect: EventEffect<'a>,
    ) -> StoreFuture<'a, Option<i64>>;
    /// Up to `limit` events after sequence number `after`, oldest first.
    fn events_after(&self, after: i64, limit: i64) -> StoreFuture<'_, Vec<StoredEvent>>;
    /// The highest sequence number given out (every smaller one is committed or was rolled
    /// back), and the highest purged so far (0 = none).
    fn event_counter(&self) -> StoreFuture<'_, (i64, i64)>;
    /// Records the latest state of a subscription.
    fn save_subscription<'a>(&'a self, s: SubscriptionRow<'a>) -> StoreFuture<'a, ()>;
    /// The latest recorded state of a subscription (JSON of `SubscriptionRecord`, and when it
    /// was written), by subscription id or, when that is empty, by the merchant's id.
    fn load_subscription<'a>(
        &'a self,
        account: &'a str,
        subscription_id: &'a str,
        subscription_request_id: &'a str,
    ) -> StoreFuture<'a, Option<(String, i64)>>;
}

/// A provider notification to store as an event.
#[derive(Debug, Clone, Copy)]
pub struct EventRow<'a> {
    /// Identifies what it reports; unique.
    pub event_id: &'a str,
    /// Provider account.
    pub account: &'a str,
    /// Provider name.
    pub provider: &'a str,
    /// The provider's notification type.
    pub kind: &'a str,
    /// JSON of the `Notice`.
    pub payload: &'a str,
    /// The caller it concerns, when known.
    pub caller: Option<&'a str>,
}

/// What storing an event changes besides the event itself.
#[derive(Debug, Clone, Copy)]
pub enum EventEffect<'a> {
    /// Nothing.
    None,
    /// A refund's recorded state.
    Refund(RefundRow<'a>),
    /// A subscription's recorded state.
    Subscription(SubscriptionRow<'a>),
}

/// A subscription's state as recorded.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionRow<'a> {
    /// Provider account.
    pub account: &'a str,
    /// The provider's subscription id.
    pub subscription_id: &'a str,
    /// The merchant's subscription id.
    pub subscription_request_id: Option<&'a str>,
    /// `None`, `Accepted` or `Confirmed`.
    pub cancellation: &'a str,
    /// JSON of the `SubscriptionRecord`.
    pub record: &'a str,
}

/// An event as read back.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its position; later events have greater numbers.
    pub seq: i64,
    /// Identifies what it reports.
    pub event_id: String,
    /// Provider account.
    pub account: String,
    /// Provider name.
    pub provider: String,
    /// The provider's notification type.
    pub kind: String,
    /// JSON of the `Notice`.
    pub payload: String,
    /// When it was stored (Unix ms).
    pub received_at: i64,
    /// The caller it concerns, when known.
    pub caller: Option<String>,
}

/// A refund's state as recorded next to a completed key.
#[derive(Debug, Clone, Copy)]
pub struct RefundRow<'a> {
    /// Provider account.
    pub account: &'a str,
    /// The refund's request id.
    pub request_id: &'a str,
    /// The refunded payment.
    pub payment_id: Option<&'a str>,
    /// The provider's refund id.
    pub refund_id: Option<&'a str>,
    /// `Succeeded`, `Processing` or `Failed`.
    pub state: &'a str,
    /// JSON of the `RefundRecord`.
    pub record: &'a str,
}
