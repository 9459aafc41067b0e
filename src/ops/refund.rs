//! Refunds: create one (idempotent, never twice) and inquire one.

use crate::auth::Auth;
use crate::domain::{CreateRefund, InquireRefund, Reconcile, RefundRecord, RefundState};
use crate::error::{GatewayError, StoreUse, reason};
use crate::idempotency::{Idempotency, Operation, RefundScope, Reply};
use crate::providers::{ProviderError, Resolution};
use crate::store::StoreError;

use super::{CREATE_REFUND, Call, attempt, guarded, once};

/// Creates the refund `cmd` once per request_id: a repeat replays the first outcome, and an
/// earlier attempt whose outcome is unknown is settled before anything is sent again.
pub(crate) async fn create(
    idem: &Idempotency,
    call: &Call<'_>,
    cmd: &CreateRefund,
) -> Result<Reply<RefundRecord>, GatewayError> {
    let account = call.account;
    let provider = &account.provider;
    // A provider without an idempotency key gets one unsettled attempt per payment.
    let scope = RefundScope {
        payment_id: &cmd.payment_id,
        quiet: provider.quiet_period(),
    };
    let body = CreateRefund {
        request_id: String::new(),
        ..cmd.clone()
    };
    let id = (CREATE_REFUND, cmd.request_id.as_str());
    let reply = once(idem, call, id, &body, Some(scope), &Create { call, cmd }).await?;
    // A replay of a refund that was still processing reports the latest state the gateway
    // has learned since (e.g. by Inquire). Final states never change.
    if reply.replayed && reply.value.state == RefundState::Processing {
        let latest = idem
            .latest_refund(&account.name, &cmd.request_id)
            .await
            .map_err(|e| GatewayError::store(&e, StoreUse::Keys, &call.ctx))?;
        if let Some(latest) = latest {
            return Ok(Reply {
                value: latest,
                replayed: true,
            });
        }
    }
    Ok(reply)
}

/// A refund's creation, as the idempotency layer runs it.
struct Create<'a, 'c> {
    call: &'a Call<'c>,
    cmd: &'a CreateRefund,
}

impl Operation for Create<'_, '_> {
    type Output = RefundRecord;

    /// An earlier attempt with an unknown outcome is settled by the provider (Antom: resend;
    /// PayXpert: reconcile against its refunds of the payment).
    async fn settle(
        &self,
        reconcile: Reconcile,
    ) -> Result<Resolution<RefundRecord>, ProviderError> {
        let (call, provider) = (self.call, &self.call.account.provider);
        guarded(call, "resolve", || {
            provider.resolve_refund(self.cmd, &reconcile, &call.provider)
        })
        .await
    }

    /// The refund, resent within the call while its outcome is unknown if the provider
    /// deduplicates it.
    async fn send(&self) -> Result<RefundRecord, ProviderError> {
        let (call, provider) = (self.call, &self.call.account.provider);
        attempt(call, "refund", provider.deduplicates_requests(), || {
            provider.create_refund(self.cmd, &call.provider)
        })
        .await
    }
}

/// Reads a refund at the provider. A request id names a refund of the caller that created
/// it (another caller's needs its policy's `read_others`); on a provider that knows refunds
/// only by its own id, the id attributed to the request id by its own Create is used.
pub(crate) async fn inquire(
    idem: &Idempotency,
    auth: &Auth,
    call: &Call<'_>,
    mut query: InquireRefund,
) -> Result<RefundRecord, GatewayError> {
    let account = call.account;
    let provider = &account.provider;
    let caller = call.caller;
    let ctx = &call.ctx;
    let store_failed = |e: StoreError| GatewayError::store(&e, StoreUse::Keys, ctx);
    let not_recorded = |request_id: &str| GatewayError::NotFound {
        reason: reason::REFUND_NOT_RECORDED,
        message: format!(
            "no refund with request_id {request_id:?} is recorded for this caller on account {:?}; give refund_id",
            account.name
        ),
        ctx: ctx.clone(),
    };
    match (&query.refund_id, query.request_id.clone()) {
        (None, Some(request_id)) if provider.inquires_by_request_id() => {
            // Without authentication every caller is the same anonymous one.
            if auth.enabled() {
                let owner = idem
                    .claimant(&account.name, CREATE_REFUND, &request_id)
                    .await
                    .map_err(store_failed)?;
                if !auth.may_read(caller, owner.as_ref().map(|o| o.0.as_str())) {
                    return Err(not_recorded(&request_id));
                }
            }
        }
        (None, request_id) => {
            // The caller's own refund, unless it may read other callers' refunds.
            let request_id = request_id.unwrap_or_default();
            let whose = (!auth.may_read(caller, None)).then_some(caller);
            query.refund_id = idem
                .attributed_refund(&account.name, whose, &request_id)
                .await
                .map_err(store_failed)?;
            if query.refund_id.is_none() {
                return Err(not_recorded(&request_id));
            }
        }
        (Some(refund_id), _) if auth.enabled() => {
            // A refund made through the gateway by another caller needs read_others.
            let owner = idem
                .refund_owner(&account.name, refund_id)
                .await
                .map_err(store_failed)?;
            if let Some(owner) = owner
                && !auth.may_read(caller, Some(&owner))
            {
                return Err(GatewayError::NotFound {
                    reason: reason::REFUND_NOT_RECORDED,
                    message: format!(
                        "refund {refund_id:?} was made by another caller on account {:?}",
                        account.name
                    ),
                    ctx: ctx.clone(),
                });
            }
        }
        (Some(_), _) => {}
    }
    let mut record = attempt(call, "inquire", true, || {
        provider.inquire_refund(&query, &call.provider)
    })
    .await
    .map_err(|e| GatewayError::provider(e, ctx.clone()))?;
    // A provider's inquiry need not name the payment (Antom's does not): the payment is the one
    // the Create of this request id named, as it answered it.
    if record.payment_id.is_none()
        && let Some(request_id) = record.request_id.as_deref()
    {
        record.payment_id = idem
            .claimant(&account.name, CREATE_REFUND, request_id)
            .await
            .map_err(store_failed)?
            .and_then(|(_, payment_id)| payment_id);
    }
    idem.refresh_refund(&account.name, &record).await;
    Ok(record)
}
