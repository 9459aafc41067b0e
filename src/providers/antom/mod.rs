//! Antom (Alipay global acquiring): subscription cancel, refund and inquiryRefund.

pub mod client;
pub mod codes;
pub(crate) mod config;
pub mod keys;
pub(crate) mod notify;
pub mod signing;
pub(crate) mod wire;

use crate::reason;
use serde::de::DeserializeOwned;

use self::client::{Client, Endpoint, Settings};
use self::codes::Meaning;
pub use self::wire::NAME;
use self::wire::{
    CancelRequest, InquiryRefundRequest, RefundRequest, RefundResponse, ResultObject, ResultOnly,
};
use super::{BoxFuture, CallContext, Provider, ProviderError, Resolution};
use crate::domain::Violations;
use crate::domain::{
    CancelOutcome, CancelSubscription, CancellationEffect, CancellationStatus, CancellationType,
    CreateRefund, InquireRefund, ProviderResult, RefundRecord, RefundState,
};

/// One Antom account.
#[derive(Debug)]
pub struct Antom {
    client: Client,
}

impl Antom {
    /// Builds the provider for one account.
    pub fn new(settings: Settings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: Client::new(settings)?,
        })
    }

    async fn call<Req: serde::Serialize, Ans: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        req: &Req,
        ctx: &CallContext,
    ) -> Result<Ans, ProviderError> {
        let body = serde_json::to_vec(req)
            .map_err(|e| ProviderError::misconfigured(reason::INTERNAL, e.to_string()))?;
        let answer = self.client.post(endpoint, body, ctx).await?;
        wire::from_json(&answer).map_err(|_| {
            tracing::error!(
                endpoint = endpoint.name(),
                "signed antom answer is not the expected JSON"
            );
            ProviderError::unknown(
                format!("antom {} answer could not be understood", endpoint.name()),
                None,
            )
        })
    }
}

fn provider_result(r: &ResultObject) -> ProviderResult {
    ProviderResult {
        provider: NAME.into(),
        code: r.result_code.clone(),
        status: r.result_status.clone(),
        message: r.result_message.clone().unwrap_or_default(),
    }
}

/// The error for a non-success meaning.
fn refusal(meaning: Meaning, r: &ResultObject) -> ProviderError {
    let result = provider_result(r);
    let message = format!(
        "antom answered {} ({}): {}",
        r.result_code, r.result_status, result.message
    );
    ProviderError::refusal(meaning, r.result_code.clone(), message, result)
}

