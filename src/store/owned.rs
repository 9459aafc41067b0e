//! Owned copies of the rows a write borrows, so that a write can run after its caller handed
//! it over (see `writer.rs`). Each has `of` (copy a row) and `view` (the row again).

use super::rows::{
    Change, EventEffect, EventRow, EventSource, Key, NewKey, PaymentClaim, RefundRow,
    SubscriptionRow,
};

fn own(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// An owned [`PaymentClaim`].
#[derive(Debug)]
pub(super) struct PaymentClaimBuf {
    account: String,
    payment_id: String,
}

impl PaymentClaimBuf {
    pub(super) fn of(p: &PaymentClaim<'_>) -> Self {
        Self {
            account: p.account.to_owned(),
            payment_id: p.payment_id.to_owned(),
        }
    }

    pub(super) fn view(&self) -> PaymentClaim<'_> {
        PaymentClaim {
            account: &self.account,
            payment_id: &self.payment_id,
        }
    }
}

/// An owned [`NewKey`].
#[derive(Debug)]
pub(super) struct NewKeyBuf {
    key: Key,
    account: String,
    claim_keep_ms: i64,
    payment_id: Option<String>,
    fingerprint: String,
    token: String,
    lease_ms: i64,
    instance: String,
    payment: Option<PaymentClaimBuf>,
}

impl NewKeyBuf {
    pub(super) fn of(n: &NewKey<'_>) -> Self {
        Self {
            key: n.key.clone(),
            account: n.account.to_owned(),
            claim_keep_ms: n.claim_keep_ms,
            payment_id: own(n.payment_id),
            fingerprint: n.fingerprint.to_owned(),
            token: n.token.to_owned(),
            lease_ms: n.lease_ms,
            instance: n.instance.to_owned(),
            payment: n.payment.as_ref().map(PaymentClaimBuf::of),
        }
    }

    pub(super) fn view(&self) -> NewKey<'_> {
        NewKey {
            key: &self.key,
            account: &self.account,
            claim_keep_ms: self.claim_keep_ms,
            payment_id: self.payment_id.as_deref(),
            fingerprint: &self.fingerprint,
            token: &self.token,
            lease_ms: self.lease_ms,
            instance: &self.instance,
            payment: self.payment.as_ref().map(PaymentClaimBuf::view),
        }
    }
}

/// An owned [`RefundRow`].
#[derive(Debug)]
pub(super) struct RefundRowBuf {
    account: String,
    request_id: String,
    payment_id: Option<String>,
    refund_id: Option<String>,
    state: String,
    record: String,
    change: Option<ChangeBuf>,
}

impl RefundRowBuf {
    pub(super) fn of(f: &RefundRow<'_>) -> Self {
        Self {
            account: f.account.to_owned(),
            request_id: f.request_id.to_owned(),
            payment_id: own(f.payment_id),
            refund_id: own(f.refund_id),
            state: f.state.to_owned(),
            record: f.record.to_owned(),
            change: f.change.as_ref().map(ChangeBuf::of),
        }
    }

    pub(super) fn view(&self) -> RefundRow<'_> {
        RefundRow {
            account: &self.account,
            request_id: &self.request_id,
            payment_id: self.payment_id.as_deref(),
            refund_id: self.refund_id.as_deref(),
            state: &self.state,
            record: &self.record,
            change: self.change.as_ref().map(ChangeBuf::view),
        }
    }
}

/// An owned [`Change`].
#[derive(Debug)]
pub(super) struct ChangeBuf {
    event_id: String,
    provider: String,
    source: EventSource,
    payload: String,
    caller: Option<String>,
}

impl ChangeBuf {
    pub(super) fn of(c: &Change<'_>) -> Self {
        Self {
            event_id: c.event_id.to_owned(),
            provider: c.provider.to_owned(),
            source: c.source,
            payload: c.payload.to_owned(),
            caller: own(c.caller),
        }
    }

    pub(super) fn view(&self) -> Change<'_> {
        Change {
            event_id: &self.event_id,
            provider: &self.provider,
            source: self.source,
            payload: &self.payload,
            caller: self.caller.as_deref(),
        }
    }
}

/// An owned [`SubscriptionRow`].
#[derive(Debug)]
pub(super) struct SubscriptionRowBuf {
    account: String,
    subscription_id: String,
    subscription_request_id: Option<String>,
    cancellation: String,
    record: String,
    stage: i64,
    reported_stage: Option<i64>,
    change: Option<ChangeBuf>,
}

impl SubscriptionRowBuf {
    pub(super) fn of(s: &SubscriptionRow<'_>) -> Self {
        Self {
            account: s.account.to_owned(),
            subscription_id: s.subscription_id.to_owned(),
            subscription_request_id: own(s.subscription_request_id),
            cancellation: s.cancellation.to_owned(),
            record: s.record.to_owned(),
            stage: s.stage,
            reported_stage: s.reported_stage,
            change: s.change.as_ref().map(ChangeBuf::of),
        }
    }

    pub(super) fn view(&self) -> SubscriptionRow<'_> {
        SubscriptionRow {
            account: &self.account,
            subscription_id: &self.subscription_id,
            subscription_request_id: self.subscription_request_id.as_deref(),
            cancellation: &self.cancellation,
            record: &self.record,
            stage: self.stage,
            reported_stage: self.reported_stage,
            change: self.change.as_ref().map(ChangeBuf::view),
        }
    }
}

/// An owned [`EventRow`].
#[derive(Debug)]
pub(super) struct EventRowBuf {
    event_id: String,
    account: String,
    provider: String,
    kind: String,
    payload: String,
    caller: Option<String>,
    signed_at: Option<i64>,
    max_age_ms: i64,
}

impl EventRowBuf {
    pub(super) fn of(e: &EventRow<'_>) -> Self {
        Self {
            event_id: e.event_id.to_owned(),
            account: e.account.to_owned(),
            provider: e.provider.to_owned(),
            kind: e.kind.to_owned(),
            payload: e.payload.to_owned(),
            caller: own(e.caller),
            signed_at: e.signed_at,
            max_age_ms: e.max_age_ms,
        }
    }

    pub(super) fn view(&self) -> EventRow<'_> {
        EventRow {
            event_id: &self.event_id,
            account: &self.account,
            provider: &self.provider,
            kind: &self.kind,
            payload: &self.payload,
            caller: self.caller.as_deref(),
            signed_at: self.signed_at,
            max_age_ms: self.max_age_ms,
        }
    }
}

/// An owned [`EventEffect`].
#[derive(Debug)]
pub(super) enum EventEffectBuf {
    None,
    Refund(RefundRowBuf),
    Subscription(SubscriptionRowBuf),
}

impl EventEffectBuf {
    pub(super) fn of(e: &EventEffect<'_>) -> Self {
        match e {
            EventEffect::None => Self::None,
            EventEffect::Refund(f) => Self::Refund(RefundRowBuf::of(f)),
            EventEffect::Subscription(s) => Self::Subscription(SubscriptionRowBuf::of(s)),
        }
    }

    pub(super) fn view(&self) -> EventEffect<'_> {
        match self {
            Self::None => EventEffect::None,
            Self::Refund(f) => EventEffect::Refund(f.view()),
            Self::Subscription(s) => EventEffect::Subscription(s.view()),
        }
    }
}
