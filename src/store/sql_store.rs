//! The four store traits, implemented once for SQLite and PostgreSQL over a [`Backend`]. Every
//! state change is one conditional statement (`sql.rs`) or one transaction of them, so
//! concurrent gateways never check-then-act; every time two processes compare is the
//! database's clock. Reads run on the pool; writes go where [`Writes`] sends them (on SQLite,
//! to the group commit), as closures over owned rows (`owned.rs`).

use sqlx::{Connection as _, Database, Pool, Transaction};

use super::backend::Arg::{self, Int, OptText, Text};
use super::backend::{ArgBuf, Backend, Run};
use super::owned::*;
use super::rows::*;
use super::sql as s;
use super::traits::*;
use super::writer::{Op, Writes};

/// A store over one database: a pool for reads, and where its writes go.
#[derive(Debug)]
pub(super) struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    pub(super) writes: Writes<DB>,
}

/// A write of statements that hold together (see [`Writes::op`]).
fn op<DB, R, F>(f: F) -> Op<DB, R>
where
    DB: Database,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> Run<'c, R> + Send + 'static,
{
    Box::new(f)
}

/// A key's three columns (`$1`-`$3`), then `rest`.
fn key_args<'a>(key: &'a Key, rest: &[Arg<'a>]) -> Vec<Arg<'a>> {
    let mut args = vec![Text(&key.caller), Text(key.method), Text(&key.request_id)];
    args.extend_from_slice(rest);
    args
}

/// The refund-state upsert's arguments.
fn refund_args<'a>(f: &RefundRow<'a>) -> [Arg<'a>; 6] {
    [
        Text(f.account),
        Text(f.request_id),
        OptText(f.refund_id),
        Text(f.state),
        Text(f.record),
        OptText(f.payment_id),
    ]
}

/// The subscription-state upsert's arguments.
fn subscription_args<'a>(s: &SubscriptionRow<'a>) -> [Arg<'a>; 5] {
    [
        Text(s.account),
        Text(s.subscription_id),
        OptText(s.subscription_request_id),
        Text(s.cancellation),
        Text(s.record),
    ]
}

/// The row a statement must return.
fn one<R>(row: Option<R>) -> Result<R, sqlx::Error> {
    row.ok_or(sqlx::Error::RowNotFound)
}

impl<DB: Backend> SqlStore<DB> {
    /// One write statement; how many rows it changed.
    async fn execute(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        self.writes.one(sql, args).await
    }

