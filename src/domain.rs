//! Provider-neutral values: what the gateway asks of a provider and what it learns back.
//! The gRPC layer converts to and from these; providers never see protobuf types and the
//! services never see a provider's JSON.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tonic_types::FieldViolation;

/// An amount in the minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// ISO 4217 alphabetic code, upper case.
    pub currency: String,
    /// Amount in minor units; positive in requests.
    pub value: i64,
}

/// How a subscription is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancellationType {
    /// No service after the current paid period.
    Cancel,
    /// Stop now.
    Terminate,
}

/// Where a cancellation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancellationStatus {
    /// The provider accepted the cancellation; confirmation comes later.
    Accepted,
    /// The provider confirmed the cancellation.
    Confirmed,
}

/// A validated request to cancel a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CancelSubscription {
    /// The caller's idempotency key.
    pub request_id: String,
    /// The provider's subscription id, if given.
    pub subscription_id: Option<String>,
    /// The merchant's subscription request id, if given.
    pub subscription_request_id: Option<String>,
    /// How to cancel.
    pub cancellation_type: CancellationType,
    /// Provider cancel-reason code (PayXpert), if given.
    #[serde(default)]
    pub cancel_reason: Option<u16>,
}

/// When a cancellation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancellationEffect {
    /// Now.
    Immediate,
    /// At the end of the paid period.
    EndOfPeriod,
}

/// What a provider said about a cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOutcome {
    /// Where the cancellation stands.
    pub status: CancellationStatus,
    /// The provider's raw result.
    pub result: ProviderResult,
    /// When it takes effect, if known.
    #[serde(default)]
    pub effect: Option<CancellationEffect>,
    /// The subscription's state as the provider reported it.
    #[serde(default)]
    pub subscription_state: Option<String>,
    /// When the subscription ends or ended, if the provider said.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub cancel_time: Option<OffsetDateTime>,
    /// The reason code sent.
    #[serde(default)]
    pub cancel_reason: Option<u16>,
}

/// A validated request to refund a payment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CreateRefund {
    /// The caller's idempotency key; Antom's refundRequestId.
    pub request_id: String,
    /// The provider's payment id.
    pub payment_id: String,
    /// Amount to refund.
    pub amount: Money,
    /// Reason shown to the payer, if any.
    pub reason: Option<String>,
    /// The caller's own refund reference, if any.
    pub reference_refund_id: Option<String>,
    /// Also cancel the subscription tied to the payment (PayXpert).
    #[serde(default)]
    pub cancel_subscription: bool,
}

/// A validated request to read a refund. At least one of the two ids is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InquireRefund {
    /// The provider's refund id.
    pub refund_id: Option<String>,
    /// The request id the refund was created with.
    pub request_id: Option<String>,
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundState {
    /// Done.
    Succeeded,
    /// Accepted, still being processed by the provider.
    Processing,
    /// Failed at the provider; nothing was refunded.
    Failed,
}

/// A refund as a provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    /// The provider's refund id, once assigned.
    pub refund_id: Option<String>,
    /// The request id the refund was created with.
    pub request_id: Option<String>,
    /// The refunded payment.
    pub payment_id: Option<String>,
    /// The refunded amount.
    pub amount: Option<Money>,
    /// Where it stands.
    pub state: RefundState,
    /// When it reached that state, if the provider said.
    #[serde(with = "time::serde::rfc3339::option")]
    pub refund_time: Option<OffsetDateTime>,
    /// The caller's reference, if one was given.
    pub reference_refund_id: Option<String>,
    /// The provider's raw result for the call that produced this record.
    pub result: ProviderResult,
}

/// The provider's raw answer, kept for support and reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderResult {
    /// Provider name, e.g. `antom`.
    pub provider: String,
    /// Provider result code.
    pub code: String,
    /// Provider result status (`S`, `F`, `U` for Antom).
    pub status: String,
    /// Provider message.
    pub message: String,
}

