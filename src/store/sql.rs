//! The SQL both stores run (`$n` placeholders work in PostgreSQL and SQLite alike), and the
//! macro that implements the store traits on a sqlx pool with it. Every state change is one
//! conditional statement (or one transaction of them), so concurrent gateways never
//! check-then-act.
//!
//! Time: every statement that compares or stores a time that two processes must agree on
//! (leases, heartbeats, quiet periods, retention) reads the database's clock, written `NOW_MS`
//! below and replaced per backend by [`render`]. No process's own clock is ever compared with
//! another's.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The versioned schema migrations, embedded in the binary.
pub fn migrator() -> Migrator {
    let m = |version, name: &'static str, sql: &'static str| {
        Migration::new(
            version,
            name.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        m(
            1,
            "idempotency",
            include_str!("migrations/0001_idempotency.sql"),
        ),
        m(
            2,
            "refund payments",
            include_str!("migrations/0002_refund_payment.sql"),
        ),
        m(
            3,
            "events and subscriptions",
            include_str!("migrations/0003_events.sql"),
        ),
        m(
            4,
            "attribution, payment attempts, instances",
            include_str!("migrations/0004_attribution.sql"),
        ),
    ])
}

/// The database's clock in Unix milliseconds, per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clock {
    /// `julianday('now')`.
    Sqlite,
    /// `clock_timestamp()` (not `now()`, which stands still within a transaction).
    Postgres,
}

