//! The store traits, one per kind of state, and their one error.

use std::future::Future;
use std::pin::Pin;

use super::admin_rows::*;
use super::rows::*;

/// A boxed store future.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store could not do what was asked. Every store error reaches the caller as UNAVAILABLE
/// `STORE_UNAVAILABLE` (nothing was sent to a provider because of it: see
/// `GatewayError::store`); which part failed, and how, is for the logs.
#[derive(Debug)]
pub enum StoreError {
    /// The database failed a statement or could not be reached (through sqlx: every read,
    /// PostgreSQL's writes, opening and migrating a store).
    Database(sqlx::Error),
    /// SQLite's group-commit writer failed a statement on its own connection (rusqlite).
    Sqlite(rusqlite::Error),
    /// Another write of the same group commit failed, so the group, this write with it, was
    /// rolled back.
    GroupFailed(String),
    /// The writer did not run the write: an earlier write of its group failed, or the writer
    /// stopped.
    WriterStopped,
    /// A grouped write waited on something other than its statements (a defect: a write runs
    /// only statements).
    NotImmediate,
    /// A row could not be read back: a column missing or of another type.
    Decode(String),
}

impl StoreError {
    /// The schema generation of the newer release that migrated this store, when opening it
    /// failed because this release does not know that generation.
    pub fn newer_schema(&self) -> Option<i64> {
        match self {
            StoreError::Database(sqlx::Error::Migrate(m)) => match **m {
                sqlx::migrate::MigrateError::VersionMissing(v)
                    if v > super::sql::SCHEMA_GENERATION =>
                {
                    Some(v)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The store was migrated by a newer release: this release's fence is gone, and every
    /// statement of it that changes what decides money fails (see `migrations/0005_fence.sql`).
    pub fn is_fenced(&self) -> bool {
        self.cause().contains(super::sql::FENCE_TABLE)
    }

    /// What failed, as the part that failed says it.
    fn cause(&self) -> String {
        match self {
            StoreError::Database(e) => e.to_string(),
            StoreError::Sqlite(e) => e.to_string(),
            StoreError::GroupFailed(why) => {
                format!("the group commit holding this write failed: {why}")
            }
            StoreError::WriterStopped => "the store's writer did not run this write (its group failed, or the writer stopped)".into(),
            StoreError::NotImmediate => {
                "a grouped write waited on something other than its statements".into()
            }
            StoreError::Decode(why) => why.clone(),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(v) = self.newer_schema() {
            write!(
                f,
                "the store was migrated by a newer paygate release (schema generation {v}; this release knows up to {}): this release does not run on it, so that it never decides money by older rules; run that release or a newer one",
                super::sql::SCHEMA_GENERATION
            )
        } else if self.is_fenced() {
            write!(
                f,
                "a newer paygate release migrated the store past schema generation {}: this replica no longer changes anything that decides money; replace it with the newer release ({})",
                super::sql::SCHEMA_GENERATION,
                self.cause()
            )
        } else {
            f.write_str(&self.cause())
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Database(e) => Some(e),
            StoreError::Sqlite(e) => Some(e),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// Idempotency keys: their leases, outcomes and settling, the request-id claims, the payments
/// a key holds, and which refund belongs to which key (written only by that key's completion).
/// Each method is one atomic statement or transaction. Every time is the store's own clock.
pub trait KeyStore: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// The store's clock, Unix ms.
    fn now(&self) -> StoreFuture<'_, i64>;
    /// How many calls may read or claim their key at once without queueing for the store
    /// (PostgreSQL: twice its connections; SQLite: a group commit's largest batch). Beyond
    /// them, calls wait for a slot at admission, and are shed when none frees in time
    /// (`idempotency::STORE_ADMISSION_WAIT`).
    fn admissions(&self) -> usize;
    /// Creates the key in `in_flight` with a lease and, when asked, claims its payment, in
    /// one transaction.
    fn insert<'a>(&'a self, new: NewKey<'a>) -> StoreFuture<'a, Inserted>;
    /// Reads the key.
    fn load<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<Row>>;
    /// Takes the lease of a key that is `unknown` or whose lease is dead (with a history
    /// entry).
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
    /// Records that a request is about to leave for the key's payment, and that it may leave
    /// until `window_ms` from the store's now (the quiet period counts from then); false (and
    /// nothing recorded) unless `token` holds the key's live lease.
    fn begin_send<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        window_ms: i64,
    ) -> StoreFuture<'a, bool>;
    /// Stores the final outcome if `token` still holds the lease, kept `keep_ms`, together with
    /// its history entry, the refund's attribution and state, and releases the payment.
    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        outcome: &'a str,
        keep_ms: i64,
        refund: Option<RefundRow<'a>>,
        note: Note<'a>,
    ) -> StoreFuture<'a, Completion>;
    /// Marks the key `unknown` and frees the lease (the payment stays held); `why` goes to its
    /// history.
    fn mark_unknown<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        why: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// The same, for an attempt whose request has ended (answered, failed or timed out), so
    /// nothing of it can leave any more: the payment's last send time becomes the store's now
    /// if it was later.
    fn mark_unknown_after_send<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        why: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// Marks the key `unresolved`: an operator must settle it (the payment stays held); `why`
    /// goes to its history.
    fn mark_unresolved<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        why: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// An operator's decision on a key that needs a person (`unknown` or `unresolved`, so no
    /// lease; never a live or final one), with the refund's attribution, its event, the key's
    /// history entry and the audit entry, in one transaction; releases the payment.
    fn settle<'a>(&'a self, settle: SettleKey<'a>) -> StoreFuture<'a, Settled>;
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
    /// Deletes what is past its keep time; returns how many rows went.
    fn purge(&self, keep: Retention) -> StoreFuture<'_, u64>;
    /// Records that `instance` is alive.
    fn heartbeat<'a>(&'a self, instance: &'a str) -> StoreFuture<'a, ()>;
    /// The keys that wait for a settle (`unknown`) or for a person (`unresolved`), counted by
    /// account and state, with the oldest one's last change.
    fn needing_attention(&self) -> StoreFuture<'_, Vec<Attention>>;
}

/// How many keys of an account are in a state that needs a retry or a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attention {
    /// The provider account (empty for keys from before accounts were recorded).
    pub account: String,
    /// `Unknown` or `Unresolved`.
    pub state: KeyState,
    /// How many.
    pub count: i64,
    /// The oldest one's last change (Unix ms).
    pub oldest_at: i64,
    /// The store's now (Unix ms).
    pub now: i64,
}

/// The refund-state cache: what a provider last said of a refund. Kept apart from the keys:
/// nothing here decides whether money moves.
pub trait RefundStore: Send + Sync + 'static {
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
}

/// The event log: verified provider notifications, each stored once, numbered in order.
pub trait EventStore: Send + Sync + 'static {
    /// Stores a provider notification as the next event, unless one with its `event_id` is
    /// stored already, and applies its effect in the same transaction: one conditional write
    /// that moves states only forward. A notification of an earlier state changes nothing and
    /// is no event; one that contradicts a final state is recorded as an anomaly instead.
    fn record_event<'a>(
        &'a self,
        event: EventRow<'a>,
        effect: EventEffect<'a>,
    ) -> StoreFuture<'a, EventRecorded>;
    /// Up to `limit` events after sequence number `after`, oldest first.
    fn events_after(&self, after: i64, limit: i64) -> StoreFuture<'_, Vec<StoredEvent>>;
    /// The highest sequence number given out (every smaller one is committed or was rolled
    /// back), and the highest purged so far (0 = none).
    fn event_counter(&self) -> StoreFuture<'_, (i64, i64)>;
    /// Takes or renews the lease of relay `name` for `instance`, until `lease_ms` from the
    /// store's now: how far it has published, or `None` while another instance's lease lives.
    fn relay_claim<'a>(
        &'a self,
        name: &'a str,
        instance: &'a str,
        lease_ms: i64,
    ) -> StoreFuture<'a, Option<i64>>;
    /// Records that relay `name` published every event through `seq`; false (nothing
    /// recorded) unless `instance` holds its live lease.
    fn relay_advance<'a>(
        &'a self,
        name: &'a str,
        instance: &'a str,
        seq: i64,
    ) -> StoreFuture<'a, bool>;
    /// How far relay `name` lags: the events stored and not yet published, and when the
    /// oldest of them was stored (Unix ms; `None` when there are none), with the store's now.
    fn relay_lag<'a>(&'a self, name: &'a str) -> StoreFuture<'a, RelayLag>;
}

/// How far a relay lags behind the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLag {
    /// Events stored and not yet published.
    pub events: i64,
    /// When the oldest of them was stored (Unix ms), if any.
    pub oldest_at: Option<i64>,
    /// The store's now (Unix ms).
    pub now: i64,
}

/// Subscription states as the gateway learned them.
pub trait SubscriptionStore: Send + Sync + 'static {
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

/// What operators read: keys by state, a key's history, the audit trail.
pub trait OperatorStore: Send + Sync + 'static {
    /// Keys by `filter`, newest change first.
    fn list_keys<'a>(&'a self, filter: &'a KeyFilter) -> StoreFuture<'a, Vec<KeyView>>;
    /// One key.
    fn key_view<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<KeyView>>;
    /// A key's history, oldest first.
    fn key_history<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Vec<HistoryEntry>>;
    /// Operators' actions by `filter`, oldest first.
    fn audit_entries<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<AuditRow>>;
}

/// Every kind of state in one store, as one backend holds them.
pub trait Store: KeyStore + RefundStore + EventStore + SubscriptionStore + OperatorStore {}

impl<T: KeyStore + RefundStore + EventStore + SubscriptionStore + OperatorStore> Store for T {}
