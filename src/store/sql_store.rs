//! The four store traits, implemented once for SQLite and PostgreSQL over a [`Backend`]. Every
//! state change is one conditional statement (`sql.rs`) or one transaction of them, so
//! concurrent gateways never check-then-act; every time two processes compare is the
//! database's clock. Reads run on the pool; writes go where [`Writes`] sends them (on SQLite,
//! to the group commit), as closures over owned rows (`owned.rs`).

use sqlx::{Database, Pool};

use super::admin_rows::{HistoryKind, Note, SettleKey, Settled, bounded_detail};
use super::backend::Arg::{self, Int, OptText, Text};
use super::backend::{ArgBuf, Backend, End, OneStatement, Tx, Write};
use super::owned::*;
use super::rows::*;
use super::sql as s;
use super::traits::*;
use super::writer::Writes;

/// A store over one database: a pool for reads, and where its writes go.
#[derive(Debug)]
pub(super) struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    pub(super) writes: Writes<DB>,
}

/// A key's three columns (`$1`-`$3`), then `rest`.
pub(super) fn key_args<'a>(key: &'a Key, rest: &[Arg<'a>]) -> Vec<Arg<'a>> {
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
fn subscription_args<'a>(s: &SubscriptionRow<'a>) -> [Arg<'a>; 6] {
    [
        Text(s.account),
        Text(s.subscription_id),
        OptText(s.subscription_request_id),
        Text(s.cancellation),
        Text(s.record),
        Int(s.stage),
    ]
}

/// What recording a refund's state did.
enum Saved {
    /// The state changed (or the refund is new to the store).
    Changed,
    /// The record gained what it lacked (the refund id), in the same state.
    Completed,
    /// Nothing to change: the same state, or an earlier one.
    Unchanged,
    /// A final state was recorded and this one contradicts it; nothing changed.
    Contradicts(String),
}

/// Records a refund's state, forward only (one conditional write), and tells whether it
/// changed the state, and whether a write that changed nothing contradicts what is recorded;
/// read in the same transaction.
async fn save_refund<T: Tx>(tx: &mut T, f: &RefundRow<'_>) -> Result<Saved, StoreError> {
    let recorded = tx
        .fetch_optional(s::REFUND_STATE, &[Text(f.account), Text(f.request_id)])
        .await?
        .map(|r| T::text(&r, 0))
        .transpose()?;
    if tx.execute(s::SAVE_REFUND, &refund_args(f)).await? == 1 {
        return Ok(if recorded.as_deref() == Some(f.state) {
            Saved::Completed
        } else {
            Saved::Changed
        });
    }
    Ok(match recorded {
        Some(r) if r != f.state && r != "Processing" && f.state != "Processing" => {
            Saved::Contradicts(r)
        }
        _ => Saved::Unchanged,
    })
}

/// Writes the event that reports a change, numbered after every event stored before it; its
/// number, or `None` when an event of that id is already stored.
async fn emit<T: Tx>(tx: &mut T, account: &str, c: &Change<'_>) -> Result<Option<i64>, StoreError> {
    let seq = T::int(&one(tx.fetch_optional(s::NEXT_EVENT_SEQ, &[]).await?)?, 0)?;
    let args = [
        Int(seq),
        Text(c.event_id),
        Text(account),
        Text(c.provider),
        Text(""),
        Text(c.payload),
        OptText(c.caller),
        Text(c.source.name()),
    ];
    Ok((tx.execute(s::INSERT_EVENT, &args).await? == 1).then_some(seq))
}

/// Records a report that contradicts a final state, for a person.
async fn anomaly<T: Tx>(
    tx: &mut T,
    id: &str,
    provider: &str,
    kind: &str,
    f: &RefundRow<'_>,
    recorded: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let args = [
        Text(id),
        Text(f.account),
        Text(provider),
        Text(kind),
        Text(f.request_id),
        Text(recorded),
        Text(f.state),
        Text(detail),
    ];
    tx.execute(s::INSERT_ANOMALY, &args).await?;
    Ok(())
}

/// Records a step in the key's life, in the transaction of the step (after the key's row
/// changed).
pub(super) async fn record_history<T: Tx>(
    tx: &mut T,
    key: &Key,
    kind: HistoryKind,
    detail: &str,
) -> Result<(), StoreError> {
    let detail = bounded_detail(detail);
    let args = key_args(key, &[Text(kind.as_str()), Text(&detail)]);
    tx.execute(s::RECORD_HISTORY, &args).await?;
    Ok(())
}

/// A one statement's event arguments: whether there is one (1 or 0), then its id, provider,
/// payload, caller and source (empty without one).
fn change_args<'a>(change: Option<&Change<'a>>) -> [Arg<'a>; 6] {
    match change {
        Some(c) => [
            Int(1),
            Text(c.event_id),
            Text(c.provider),
            Text(c.payload),
            OptText(c.caller),
            Text(c.source.name()),
        ],
        None => [
            Int(0),
            Text(""),
            Text(""),
            Text(""),
            OptText(None),
            Text(""),
        ],
    }
}