    /// One query on a pooled connection; its first row, if any.
    async fn fetch_optional(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<DB::Row>, sqlx::Error> {
        DB::fetch_optional_pooled(&self.pool, sql, args).await
    }

    /// One query on a pooled connection; its rows.
    async fn fetch_all(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<DB::Row>, sqlx::Error> {
        DB::fetch_all_pooled(&self.pool, sql, args).await
    }

    /// A conditional update of one key by its lease token; whether it applied.
    async fn by_token(
        &self,
        sql: &'static str,
        key: &Key,
        token: &str,
    ) -> Result<bool, sqlx::Error> {
        Ok(self.execute(sql, &key_args(key, &[Text(token)])).await? == 1)
    }

    /// A key's final state by `sql` (its row changed, or the lease was gone), then
    /// [`settled`]: one write.
    async fn finish(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
        key: &Key,
        refund: Option<RefundRow<'_>>,
        keep_ms: i64,
    ) -> Result<Completion, sqlx::Error> {
        let args: Vec<ArgBuf> = args.iter().map(ArgBuf::of).collect();
        let key = key.clone();
        let refund = refund.as_ref().map(RefundRowBuf::of);
        let write = op::<DB, _, _>(move |conn| {
            Box::pin(async move {
                // The outcome, the attribution, the payment's release and the refund's state
                // commit together, or not at all.
                let mut tx = conn.begin().await?;
                let args: Vec<Arg<'_>> = args.iter().map(ArgBuf::view).collect();
                if DB::execute(&mut tx, sql, &args).await? == 0 {
                    tx.rollback().await?;
                    return Ok(Completion::LeaseLost);
                }
                let refund = refund.as_ref().map(RefundRowBuf::view);
                settled(tx, &key, refund, keep_ms).await
            })
        });
        self.writes.op(write).await
    }
}

/// Writes the attribution of a completed refund key; false if the refund is already
/// attributed to another key.
async fn attribute<DB: Backend>(
    conn: &mut DB::Connection,
    key: &Key,
    f: &RefundRow<'_>,
    keep_ms: i64,
) -> Result<bool, sqlx::Error> {
    let Some(refund_id) = f.refund_id else {
        return Ok(true);
    };
    let args = [
        Text(f.account),
        Text(refund_id),
        Text(&key.caller),
        Text(&key.request_id),
        OptText(f.payment_id),
        Int(keep_ms),
    ];
    if DB::execute(conn, s::ATTRIBUTE, &args).await? == 1 {
        return Ok(true);
    }
    let owner =
        one(
            DB::fetch_optional(conn, s::ATTRIBUTED_TO, &[Text(f.account), Text(refund_id)]).await?,
        )?;
    Ok(DB::text(&owner, 0)? == key.caller && DB::text(&owner, 1)? == key.request_id)
}

/// The rest of a key's completion, after its row became `done` in `tx`: the refund's
/// attribution (refused if another key owns it) and state, and the payment's release;
/// commits, or rolls back everything.
async fn settled<DB: Backend>(
    mut tx: Transaction<'_, DB>,
    key: &Key,
    refund: Option<RefundRow<'_>>,
    keep_ms: i64,
) -> Result<Completion, sqlx::Error> {
    if let Some(f) = &refund {
        if !attribute::<DB>(&mut tx, key, f, keep_ms).await? {
            tx.rollback().await?;
            return Ok(Completion::AttributedElsewhere);
        }
        DB::execute(&mut tx, s::SAVE_REFUND, &refund_args(f)).await?;
    }
    DB::execute(&mut tx, s::RELEASE_PAYMENT, &key_args(key, &[])).await?;
    tx.commit().await?;
    Ok(Completion::Done)
}

/// A new key with its request-id claim and, for a refund without a provider key, its payment;
/// or, rolled back, why not.
async fn insert<DB: Backend>(
    conn: &mut DB::Connection,
    new: NewKey<'_>,
) -> Result<Inserted, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let key = new.key;
    let args = key_args(
        key,
        &[
            Text(new.fingerprint),
            Text(new.token),
            Int(new.lease_ms),
            Text(new.instance),
        ],
    );
    if DB::execute(&mut tx, s::INSERT, &args).await? == 0 {
        tx.rollback().await?;
        return Ok(Inserted::Exists);
    }
    let claim = [Text(new.account), Text(key.method), Text(&key.request_id)];
    let mut args = claim.to_vec();
    args.extend([
        Text(&key.caller),
        Int(new.claim_keep_ms),
        OptText(new.payment_id),
    ]);
    let claimed = DB::execute(&mut tx, s::CLAIM_REQUEST, &args).await? == 1;
    // Claimed before: by this caller (its key purged since), or by another.
    let ours = claimed || {
        let row = one(DB::fetch_optional(&mut tx, s::CLAIMANT, &claim).await?)?;
        DB::text(&row, 0)? == key.caller
    };
    if !ours {
        tx.rollback().await?;
        return Ok(Inserted::Claimed);
    }
    if let Some(p) = new.payment {
        let args = key_args(key, &[Text(p.account), Text(p.payment_id)]);
        if DB::execute(&mut tx, s::CLAIM_PAYMENT, &args).await? == 0 {
            tx.rollback().await?;
            return Ok(Inserted::PaymentBusy);
        }
    }
    tx.commit().await?;
    Ok(Inserted::Created)
}

impl<DB: Backend> KeyStore for SqlStore<DB> {
    fn name(&self) -> &'static str {
        DB::STORE
    }