/// What the gateway knows of a subscription: Cancel answers and provider notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubscriptionRecord {
    /// The provider's subscription id.
    pub subscription_id: String,
    /// The merchant's subscription id, when known.
    #[serde(default)]
    pub subscription_request_id: Option<String>,
    /// Where its cancellation stands; `None` when no cancellation is known.
    #[serde(default)]
    pub cancellation: Option<CancellationStatus>,
    /// How it was cancelled, when known.
    #[serde(default)]
    pub cancellation_type: Option<CancellationType>,
    /// Its state as the provider last reported it.
    #[serde(default)]
    pub state: Option<String>,
    /// The provider's last notification type for it.
    #[serde(default)]
    pub last_notification_type: Option<String>,
    /// When it ends or ended, if the provider said.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end_time: Option<OffsetDateTime>,
}

impl SubscriptionRecord {
    /// How far its cancellation has gone: 0 none, 1 cancel accepted, 2 cancel confirmed,
    /// 3 terminate accepted, 4 terminated. It only ever goes up: TERMINATE dominates CANCEL,
    /// and a confirmation dominates an acceptance.
    pub fn stage(&self) -> i64 {
        let terminate = self.cancellation_type == Some(CancellationType::Terminate)
            || self
                .state
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("TERMINATED"));
        match (self.cancellation, terminate) {
            (None, false) => 0,
            (Some(CancellationStatus::Accepted), false) => 1,
            (Some(CancellationStatus::Confirmed), false) => 2,
            (Some(CancellationStatus::Accepted), true) => 3,
            (Some(CancellationStatus::Confirmed), true) | (None, true) => 4,
        }
    }

    /// This record with what `newer` adds. The one whose cancellation went further (its
    /// [`stage`](Self::stage)) decides the cancellation, its type, state and end; the other
    /// only fills what it lacks. So a late CANCEL never replaces a TERMINATE, and an
    /// acceptance never downgrades a confirmation, in whatever order they arrive.
    pub fn merged(&self, newer: &SubscriptionRecord) -> SubscriptionRecord {
        let (wins, fills) = if newer.stage() < self.stage() {
            (self, newer)
        } else {
            (newer, self)
        };
        SubscriptionRecord {
            subscription_id: newer.subscription_id.clone(),
            subscription_request_id: newer
                .subscription_request_id
                .clone()
                .or_else(|| self.subscription_request_id.clone()),
            cancellation: wins.cancellation.or(fills.cancellation),
            cancellation_type: wins.cancellation_type.or(fills.cancellation_type),
            state: wins.state.clone().or_else(|| fills.state.clone()),
            last_notification_type: newer
                .last_notification_type
                .clone()
                .or_else(|| self.last_notification_type.clone()),
            end_time: wins.end_time.or(fills.end_time),
        }
    }
}

/// A subscription period's charge, as a provider reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionPayment {
    /// The provider's subscription id.
    pub subscription_id: String,
    /// The merchant's subscription id.
    pub subscription_request_id: Option<String>,
    /// The period's payment id.
    pub payment_id: String,
    /// The amount charged.
    pub amount: Option<Money>,
    /// Whether the charge succeeded.
    pub succeeded: bool,
    /// The period's number.
    pub phase: Option<String>,
    /// The period's start.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub period_start: Option<OffsetDateTime>,
    /// The period's end.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub period_end: Option<OffsetDateTime>,
    /// When it was paid.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub payment_time: Option<OffsetDateTime>,
    /// The provider's raw result.
    pub result: ProviderResult,
}

/// What a verified provider notification reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// A refund reached a final state.
    Refund(RefundRecord),
    /// A subscription changed.
    Subscription(SubscriptionRecord),
    /// A subscription period was charged.
    SubscriptionPayment(SubscriptionPayment),
}

/// A verified provider notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Identifies what it reports within its account, the same for every delivery of it
    /// (e.g. `refund/<refund id>/SUCCESS`).
    pub event_id: String,
    /// The provider's name for the notification (REFUND_RESULT, CANCEL, PAYMENT_RESULT...).
    pub provider_event_type: String,
    /// What it reports.
    pub notice: Notice,
    /// When the provider signed it (Unix ms), when its signature covers a time.
    #[serde(default)]
    pub signed_at: Option<i64>,
}