/// The row a statement must return.
pub(super) fn one<R>(row: Option<R>) -> Result<R, StoreError> {
    row.ok_or(StoreError::from(sqlx::Error::RowNotFound))
}

impl<DB: Backend> SqlStore<DB> {
    /// One write statement; how many rows it changed.
    async fn execute(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.writes.one(sql, args).await
    }

    /// One query on a pooled connection; its first row, if any.
    async fn fetch_optional(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<DB::Row>, StoreError> {
        Ok(DB::fetch_optional_pooled(&self.pool, sql, args).await?)
    }

    /// One query on a pooled connection; its rows.
    async fn fetch_all(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<DB::Row>, StoreError> {
        Ok(DB::fetch_all_pooled(&self.pool, sql, args).await?)
    }

    /// A conditional update of one key (`sql`, with the key's columns and `rest`) and, if it
    /// applied, its history entry and `then` (with the key's columns), in one transaction;
    /// whether it applied.
    async fn transition(
        &self,
        sql: &'static str,
        key: &Key,
        rest: &[Arg<'_>],
        note: (HistoryKind, &str),
        then: Option<&'static str>,
    ) -> Result<bool, StoreError> {
        let t = Transition {
            sql,
            args: key_args(key, rest).iter().map(ArgBuf::of).collect(),
            key: key.clone(),
            kind: note.0,
            detail: note.1.to_owned(),
            then,
        };
        self.writes.write(t).await
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
        note: (HistoryKind, &str),
    ) -> Result<Completion, StoreError> {
        let finish = Finish {
            sql,
            args: args.iter().map(ArgBuf::of).collect(),
            key: key.clone(),
            refund: refund.as_ref().map(RefundRowBuf::of),
            keep_ms,
            kind: note.0,
            detail: note.1.to_owned(),
        };
        self.writes.write(finish).await
    }
}

/// A key's transition and its history entry (see [`SqlStore::transition`]).
struct Transition {
    sql: &'static str,
    args: Vec<ArgBuf>,
    key: Key,
    kind: HistoryKind,
    detail: String,
    then: Option<&'static str>,
}

impl Write for Transition {
    type Out = bool;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<bool>, StoreError> {
        let args: Vec<Arg<'_>> = self.args.iter().map(ArgBuf::view).collect();
        if tx.execute(self.sql, &args).await? != 1 {
            return Ok(End::Commit(false));
        }
        record_history(tx, &self.key, self.kind, &self.detail).await?;
        if let Some(then) = self.then {
            tx.execute(then, &key_args(&self.key, &[])).await?;
        }
        Ok(End::Commit(true))
    }
}

/// A key's final state and what goes with it (see [`SqlStore::finish`]).
struct Finish {
    sql: &'static str,
    args: Vec<ArgBuf>,
    key: Key,
    refund: Option<RefundRowBuf>,
    keep_ms: i64,
    kind: HistoryKind,
    detail: String,
}

impl Write for Finish {
    type Out = Completion;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<Completion>, StoreError> {
        // The outcome, its history entry, the attribution, the payment's release and the
        // refund's state commit together, or not at all. A plain answer needs no history row:
        // the key's own row holds it (see `HistoryKind`).
        let args: Vec<Arg<'_>> = self.args.iter().map(ArgBuf::view).collect();
        if tx.execute(self.sql, &args).await? == 0 {
            return Ok(End::Rollback(Completion::LeaseLost));
        }
        if self.kind.is_recorded() {
            record_history(tx, &self.key, self.kind, &self.detail).await?;
        }
        let refund = self.refund.as_ref().map(RefundRowBuf::view);
        settled(tx, &self.key, refund, self.keep_ms).await
    }

    /// A completion with its plain answer (no history row), with a refund new to the store
    /// or none: `sql::COMPLETE_ONE`.
    fn one_statement(&self) -> Option<OneStatement<'_, Completion>> {
        if self.sql != s::COMPLETE || self.kind.is_recorded() {
            return None;
        }
        let mut args: Vec<Arg<'_>> = self.args.iter().map(ArgBuf::view).collect();
        let refund = self.refund.as_ref().map(RefundRowBuf::view);
        let change = refund.as_ref().and_then(|f| f.change);
        args.push(Int(refund.is_some().into()));
        args.extend(match &refund {
            Some(f) => [
                Text(f.account),
                Text(f.request_id),
                OptText(f.refund_id),
                Text(f.state),
                Text(f.record),
                OptText(f.payment_id),
            ],
            None => [
                Text(""),
                Text(""),
                OptText(None),
                Text(""),
                Text(""),
                OptText(None),
            ],
        });
        args.extend(change_args(change.as_ref()));
        Some(OneStatement {
            sql: s::COMPLETE_ONE,
            args,
            answer: |done| match done {
                1 => Completion::Done,
                _ => Completion::LeaseLost,
            },
        })
    }
}

/// Writes the attribution of a completed refund key; false if the refund is already
/// attributed to another key.
async fn attribute<T: Tx>(
    tx: &mut T,
    key: &Key,
    f: &RefundRow<'_>,
    keep_ms: i64,
) -> Result<bool, StoreError> {
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
    if tx.execute(s::ATTRIBUTE, &args).await? == 1 {
        return Ok(true);
    }
    let owner = one(tx
        .fetch_optional(s::ATTRIBUTED_TO, &[Text(f.account), Text(refund_id)])
        .await?)?;
    Ok(T::text(&owner, 0)? == key.caller && T::text(&owner, 1)? == key.request_id)
}

/// The rest of a key's completion, after its row became `done` in `tx`: the refund's
/// attribution (refused if another key owns it) and state, and the payment's release; kept,
/// or everything undone.
pub(super) async fn settled<T: Tx>(
    tx: &mut T,
    key: &Key,
    refund: Option<RefundRow<'_>>,
    keep_ms: i64,
) -> Result<End<Completion>, StoreError> {
    if let Some(f) = &refund {
        if !attribute(tx, key, f, keep_ms).await? {
            return Ok(End::Rollback(Completion::AttributedElsewhere));
        }
        let saved = save_refund(tx, f).await?;
        if let (Saved::Changed, Some(change)) = (&saved, &f.change) {
            emit(tx, f.account, change).await?;
        }
        if let Saved::Contradicts(recorded) = saved {
            // The provider answered this key's request with a state that a notification
            // already contradicted: the key keeps its answer, the refund its final state,
            // and a person is told.
            let id = format!("answer/{}/{}/{}", f.account, f.request_id, f.state);
            anomaly(tx, &id, "", "refund_answer", f, &recorded, f.record).await?;
            tracing::error!(account = f.account, request_id = f.request_id, recorded = %recorded,
                answered = f.state, "anomaly: a provider answer contradicts the refund's recorded final state");
            metrics::counter!("paygate_state_anomalies_total", "kind" => "refund_answer")
                .increment(1);
        }
    }
    tx.execute(s::RELEASE_PAYMENT, &key_args(key, &[])).await?;
    Ok(End::Commit(Completion::Done))
}

/// An operator's settle, owned (see [`super::KeyStore::settle`]).
#[derive(Debug)]
pub(super) struct SettleWrite {
    key: Key,
    outcome: String,
    keep_ms: i64,
    refund: Option<RefundRowBuf>,
    actor: String,
    reason: String,
    settled_as: String,
    refund_id: Option<String>,
    audit_id: String,
    detail: String,
}

impl SettleWrite {
    pub(super) fn of(s: &SettleKey<'_>) -> Self {
        Self {
            key: s.key.clone(),
            outcome: s.outcome.to_owned(),
            keep_ms: s.keep_ms,
            refund: s.refund.as_ref().map(RefundRowBuf::of),
            actor: s.actor.to_owned(),
            reason: s.reason.to_owned(),
            settled_as: s.settled_as.to_owned(),
            refund_id: s.refund_id.map(str::to_owned),
            audit_id: s.audit_id.to_owned(),
            detail: s.detail.to_owned(),
        }
    }
}

/// A key state as stored, or a `Decode` error.
pub(super) fn decode_state(name: &str) -> Result<KeyState, StoreError> {
    KeyState::parse(name).ok_or_else(|| StoreError::Decode(format!("unknown key state {name:?}")))
}

impl Write for SettleWrite {
    type Out = Settled;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<Settled>, StoreError> {
        let key = &self.key;
        let Some(row) = tx.fetch_optional(s::LOAD, &key_args(key, &[])).await? else {
            return Ok(End::Rollback(Settled::NotFound));
        };
        let before = decode_state(&T::text(&row, 1)?)?;
        let lease_live = T::int(&row, 4)? != 0;
        if !matches!(before, KeyState::Unknown | KeyState::Unresolved) {
            return Ok(End::Rollback(Settled::NotSettleable {
                state: before,
                lease_live,
            }));
        }
        // Still in the state read: an attempt that took the key over meanwhile wins.
        let args = key_args(
            key,
            &[
                Text(&self.outcome),
                Int(self.keep_ms),
                Text(before.as_str()),
            ],
        );
        if tx.execute(s::SETTLE, &args).await? != 1 {
            return Ok(End::Rollback(Settled::NotSettleable {
                state: KeyState::InFlight,
                lease_live: true,
            }));
        }
        record_history(tx, key, HistoryKind::Settled, &self.detail).await?;
        let account = self
            .refund
            .as_ref()
            .map(|r| r.view().account.to_owned())
            .unwrap_or_default();
        let claimed = tx
            .fetch_optional(s::CLAIM_OF_KEY, &key_args(key, &[]))
            .await?
            .map(|r| T::text(&r, 0))
            .transpose()?
            .unwrap_or(account);
        let audit = [
            Text(&self.audit_id),
            Text(&self.actor),
            Text("settle_key"),
            Text(&claimed),
            Text(&key.caller),
            Text(key.method),
            Text(&key.request_id),
            Text(&self.reason),
            Text(before.as_str()),
            Text(KeyState::Done.as_str()),
            Text(&self.settled_as),
            OptText(self.refund_id.as_deref()),
        ];
        tx.execute(s::INSERT_AUDIT, &audit).await?;
        let refund = self.refund.as_ref().map(RefundRowBuf::view);
        Ok(match settled(tx, key, refund, self.keep_ms).await? {
            End::Commit(_) => End::Commit(Settled::Done { before }),
            End::Rollback(Completion::AttributedElsewhere) => {
                End::Rollback(Settled::AttributedElsewhere)
            }
            End::Rollback(_) => End::Rollback(Settled::NotSettleable {
                state: before,
                lease_live,
            }),
        })
    }
}

/// A new key with its request-id claim and, for a refund without a provider key, its payment;
/// or, undone, why not.
struct InsertKey(NewKeyBuf);

impl Write for InsertKey {
    type Out = Inserted;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<Inserted>, StoreError> {
        let new = self.0.view();
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
        if tx.execute(s::INSERT, &args).await? == 0 {
            return Ok(End::Rollback(Inserted::Exists));
        }
        let claim = [Text(new.account), Text(key.method), Text(&key.request_id)];
        let mut args = claim.to_vec();
        args.extend([
            Text(&key.caller),
            Int(new.claim_keep_ms),
            OptText(new.payment_id),
        ]);
        let claimed = tx.execute(s::CLAIM_REQUEST, &args).await? == 1;
        // Claimed before: by this caller (its key purged since), or by another.
        let ours = claimed || {
            let row = one(tx.fetch_optional(s::CLAIMANT, &claim).await?)?;
            T::text(&row, 0)? == key.caller
        };
        if !ours {
            return Ok(End::Rollback(Inserted::Claimed));
        }
        if let Some(p) = new.payment {
            let args = key_args(key, &[Text(p.account), Text(p.payment_id)]);
            if tx.execute(s::CLAIM_PAYMENT, &args).await? == 0 {
                return Ok(End::Rollback(Inserted::PaymentBusy));
            }
        }
        // No history row: the key's own row says when it was created (see `HistoryKind`).
        Ok(End::Commit(Inserted::Created))
    }

    /// A key whose request id and payment are free: `sql::INSERT_KEY_ONE`.
    fn one_statement(&self) -> Option<OneStatement<'_, Inserted>> {
        let new = self.0.view();
        let key = new.key;
        let payment = new.payment.map_or([Text(""), Text("")], |p| {
            [Text(p.account), Text(p.payment_id)]
        });
        let mut args = key_args(
            key,
            &[
                Text(new.fingerprint),
                Text(new.token),
                Int(new.lease_ms),
                Text(new.instance),
                Text(new.account),
                Int(new.claim_keep_ms),
                OptText(new.payment_id),
                Int(new.payment.is_some().into()),
            ],
        );
        args.extend(payment);
        Some(OneStatement {
            sql: s::INSERT_KEY_ONE,
            args,
            answer: |created| match created {
                1 => Inserted::Created,
                _ => Inserted::Exists,
            },
        })
    }
}

/// Deletes a key by its lease token and releases its payment.
struct DeleteKey {
    key: Key,
    token: String,
}

impl Write for DeleteKey {
    type Out = bool;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<bool>, StoreError> {
        let key = &self.key;
        let deleted = tx
            .execute(s::DELETE, &key_args(key, &[Text(&self.token)]))
            .await?
            == 1;
        if deleted {
            tx.execute(s::RELEASE_PAYMENT, &key_args(key, &[])).await?;
            tx.execute(s::DELETE_HISTORY, &key_args(key, &[])).await?;
        }
        Ok(End::Commit(deleted))
    }
}

/// Applies an event's effect, forward only, and stores the event under the next sequence
/// number; nothing when an event with its id is stored already, when it reports an earlier
/// state, or when it contradicts a final state (then the report is an anomaly).
struct RecordEvent(EventRowBuf, EventEffectBuf);

impl Write for RecordEvent {
    type Out = EventRecorded;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<EventRecorded>, StoreError> {
        let (e, effect) = (self.0.view(), self.1.view());
        // Fresh by the store's clock, which every replica shares; events are kept at least
        // as long as the window, so within it a replay is a duplicate, and past it, stale.
        if let Some(at) = e.signed_at {
            let now = T::int(&one(tx.fetch_optional(s::NOW, &[]).await?)?, 0)?;
            if now - at > e.max_age_ms || at - now > NOTIFICATION_MAX_AHEAD_MS {
                return Ok(End::Rollback(EventRecorded::Stale));
            }
        }
        if tx
            .fetch_optional(s::EVENT_SEEN, &[Text(e.event_id)])
            .await?
            .is_some()
        {
            return Ok(End::Rollback(EventRecorded::Duplicate));
        }
        match effect {
            EventEffect::Refund(f) => match save_refund(tx, &f).await? {
                Saved::Contradicts(recorded) => {
                    let kind = "refund_notification";
                    anomaly(tx, e.event_id, e.provider, kind, &f, &recorded, e.payload).await?;
                    return Ok(End::Commit(EventRecorded::Contradicts { recorded }));
                }
                Saved::Changed => {}
                // The state it reports is recorded already (a Create's answer or an Inquire
                // told it first): no change, so no event.
                Saved::Completed => return Ok(End::Commit(EventRecorded::Duplicate)),
                Saved::Unchanged => return Ok(End::Rollback(EventRecorded::Duplicate)),
            },
            EventEffect::Subscription(sub) => {
                // A cancellation it reports went less far than the one recorded (a late
                // CANCEL after TERMINATE, Antom resending): nothing to change, no event.
                if let Some(reported) = sub.reported_stage {
                    let args = [Text(sub.account), Text(sub.subscription_id)];
                    let recorded = tx
                        .fetch_optional(s::SUBSCRIPTION_STAGE, &args)
                        .await?
                        .map(|r| T::int(&r, 0))
                        .transpose()?;
                    if recorded.is_some_and(|r| reported < r) {
                        return Ok(End::Rollback(EventRecorded::Superseded));
                    }
                }
                if tx
                    .execute(s::SAVE_SUBSCRIPTION, &subscription_args(&sub))
                    .await?
                    == 0
                {
                    return Ok(End::Rollback(EventRecorded::Superseded));
                }
            }
            EventEffect::None => {}
        }
        let seq = T::int(&one(tx.fetch_optional(s::NEXT_EVENT_SEQ, &[]).await?)?, 0)?;
        let args = [
            Int(seq),
            Text(e.event_id),
            Text(e.account),
            Text(e.provider),
            Text(e.kind),
            Text(e.payload),
            OptText(e.caller),
            Text(EventSource::Notification.name()),
        ];
        if tx.execute(s::INSERT_EVENT, &args).await? == 0 {
            return Ok(End::Rollback(EventRecorded::Duplicate));
        }
        Ok(End::Commit(EventRecorded::New(seq)))
    }
}

/// Takes or renews a relay's lease (see [`EventStore::relay_claim`]).
struct RelayClaim {
    name: String,
    instance: String,
    lease_ms: i64,
}

impl Write for RelayClaim {
    type Out = Option<i64>;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<Option<i64>>, StoreError> {
        let args = [Text(&self.name), Text(&self.instance), Int(self.lease_ms)];
        let row = tx.fetch_optional(s::RELAY_CLAIM, &args).await?;
        Ok(End::Commit(row.map(|r| T::int(&r, 0)).transpose()?))
    }
}

/// A refund's state, forward only, with the event of its change.
struct SaveRefund(RefundRowBuf);

impl Write for SaveRefund {
    type Out = ();

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<()>, StoreError> {
        let f = self.0.view();
        if let (Saved::Changed, Some(change)) = (save_refund(tx, &f).await?, &f.change) {
            emit(tx, f.account, change).await?;
        }
        Ok(End::Commit(()))
    }
}

/// What an Inquire learned of a refund still `Processing`, with the event of its change.
struct RefreshRefund(RefundRowBuf);

impl Write for RefreshRefund {
    type Out = bool;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<bool>, StoreError> {
        let f = self.0.view();
        let args = [
            Text(f.account),
            Text(f.request_id),
            OptText(f.refund_id),
            Text(f.state),
            Text(f.record),
        ];
        if tx.execute(s::REFRESH_REFUND, &args).await? == 0 {
            return Ok(End::Commit(false));
        }
        // From `Processing`: a change of state unless it is `Processing` again.
        if f.state != "Processing"
            && let Some(change) = &f.change
        {
            emit(tx, f.account, change).await?;
        }
        Ok(End::Commit(true))
    }
}

/// A subscription's state as an answer reported it, with the event of its change.
struct SaveSubscription(SubscriptionRowBuf);

impl Write for SaveSubscription {
    type Out = ();

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<()>, StoreError> {
        let sub = self.0.view();
        let key = [Text(sub.account), Text(sub.subscription_id)];
        let before = tx.fetch_optional(s::SUBSCRIPTION_STATE, &key).await?;
        let before = before
            .map(|r| Ok::<_, StoreError>((T::int(&r, 0)?, T::text(&r, 1)?)))
            .transpose()?;
        if tx
            .execute(s::SAVE_SUBSCRIPTION, &subscription_args(&sub))
            .await?
            == 0
        {
            return Ok(End::Commit(()));
        }
        let changed = before.is_none_or(|(stage, cancellation)| {
            stage != sub.stage || cancellation != sub.cancellation
        });
        if changed && let Some(change) = &sub.change {
            emit(tx, sub.account, change).await?;
        }
        Ok(End::Commit(()))
    }