    fn now(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move { Ok(DB::int(&one(self.fetch_optional(s::NOW, &[]).await?)?, 0)?) })
    }

    fn insert<'a>(&'a self, new: NewKey<'a>) -> StoreFuture<'a, Inserted> {
        let new = NewKeyBuf::of(&new);
        Box::pin(async move {
            let write = op::<DB, _, _>(move |conn| {
                Box::pin(async move { insert::<DB>(conn, new.view()).await })
            });
            Ok(self.writes.op(write).await?)
        })
    }

    fn load<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<Row>> {
        Box::pin(async move {
            let row = self.fetch_optional(s::LOAD, &key_args(key, &[])).await?;
            let read = |r: &DB::Row| {
                Ok::<_, sqlx::Error>(Row {
                    fingerprint: DB::text(r, 0)?,
                    state: DB::text(r, 1)?,
                    lease_left_ms: DB::int(r, 2)?,
                    outcome: DB::opt_text(r, 3)?,
                    live: DB::int(r, 4)? != 0,
                })
            };
            Ok(row.as_ref().map(read).transpose()?)
        })
    }

    fn take_over<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        lease_ms: i64,
        instance: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let args = key_args(key, &[Text(token), Int(lease_ms), Text(instance)]);
            Ok(self.execute(s::TAKE_OVER, &args).await? == 1)
        })
    }

    fn hold_payment<'a>(
        &'a self,
        key: &'a Key,
        payment: PaymentClaim<'a>,
    ) -> StoreFuture<'a, Option<PaymentAttempt>> {
        Box::pin(async move {
            let args = key_args(key, &[Text(payment.account), Text(payment.payment_id)]);
            self.execute(s::CLAIM_PAYMENT_FOR_OLD_KEY, &args).await?;
            let row = self
                .fetch_optional(s::LOAD_ATTEMPT, &key_args(key, &[]))
                .await?;
            let read = |r: &DB::Row| {
                Ok::<_, sqlx::Error>(PaymentAttempt {
                    started_at: DB::int(r, 0)?,
                    last_sent_at: DB::opt_int(r, 1)?,
                    now: DB::int(r, 2)?,
                })
            };
            Ok(row.as_ref().map(read).transpose()?)
        })
    }

    fn begin_send<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.by_token(s::BEGIN_SEND, key, token).await?) })
    }

    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        outcome: &'a str,
        keep_ms: i64,
        refund: Option<RefundRow<'a>>,
    ) -> StoreFuture<'a, Completion> {
        Box::pin(async move {
            let args = key_args(key, &[Text(token), Text(outcome), Int(keep_ms)]);
            Ok(self
                .finish(s::COMPLETE, &args, key, refund, keep_ms)
                .await?)
        })
    }

    fn mark_unknown<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.by_token(s::MARK_UNKNOWN, key, token).await?) })
    }

    fn mark_unresolved<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.by_token(s::MARK_UNRESOLVED, key, token).await?) })
    }

    fn settle<'a>(
        &'a self,
        key: &'a Key,
        outcome: &'a str,
        keep_ms: i64,
        refund: Option<RefundRow<'a>>,
    ) -> StoreFuture<'a, Completion> {
        Box::pin(async move {
            let args = key_args(key, &[Text(outcome), Int(keep_ms)]);
            Ok(self.finish(s::SETTLE, &args, key, refund, keep_ms).await?)
        })
    }

    fn claimant<'a>(
        &'a self,
        account: &'a str,
        method: &'a str,
        request_id: &'a str,
    ) -> StoreFuture<'a, Option<(String, Option<String>)>> {
        Box::pin(async move {
            let args = [Text(account), Text(method), Text(request_id)];
            let row = self.fetch_optional(s::CLAIMANT, &args).await?;
            let read = |r: &DB::Row| Ok::<_, sqlx::Error>((DB::text(r, 0)?, DB::opt_text(r, 1)?));
            Ok(row.as_ref().map(read).transpose()?)
        })
    }

    fn known_refunds<'a>(
        &'a self,
        account: &'a str,
        payment_id: &'a str,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let rows = self
                .fetch_all(s::KNOWN_REFUNDS, &[Text(account), Text(payment_id)])
                .await?;
            Ok(rows
                .iter()
                .map(|r| DB::text(r, 0))
                .collect::<Result<_, _>>()?)
        })
    }

    fn refund_owner<'a>(
        &'a self,
        account: &'a str,
        refund_id: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let row = self
                .fetch_optional(s::ATTRIBUTED_TO, &[Text(account), Text(refund_id)])
                .await?;
            Ok(row.as_ref().map(|r| DB::text(r, 0)).transpose()?)
        })
    }

    fn attributed_refund<'a>(
        &'a self,
        account: &'a str,
        caller: Option<&'a str>,
        request_id: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let row = match caller {
                Some(c) => {
                    let args = [Text(account), Text(request_id), Text(c)];
                    self.fetch_optional(s::ATTRIBUTED_REFUND, &args).await?
                }
                None => {
                    let args = [Text(account), Text(request_id)];
                    self.fetch_optional(s::ATTRIBUTED_REFUND_ANY_CALLER, &args)
                        .await?
                }
            };
            Ok(row.as_ref().map(|r| DB::text(r, 0)).transpose()?)
        })
    }

    fn delete<'a>(&'a self, key: &'a Key, token: &'a str) -> StoreFuture<'a, bool> {
        let (key, token) = (key.clone(), token.to_owned());
        Box::pin(async move {
            let write = op::<DB, _, _>(move |conn| {
                Box::pin(async move {
                    let mut tx = conn.begin().await?;
                    let deleted = DB::execute(&mut tx, s::DELETE, &key_args(&key, &[Text(&token)]))
                        .await?
                        == 1;
                    if deleted {
                        DB::execute(&mut tx, s::RELEASE_PAYMENT, &key_args(&key, &[])).await?;
                    }
                    tx.commit().await?;
                    Ok(deleted)
                })
            });
            Ok(self.writes.op(write).await?)
        })
    }

    fn purge(&self, retention_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let retention = [Int(retention_ms)];
            let mut n = 0;
            for (sql, args) in [
                (s::PURGE, &retention[..]),
                (s::PURGE_ATTRIBUTIONS, &[]),
                (s::PURGE_REFUNDS, &retention[..]),
                (s::PURGE_INSTANCES, &[]),
                (s::PURGE_CLAIMS, &[]),
            ] {
                n += self.execute(sql, args).await?;
            }
            self.execute(s::MARK_EVENTS_PURGED, &retention).await?;
            n += self.execute(s::PURGE_EVENTS, &[]).await?;
            Ok(n)
        })
    }

    fn heartbeat<'a>(&'a self, instance: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(s::HEARTBEAT, &[Text(instance)]).await?;
            Ok(())
        })
    }
}

