//! What operators do with keys: list them, read one with its history, settle one that needs a
//! person (with the audit entry, in the settle's transaction), and read the audit trail. The
//! admin service and `paygate settle` are thin edges over this.

use crate::domain::{CancelOutcome, CancellationStatus, ProviderResult, RefundRecord, RefundState};
use crate::providers::Refusal;
use crate::reason;
use crate::store::{
    Actor, AuditFilter, AuditRow, EventSource, HistoryEntry, HistoryKind, Key, KeyFilter, KeyState,
    KeyView, SettleKey, Settled, StoreError,
};

use super::{CREATE_REFUND, Idempotency, Outcome, RefundWrite, StoredRefusal, caller_of, token};

/// Why an operator acts: required, at most [`Reason::MAX_CHARS`] characters, kept in the audit
/// entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// The longest reason kept.
    pub const MAX_CHARS: usize = 1000;

    /// `text` trimmed, unless it is empty or too long.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (!t.is_empty() && t.chars().count() <= Self::MAX_CHARS).then(|| Self(t.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the provider's back office shows of a key's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It executed: for a refund key, the provider's refund (its id, and the amount when the
    /// operator gives it).
    Executed {
        /// The provider's refund id (refund keys; required for them).
        refund_id: Option<String>,
        /// The refunded amount in minor units and its currency, if known.
        amount: Option<(i64, String)>,
    },
    /// Nothing executed: replays answer `FAILED_PRECONDITION SETTLED_AS_FAILED`.
    NotExecuted,
}

impl Decision {
    /// As the audit trail records it.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Executed { .. } => "executed",
            Decision::NotExecuted => "not_executed",
        }
    }
}

/// A key with its history.
#[derive(Debug, Clone)]
pub struct KeyDetail {
    /// The key.
    pub view: KeyView,
    /// Every recorded attempt and transition, oldest first.
    pub history: Vec<HistoryEntry>,
}

fn operator_result(code: &str, message: &str) -> ProviderResult {
    ProviderResult {
        provider: "operator".into(),
        code: code.into(),
        status: "S".into(),
        message: message.into(),
    }
}

/// The outcome the key replays from now on, and the refund record its event reports.
fn outcome_of(
    view: &KeyView,
    decision: &Decision,
) -> Result<(Outcome, Option<RefundRecord>), &'static str> {
    let refund = view.key.method == CREATE_REFUND;
    let request_id = Some(view.key.request_id.clone());
    Ok(match decision {
        Decision::NotExecuted => {
            let outcome = Outcome::Refused(StoredRefusal::new(
                Refusal::Precondition,
                reason::SETTLED_AS_FAILED.into(),
                "an operator settled this request as not executed; use a new request_id to try again".into(),
                None,
            ));
            let record = refund.then(|| RefundRecord {
                refund_id: None,
                request_id,
                payment_id: view.payment_id.clone(),
                amount: None,
                state: RefundState::Failed,
                refund_time: None,
                reference_refund_id: None,
                result: operator_result(
                    "SETTLED_AS_FAILED",
                    "settled by an operator as not executed",
                ),
            });
            (outcome, record)
        }
        Decision::Executed { refund_id, amount } if refund => {
            let Some(refund_id) = refund_id.clone().filter(|r| !r.is_empty()) else {
                return Err("settling a refund as executed needs the provider's refund id");
            };
            let record = RefundRecord {
                refund_id: Some(refund_id),
                request_id,
                payment_id: view.payment_id.clone(),
                amount: amount
                    .clone()
                    .map(|(value, currency)| crate::domain::Money { currency, value }),
                state: RefundState::Succeeded,
                refund_time: None,
                reference_refund_id: None,
                result: operator_result("SETTLED", "settled by an operator"),
            };
            (Outcome::Refund(record.clone()), Some(record))
        }
        Decision::Executed { refund_id, .. } => {
            if refund_id.as_deref().is_some_and(|r| !r.is_empty()) {
                return Err("a cancellation key is settled without a refund id");
            }
            let outcome = Outcome::Cancel(CancelOutcome {
                status: CancellationStatus::Accepted,
                result: operator_result("SETTLED", "settled by an operator"),
                effect: None,
                subscription_state: None,
                cancel_time: None,
                cancel_reason: None,
            });
            (outcome, None)
        }
    })
}

/// A key's whole history: its creation and, once it is done with a plain answer, that answer
/// (both held by the key's own row, see `HistoryKind`), around the recorded steps.
fn full_history(view: &KeyView, stored: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
    let mut all = Vec::with_capacity(stored.len() + 2);
    all.push(HistoryEntry {
        at: view.created_at,
        attempt: 1,
        kind: HistoryKind::Created.as_str().into(),
        detail: if view.account.is_empty() {
            String::new()
        } else {
            format!("on {}", view.account)
        },
    });
    let ended_otherwise = stored.last().is_some_and(|h| {
        h.kind == HistoryKind::Settled.as_str() || h.kind == HistoryKind::Adopted.as_str()
    });
    all.extend(stored);
    if view.state == KeyState::Done && !ended_otherwise {
        let detail = view
            .outcome
            .as_deref()
            .and_then(|o| serde_json::from_str::<Outcome>(o).ok())
            .map_or_else(|| "the outcome is stored".into(), |o| o.summary());
        all.push(HistoryEntry {
            at: view.updated_at,
            attempt: view.attempts,
            kind: HistoryKind::Answered.as_str().into(),
            detail,
        });
    }
    all
}

