//! The SQL both stores run (`$n` placeholders work in PostgreSQL and SQLite alike), and the
//! macro that implements [`super::Store`] on a sqlx pool with it. Every state change is one
//! conditional statement, so concurrent gateways never check-then-act.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The versioned schema migrations, embedded in the binary.
pub fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "idempotency".into(),
            MigrationType::Simple,
            include_str!("migrations/0001_idempotency.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "refund payments".into(),
            MigrationType::Simple,
            include_str!("migrations/0002_refund_payment.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "events and subscriptions".into(),
            MigrationType::Simple,
            include_str!("migrations/0003_events.sql").into_sql_str(),
            false,
        ),
    ])
}

pub const INSERT: &str = "INSERT INTO idempotency_keys \
     (caller, method, request_id, fingerprint, state, lease_token, lease_until, attempts, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 'in_flight', $5, $6, 1, $7, $7) \
     ON CONFLICT (caller, method, request_id) DO NOTHING";

pub const LOAD: &str = "SELECT fingerprint, state, lease_until, outcome FROM idempotency_keys \
     WHERE caller = $1 AND method = $2 AND request_id = $3";

/// Takes over a key whose earlier attempt ended unknown or whose lease expired.
pub const TAKE_OVER: &str = "UPDATE idempotency_keys \
     SET state = 'in_flight', lease_token = $4, lease_until = $5, attempts = attempts + 1, updated_at = $6 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 \
       AND (state = 'unknown' OR (state = 'in_flight' AND lease_until <= $6))";

pub const COMPLETE: &str = "UPDATE idempotency_keys \
     SET state = 'done', outcome = $5, lease_token = NULL, lease_until = 0, updated_at = $6 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4";

pub const MARK_UNKNOWN: &str = "UPDATE idempotency_keys \
     SET state = 'unknown', lease_token = NULL, lease_until = 0, updated_at = $5 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4";

pub const MARK_UNRESOLVED: &str = "UPDATE idempotency_keys \
     SET state = 'unresolved', lease_token = NULL, lease_until = 0, updated_at = $5 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4";

/// An operator settles a key that is not final.
pub const SETTLE: &str = "UPDATE idempotency_keys \
     SET state = 'done', outcome = $4, lease_token = NULL, lease_until = 0, updated_at = $5 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND state <> 'done'";

pub const KNOWN_REFUNDS: &str = "SELECT refund_id FROM refunds \
     WHERE account = $1 AND payment_id = $2 AND refund_id IS NOT NULL";

pub const DELETE: &str = "DELETE FROM idempotency_keys \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease_token = $4";

pub const PURGE: &str = "DELETE FROM idempotency_keys WHERE state = 'done' AND created_at < $1";

pub const PURGE_REFUNDS: &str =
    "DELETE FROM refunds WHERE updated_at < $1 AND state <> 'Processing'";

/// Records a refund's state; a final state is never overwritten by PROCESSING.
pub const SAVE_REFUND: &str = "INSERT INTO refunds (account, request_id, refund_id, state, record, updated_at, payment_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (account, request_id) DO UPDATE SET \
       refund_id = COALESCE(excluded.refund_id, refunds.refund_id), \
       payment_id = COALESCE(excluded.payment_id, refunds.payment_id), \
       state = excluded.state, record = excluded.record, updated_at = excluded.updated_at \
     WHERE (refunds.state = 'Processing' OR excluded.state <> 'Processing') \
       AND (refunds.state <> excluded.state OR refunds.refund_id IS NULL)";

pub const LOAD_REFUND: &str = "SELECT record FROM refunds WHERE account = $1 AND request_id = $2";

/// Takes the next event number; the row lock it holds until commit orders the writers.
pub const NEXT_EVENT_SEQ: &str =
    "UPDATE event_counter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq";

pub const INSERT_EVENT: &str = "INSERT INTO events \
     (seq, event_id, account, provider, kind, payload, received_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING";

pub const EVENTS_AFTER: &str = "SELECT seq, event_id, account, provider, kind, payload, received_at \
     FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";

pub const EVENT_COUNTER: &str = "SELECT last_seq, purged_through FROM event_counter WHERE id = 1";

/// Moves the purge mark to the newest event received before the cutoff.
pub const MARK_EVENTS_PURGED: &str = "UPDATE event_counter SET purged_through = \
     COALESCE((SELECT MAX(seq) FROM events WHERE received_at < $1), purged_through) WHERE id = 1";

pub const PURGE_EVENTS: &str =
    "DELETE FROM events WHERE seq <= (SELECT purged_through FROM event_counter WHERE id = 1)";

