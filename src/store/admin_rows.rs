//! The rows of keys' histories, of the operators' audit trail, and of keys as operators see
//! them.

use super::rows::{Key, KeyState, RefundRow};

/// A step in a key's life, recorded in the transaction that made it. The two steps of every
/// first call that is answered at once, `Created` and `Answered`, are not rows of their own:
/// the key's row holds them (its creation time, and its outcome and last change once done),
/// and a key's history is read with them (`idempotency::operator`); so the common path writes
/// no history rows, and every other step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    /// The key was created by its first attempt.
    Created,
    /// An attempt took the key over (an earlier one ended unknown, or its lease died).
    TakenOver,
    /// A request may leave for the key's payment (providers without an idempotency key).
    Sent,
    /// The provider answered (or refused for good): the outcome is final.
    Answered,
    /// A reconciliation found the earlier attempt's refund and adopted it: final.
    Adopted,
    /// The attempt ended without a known outcome.
    Unknown,
    /// The gateway cannot settle the outcome alone: a person must.
    Unresolved,
    /// An operator settled the key.
    Settled,
}

impl HistoryKind {
    /// Whether the step is a row of `key_history` (see the type's documentation).
    pub fn is_recorded(self) -> bool {
        !matches!(self, HistoryKind::Created | HistoryKind::Answered)
    }

    /// The name the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Created => "created",
            HistoryKind::TakenOver => "taken_over",
            HistoryKind::Sent => "sent",
            HistoryKind::Answered => "answered",
            HistoryKind::Adopted => "adopted",
            HistoryKind::Unknown => "unknown",
            HistoryKind::Unresolved => "unresolved",
            HistoryKind::Settled => "settled",
        }
    }
}

/// What a key's final answer records in its history.
#[derive(Debug, Clone, Copy)]
pub struct Note<'a> {
    /// `Answered` or `Adopted`.
    pub kind: HistoryKind,
    /// The provider's result, or the refusal.
    pub detail: &'a str,
}

/// Longest detail a history entry keeps (longer is cut, marked with `…`).
pub const MAX_DETAIL_CHARS: usize = 2000;

/// `detail`, cut to [`MAX_DETAIL_CHARS`].
pub fn bounded_detail(detail: &str) -> std::borrow::Cow<'_, str> {
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        None => detail.into(),
        Some((at, _)) => format!("{}…", &detail[..at]).into(),
    }
}

/// One entry of a key's history as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When (Unix ms, the store's clock).
    pub at: i64,
    /// The attempt it belongs to (1 for the first).
    pub attempt: i64,
    /// `created`, `taken_over`, `sent`, `answered`, `adopted`, `unknown`, `unresolved`,
    /// `settled`.
    pub kind: String,
    /// What happened.
    pub detail: String,
}

/// A key as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    /// The key.
    pub key: Key,
    /// The account its request id was claimed on (empty for keys from before claims).
    pub account: String,
    /// Its state.
    pub state: KeyState,
    /// The refunded payment, for a refund key.
    pub payment_id: Option<String>,
    /// The refund attributed to the key.
    pub refund_id: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
    /// Why the last attempt ended unknown or unresolved (the detail of that history entry).
    pub last_failure: Option<String>,
    /// An attempt holds a live lease.
    pub lease_live: bool,
    /// The key holds its payment.
    pub blocks_payment: bool,
    /// The final outcome (JSON of the idempotency layer's `Outcome`) when done.
    pub outcome: Option<String>,
}

/// Which keys to list, newest change first, after `after` (keyset pagination).
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only these states (empty: all).
    pub states: Vec<KeyState>,
    /// Only this account.
    pub account: Option<String>,
    /// Only this payment.
    pub payment_id: Option<String>,
    /// Only keys unchanged for at least this long (ms).
    pub min_age_ms: i64,
    /// After this key in the order (`updated_at`, then the key, both descending).
    pub after: Option<(i64, Key)>,
    /// At most this many.
    pub limit: i64,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An authenticated caller of the admin service.
    Caller(String),
    /// The operating-system user that ran `paygate settle` on the store's host.
    Os(String),
    /// The admin service without authentication (loopback only, dev mode).
    Anonymous,
}

impl Actor {
    /// As the audit trail records it: `caller:<name>`, `os:<user>` or `anonymous`.
    pub fn recorded(&self) -> String {
        match self {
            Actor::Caller(c) => format!("caller:{c}"),
            Actor::Os(u) => format!("os:{u}"),
            Actor::Anonymous => "anonymous".into(),
        }
    }
}

/// An operator's settle of a key, with what its audit entry records.
#[derive(Debug, Clone, Copy)]
pub struct SettleKey<'a> {
    /// The key.
    pub key: &'a Key,
    /// The final outcome (JSON of the idempotency layer's `Outcome`).
    pub outcome: &'a str,
    /// How long the outcome is kept.
    pub keep_ms: i64,
    /// The refund's attribution and state, and the event that reports it.
    pub refund: Option<RefundRow<'a>>,
    /// Who.
    pub actor: &'a str,
    /// Why.
    pub reason: &'a str,
    /// `executed` or `not_executed`.
    pub settled_as: &'a str,
    /// The refund id settled with.
    pub refund_id: Option<&'a str>,
    /// The audit entry's id (unique).
    pub audit_id: &'a str,
    /// The history entry's detail.
    pub detail: &'a str,
}

/// What an operator's settle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Settled, from this state; audited.
    Done {
        /// The state it was in.
        before: KeyState,
    },
    /// No such key.
    NotFound,
    /// The key does not need a person: nothing changed.
    NotSettleable {
        /// What it is.
        state: KeyState,
        /// An attempt holds a live lease on it.
        lease_live: bool,
    },
    /// The refund id is attributed to another key: nothing changed.
    AttributedElsewhere,
}

/// One operator action as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its id.
    pub audit_id: String,
    /// When (Unix ms).
    pub at: i64,
    /// `caller:<name>`, `os:<user>` or `anonymous`.
    pub actor: String,
    /// `settle_key`.
    pub action: String,
    /// The account of the key.
    pub account: String,
    /// The key acted on.
    pub key: Key,
    /// Why.
    pub reason: String,
    /// The key's state before.
    pub state_before: String,
    /// The key's state after.
    pub state_after: String,
    /// `executed` or `not_executed`.
    pub outcome: String,
    /// The refund id settled with.
    pub refund_id: Option<String>,
}

/// Which audit entries to list, oldest first, after `after` (`at`, `audit_id`).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries about this key.
    pub key: Option<Key>,
    /// After this entry.
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: i64,
}
