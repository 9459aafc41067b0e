//! Subscriptions: cancel one (idempotent) and read what the gateway knows of one.

use crate::domain::Reconcile;
use crate::domain::{CancelOutcome, CancelSubscription, SubscriptionRecord};
use crate::error::{GatewayError, StoreUse, reason};
use crate::events::Events;
use crate::idempotency::{Idempotency, Operation, Reply};
use crate::providers::{ProviderError, Resolution};

use super::{CANCEL_SUBSCRIPTION, Call, attempt, once};

/// Cancels the subscription `cmd` once per request_id; a repeat replays the first outcome.
/// A fresh outcome is recorded as the subscription's known state.
pub(crate) async fn cancel(
    idem: &Idempotency,
    events: &Events,
    call: &Call<'_>,
    cmd: &CancelSubscription,
) -> Result<Reply<CancelOutcome>, GatewayError> {
    let account = call.account;
    let body = CancelSubscription {
        request_id: String::new(),
        ..cmd.clone()
    };
    let id = (CANCEL_SUBSCRIPTION, cmd.request_id.as_str());
    let reply = once(idem, call, id, &body, None, &Cancel { call, cmd }).await?;
    if !reply.replayed
        && let Some(subscription_id) = &cmd.subscription_id
    {
        let known = SubscriptionRecord {
            subscription_id: subscription_id.clone(),
            subscription_request_id: cmd.subscription_request_id.clone(),
            cancellation: Some(reply.value.status),
            cancellation_type: Some(cmd.cancellation_type),
            state: reply.value.subscription_state.clone(),
            last_notification_type: None,
            end_time: reply.value.cancel_time,
        };
        let caller = Some(call.caller).filter(|c| !c.is_empty());
        let provider = account.provider.name();
        events
            .record_cancel(&account.name, provider, caller, &known)
            .await;
    }
    Ok(reply)
}

/// A subscription's cancellation, as the idempotency layer runs it.
struct Cancel<'a, 'c> {
    call: &'a Call<'c>,
    cmd: &'a CancelSubscription,
}

impl Operation for Cancel<'_, '_> {
    type Output = CancelOutcome;

    /// A repeated cancel asks for the state the first one already reached, so the identical
    /// request is resent to settle an unknown outcome.
    async fn settle(&self, _: Reconcile) -> Result<Resolution<CancelOutcome>, ProviderError> {
        Ok(Resolution::Resend)
    }

    /// The cancel, resent within the call while its outcome is unknown.
    async fn send(&self) -> Result<CancelOutcome, ProviderError> {
        let (call, provider) = (self.call, &self.call.account.provider);
        attempt(call, "cancel", true, || {
            provider.cancel_subscription(self.cmd, &call.provider)
        })
        .await
    }
}

/// What the gateway has recorded about a subscription (by its id or its request id), and
/// when it last changed (Unix milliseconds).
pub(crate) async fn get(
    events: &Events,
    call: &Call<'_>,
    subscription_id: &str,
    subscription_request_id: &str,
) -> Result<(SubscriptionRecord, i64), GatewayError> {
    let account = call.account;
    let found = events
        .subscription(&account.name, subscription_id, subscription_request_id)
        .await
        .map_err(|e| {
            GatewayError::store(&e, StoreUse::Read("a subscription's state"), &call.ctx)
        })?;
    found.ok_or_else(|| GatewayError::NotFound {
        reason: reason::SUBSCRIPTION_NOT_RECORDED,
        message: format!(
            "the gateway has recorded nothing about this subscription on account {:?}: no Cancel through the gateway and no notification",
            account.name
        ),
        ctx: call.ctx.clone(),
    })
}