/// What settling an earlier attempt may use: on providers without a key, when the key's
/// first attempt started (store clock, Unix ms) and the refunds already attributed to other
/// keys on the payment.
#[derive(Debug, Clone, Default)]
pub struct Reconcile {
    /// When the key's first attempt started.
    pub since_ms: Option<i64>,
    /// Refund ids attributed to keys on the payment.
    pub known: Vec<String>,
}

/// Collects field violations.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records that `field` breaks a rule.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// The violations so far.
    pub fn as_slice(&self) -> &[FieldViolation] {
        &self.0
    }

    /// True when no rule was broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations, in the order they were found.
    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_cancellation_is_never_downgraded_and_known_fields_stay() {
        let confirmed = SubscriptionRecord {
            subscription_id: "S".into(),
            subscription_request_id: Some("R".into()),
            cancellation: Some(CancellationStatus::Confirmed),
            cancellation_type: Some(CancellationType::Terminate),
            state: Some("TERMINATED".into()),
            last_notification_type: Some("TERMINATE".into()),
            end_time: None,
        };
        let late_accept = SubscriptionRecord {
            subscription_id: "S".into(),
            cancellation: Some(CancellationStatus::Accepted),
            cancellation_type: Some(CancellationType::Terminate),
            ..Default::default()
        };
        let m = confirmed.merged(&late_accept);
        assert_eq!(m.cancellation, Some(CancellationStatus::Confirmed));
        assert_eq!(m.subscription_request_id.as_deref(), Some("R"));
        assert_eq!(m.state.as_deref(), Some("TERMINATED"));
        assert_eq!(m.last_notification_type.as_deref(), Some("TERMINATE"));

        let accepted = SubscriptionRecord {
            cancellation: Some(CancellationStatus::Accepted),
            ..late_accept.clone()
        };
        let update = SubscriptionRecord {
            subscription_id: "S".into(),
            last_notification_type: Some("UPDATE".into()),
            ..Default::default()
        };
        let m = accepted.merged(&update);
        assert_eq!(m.cancellation, Some(CancellationStatus::Accepted));
        assert_eq!(m.last_notification_type.as_deref(), Some("UPDATE"));
        assert_eq!(
            accepted.merged(&confirmed).cancellation,
            Some(CancellationStatus::Confirmed)
        );
    }

    #[test]
    fn a_later_unconfirmed_request_does_not_replace_a_confirmed_terminate() {
        let end = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let terminated = SubscriptionRecord {
            subscription_id: "S".into(),
            cancellation: Some(CancellationStatus::Confirmed),
            cancellation_type: Some(CancellationType::Terminate),
            state: Some("TERMINATED".into()),
            end_time: Some(end),
            ..Default::default()
        };
        let later_cancel = SubscriptionRecord {
            subscription_id: "S".into(),
            cancellation: Some(CancellationStatus::Accepted),
            cancellation_type: Some(CancellationType::Cancel),
            state: Some("ACTIVE".into()),
            end_time: Some(end + time::Duration::days(30)),
            ..Default::default()
        };
        let m = terminated.merged(&later_cancel);
        assert_eq!(m.cancellation_type, Some(CancellationType::Terminate));
        assert_eq!(m.end_time, Some(end));
        assert_eq!(m.state.as_deref(), Some("TERMINATED"));
        // Nor does a late confirmation of a CANCEL: TERMINATE dominates CANCEL.
        let confirmed_cancel = SubscriptionRecord {
            cancellation: Some(CancellationStatus::Confirmed),
            ..later_cancel
        };
        let m = terminated.merged(&confirmed_cancel);
        assert_eq!(m.cancellation_type, Some(CancellationType::Terminate));
        assert_eq!(m.state.as_deref(), Some("TERMINATED"));
        assert_eq!(m.stage(), 4);
        // Whatever the order, the merge ends at the furthest stage.
        for (a, b) in [
            (&terminated, &confirmed_cancel),
            (&confirmed_cancel, &terminated),
        ] {
            assert_eq!(a.merged(b).stage(), 4);
        }
    }
}