/// What settling a key did (see [`Idempotency::settle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleResult {
    /// What the store did.
    Store(Settled),
    /// The decision does not fit the key (a refund key settled as executed without a refund
    /// id, say): nothing changed.
    Invalid(&'static str),
}

impl SettleResult {
    /// Why nothing changed, as an operator reads it; `None` when the key was settled.
    pub fn refusal(&self) -> Option<String> {
        Some(match self {
            SettleResult::Store(Settled::Done { .. }) => return None,
            SettleResult::Store(Settled::NotFound) => "no such key".into(),
            SettleResult::Store(Settled::NotSettleable { state, lease_live }) => match state {
                KeyState::InFlight if *lease_live => "the key is in flight: an attempt holds it now (a retry is settling it with the provider); nothing was changed, look again when it ends".into(),
                KeyState::InFlight => "the key is in flight and its attempt's process stopped: the caller's next retry takes it over and settles it with the provider; nothing was changed".into(),
                KeyState::Done => "the key is already done: its outcome is final and replayed; nothing was changed".into(),
                other => format!("the key is {other}; nothing was changed"),
            },
            SettleResult::Store(Settled::AttributedElsewhere) => "that refund id is already attributed to another request; nothing was changed".into(),
            SettleResult::Invalid(why) => format!("{why}; nothing was changed"),
        })
    }
}

impl Idempotency {
    /// Keys by `filter`.
    pub async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyView>, StoreError> {
        self.store.list_keys(filter).await
    }

    /// A key with its history.
    pub async fn key_detail(&self, key: &Key) -> Result<Option<KeyDetail>, StoreError> {
        let Some(view) = self.store.key_view(key).await? else {
            return Ok(None);
        };
        let stored = self.store.key_history(key).await?;
        let history = full_history(&view, stored);
        Ok(Some(KeyDetail { view, history }))
    }

    /// Operators' actions by `filter`.
    pub async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.store.audit_entries(filter).await
    }

    /// An operator's decision on a key that needs a person (unknown or unresolved, no live
    /// attempt): its outcome from now on, stored with the refund's attribution and event, the
    /// key's history entry and the audit entry naming `actor` and `reason`, in one
    /// transaction; the payment is released. A refund id attributed to another request is
    /// refused, and so is a key in any other state (nothing changes then).
    pub async fn settle(
        &self,
        key: &Key,
        decision: &Decision,
        reason: &Reason,
        actor: &Actor,
    ) -> Result<SettleResult, StoreError> {
        let Some(view) = self.store.key_view(key).await? else {
            return Ok(SettleResult::Store(Settled::NotFound));
        };
        let (outcome, record) = match outcome_of(&view, decision) {
            Ok(o) => o,
            Err(why) => return Ok(SettleResult::Invalid(why)),
        };
        let json = serde_json::to_string(&outcome)
            .map_err(|e| StoreError::Decode(format!("cannot encode the outcome: {e}")))?;
        let write = record
            .as_ref()
            .and_then(|r| RefundWrite::new(&view.account, r));
        let refund = write
            .as_ref()
            .map(|w| w.row(EventSource::Operator, caller_of(key)));
        let actor = actor.recorded();
        let refund_id = match decision {
            Decision::Executed { refund_id, .. } => refund_id.as_deref(),
            Decision::NotExecuted => None,
        };
        let detail = format!(
            "settled as {}{} by {actor}: {}",
            decision.name(),
            refund_id
                .map(|r| format!(" (refund {r})"))
                .unwrap_or_default(),
            reason.as_str()
        );
        let audit_id = token();
        let settle = SettleKey {
            key,
            outcome: &json,
            keep_ms: self.keep_ms(true),
            refund,
            actor: &actor,
            reason: reason.as_str(),
            settled_as: decision.name(),
            refund_id,
            audit_id: &audit_id,
            detail: &detail,
        };
        let settled = self.store.settle(settle).await?;
        if let Settled::Done { before } = &settled {
            tracing::warn!(method = key.method, request_id = %key.request_id, caller = %key.caller,
                actor = %actor, before = %before, settled_as = decision.name(), "an operator settled a key");
        }
        Ok(SettleResult::Store(settled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_required_and_bounded() {
        assert_eq!(Reason::new("  "), None);
        assert_eq!(Reason::new(""), None);
        assert_eq!(
            Reason::new(" ticket 42 ").map(|r| r.as_str().to_owned()),
            Some("ticket 42".into())
        );
        assert_eq!(Reason::new(&"x".repeat(Reason::MAX_CHARS + 1)), None);
    }
}
