//! Provider events: verified notifications stored once each, numbered in the order they were
//! stored, together with what they change (a refund's final state, a subscription's confirmed
//! cancellation); and the reading side `EventService.Watch` streams from. Everything lives in
//! the store, so every replica sees every event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::{CancellationStatus, Notice, Notification, RefundRecord, SubscriptionRecord};
use crate::idempotency::{Idempotency, state_name};
use crate::store::{
    Change, EventEffect, EventRecorded, EventRow, EventSource, EventStore, RefundRow, StoreError,
    SubscriptionRow, SubscriptionStore,
};

/// What storing a notification did.
pub(crate) use crate::store::EventRecorded as Recorded;

/// A stored event, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// Its position.
    pub seq: i64,
    /// `<provider>/<account>/<what>`: the same for every delivery of the same notification.
    pub event_id: String,
    /// Provider account.
    pub account: String,
    /// Provider name.
    pub provider: String,
    /// The provider's notification type.
    pub kind: String,
    /// What it reports.
    pub notice: Notice,
    /// When it was stored (Unix ms).
    pub received_at: i64,
    /// The caller whose request it concerns, when known (a refund's claimant); events
    /// without one concern the account as a whole.
    pub caller: Option<String>,
    /// Where it comes from.
    pub source: EventSource,
}

/// How often a process with watchers reads the store's event counter, to learn of events
/// stored by other replicas. Events stored by this process are known at once.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(250);

/// A read of the event log.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// The events read.
    pub events: Vec<Event>,
    /// How many rows the store returned (unreadable ones included).
    pub rows: usize,
    /// The number of the last row returned.
    pub last: Option<i64>,
}

/// The event log and the subscription states, over the store.
#[derive(Clone)]
pub(crate) struct Events {
    /// Reads of the keys (a refund's recorded state, a request id's claimant).
    idempotency: Idempotency,
    log: Arc<dyn EventStore>,
    subscriptions: Arc<dyn SubscriptionStore>,
    /// The highest event number known to be stored; watchers wait for it to pass their cursor.
    head: watch::Sender<i64>,
    /// Whether the counter poller runs; it runs while anyone watches `head`.
    polling: Arc<Mutex<bool>>,
}