impl Provider for Antom {
    fn name(&self) -> &'static str {
        NAME
    }

    fn secrets(&self) -> Vec<std::sync::Arc<dyn crate::reload::Reload>> {
        vec![self.client.settings().keys.clone()]
    }

    fn notification(
        &self,
        kind: &str,
        uri: &str,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<crate::domain::Notification, super::NotificationError> {
        if !matches!(kind, "refund" | "subscription" | "payment") {
            return Err(super::NotificationError::Unsupported);
        }
        let signed_at = notify::verify(self.client.settings(), uri, header, body)?;
        notify::read(kind, body, signed_at)
    }

    fn notification_reply(&self, reply: super::NotificationReply<'_>) -> String {
        notify::reply(reply)
    }

    fn deduplicates_requests(&self) -> bool {
        true
    }

    fn check_refund(&self, req: &CreateRefund, violations: &mut Violations) {
        if req.amount.currency == "IDR" && req.amount.value % 100 != 0 {
            violations.add("amount.value", "Antom requires IDR amounts to end in 00");
        }
        if req.cancel_subscription {
            violations.add(
                "cancel_subscription",
                "Antom refunds never cancel a subscription; use SubscriptionService.Cancel",
            );
        }
    }

    fn check_cancel(&self, req: &CancelSubscription, violations: &mut Violations) {
        if req.cancel_reason.is_some() {
            violations.add("cancel_reason", "Antom takes no cancel reason; set 0");
        }
    }

    fn inquires_by_request_id(&self) -> bool {
        true
    }

    fn resolve_refund<'a>(
        &'a self,
        _req: &'a CreateRefund,
        _reconcile: &'a crate::domain::Reconcile,
        _ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Resolution<RefundRecord>, ProviderError>> {
        // Antom deduplicates on refundRequestId: the identical request returns the first
        // execution's result.
        Box::pin(async { Ok(Resolution::Resend) })
    }

    fn cancel_subscription<'a>(
        &'a self,
        req: &'a CancelSubscription,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<CancelOutcome, ProviderError>> {
        Box::pin(async move {
            let ans: ResultOnly = self
                .call(Endpoint::Cancel, &CancelRequest::from(req), ctx)
                .await?;
            let r = &ans.result;
            match codes::classify(&r.result_code, &r.result_status) {
                Meaning::Success => Ok(CancelOutcome {
                    status: CancellationStatus::Accepted,
                    result: provider_result(r),
                    effect: Some(match req.cancellation_type {
                        CancellationType::Cancel => CancellationEffect::EndOfPeriod,
                        CancellationType::Terminate => CancellationEffect::Immediate,
                    }),
                    subscription_state: None,
                    cancel_time: None,
                    cancel_reason: None,
                }),
                m => Err(refusal(m, r)),
            }
        })
    }

    fn create_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<RefundRecord, ProviderError>> {
        Box::pin(async move {
            let ans: RefundResponse = self
                .call(
                    Endpoint::Refund,
                    &RefundRequest {
                        refund_notify_url: self
                            .client
                            .settings()
                            .notify_url
                            .as_ref()
                            .map(|u| format!("{u}/refund")),
                        ..RefundRequest::from(req)
                    },
                    ctx,
                )
                .await?;
            let r = &ans.result;
            let state = match codes::classify(&r.result_code, &r.result_status) {
                Meaning::Success => RefundState::Succeeded,
                Meaning::Processing => RefundState::Processing,
                m => return Err(refusal(m, r)),
            };
            let success = state == RefundState::Succeeded;
            if let Some(why) = wire::refund_answer_mismatch(&ans, req, success) {
                return Err(ProviderError::answer_mismatch(NAME, "refund", why));
            }
            Ok(RefundRecord {
                refund_id: ans.refund_id.clone(),
                request_id: Some(req.request_id.clone()),
                payment_id: Some(req.payment_id.clone()),
                amount: Some(
                    ans.refund_amount
                        .as_ref()
                        .and_then(wire::Amount::to_money)
                        .unwrap_or_else(|| req.amount.clone()),
                ),
                state,
                refund_time: wire::parse_time(ans.refund_time.as_deref()),
                reference_refund_id: req.reference_refund_id.clone(),
                result: provider_result(r),
            })
        })
    }

    fn inquire_refund<'a>(
        &'a self,
        req: &'a InquireRefund,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<RefundRecord, ProviderError>> {
        Box::pin(async move {
            let ans: wire::InquiryRefundResponse = self
                .call(
                    Endpoint::InquiryRefund,
                    &InquiryRefundRequest::from(req),
                    ctx,
                )
                .await?;
            let r = &ans.result;
            let state = match codes::classify(&r.result_code, &r.result_status) {
                Meaning::Success => wire::refund_state(ans.refund_status.as_deref()),
                Meaning::Processing => RefundState::Processing,
                m => return Err(refusal(m, r)),
            };
            if let Some(why) = wire::inquiry_answer_mismatch(&ans, req) {
                return Err(ProviderError::answer_mismatch(NAME, "inquiryRefund", why));
            }
            Ok(RefundRecord {
                refund_id: ans.refund_id.clone().or_else(|| req.refund_id.clone()),
                request_id: ans
                    .refund_request_id
                    .clone()
                    .or_else(|| req.request_id.clone()),
                payment_id: None,
                amount: ans.refund_amount.as_ref().and_then(wire::Amount::to_money),
                state,
                refund_time: wire::parse_time(ans.refund_time.as_deref()),
                reference_refund_id: None,
                result: provider_result(r),
            })
        })
    }
}
