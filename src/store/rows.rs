//! The rows the store traits read and write.

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

/// The methods that have idempotency keys, as keys name them.
pub const KEY_METHODS: [&str; 2] = ["RefundService.Create", "SubscriptionService.Cancel"];

impl Key {
    /// The method of [`KEY_METHODS`] named `name`, if it is one.
    pub fn method_named(name: &str) -> Option<&'static str> {
        KEY_METHODS.into_iter().find(|m| *m == name)
    }
}

/// A key's state, as its row holds it (the `state` column), parsed once when the row is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// An attempt holds the key's lease (live or not: see [`Row::live`]).
    InFlight,
    /// An attempt ended without a known outcome: the next one settles it before acting.
    Unknown,
    /// The outcome is known and stored: it is replayed.
    Done,
    /// The outcome cannot be settled automatically: a person settles it (`paygate settle`).
    Unresolved,
}

impl KeyState {
    /// Every state, in the order an attempt can move through them.
    pub const ALL: [KeyState; 4] = [
        KeyState::InFlight,
        KeyState::Unknown,
        KeyState::Done,
        KeyState::Unresolved,
    ];

    /// The name the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::InFlight => "in_flight",
            KeyState::Unknown => "unknown",
            KeyState::Done => "done",
            KeyState::Unresolved => "unresolved",
        }
    }

    /// The state named `name` in the store, if it is one.
    pub fn parse(name: &str) -> Option<KeyState> {
        KeyState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for KeyState {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// A stored key as read back, judged by the store's clock.
#[derive(Debug, Clone)]
pub struct Row {
    /// Fingerprint of the first request.
    pub fingerprint: String,
    /// Its state.
    pub state: KeyState,
    /// Milliseconds an `in_flight` lease has left (negative once expired).
    pub lease_left_ms: i64,
    /// The final outcome (JSON of the idempotency layer's `Outcome`) when `done`.
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
    /// When the provider signed it (Unix ms), if it says, and how much older than the store's
    /// now that may be (ms): older, or more than [`NOTIFICATION_MAX_AHEAD_MS`] ahead, it is
    /// refused as stale.
    pub signed_at: Option<i64>,
    /// See `signed_at`.
    pub max_age_ms: i64,
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
    /// How far its cancellation has gone (`SubscriptionRecord::stage`); a write never
    /// lowers it.
    pub stage: i64,
    /// For a notification: the stage of the cancellation it reports, or `None` when it
    /// reports none. Lower than the recorded stage, it is superseded: nothing is written.
    pub reported_stage: Option<i64>,
    /// The event written with the row when it changes the subscription's state (`None`: the
    /// row comes with an event of its own, a notification).
    pub change: Option<Change<'a>>,
}

/// How long the purge keeps what has no keep time of its own (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed keys without a keep time, and refund states.
    pub keys_ms: i64,
    /// Events: never shorter than the notification freshness window, so that a replay within
    /// the window is a duplicate.
    pub events_ms: i64,
    /// Anomalies, which wait for a person.
    pub anomalies_ms: i64,
}

/// How far ahead of the store's clock a notification's signed time may be (clock skew).
pub const NOTIFICATION_MAX_AHEAD_MS: i64 = 5 * 60 * 1000;

/// What storing a notification as an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRecorded {
    /// Stored as the event with this sequence number, its effect applied.
    New(i64),
    /// An event with its id was stored before: nothing changed.
    Duplicate,
    /// Signed longer ago than the freshness window (or as far in the future) by the store's
    /// clock: nothing changed. A replay of a captured notification, or one so late that
    /// what proves it was seen may be gone.
    Stale,
    /// It reports an earlier state than the one recorded (a late CANCEL after TERMINATE):
    /// nothing changed, no event.
    Superseded,
    /// It contradicts a final state (a refund recorded `recorded` reported otherwise): no
    /// event, no change; the report is recorded as an anomaly for a person.
    Contradicts {
        /// The recorded state.
        recorded: String,
    },
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
    /// Where it comes from.
    pub source: EventSource,
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
    /// The event written with the row when it changes the refund's state (`None`: the row
    /// comes with an event of its own, a notification).
    pub change: Option<Change<'a>>,
}

/// The event that reports a change of state, written in the change's transaction only when
/// the write changed the state (a repeat, a replay or a report of a state already recorded
/// adds none).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Identifies the change; unique.
    pub event_id: &'a str,
    /// Provider name.
    pub provider: &'a str,
    /// Where the change comes from: `answer`, `inquiry` or `operator` ([`EventSource`]).
    pub source: EventSource,
    /// JSON of the `Notice` the event carries.
    pub payload: &'a str,
    /// The caller it concerns, when known.
    pub caller: Option<&'a str>,
}

/// Where an event comes from, as the `events.source` column holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// A provider's notification.
    Notification,
    /// A provider's answer to a Create or Cancel (also an adoption or a reconciliation).
    Answer,
    /// An Inquire that found a new state.
    Inquiry,
    /// An operator's settle.
    Operator,
}

impl EventSource {
    /// Its name in the store.
    pub fn name(self) -> &'static str {
        match self {
            EventSource::Notification => "notification",
            EventSource::Answer => "answer",
            EventSource::Inquiry => "inquiry",
            EventSource::Operator => "operator",
        }
    }

    /// The source a stored name means (unknown names, from a newer release: notification).
    pub fn parse(name: &str) -> Self {
        match name {
            "answer" => EventSource::Answer,
            "inquiry" => EventSource::Inquiry,
            "operator" => EventSource::Operator,
            _ => EventSource::Notification,
        }
    }
}
