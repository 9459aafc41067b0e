//! PayXpert (and its Payzone white-label): subscription cancel with a reason code, refunds,
//! transaction status. PayXpert has no idempotency key: a refund whose outcome is unknown is
//! reconciled against PayXpert's refund export before anything is sent again.

pub mod client;
pub mod codes;
pub(crate) mod config;
pub(crate) mod wire;

use crate::reason;
use std::time::Duration;

use self::client::{Client, Settings};
pub use self::wire::NAME;
use self::wire::{Answer, CancelRequest, RefundRequest, Transaction};
use super::{BoxFuture, CallContext, Meaning, Provider, ProviderError, Refusal, Resolution};
use crate::domain::Violations;
use crate::domain::{
    CancelOutcome, CancelSubscription, CancellationEffect, CancellationStatus, CancellationType,
    CreateRefund, InquireRefund, Money, ProviderResult, RefundRecord, RefundState,
};
use crate::providers::http::MAX_ANSWER_BYTES;

/// The reason sent for CANCEL without one: "unknown reason", end of the paid period.
pub const DEFAULT_CANCEL_REASON: u16 = 1099;
/// The reason sent for TERMINATE without one: the first immediate code.
pub const DEFAULT_TERMINATE_REASON: u16 = 1000;
/// Codes up to this one end a subscription at once.
pub const LAST_IMMEDIATE_REASON: u16 = 1004;
/// The refund export is searched from this long before the key's first attempt (the store's
/// clock and PayXpert's may differ), to an hour past now.
pub const EXPORT_MARGIN: Duration = Duration::from_secs(15 * 60);

/// One PayXpert account.
#[derive(Debug)]
pub struct PayXpert {
    client: Client,
}

impl PayXpert {
    /// Builds the provider for one account.
    pub fn new(settings: Settings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: Client::new(settings)?,
        })
    }

    /// A GET of a read, answers up to `cap` bytes: failing it executed nothing, so an unknown
    /// outcome becomes retryable.
    async fn read(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
        ctx: &CallContext,
        cap: usize,
    ) -> Result<Answer, ProviderError> {
        self.client
            .call(what, path, query, None, ctx, cap)
            .await
            .map_err(crate::providers::failure::read_failed)
    }
}

impl PayXpert {
    /// Reads the transaction a refund answer named and checks that it is a successful refund
    /// of `req`'s payment, amount and currency. The refund may have executed whatever this
    /// read says, so a read that fails, or a transaction that is not this refund, leaves the
    /// outcome unknown (settled later against the refund export), never a success.
    async fn confirm_refund(
        &self,
        req: &CreateRefund,
        refund_id: &str,
        ctx: &CallContext,
    ) -> Result<Transaction, ProviderError> {
        let read = self
            .client
            .call(
                "status",
                &format!("transaction/{refund_id}"),
                &[],
                None,
                ctx,
                MAX_ANSWER_BYTES,
            )
            .await;
        let a = match read {
            Ok(a) if a.error_code.as_deref() == Some("000") => a,
            Ok(a) => {
                return Err(ProviderError::answer_mismatch(
                    NAME,
                    "refund",
                    format!(
                        "the status of transaction {refund_id} answered {}",
                        a.error_code.as_deref().unwrap_or("no errorCode")
                    ),
                ));
            }
            Err(e) => {
                return Err(ProviderError::unknown(
                    format!(
                        "payxpert refund {refund_id} could not be confirmed by its status: {}",
                        e.message
                    ),
                    None,
                ));
            }
        };
        let t = a.transaction.unwrap_or_default();
        let amount = req.amount.value.to_string();
        let why = if t
            .transaction_id
            .as_deref()
            .is_some_and(|id| id != refund_id)
        {
            Some(format!(
                "the status asked for {refund_id} names transaction {:?}",
                t.transaction_id
            ))
        } else if t.operation.as_deref() != Some("refund") {
            Some(format!(
                "transaction {refund_id} is a {:?}, not a refund",
                t.operation
            ))
        } else if t.referral_id.as_deref() != Some(req.payment_id.as_str()) {
            Some(format!(
                "transaction {refund_id} refunds {:?}, not payment {:?}",
                t.referral_id, req.payment_id
            ))
        } else if t.amount.as_deref() != Some(amount.as_str())
            || t.currency
                .as_deref()
                .is_some_and(|c| c != req.amount.currency)
        {
            Some(format!(
                "transaction {refund_id} refunds {:?} {:?}, not {} {}",
                t.amount, t.currency, amount, req.amount.currency
            ))
        } else if t.error_code.as_deref().is_some_and(|c| c != "000") {
            Some(format!(
                "transaction {refund_id} did not succeed ({:?})",
                t.error_code
            ))
        } else {
            None
        };
        match why {
            Some(why) => Err(ProviderError::answer_mismatch(NAME, "refund", why)),
            None => Ok(t),
        }
    }
}