impl<DB: Backend> RefundStore for SqlStore<DB> {
    fn save_refund<'a>(&'a self, f: RefundRow<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(s::SAVE_REFUND, &refund_args(&f)).await?;
            Ok(())
        })
    }

    fn refresh_refund<'a>(&'a self, f: RefundRow<'a>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let args = [
                Text(f.account),
                Text(f.request_id),
                OptText(f.refund_id),
                Text(f.state),
                Text(f.record),
            ];
            Ok(self.execute(s::REFRESH_REFUND, &args).await? == 1)
        })
    }

    fn load_refund<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let row = self
                .fetch_optional(s::LOAD_REFUND, &[Text(account), Text(request_id)])
                .await?;
            Ok(row.as_ref().map(|r| DB::text(r, 0)).transpose()?)
        })
    }
}

impl<DB: Backend> EventStore for SqlStore<DB> {
    fn record_event<'a>(
        &'a self,
        e: EventRow<'a>,
        effect: EventEffect<'a>,
    ) -> StoreFuture<'a, Option<i64>> {
        let (e, effect) = (EventRowBuf::of(&e), EventEffectBuf::of(&effect));
        Box::pin(async move {
            let write = op::<DB, _, _>(move |conn| {
                Box::pin(async move { record_event::<DB>(conn, e.view(), effect.view()).await })
            });
            Ok(self.writes.op(write).await?)
        })
    }

    fn events_after(&self, after: i64, limit: i64) -> StoreFuture<'_, Vec<StoredEvent>> {
        Box::pin(async move {
            let rows = self
                .fetch_all(s::EVENTS_AFTER, &[Int(after), Int(limit)])
                .await?;
            let read = |r: &DB::Row| {
                Ok::<_, sqlx::Error>(StoredEvent {
                    seq: DB::int(r, 0)?,
                    event_id: DB::text(r, 1)?,
                    account: DB::text(r, 2)?,
                    provider: DB::text(r, 3)?,
                    kind: DB::text(r, 4)?,
                    payload: DB::text(r, 5)?,
                    received_at: DB::int(r, 6)?,
                    caller: DB::opt_text(r, 7)?,
                })
            };
            Ok(rows.iter().map(read).collect::<Result<_, _>>()?)
        })
    }

    fn event_counter(&self) -> StoreFuture<'_, (i64, i64)> {
        Box::pin(async move {
            let row = one(self.fetch_optional(s::EVENT_COUNTER, &[]).await?)?;
            Ok((DB::int(&row, 0)?, DB::int(&row, 1)?))
        })
    }
}