/// Records a subscription's state; a confirmed cancellation is never replaced by one that is
/// not.
pub const SAVE_SUBSCRIPTION: &str = "INSERT INTO subscriptions \
     (account, subscription_id, subscription_request_id, cancellation, record, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (account, subscription_id) DO UPDATE SET \
       subscription_request_id = COALESCE(excluded.subscription_request_id, subscriptions.subscription_request_id), \
       cancellation = excluded.cancellation, record = excluded.record, updated_at = excluded.updated_at \
     WHERE subscriptions.cancellation <> 'Confirmed' OR excluded.cancellation = 'Confirmed'";

/// By subscription id, or, when that is empty, by the merchant's subscription id.
pub const LOAD_SUBSCRIPTION: &str = "SELECT record, updated_at FROM subscriptions \
     WHERE account = $1 AND ((subscription_id = $2) OR ($2 = '' AND subscription_request_id = $3)) \
     ORDER BY updated_at DESC LIMIT 1";

/// A statement on one key, with the key's three columns bound as `$1`-`$3`.
macro_rules! key_query {
    ($sql:expr, $key:expr) => {
        sqlx::query($sql)
            .bind(&$key.caller)
            .bind($key.method)
            .bind(&$key.request_id)
    };
}

pub(crate) use key_query;

/// The refund-state upsert with its parameters bound (used inside and outside transactions).
macro_rules! save_refund_query {
    ($f:expr, $now:expr) => {
        sqlx::query($crate::idempotency::sql::SAVE_REFUND)
            .bind($f.account)
            .bind($f.request_id)
            .bind($f.refund_id)
            .bind($f.state)
            .bind($f.record)
            .bind($now)
            .bind($f.payment_id)
    };
}

pub(crate) use save_refund_query;

/// The subscription-state upsert with its parameters bound.
macro_rules! save_subscription_query {
    ($s:expr, $now:expr) => {
        sqlx::query($crate::idempotency::sql::SAVE_SUBSCRIPTION)
            .bind($s.account)
            .bind($s.subscription_id)
            .bind($s.subscription_request_id)
            .bind($s.cancellation)
            .bind($s.record)
            .bind($now)
    };
}

pub(crate) use save_subscription_query;