fn result_of(a: &Answer) -> ProviderResult {
    let code = a.error_code.clone().unwrap_or_default();
    ProviderResult {
        provider: NAME.into(),
        status: if code == "000" { "S" } else { "F" }.into(),
        code,
        message: a.error_message.clone().unwrap_or_default(),
    }
}

/// Ok when the answer says success, else the table's error.
fn check(what: &str, a: &Answer) -> Result<(), ProviderError> {
    let Some(code) = a.error_code.as_deref() else {
        return Err(ProviderError::unknown(
            format!("payxpert {what} answer has no errorCode"),
            None,
        ));
    };
    match codes::classify(code) {
        Meaning::Success => Ok(()),
        m => {
            let r = result_of(a);
            let message = format!("payxpert {what} answered {code}: {}", r.message);
            Err(ProviderError::refusal(m, codes::reason(code), message, r))
        }
    }
}

/// What a successful cancel answer says happened. The effect and the reason come from the
/// subscription PayXpert answered with, not from what was asked: a TERMINATE after a deferred
/// CANCEL leaves the deferred cancel in place, and the answer says so.
fn cancel_outcome(a: &Answer, sub: &wire::Subscription, requested: u16) -> CancelOutcome {
    let cancel_time = wire::unix_time(sub.cancel_date.as_deref());
    let reason = sub
        .cancel_reason
        .as_deref()
        .and_then(|r| r.trim().parse::<u16>().ok())
        .unwrap_or(requested);
    let effect = match sub.state.as_deref() {
        // It has ended.
        Some("canceled" | "finished" | "disabled") => CancellationEffect::Immediate,
        // It still runs, and ends at the cancel date.
        Some(_) if cancel_time.is_some() => CancellationEffect::EndOfPeriod,
        // The answer does not say: the reason's rule.
        _ if reason <= LAST_IMMEDIATE_REASON => CancellationEffect::Immediate,
        _ => CancellationEffect::EndOfPeriod,
    };
    CancelOutcome {
        status: CancellationStatus::Confirmed,
        result: result_of(a),
        effect: Some(effect),
        subscription_state: sub.state.clone(),
        cancel_time,
        cancel_reason: Some(reason),
    }
}

fn is_digits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
}

fn record_of(t: &Transaction, request_id: Option<String>, result: ProviderResult) -> RefundRecord {
    RefundRecord {
        refund_id: t.transaction_id.clone(),
        request_id,
        payment_id: t.referral_id.clone(),
        amount: match (
            &t.currency,
            t.amount.as_deref().and_then(|a| a.parse().ok()),
        ) {
            (Some(c), Some(v)) => Some(Money {
                currency: c.clone(),
                value: v,
            }),
            _ => None,
        },
        state: if t.error_code.as_deref().is_none_or(|c| c == "000") {
            RefundState::Succeeded
        } else {
            RefundState::Failed
        },
        refund_time: wire::unix_time(t.date.as_deref()),
        reference_refund_id: None,
        result,
    }
}