impl<DB: Backend> SubscriptionStore for SqlStore<DB> {
    fn save_subscription<'a>(&'a self, sub: SubscriptionRow<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(s::SAVE_SUBSCRIPTION, &subscription_args(&sub))
                .await?;
            Ok(())
        })
    }

    fn load_subscription<'a>(
        &'a self,
        account: &'a str,
        subscription_id: &'a str,
        subscription_request_id: &'a str,
    ) -> StoreFuture<'a, Option<(String, i64)>> {
        Box::pin(async move {
            let args = [
                Text(account),
                Text(subscription_id),
                Text(subscription_request_id),
            ];
            let row = self.fetch_optional(s::LOAD_SUBSCRIPTION, &args).await?;
            let read = |r: &DB::Row| Ok::<_, sqlx::Error>((DB::text(r, 0)?, DB::int(r, 1)?));
            Ok(row.as_ref().map(read).transpose()?)
        })
    }
}

/// Stores an event under the next sequence number and applies its effect, unless an event
/// with its id is stored already (then nothing changes).
async fn record_event<DB: Backend>(
    conn: &mut DB::Connection,
    e: EventRow<'_>,
    effect: EventEffect<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let seq = DB::int(
        &one(DB::fetch_optional(&mut tx, s::NEXT_EVENT_SEQ, &[]).await?)?,
        0,
    )?;
    let args = [
        Int(seq),
        Text(e.event_id),
        Text(e.account),
        Text(e.provider),
        Text(e.kind),
        Text(e.payload),
        OptText(e.caller),
    ];
    if DB::execute(&mut tx, s::INSERT_EVENT, &args).await? == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    match effect {
        EventEffect::Refund(f) => {
            DB::execute(&mut tx, s::SAVE_REFUND, &refund_args(&f)).await?;
        }
        EventEffect::Subscription(sub) => {
            DB::execute(&mut tx, s::SAVE_SUBSCRIPTION, &subscription_args(&sub)).await?;
        }
        EventEffect::None => {}
    }
    tx.commit().await?;
    Ok(Some(seq))
}