fn cancellation_name(c: Option<CancellationStatus>) -> &'static str {
    match c {
        None => "None",
        Some(CancellationStatus::Accepted) => "Accepted",
        Some(CancellationStatus::Confirmed) => "Confirmed",
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Over the store of `idempotency`.
    pub(crate) fn new(idempotency: Idempotency) -> Self {
        let store = idempotency.store().clone();
        Self {
            idempotency,
            log: store.clone(),
            subscriptions: store,
            head: watch::Sender::new(0),
            polling: Arc::new(Mutex::new(false)),
        }
    }

    /// The highest stored event number, kept current for as long as the receiver lives: one
    /// read of the store's counter per [`POLL_EVERY`] for the whole process, however many
    /// watchers there are.
    pub(crate) fn head(&self) -> watch::Receiver<i64> {
        let mut polling = self.polling.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = self.head.subscribe();
        if !*polling {
            *polling = true;
            tokio::spawn(self.clone().poll());
        }
        receiver
    }

    async fn poll(self) {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            {
                // Checked under the lock `head()` subscribes under, so no watcher is left
                // without a poller.
                let mut polling = self.polling.lock().unwrap_or_else(|e| e.into_inner());
                if self.head.receiver_count() == 0 {
                    *polling = false;
                    return;
                }
            }
            match self.log.event_counter().await {
                Ok((last, _)) => self.advance(last),
                Err(e) => tracing::warn!(error = %e, "cannot read the event counter"),
            }
        }
    }

    fn advance(&self, seq: i64) {
        self.head.send_if_modified(|h| {
            let newer = seq > *h;
            if newer {
                *h = seq;
            }
            newer
        });
    }

    /// Stores a verified notification of `provider` for `account` once, with its effect,
    /// unless it was signed longer than `max_age` ago (by the store's clock).
    pub(crate) async fn record(
        &self,
        account: &str,
        provider: &str,
        n: &Notification,
        max_age: Duration,
    ) -> Result<Recorded, StoreError> {
        let event_id = format!("{provider}/{account}/{}", n.event_id);
        // The event carries the merged state, so a watcher sees the refund or subscription as
        // a whole (its payment, its merchant id), not just the notification's fields.
        let mut caller = None;
        let stored = match &n.notice {
            Notice::Refund(r) => {
                let request_id = r.request_id.as_deref().unwrap_or_default();
                let known = self.idempotency.latest_refund(account, request_id).await?;
                // The claim names the caller and the payment even when the notification
                // outran the Create's answer.
                let claim = self
                    .idempotency
                    .claimant(account, crate::idempotency::CREATE_REFUND, request_id)
                    .await?;
                let mut merged = finalized(known, r);
                if let Some((owner, payment)) = claim {
                    merged.payment_id = merged.payment_id.or(payment);
                    caller = Some(owner);
                }
                Notice::Refund(merged)
            }
            Notice::Subscription(s) => {
                let known = self.known(account, s).await?;
                Notice::Subscription(known.map_or_else(|| s.clone(), |k| k.merged(s)))
            }
            payment @ Notice::SubscriptionPayment(_) => payment.clone(),
        };
        let payload = serde_json::to_string(&stored).unwrap_or_default();
        let record = match &stored {
            Notice::Refund(r) => serde_json::to_string(r),
            Notice::Subscription(s) => serde_json::to_string(s),
            Notice::SubscriptionPayment(_) => Ok(String::new()),
        }
        .unwrap_or_default();
        let effect = match &stored {
            Notice::Refund(r) => EventEffect::Refund(RefundRow {
                account,
                request_id: r.request_id.as_deref().unwrap_or_default(),
                payment_id: None,
                refund_id: r.refund_id.as_deref(),
                state: state_name(r.state),
                record: &record,
                change: None,
            }),
            Notice::Subscription(s) => EventEffect::Subscription(SubscriptionRow {
                account,
                subscription_id: &s.subscription_id,
                subscription_request_id: s.subscription_request_id.as_deref(),
                cancellation: cancellation_name(s.cancellation),
                record: &record,
                stage: s.stage(),
                reported_stage: match &n.notice {
                    Notice::Subscription(reported) if reported.cancellation.is_some() => {
                        Some(reported.stage())
                    }
                    _ => None,
                },
                change: None,
            }),
            Notice::SubscriptionPayment(_) => EventEffect::None,
        };
        let row = EventRow {
            event_id: &event_id,
            account,
            provider,
            kind: &n.provider_event_type,
            payload: &payload,
            caller: caller.as_deref(),
            signed_at: n.signed_at,
            max_age_ms: max_age.as_millis() as i64,
        };
        let recorded = self.log.record_event(row, effect).await?;
        if let EventRecorded::New(seq) = recorded {
            self.advance(seq);
        }
        Ok(recorded)
    }

    /// Up to `limit` stored events after `seq`, oldest first. Events whose payload cannot be
    /// read (written by a newer gateway) are skipped with a warning, but still count in
    /// `Batch::rows` and `Batch::last`.
    pub(crate) async fn after(&self, seq: i64, limit: i64) -> Result<Batch, StoreError> {
        let rows = self.log.events_after(seq, limit).await?;
        let count = rows.len();
        let last = rows.last().map(|r| r.seq);
        let events = rows
            .into_iter()
            .filter_map(|r| match serde_json::from_str(&r.payload) {
                Ok(notice) => Some(Event {
                    seq: r.seq,
                    event_id: r.event_id,
                    account: r.account,
                    provider: r.provider,
                    kind: r.kind,
                    notice,
                    received_at: r.received_at,
                    caller: r.caller,
                    source: r.source,
                }),
                Err(e) => {
                    tracing::warn!(seq = r.seq, error = %e, "skipping an event this gateway cannot read");
                    None
                }
            })
            .collect();
        Ok(Batch {
            events,
            rows: count,
            last,
        })
    }

    /// The highest sequence number given out, and the highest purged (0 = none).
    pub(crate) async fn counter(&self) -> Result<(i64, i64), StoreError> {
        self.log.event_counter().await
    }

    /// Records what a Cancel answer of `provider` says about a subscription, with the event
    /// of its change (concerning `caller`, when known). The write is conditional on the stage,
    /// so an answer that raced a further-gone notification (TERMINATE) changes nothing.
    pub(crate) async fn record_cancel(
        &self,
        account: &str,
        provider: &str,
        caller: Option<&str>,
        s: &SubscriptionRecord,
    ) {
        let result = async {
            let merged = match self.known(account, s).await? {
                Some(known) => known.merged(s),
                None => s.clone(),
            };
            let json = serde_json::to_string(&merged).unwrap_or_default();
            let cancellation = cancellation_name(merged.cancellation);
            let stage = merged.stage();
            // One event per change: the stage only moves forward.
            let event_id = format!(
                "{provider}/{account}/subscription/{}/{cancellation}-{stage}",
                s.subscription_id
            );
            let payload =
                serde_json::to_string(&Notice::Subscription(merged.clone())).unwrap_or_default();
            self.subscriptions
                .save_subscription(SubscriptionRow {
                    account,
                    subscription_id: &s.subscription_id,
                    subscription_request_id: s.subscription_request_id.as_deref(),
                    cancellation,
                    record: &json,
                    stage,
                    reported_stage: None,
                    change: Some(Change {
                        event_id: &event_id,
                        provider,
                        source: EventSource::Answer,
                        payload: &payload,
                        caller,
                    }),
                })
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record a subscription's state");
        }
    }

    /// What is known of `s`'s subscription.
    async fn known(
        &self,
        account: &str,
        s: &SubscriptionRecord,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        Ok(self
            .subscription(account, &s.subscription_id, "")
            .await?
            .map(|(known, _)| known))
    }

    /// The latest known state of a subscription and when it was learned (Unix ms), by
    /// subscription id or, when that is empty, by the merchant's subscription id.
    pub(crate) async fn subscription(
        &self,
        account: &str,
        subscription_id: &str,
        subscription_request_id: &str,
    ) -> Result<Option<(SubscriptionRecord, i64)>, StoreError> {
        let row = self
            .subscriptions
            .load_subscription(account, subscription_id, subscription_request_id)
            .await?;
        Ok(row.and_then(|(json, at)| serde_json::from_str(&json).ok().map(|r| (r, at))))
    }
}

/// The recorded refund moved to the notified final state, keeping what only the Create knew.
fn finalized(known: Option<RefundRecord>, notified: &RefundRecord) -> RefundRecord {
    let Some(known) = known else {
        return notified.clone();
    };
    RefundRecord {
        refund_id: notified.refund_id.clone().or(known.refund_id),
        request_id: notified.request_id.clone().or(known.request_id),
        payment_id: known.payment_id.or_else(|| notified.payment_id.clone()),
        amount: known.amount.or_else(|| notified.amount.clone()),
        state: notified.state,
        refund_time: notified.refund_time.or(known.refund_time),
        reference_refund_id: known.reference_refund_id,
        result: notified.result.clone(),
    }
}