impl Clock {
    fn expr(self) -> &'static str {
        match self {
            Clock::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Clock::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// `sql` with `NOW_MS` replaced by `clock`'s expression; rendered once per statement and
/// backend, then reused.
pub fn render(clock: Clock, sql: &'static str) -> &'static str {
    if !sql.contains("NOW_MS") {
        return sql;
    }
    type Cache = RwLock<HashMap<(Clock, usize), &'static str>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = (clock, sql.as_ptr() as usize);
    if let Some(s) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return s;
    }
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    w.entry(id)
        .or_insert_with(|| sql.replace("NOW_MS", clock.expr()).leak())
}

/// A lease whose instance has not heartbeat for this long is dead and may be taken over (its
/// outcome is unknown, so it is settled first): six missed beats of the 250 ms heartbeat. The
/// SQL below carries the same literal.
pub const INSTANCE_STALE: std::time::Duration = std::time::Duration::from_millis(1500);

/// A lease is dead once it expired, or once its instance stopped heartbeating for
/// [`INSTANCE_STALE`] (1,500 ms; the literal below). An instance that never heartbeat (a
/// process that does not serve) is judged by expiry alone.
macro_rules! lease_dead {
    () => {
        "(lease_until <= NOW_MS OR EXISTS (SELECT 1 FROM instances i \
           WHERE i.instance_id = idempotency_keys.lease_instance AND i.heartbeat_at <= NOW_MS - 1500))"
    };
}

pub const NOW: &str = "SELECT NOW_MS";

pub const INSERT: &str = "INSERT INTO idempotency_keys \
     (caller, method, request_id, fingerprint, state, lease_token, lease_until, attempts, created_at, updated_at, lease_instance) \
     VALUES ($1, $2, $3, $4, 'in_flight', $5, NOW_MS + $6, 1, NOW_MS, NOW_MS, $7) \
     ON CONFLICT (caller, method, request_id) DO NOTHING";

/// Claims the request id on the account for the key's caller (same transaction as the key).
pub const CLAIM_REQUEST: &str = "INSERT INTO request_claims \
     (account, method, request_id, caller, keep_until, payment_id) \
     VALUES ($1, $2, $3, $4, NOW_MS + $5, $6) ON CONFLICT DO NOTHING";

/// Who claimed a request id on an account for a method, and the payment of a refund key.
pub const CLAIMANT: &str = "SELECT caller, payment_id FROM request_claims \
     WHERE account = $1 AND method = $2 AND request_id = $3";

pub const PURGE_CLAIMS: &str = "DELETE FROM request_claims WHERE keep_until < NOW_MS";

/// Claims the payment for the key just inserted (same transaction).
pub const CLAIM_PAYMENT: &str = "INSERT INTO payment_attempts \
     (account, payment_id, caller, method, request_id, started_at, last_sent_at) \
     VALUES ($4, $5, $1, $2, $3, NOW_MS, NULL) ON CONFLICT DO NOTHING";

/// Claims the payment for a key that predates payment attempts, from its own row.
pub const CLAIM_PAYMENT_FOR_OLD_KEY: &str = "INSERT INTO payment_attempts \
     (account, payment_id, caller, method, request_id, started_at, last_sent_at) \
     SELECT $4, $5, caller, method, request_id, created_at, updated_at FROM idempotency_keys \
     WHERE caller = $1 AND method = $2 AND request_id = $3 ON CONFLICT DO NOTHING";

/// The key's payment attempt: when it started, when a request last may have left, and now.
pub const LOAD_ATTEMPT: &str = "SELECT started_at, last_sent_at, NOW_MS FROM payment_attempts \
     WHERE caller = $1 AND method = $2 AND request_id = $3";

/// Marks that a request is about to leave, only while `$4` holds the key's live lease.
pub const BEGIN_SEND: &str = "UPDATE payment_attempts SET last_sent_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND EXISTS (SELECT 1 FROM idempotency_keys k \
       WHERE k.caller = $1 AND k.method = $2 AND k.request_id = $3 AND k.state = 'in_flight' \
         AND k.lease_token = $4 AND k.lease_until > NOW_MS)";

pub const RELEASE_PAYMENT: &str =
    "DELETE FROM payment_attempts WHERE caller = $1 AND method = $2 AND request_id = $3";

/// The key, whether its lease is live, how long it has left, all by the store's clock.
pub const LOAD: &str = concat!(
    "SELECT fingerprint, state, lease_until - NOW_MS, outcome, \
       CAST(CASE WHEN state = 'in_flight' AND NOT ",
    lease_dead!(),
    " THEN 1 ELSE 0 END AS BIGINT) \
     FROM idempotency_keys WHERE caller = $1 AND method = $2 AND request_id = $3"
);

/// Takes over a key whose earlier attempt ended unknown or whose lease is dead.
pub const TAKE_OVER: &str = concat!(
    "UPDATE idempotency_keys \
     SET state = 'in_flight', lease_token = $4, lease_until = NOW_MS + $5, lease_instance = $6, \
       attempts = attempts + 1, updated_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 \
       AND (state = 'unknown' OR (state = 'in_flight' AND ",
    lease_dead!(),
    "))"
);

pub const COMPLETE: &str = "UPDATE idempotency_keys \
     SET state = 'done', outcome = $5, lease_token = NULL, lease_until = 0, updated_at = NOW_MS, \
       keep_until = NOW_MS + $6 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4 AND state = 'in_flight'";

pub const MARK_UNKNOWN: &str = "UPDATE idempotency_keys \
     SET state = 'unknown', lease_token = NULL, lease_until = 0, updated_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4";

pub const MARK_UNRESOLVED: &str = "UPDATE idempotency_keys \
     SET state = 'unresolved', lease_token = NULL, lease_until = 0, updated_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4";

/// An operator settles a key that could not be settled automatically; never a live one.
pub const SETTLE: &str = "UPDATE idempotency_keys \
     SET state = 'done', outcome = $4, lease_token = NULL, lease_until = 0, updated_at = NOW_MS, \
       keep_until = NOW_MS + $5 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND state = 'unresolved'";

/// Which refund belongs to the key (written with its completion).
pub const ATTRIBUTE: &str = "INSERT INTO attributions \
     (account, refund_id, caller, request_id, payment_id, created_at, keep_until) \
     VALUES ($1, $2, $3, $4, $5, NOW_MS, NOW_MS + $6) ON CONFLICT DO NOTHING";

/// Who a refund is attributed to.
pub const ATTRIBUTED_TO: &str =
    "SELECT caller, request_id FROM attributions WHERE account = $1 AND refund_id = $2";

pub const KNOWN_REFUNDS: &str =
    "SELECT refund_id FROM attributions WHERE account = $1 AND payment_id = $2";

/// The refund attributed to a caller's request id.
pub const ATTRIBUTED_REFUND: &str = "SELECT refund_id FROM attributions \
     WHERE account = $1 AND request_id = $2 AND caller = $3";

/// The refund attributed to a request id, whoever's (request ids are claimed per account).
pub const ATTRIBUTED_REFUND_ANY_CALLER: &str = "SELECT refund_id FROM attributions \
     WHERE account = $1 AND request_id = $2 ORDER BY created_at LIMIT 1";

/// Deletes a key whose attempt executed nothing.
pub const DELETE: &str = "DELETE FROM idempotency_keys \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4";

/// Completed keys past their keep time (`$1` = the default retention, for older keys).
pub const PURGE: &str = "DELETE FROM idempotency_keys WHERE state = 'done' \
     AND ((keep_until IS NULL AND created_at < NOW_MS - $1) OR keep_until < NOW_MS)";

pub const PURGE_ATTRIBUTIONS: &str = "DELETE FROM attributions WHERE keep_until < NOW_MS";

pub const PURGE_REFUNDS: &str =
    "DELETE FROM refunds WHERE updated_at < NOW_MS - $1 AND state <> 'Processing'";

/// Instances silent for a day.
pub const PURGE_INSTANCES: &str = "DELETE FROM instances WHERE heartbeat_at < NOW_MS - 86400000";

pub const HEARTBEAT: &str = "INSERT INTO instances (instance_id, started_at, heartbeat_at) \
     VALUES ($1, NOW_MS, NOW_MS) \
     ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at";

/// Records a refund's state; a final state is never overwritten by PROCESSING.
pub const SAVE_REFUND: &str = "INSERT INTO refunds (account, request_id, refund_id, state, record, updated_at, payment_id) \
     VALUES ($1, $2, $3, $4, $5, NOW_MS, $6) \
     ON CONFLICT (account, request_id) DO UPDATE SET \
       refund_id = COALESCE(excluded.refund_id, refunds.refund_id), \
       payment_id = COALESCE(excluded.payment_id, refunds.payment_id), \
       state = excluded.state, record = excluded.record, updated_at = excluded.updated_at \
     WHERE (refunds.state = 'Processing' OR excluded.state <> 'Processing') \
       AND (refunds.state <> excluded.state OR refunds.refund_id IS NULL)";

/// What a read (Inquire) learned of a refund: it refreshes the recorded state of the request
/// the refund is recorded under, and never records a refund under a request id.
pub const REFRESH_REFUND: &str = "UPDATE refunds SET state = $4, record = $5, updated_at = NOW_MS \
     WHERE account = $1 AND request_id = $2 AND (refund_id = $3 OR refund_id IS NULL) \
       AND (state = 'Processing' OR $4 <> 'Processing') AND state <> $4";

pub const LOAD_REFUND: &str = "SELECT record FROM refunds WHERE account = $1 AND request_id = $2";

/// Takes the next event number; the row lock it holds until commit orders the writers.
pub const NEXT_EVENT_SEQ: &str =
    "UPDATE event_counter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq";

pub const INSERT_EVENT: &str = "INSERT INTO events \
     (seq, event_id, account, provider, kind, payload, received_at, caller) \
     VALUES ($1, $2, $3, $4, $5, $6, NOW_MS, $7) ON CONFLICT (event_id) DO NOTHING";

pub const EVENTS_AFTER: &str = "SELECT seq, event_id, account, provider, kind, payload, received_at, caller \
     FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";

pub const EVENT_COUNTER: &str = "SELECT last_seq, purged_through FROM event_counter WHERE id = 1";

/// Moves the purge mark to the newest event received before the retention.
pub const MARK_EVENTS_PURGED: &str = "UPDATE event_counter SET purged_through = \
     COALESCE((SELECT MAX(seq) FROM events WHERE received_at < NOW_MS - $1), purged_through) WHERE id = 1";

pub const PURGE_EVENTS: &str =
    "DELETE FROM events WHERE seq <= (SELECT purged_through FROM event_counter WHERE id = 1)";

/// Records a subscription's state; a confirmed cancellation is never replaced by one that is
/// not.
pub const SAVE_SUBSCRIPTION: &str = "INSERT INTO subscriptions \
     (account, subscription_id, subscription_request_id, cancellation, record, updated_at) \
     VALUES ($1, $2, $3, $4, $5, NOW_MS) \
     ON CONFLICT (account, subscription_id) DO UPDATE SET \
       subscription_request_id = COALESCE(excluded.subscription_request_id, subscriptions.subscription_request_id), \
       cancellation = excluded.cancellation, record = excluded.record, updated_at = excluded.updated_at \
     WHERE subscriptions.cancellation <> 'Confirmed' OR excluded.cancellation = 'Confirmed'";

/// By subscription id, or, when that is empty, by the merchant's subscription id.
pub const LOAD_SUBSCRIPTION: &str = "SELECT record, updated_at FROM subscriptions \
     WHERE account = $1 AND ((subscription_id = $2) OR ($2 = '' AND subscription_request_id = $3)) \
     ORDER BY updated_at DESC LIMIT 1";

/// A statement on one key, rendered for `$clock`, with the key's three columns bound as
/// `$1`-`$3`.
macro_rules! key_query {
    ($clock:expr, $sql:expr, $key:expr) => {
        sqlx::query($crate::store::sql::render($clock, $sql))
            .bind(&$key.caller)
            .bind($key.method)
            .bind(&$key.request_id)
    };
}

pub(crate) use key_query;

/// A statement rendered for `$clock`.
macro_rules! q {
    ($clock:expr, $sql:expr) => {
        sqlx::query($crate::store::sql::render($clock, $sql))
    };
}

pub(crate) use q;

/// The refund-state upsert with its parameters bound (used inside and outside transactions).
macro_rules! save_refund_query {
    ($clock:expr, $f:expr) => {
        $crate::store::sql::q!($clock, $crate::store::sql::SAVE_REFUND)
            .bind($f.account)
            .bind($f.request_id)
            .bind($f.refund_id)
            .bind($f.state)
            .bind($f.record)
            .bind($f.payment_id)
    };
}

pub(crate) use save_refund_query;

/// The subscription-state upsert with its parameters bound.
macro_rules! save_subscription_query {
    ($clock:expr, $s:expr) => {
        $crate::store::sql::q!($clock, $crate::store::sql::SAVE_SUBSCRIPTION)
            .bind($s.account)
            .bind($s.subscription_id)
            .bind($s.subscription_request_id)
            .bind($s.cancellation)
            .bind($s.record)
    };
}

pub(crate) use save_subscription_query;

/// Implements the four store traits for a struct with a `pool` field of a sqlx pool type.
macro_rules! impl_store {
    ($ty:ty, $name:literal, $clock:expr) => {
        impl $ty {
            /// Writes the attribution of a completed refund key in `tx`; false if the refund is
            /// already attributed to another key.
            async fn attribute(
                tx: &mut sqlx::Transaction<'_, <Self as $crate::store::sql::HasDb>::Db>,
                key: &$crate::store::rows::Key,
                f: &$crate::store::rows::RefundRow<'_>,
                keep_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                use sqlx::Row as _;
                let Some(refund_id) = f.refund_id else {
                    return Ok(true);
                };
                let r = $crate::store::sql::q!($clock, $crate::store::sql::ATTRIBUTE)
                    .bind(f.account)
                    .bind(refund_id)
                    .bind(&key.caller)
                    .bind(&key.request_id)
                    .bind(f.payment_id)
                    .bind(keep_ms)
                    .execute(&mut **tx)
                    .await?;
                if r.rows_affected() == 1 {
                    return Ok(true);
                }
                let owner = $crate::store::sql::q!($clock, $crate::store::sql::ATTRIBUTED_TO)
                    .bind(f.account)
                    .bind(refund_id)
                    .fetch_one(&mut **tx)
                    .await?;
                let caller: String = owner.try_get(0)?;
                let request_id: String = owner.try_get(1)?;
                Ok(caller == key.caller && request_id == key.request_id)
            }
        }

        impl $ty {
            /// The rest of a key's completion, after its row became `done` in `tx`: the
            /// refund's attribution (refused if another key owns it) and state, and the
            /// payment's release; commits, or rolls back everything.
            async fn settled(
                mut tx: sqlx::Transaction<'_, <Self as $crate::store::sql::HasDb>::Db>,
                key: &$crate::store::rows::Key,
                refund: Option<$crate::store::rows::RefundRow<'_>>,
                keep_ms: i64,
            ) -> Result<$crate::store::rows::Completion, sqlx::Error> {
                use $crate::store::rows::Completion;
                if let Some(f) = &refund {
                    if !Self::attribute(&mut tx, key, f, keep_ms).await? {
                        tx.rollback().await?;
                        return Ok(Completion::AttributedElsewhere);
                    }
                    $crate::store::sql::save_refund_query!($clock, f)
                        .execute(&mut *tx)
                        .await?;
                }
                $crate::store::sql::key_query!($clock, $crate::store::sql::RELEASE_PAYMENT, key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Completion::Done)
            }
        }

        impl $crate::store::traits::KeyStore for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn now(&self) -> $crate::store::traits::StoreFuture<'_, i64> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    $crate::store::sql::q!($clock, $crate::store::sql::NOW)
                        .fetch_one(&self.pool)
                        .await?
                        .try_get(0)
                        .map_err(Into::into)
                })
            }