impl Provider for PayXpert {
    fn name(&self) -> &'static str {
        NAME
    }

    fn deduplicates_requests(&self) -> bool {
        false
    }

    fn quiet_period(&self) -> Option<Duration> {
        Some(self.client.settings().quiet_period)
    }

    fn secrets(&self) -> Vec<std::sync::Arc<dyn crate::reload::Reload>> {
        vec![self.client.settings().password.clone()]
    }

    fn check_refund(&self, req: &CreateRefund, v: &mut Violations) {
        if !is_digits(&req.payment_id, 20) {
            v.add("payment_id", "PayXpert transaction ids are 1-20 digits");
        }
        if req.amount.value > 9_999_999_999 {
            v.add("amount.value", "PayXpert amounts have at most 10 digits");
        }
    }

    fn check_cancel(&self, req: &CancelSubscription, v: &mut Violations) {
        match &req.subscription_id {
            Some(id) if is_digits(id, 20) => {}
            Some(_) => v.add(
                "subscription_id",
                "PayXpert subscription ids are 1-20 digits",
            ),
            None => v.add("subscription_id", "required for PayXpert"),
        }
        if req.subscription_request_id.is_some() {
            v.add(
                "subscription_request_id",
                "PayXpert knows subscriptions only by subscription_id",
            );
        }
        match (req.cancellation_type, req.cancel_reason) {
            (CancellationType::Cancel, Some(r)) if r <= LAST_IMMEDIATE_REASON => v.add(
                "cancel_reason",
                format!("{r} ends the subscription at once; use CANCELLATION_TYPE_TERMINATE or a code from 1005"),
            ),
            (CancellationType::Terminate, Some(r)) if r > LAST_IMMEDIATE_REASON => v.add(
                "cancel_reason",
                format!("{r} ends the subscription at the end of the paid period; use CANCELLATION_TYPE_CANCEL or a code up to 1004"),
            ),
            _ => {}
        }
    }

    fn inquires_by_request_id(&self) -> bool {
        false
    }

    fn cancel_subscription<'a>(
        &'a self,
        req: &'a CancelSubscription,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<CancelOutcome, ProviderError>> {
        Box::pin(async move {
            let reason = req.cancel_reason.unwrap_or(match req.cancellation_type {
                CancellationType::Cancel => DEFAULT_CANCEL_REASON,
                CancellationType::Terminate => DEFAULT_TERMINATE_REASON,
            });
            let id = req.subscription_id.as_deref().unwrap_or_default();
            let body = serde_json::to_vec(&CancelRequest {
                cancel_reason: reason,
            })
            .unwrap_or_default();
            let a = self
                .client
                .call(
                    "cancel",
                    &format!("subscription/{id}/cancel"),
                    &[],
                    Some(body),
                    ctx,
                    MAX_ANSWER_BYTES,
                )
                .await?;
            check("cancel", &a)?;
            let sub = a.subscription.clone().unwrap_or_default();
            Ok(cancel_outcome(&a, &sub, reason))
        })
    }

    fn create_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<RefundRecord, ProviderError>> {
        Box::pin(async move {
            // PayXpert refunds in the original transaction's currency: check it first.
            let original = self
                .read(
                    "status",
                    &format!("transaction/{}", req.payment_id),
                    &[],
                    ctx,
                    MAX_ANSWER_BYTES,
                )
                .await?;
            check("status", &original)?;
            let currency = original
                .transaction
                .as_ref()
                .and_then(|t| t.currency.clone());
            if currency.as_deref() != Some(req.amount.currency.as_str()) {
                return Err(ProviderError::definitive(
                    Refusal::Precondition,
                    reason::CURRENCY_MISMATCH,
                    format!(
                        "payment {} is in {}, not {}",
                        req.payment_id,
                        currency.as_deref().unwrap_or("an unknown currency"),
                        req.amount.currency
                    ),
                    None,
                ));
            }
            let body = serde_json::to_vec(&RefundRequest {
                transaction_id: req.payment_id.clone(),
                amount: req.amount.value,
                cancel_subscription: req.cancel_subscription,
            })
            .unwrap_or_default();
            let a = self
                .client
                .call(
                    "refund",
                    &format!("transaction/{}/refund", req.payment_id),
                    &[],
                    Some(body),
                    ctx,
                    MAX_ANSWER_BYTES,
                )
                .await?;
            check("refund", &a)?;
            let Some(refund_id) = a.transaction_id.clone() else {
                return Err(ProviderError::unknown(
                    "payxpert refund succeeded without a transaction id",
                    Some(result_of(&a)),
                ));
            };
            // The answer names only a transaction id: it is this request's refund only once
            // PayXpert's status of that transaction says it refunds this payment by this
            // amount.
            let confirmed = self.confirm_refund(req, &refund_id, ctx).await?;
            Ok(RefundRecord {
                refund_id: Some(refund_id),
                request_id: Some(req.request_id.clone()),
                payment_id: Some(req.payment_id.clone()),
                amount: Some(req.amount.clone()),
                state: RefundState::Succeeded,
                refund_time: wire::unix_time(confirmed.date.as_deref())
                    .or_else(|| Some(time::OffsetDateTime::now_utc())),
                reference_refund_id: req.reference_refund_id.clone(),
                result: result_of(&a),
            })
        })
    }

    fn inquire_refund<'a>(
        &'a self,
        req: &'a InquireRefund,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<RefundRecord, ProviderError>> {
        Box::pin(async move {
            let id = req.refund_id.as_deref().unwrap_or_default();
            let a = self
                .read(
                    "status",
                    &format!("transaction/{id}"),
                    &[],
                    ctx,
                    MAX_ANSWER_BYTES,
                )
                .await?;
            check("status", &a)?;
            let Some(t) = a.transaction.as_ref() else {
                return Err(ProviderError::unknown(
                    "payxpert status answer has no transaction",
                    Some(result_of(&a)),
                ));
            };
            if t.operation.as_deref().is_some_and(|o| o != "refund") {
                return Err(ProviderError::definitive(
                    Refusal::NotFound,
                    reason::NOT_A_REFUND,
                    format!("transaction {id} is not a refund"),
                    Some(result_of(&a)),
                ));
            }
            Ok(record_of(t, req.request_id.clone(), result_of(&a)))
        })
    }

    fn resolve_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        reconcile: &'a crate::domain::Reconcile,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Resolution<RefundRecord>, ProviderError>> {
        Box::pin(async move {
            // Only what is needed: successful refunds from the key's first attempt on. The
            // gateway holds one unsettled attempt per payment, so a refund of this payment and
            // amount in that window that no other key owns can only be this key's.
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let Some(since_ms) = reconcile.since_ms else {
                return Ok(Resolution::Undecidable(
                    "the key's first attempt time is not recorded".into(),
                ));
            };
            let since = since_ms.div_euclid(1000) - EXPORT_MARGIN.as_secs() as i64;
            let query = [
                ("startDate", since.to_string()),
                ("endDate", (now.max(since) + 3600).to_string()),
                ("transactionErrorCode", "000".to_string()),
            ];
            let a = self
                .read(
                    "refund export",
                    "transactions/refund",
                    &query,
                    ctx,
                    client::MAX_EXPORT_BYTES,
                )
                .await?;
            check("refund export", &a)?;
            let amount = req.amount.value.to_string();
            let known = &reconcile.known;
            let candidates: Vec<&Transaction> = a
                .transaction_list
                .iter()
                .flatten()
                .filter(|t| {
                    t.referral_id.as_deref() == Some(req.payment_id.as_str())
                        && t.operation.as_deref().is_none_or(|o| o == "refund")
                        && t.error_code.as_deref().is_none_or(|c| c == "000")
                        && t.amount.as_deref() == Some(amount.as_str())
                        && t.transaction_id
                            .as_ref()
                            .is_some_and(|id| !known.contains(id))
                })
                .collect();
            Ok(match candidates.as_slice() {
                [] => Resolution::Resend,
                [one] => {
                    let mut r = record_of(one, Some(req.request_id.clone()), result_of(&a));
                    r.payment_id = Some(req.payment_id.clone());
                    r.reference_refund_id = req.reference_refund_id.clone();
                    Resolution::Adopt(r)
                }
                many => Resolution::Undecidable(format!(
                    "{} refunds of {} on payment {} are not attributed to any request ({}); check them at PayXpert and settle the key",
                    many.len(),
                    amount,
                    req.payment_id,
                    many.iter()
                        .filter_map(|t| t.transaction_id.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            })
        })
    }
}