    /// Always: `sql::SAVE_SUBSCRIPTION_ONE`.
    fn one_statement(&self) -> Option<OneStatement<'_, ()>> {
        let sub = self.0.view();
        let mut args = subscription_args(&sub).to_vec();
        args.extend(change_args(sub.change.as_ref()));
        Some(OneStatement {
            sql: s::SAVE_SUBSCRIPTION_ONE,
            args,
            answer: |_| (),
        })
    }
}

impl<DB: Backend> KeyStore for SqlStore<DB> {
    fn name(&self) -> &'static str {
        DB::STORE
    }

    fn admissions(&self) -> usize {
        match &self.writes {
            Writes::Pool(pool) => 2 * pool.options().get_max_connections() as usize,
            Writes::Group(_) => super::group::MAX_BATCH,
        }
    }

    fn now(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move { Ok(DB::int(&one(self.fetch_optional(s::NOW, &[]).await?)?, 0)?) })
    }

    fn insert<'a>(&'a self, new: NewKey<'a>) -> StoreFuture<'a, Inserted> {
        let insert = InsertKey(NewKeyBuf::of(&new));
        Box::pin(async move { self.writes.write(insert).await })
    }

    fn load<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<Row>> {
        Box::pin(async move {
            let row = self.fetch_optional(s::LOAD, &key_args(key, &[])).await?;
            let read = |r: &DB::Row| {
                let state = DB::text(r, 1)?;
                Ok::<_, sqlx::Error>(Row {
                    fingerprint: DB::text(r, 0)?,
                    state: KeyState::parse(&state).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown key state {state:?}").into())
                    })?,
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
            let rest = [Text(token), Int(lease_ms), Text(instance)];
            let detail = format!("by instance {instance}");
            let note = (HistoryKind::TakenOver, detail.as_str());
            self.transition(s::TAKE_OVER, key, &rest, note, None).await
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

    fn begin_send<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        window_ms: i64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let rest = [Text(token), Int(window_ms)];
            let detail = format!("may leave for {window_ms} ms");
            let note = (HistoryKind::Sent, detail.as_str());
            self.transition(s::BEGIN_SEND, key, &rest, note, None).await
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        outcome: &'a str,
        keep_ms: i64,
        refund: Option<RefundRow<'a>>,
        note: Note<'a>,
    ) -> StoreFuture<'a, Completion> {
        Box::pin(async move {
            let args = key_args(key, &[Text(token), Text(outcome), Int(keep_ms)]);
            let note = (note.kind, note.detail);
            self.finish(s::COMPLETE, &args, key, refund, keep_ms, note)
                .await
        })
    }

    fn mark_unknown<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        why: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let note = (HistoryKind::Unknown, why);
            self.transition(s::MARK_UNKNOWN, key, &[Text(token)], note, None)
                .await
        })
    }

    fn mark_unknown_after_send<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        why: &'a str,
    ) -> StoreFuture<'a, bool> {
        // Nothing of the attempt's request leaves after now: the payment's last send time
        // comes back to now.
        Box::pin(async move {
            let note = (HistoryKind::Unknown, why);
            let end = Some(s::END_SEND);
            self.transition(s::MARK_UNKNOWN, key, &[Text(token)], note, end)
                .await
        })
    }

    fn mark_unresolved<'a>(
        &'a self,
        key: &'a Key,
        token: &'a str,
        why: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let note = (HistoryKind::Unresolved, why);
            self.transition(s::MARK_UNRESOLVED, key, &[Text(token)], note, None)
                .await
        })
    }

    fn settle<'a>(&'a self, settle: SettleKey<'a>) -> StoreFuture<'a, Settled> {
        let write = SettleWrite::of(&settle);
        Box::pin(async move { self.writes.write(write).await })
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
        let delete = DeleteKey {
            key: key.clone(),
            token: token.to_owned(),
        };
        Box::pin(async move { self.writes.write(delete).await })
    }

    fn needing_attention(&self) -> StoreFuture<'_, Vec<Attention>> {
        Box::pin(async move {
            let rows = self.fetch_all(s::NEEDING_ATTENTION, &[]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let state = DB::text(r, 1)?;
                out.push(Attention {
                    account: DB::text(r, 0)?,
                    state: KeyState::parse(&state).ok_or_else(|| {
                        StoreError::Decode(format!("unknown key state {state:?}"))
                    })?,
                    count: DB::int(r, 2)?,
                    oldest_at: DB::int(r, 3)?,
                    now: DB::int(r, 4)?,
                });
            }
            Ok(out)
        })
    }

    fn purge(&self, keep: Retention) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let retention = [Int(keep.keys_ms)];
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
            n += self
                .execute(s::PURGE_ANOMALIES, &[Int(keep.anomalies_ms)])
                .await?;
            self.execute(s::MARK_EVENTS_PURGED, &[Int(keep.events_ms)])
                .await?;
            n += self.execute(s::PURGE_EVENTS, &[]).await?;
            // The histories of purged keys (not counted: they go with their keys).
            self.execute(s::PURGE_HISTORY, &[]).await?;
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
        let save = SaveRefund(RefundRowBuf::of(&f));
        Box::pin(async move { self.writes.write(save).await })
    }

    fn refresh_refund<'a>(&'a self, f: RefundRow<'a>) -> StoreFuture<'a, bool> {
        let refresh = RefreshRefund(RefundRowBuf::of(&f));
        Box::pin(async move { self.writes.write(refresh).await })
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
    ) -> StoreFuture<'a, EventRecorded> {
        let record = RecordEvent(EventRowBuf::of(&e), EventEffectBuf::of(&effect));
        Box::pin(async move { self.writes.write(record).await })
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
                    source: EventSource::parse(&DB::text(r, 8)?),
                })
            };
            Ok(rows.iter().map(read).collect::<Result<_, _>>()?)
        })
    }

    fn relay_claim<'a>(
        &'a self,
        name: &'a str,
        instance: &'a str,
        lease_ms: i64,
    ) -> StoreFuture<'a, Option<i64>> {
        let claim = RelayClaim {
            name: name.to_owned(),
            instance: instance.to_owned(),
            lease_ms,
        };
        Box::pin(async move { self.writes.write(claim).await })
    }

    fn relay_advance<'a>(
        &'a self,
        name: &'a str,
        instance: &'a str,
        seq: i64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let args = [Text(name), Text(instance), Int(seq)];
            Ok(self.execute(s::RELAY_ADVANCE, &args).await? == 1)
        })
    }

    fn relay_lag<'a>(&'a self, name: &'a str) -> StoreFuture<'a, RelayLag> {
        Box::pin(async move {
            let row = one(self.fetch_optional(s::RELAY_LAG, &[Text(name)]).await?)?;
            let through = DB::int(&row, 0)?;
            let last = DB::opt_int(&row, 1)?.unwrap_or(0);
            Ok(RelayLag {
                events: (last - through).max(0),
                oldest_at: DB::opt_int(&row, 2)?,
                now: DB::int(&row, 3)?,
            })
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
        let save = SaveSubscription(SubscriptionRowBuf::of(&sub));
        Box::pin(async move { self.writes.write(save).await })
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