            fn insert<'a>(
                &'a self,
                new: $crate::store::rows::NewKey<'a>,
            ) -> $crate::store::traits::StoreFuture<'a, $crate::store::rows::Inserted> {
                Box::pin(async move {
                    use $crate::store::rows::Inserted;
                    let mut tx = self.pool.begin().await?;
                    let r =
                        $crate::store::sql::key_query!($clock, $crate::store::sql::INSERT, new.key)
                            .bind(new.fingerprint)
                            .bind(new.token)
                            .bind(new.lease_ms)
                            .bind(new.instance)
                            .execute(&mut *tx)
                            .await?;
                    if r.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(Inserted::Exists);
                    }
                    let claim = |sql| {
                        $crate::store::sql::q!($clock, sql)
                            .bind(new.account)
                            .bind(new.key.method)
                            .bind(&new.key.request_id)
                    };
                    let claimed = claim($crate::store::sql::CLAIM_REQUEST)
                        .bind(&new.key.caller)
                        .bind(new.claim_keep_ms)
                        .bind(new.payment_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                    // Claimed before: by this caller (its key purged since), or by another.
                    let ours = claimed || {
                        use sqlx::Row as _;
                        let claimant: String = claim($crate::store::sql::CLAIMANT)
                            .fetch_one(&mut *tx)
                            .await?
                            .try_get(0)?;
                        claimant == new.key.caller
                    };
                    if !ours {
                        tx.rollback().await?;
                        return Ok(Inserted::Claimed);
                    }
                    if let Some(p) = new.payment {
                        let r = $crate::store::sql::key_query!(
                            $clock,
                            $crate::store::sql::CLAIM_PAYMENT,
                            new.key
                        )
                        .bind(p.account)
                        .bind(p.payment_id)
                        .execute(&mut *tx)
                        .await?;
                        if r.rows_affected() == 0 {
                            tx.rollback().await?;
                            return Ok(Inserted::PaymentBusy);
                        }
                    }
                    tx.commit().await?;
                    Ok(Inserted::Created)
                })
            }

            fn load<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
            ) -> $crate::store::traits::StoreFuture<'a, Option<$crate::store::rows::Row>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = $crate::store::sql::key_query!($clock, $crate::store::sql::LOAD, key)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(|r| {
                        Ok($crate::store::rows::Row {
                            fingerprint: r.try_get(0)?,
                            state: r.try_get(1)?,
                            lease_left_ms: r.try_get(2)?,
                            outcome: r.try_get(3)?,
                            live: r.try_get::<i64, _>(4)? != 0,
                        })
                    })
                    .transpose()
                })
            }

            fn take_over<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                token: &'a str,
                lease_ms: i64,
                instance: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r =
                        $crate::store::sql::key_query!($clock, $crate::store::sql::TAKE_OVER, key)
                            .bind(token)
                            .bind(lease_ms)
                            .bind(instance)
                            .execute(&self.pool)
                            .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn hold_payment<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                payment: $crate::store::rows::PaymentClaim<'a>,
            ) -> $crate::store::traits::StoreFuture<'a, Option<$crate::store::rows::PaymentAttempt>>
            {
                Box::pin(async move {
                    use sqlx::Row as _;
                    $crate::store::sql::key_query!(
                        $clock,
                        $crate::store::sql::CLAIM_PAYMENT_FOR_OLD_KEY,
                        key
                    )
                    .bind(payment.account)
                    .bind(payment.payment_id)
                    .execute(&self.pool)
                    .await?;
                    let row = $crate::store::sql::key_query!(
                        $clock,
                        $crate::store::sql::LOAD_ATTEMPT,
                        key
                    )
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|r| {
                        Ok($crate::store::rows::PaymentAttempt {
                            started_at: r.try_get(0)?,
                            last_sent_at: r.try_get(1)?,
                            now: r.try_get(2)?,
                        })
                    })
                    .transpose()
                })
            }

            fn begin_send<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                token: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r =
                        $crate::store::sql::key_query!($clock, $crate::store::sql::BEGIN_SEND, key)
                            .bind(token)
                            .execute(&self.pool)
                            .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn complete<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                token: &'a str,
                outcome: &'a str,
                keep_ms: i64,
                refund: Option<$crate::store::rows::RefundRow<'a>>,
            ) -> $crate::store::traits::StoreFuture<'a, $crate::store::rows::Completion> {
                Box::pin(async move {
                    use $crate::store::rows::Completion;
                    // The outcome, the attribution, the payment's release and the refund's
                    // state commit together, or not at all.
                    let mut tx = self.pool.begin().await?;
                    let r =
                        $crate::store::sql::key_query!($clock, $crate::store::sql::COMPLETE, key)
                            .bind(token)
                            .bind(outcome)
                            .bind(keep_ms)
                            .execute(&mut *tx)
                            .await?;
                    if r.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(Completion::LeaseLost);
                    }
                    Ok(Self::settled(tx, key, refund, keep_ms).await?)
                })
            }

            fn mark_unknown<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                token: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r = $crate::store::sql::key_query!(
                        $clock,
                        $crate::store::sql::MARK_UNKNOWN,
                        key
                    )
                    .bind(token)
                    .execute(&self.pool)
                    .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn mark_unresolved<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                token: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r = $crate::store::sql::key_query!(
                        $clock,
                        $crate::store::sql::MARK_UNRESOLVED,
                        key
                    )
                    .bind(token)
                    .execute(&self.pool)
                    .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn settle<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                outcome: &'a str,
                keep_ms: i64,
                refund: Option<$crate::store::rows::RefundRow<'a>>,
            ) -> $crate::store::traits::StoreFuture<'a, $crate::store::rows::Completion> {
                Box::pin(async move {
                    use $crate::store::rows::Completion;
                    let mut tx = self.pool.begin().await?;
                    let r = $crate::store::sql::key_query!($clock, $crate::store::sql::SETTLE, key)
                        .bind(outcome)
                        .bind(keep_ms)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(Completion::LeaseLost);
                    }
                    Ok(Self::settled(tx, key, refund, keep_ms).await?)
                })
            }

            fn claimant<'a>(
                &'a self,
                account: &'a str,
                method: &'a str,
                request_id: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, Option<(String, Option<String>)>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = $crate::store::sql::q!($clock, $crate::store::sql::CLAIMANT)
                        .bind(account)
                        .bind(method)
                        .bind(request_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
                })
            }

            fn known_refunds<'a>(
                &'a self,
                account: &'a str,
                payment_id: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, Vec<String>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let rows = $crate::store::sql::q!($clock, $crate::store::sql::KNOWN_REFUNDS)
                        .bind(account)
                        .bind(payment_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<_, _>>()
                        .map_err(Into::into)
                })
            }

            fn refund_owner<'a>(
                &'a self,
                account: &'a str,
                refund_id: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, Option<String>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = $crate::store::sql::q!($clock, $crate::store::sql::ATTRIBUTED_TO)
                        .bind(account)
                        .bind(refund_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
                })
            }

            fn attributed_refund<'a>(
                &'a self,
                account: &'a str,
                caller: Option<&'a str>,
                request_id: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, Option<String>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    use $crate::store::sql as s;
                    let q = match caller {
                        Some(c) => s::q!($clock, s::ATTRIBUTED_REFUND)
                            .bind(account)
                            .bind(request_id)
                            .bind(c),
                        None => s::q!($clock, s::ATTRIBUTED_REFUND_ANY_CALLER)
                            .bind(account)
                            .bind(request_id),
                    };
                    let row = q.fetch_optional(&self.pool).await?;
                    row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
                })
            }

            fn delete<'a>(
                &'a self,
                key: &'a $crate::store::rows::Key,
                token: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let r = $crate::store::sql::key_query!($clock, $crate::store::sql::DELETE, key)
                        .bind(token)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 1 {
                        $crate::store::sql::key_query!(
                            $clock,
                            $crate::store::sql::RELEASE_PAYMENT,
                            key
                        )
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn purge(&self, retention_ms: i64) -> $crate::store::traits::StoreFuture<'_, u64> {
                Box::pin(async move {
                    use $crate::store::sql as s;
                    let mut n = 0;
                    for (sql, bind) in [
                        (s::PURGE, true),
                        (s::PURGE_ATTRIBUTIONS, false),
                        (s::PURGE_REFUNDS, true),
                        (s::PURGE_INSTANCES, false),
                        (s::PURGE_CLAIMS, false),
                    ] {
                        let q = s::q!($clock, sql);
                        let q = if bind { q.bind(retention_ms) } else { q };
                        n += q.execute(&self.pool).await?.rows_affected();
                    }
                    s::q!($clock, s::MARK_EVENTS_PURGED)
                        .bind(retention_ms)
                        .execute(&self.pool)
                        .await?;
                    n += s::q!($clock, s::PURGE_EVENTS)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    Ok(n)
                })
            }

            fn heartbeat<'a>(
                &'a self,
                instance: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, ()> {
                Box::pin(async move {
                    $crate::store::sql::q!($clock, $crate::store::sql::HEARTBEAT)
                        .bind(instance)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }
        }

        impl $crate::store::traits::RefundStore for $ty {
            fn save_refund<'a>(
                &'a self,
                f: $crate::store::rows::RefundRow<'a>,
            ) -> $crate::store::traits::StoreFuture<'a, ()> {
                Box::pin(async move {
                    $crate::store::sql::save_refund_query!($clock, f)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn refresh_refund<'a>(
                &'a self,
                f: $crate::store::rows::RefundRow<'a>,
            ) -> $crate::store::traits::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r = $crate::store::sql::q!($clock, $crate::store::sql::REFRESH_REFUND)
                        .bind(f.account)
                        .bind(f.request_id)
                        .bind(f.refund_id)
                        .bind(f.state)
                        .bind(f.record)
                        .execute(&self.pool)
                        .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn load_refund<'a>(
                &'a self,
                account: &'a str,
                request_id: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, Option<String>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = $crate::store::sql::q!($clock, $crate::store::sql::LOAD_REFUND)
                        .bind(account)
                        .bind(request_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
                })
            }
        }

        impl $crate::store::traits::EventStore for $ty {
            fn record_event<'a>(
                &'a self,
                e: $crate::store::rows::EventRow<'a>,
                effect: $crate::store::rows::EventEffect<'a>,
            ) -> $crate::store::traits::StoreFuture<'a, Option<i64>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    use $crate::store::sql as s;
                    let mut tx = self.pool.begin().await?;
                    let seq: i64 = s::q!($clock, s::NEXT_EVENT_SEQ)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get(0)?;
                    let r = s::q!($clock, s::INSERT_EVENT)
                        .bind(seq)
                        .bind(e.event_id)
                        .bind(e.account)
                        .bind(e.provider)
                        .bind(e.kind)
                        .bind(e.payload)
                        .bind(e.caller)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    match effect {
                        $crate::store::rows::EventEffect::Refund(f) => {
                            s::save_refund_query!($clock, f).execute(&mut *tx).await?;
                        }
                        $crate::store::rows::EventEffect::Subscription(sub) => {
                            s::save_subscription_query!($clock, sub)
                                .execute(&mut *tx)
                                .await?;
                        }
                        $crate::store::rows::EventEffect::None => {}
                    }
                    tx.commit().await?;
                    Ok(Some(seq))
                })
            }

            fn events_after(
                &self,
                after: i64,
                limit: i64,
            ) -> $crate::store::traits::StoreFuture<'_, Vec<$crate::store::rows::StoredEvent>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let rows = $crate::store::sql::q!($clock, $crate::store::sql::EVENTS_AFTER)
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| {
                            Ok($crate::store::rows::StoredEvent {
                                seq: r.try_get(0)?,
                                event_id: r.try_get(1)?,
                                account: r.try_get(2)?,
                                provider: r.try_get(3)?,
                                kind: r.try_get(4)?,
                                payload: r.try_get(5)?,
                                received_at: r.try_get(6)?,
                                caller: r.try_get(7)?,
                            })
                        })
                        .collect()
                })
            }

            fn event_counter(&self) -> $crate::store::traits::StoreFuture<'_, (i64, i64)> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = $crate::store::sql::q!($clock, $crate::store::sql::EVENT_COUNTER)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok((row.try_get(0)?, row.try_get(1)?))
                })
            }
        }

        impl $crate::store::traits::SubscriptionStore for $ty {
            fn save_subscription<'a>(
                &'a self,
                s: $crate::store::rows::SubscriptionRow<'a>,
            ) -> $crate::store::traits::StoreFuture<'a, ()> {
                Box::pin(async move {
                    $crate::store::sql::save_subscription_query!($clock, s)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn load_subscription<'a>(
                &'a self,
                account: &'a str,
                subscription_id: &'a str,
                subscription_request_id: &'a str,
            ) -> $crate::store::traits::StoreFuture<'a, Option<(String, i64)>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = $crate::store::sql::q!($clock, $crate::store::sql::LOAD_SUBSCRIPTION)
                        .bind(account)
                        .bind(subscription_id)
                        .bind(subscription_request_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
                })
            }
        }
    };
}

pub(crate) use impl_store;

/// The sqlx database behind a store type (for its transactions).
pub trait HasDb {
    /// The database.
    type Db: sqlx::Database;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stale_literal_is_the_documented_constant() {
        assert_eq!(super::INSTANCE_STALE.as_millis(), 1500);
        assert!(super::LOAD.contains("NOW_MS - 1500"));
        assert!(super::TAKE_OVER.contains("NOW_MS - 1500"));
    }
}