/// Implements `Store` for a struct with a `pool` field of a sqlx pool type.
macro_rules! impl_store {
    ($ty:ty, $name:literal) => {
        impl $crate::idempotency::Store for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn insert<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
                fingerprint: &'a str,
                token: &'a str,
                lease_until: i64,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r =
                        $crate::idempotency::sql::key_query!($crate::idempotency::sql::INSERT, key)
                            .bind(fingerprint)
                            .bind(token)
                            .bind(lease_until)
                            .bind(now)
                            .execute(&self.pool)
                            .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn load<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
            ) -> $crate::idempotency::StoreFuture<'a, Option<$crate::idempotency::Row>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row =
                        $crate::idempotency::sql::key_query!($crate::idempotency::sql::LOAD, key)
                            .fetch_optional(&self.pool)
                            .await?;
                    row.map(|r| {
                        Ok($crate::idempotency::Row {
                            fingerprint: r.try_get(0)?,
                            state: r.try_get(1)?,
                            lease_until: r.try_get(2)?,
                            outcome: r.try_get(3)?,
                        })
                    })
                    .transpose()
                })
            }

            fn take_over<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
                token: &'a str,
                lease_until: i64,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r = $crate::idempotency::sql::key_query!(
                        $crate::idempotency::sql::TAKE_OVER,
                        key
                    )
                    .bind(token)
                    .bind(lease_until)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn complete<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
                token: &'a str,
                outcome: &'a str,
                refund: Option<$crate::idempotency::RefundRow<'a>>,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, bool> {
                Box::pin(async move {
                    // The outcome and the refund's state commit together: one durable write.
                    let mut tx = self.pool.begin().await?;
                    let r = $crate::idempotency::sql::key_query!(
                        $crate::idempotency::sql::COMPLETE,
                        key
                    )
                    .bind(token)
                    .bind(outcome)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if let Some(f) = refund {
                        $crate::idempotency::sql::save_refund_query!(f, now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn settle<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
                outcome: &'a str,
                refund: Option<$crate::idempotency::RefundRow<'a>>,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let r =
                        $crate::idempotency::sql::key_query!($crate::idempotency::sql::SETTLE, key)
                            .bind(outcome)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    if r.rows_affected() == 1
                        && let Some(f) = refund
                    {
                        $crate::idempotency::sql::save_refund_query!(f, now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn mark_unresolved<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
                token: &'a str,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r = $crate::idempotency::sql::key_query!(
                        $crate::idempotency::sql::MARK_UNRESOLVED,
                        key
                    )
                    .bind(token)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn known_refunds<'a>(
                &'a self,
                account: &'a str,
                payment_id: &'a str,
            ) -> $crate::idempotency::StoreFuture<'a, Vec<String>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let rows = sqlx::query($crate::idempotency::sql::KNOWN_REFUNDS)
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

            fn mark_unknown<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
                token: &'a str,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r = $crate::idempotency::sql::key_query!(
                        $crate::idempotency::sql::MARK_UNKNOWN,
                        key
                    )
                    .bind(token)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn delete<'a>(
                &'a self,
                key: &'a $crate::idempotency::Key,
                token: &'a str,
            ) -> $crate::idempotency::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let r =
                        $crate::idempotency::sql::key_query!($crate::idempotency::sql::DELETE, key)
                            .bind(token)
                            .execute(&self.pool)
                            .await?;
                    Ok(r.rows_affected() == 1)
                })
            }

            fn purge(&self, cutoff: i64) -> $crate::idempotency::StoreFuture<'_, u64> {
                Box::pin(async move {
                    let keys = sqlx::query($crate::idempotency::sql::PURGE)
                        .bind(cutoff)
                        .execute(&self.pool)
                        .await?;
                    let refunds = sqlx::query($crate::idempotency::sql::PURGE_REFUNDS)
                        .bind(cutoff)
                        .execute(&self.pool)
                        .await?;
                    sqlx::query($crate::idempotency::sql::MARK_EVENTS_PURGED)
                        .bind(cutoff)
                        .execute(&self.pool)
                        .await?;
                    let events = sqlx::query($crate::idempotency::sql::PURGE_EVENTS)
                        .execute(&self.pool)
                        .await?;
                    Ok(keys.rows_affected() + refunds.rows_affected() + events.rows_affected())
                })
            }

            fn save_refund<'a>(
                &'a self,
                f: $crate::idempotency::RefundRow<'a>,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, ()> {
                Box::pin(async move {
                    $crate::idempotency::sql::save_refund_query!(f, now)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn load_refund<'a>(
                &'a self,
                account: &'a str,
                request_id: &'a str,
            ) -> $crate::idempotency::StoreFuture<'a, Option<String>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query($crate::idempotency::sql::LOAD_REFUND)
                        .bind(account)
                        .bind(request_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
                })
            }

            fn record_event<'a>(
                &'a self,
                e: $crate::idempotency::EventRow<'a>,
                effect: $crate::idempotency::EventEffect<'a>,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, Option<i64>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let mut tx = self.pool.begin().await?;
                    let seq: i64 = sqlx::query($crate::idempotency::sql::NEXT_EVENT_SEQ)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get(0)?;
                    let r = sqlx::query($crate::idempotency::sql::INSERT_EVENT)
                        .bind(seq)
                        .bind(e.event_id)
                        .bind(e.account)
                        .bind(e.provider)
                        .bind(e.kind)
                        .bind(e.payload)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    match effect {
                        $crate::idempotency::EventEffect::Refund(f) => {
                            $crate::idempotency::sql::save_refund_query!(f, now)
                                .execute(&mut *tx)
                                .await?;
                        }
                        $crate::idempotency::EventEffect::Subscription(s) => {
                            $crate::idempotency::sql::save_subscription_query!(s, now)
                                .execute(&mut *tx)
                                .await?;
                        }
                        $crate::idempotency::EventEffect::None => {}
                    }
                    tx.commit().await?;
                    Ok(Some(seq))
                })
            }

            fn events_after(
                &self,
                after: i64,
                limit: i64,
            ) -> $crate::idempotency::StoreFuture<'_, Vec<$crate::idempotency::StoredEvent>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let rows = sqlx::query($crate::idempotency::sql::EVENTS_AFTER)
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| {
                            Ok($crate::idempotency::StoredEvent {
                                seq: r.try_get(0)?,
                                event_id: r.try_get(1)?,
                                account: r.try_get(2)?,
                                provider: r.try_get(3)?,
                                kind: r.try_get(4)?,
                                payload: r.try_get(5)?,
                                received_at: r.try_get(6)?,
                            })
                        })
                        .collect()
                })
            }

            fn event_counter(&self) -> $crate::idempotency::StoreFuture<'_, (i64, i64)> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query($crate::idempotency::sql::EVENT_COUNTER)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok((row.try_get(0)?, row.try_get(1)?))
                })
            }

            fn save_subscription<'a>(
                &'a self,
                s: $crate::idempotency::SubscriptionRow<'a>,
                now: i64,
            ) -> $crate::idempotency::StoreFuture<'a, ()> {
                Box::pin(async move {
                    $crate::idempotency::sql::save_subscription_query!(s, now)
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
            ) -> $crate::idempotency::StoreFuture<'a, Option<(String, i64)>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query($crate::idempotency::sql::LOAD_SUBSCRIPTION)
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
