//! The use cases, one function per RPC, below the gRPC edge: they take validated domain
//! values and an account, and return domain outcomes. The order every mutating use case
//! follows is written here once:
//!
//! 1. **idempotency**: the key's stored outcome is replayed, or the call claims the key
//!    ([`once`]);
//! 2. **settle**: an earlier attempt whose outcome is unknown is settled before anything is
//!    sent again, through the provider's own rule (steps 4–5 via [`guarded`]);
//! 3. **retry**: an attempt whose outcome is unknown is resent while that is safe
//!    ([`attempt`], rules in [`crate::retry`]);
//! 4. **guard**: the account's rate limit, in-flight cap and circuit breaker
//!    ([`crate::admission::AccountGuard`]);
//! 5. **provider**: the call itself ([`crate::providers::Provider`]).
//!
//! Mapping the outcome to protobuf, and any error to a `Status`, is the edge's job.

pub(crate) mod refund;
pub(crate) mod subscription;

use std::future::Future;

use serde::Serialize;
use tokio::time::Instant;

use crate::accounts::Account;
use crate::error::{ErrorContext, GatewayError};
use crate::idempotency::{self, Idempotency, Keyed, Operation, RefundScope, Reply};
use crate::providers::{Attempt, CallContext, ProviderError};
use crate::retry::call_resolving;

pub(crate) use crate::idempotency::{CANCEL_SUBSCRIPTION, CREATE_REFUND};

/// `RefundService.Inquire`.
pub(crate) const INQUIRE_REFUND: &str = "RefundService.Inquire";
/// `SubscriptionService.Get`.
pub(crate) const GET_SUBSCRIPTION: &str = "SubscriptionService.Get";
/// `EventService.Watch`.
pub(crate) const WATCH_EVENTS: &str = "EventService.Watch";

/// Who calls, on which account, by when: what every use case needs besides its request.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// The authenticated caller (empty without authentication).
    pub caller: &'a str,
    /// The account the request resolved to.
    pub account: &'a Account,
    /// What errors are about.
    pub ctx: ErrorContext,
    /// When the caller stops waiting; every provider timeout is derived from it.
    pub provider: CallContext,
    /// The call's slot of its account's bulkhead, held until it answers.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<'a> Call<'a> {
    /// A call of `caller` on `account` that must answer by `deadline`.
    pub(crate) fn new(
        caller: &'a str,
        account: &'a Account,
        ctx: ErrorContext,
        deadline: Instant,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        Self {
            caller,
            account,
            ctx,
            provider: CallContext::new(deadline),
            _slot: slot,
        }
    }

    /// When the caller stops waiting.
    pub(crate) fn deadline(&self) -> Instant {
        self.provider.deadline
    }
}

/// Step 1 around the rest: `op` runs once per idempotency key (`method` and `request_id` of
/// the call's caller on its account), whose request is fingerprinted by `body` (the request
/// without its request_id). A repeat replays the stored outcome; an earlier attempt whose
/// outcome is unknown is first settled by `op`. `refund` holds the payment of a refund on a
/// provider without an idempotency key of its own.
pub(crate) async fn once<O: Operation, B: Serialize>(
    idem: &Idempotency,
    call: &Call<'_>,
    (method, request_id): (&'static str, &str),
    body: &B,
    refund: Option<RefundScope<'_>>,
    op: &O,
) -> Result<Reply<O::Output>, GatewayError> {
    let account = &call.account.name;
    let caller = call.caller.to_owned();
    let (key, fingerprint) = idempotency::keyed(caller, method, request_id, account, body);
    let req = Keyed {
        key: &key,
        fingerprint: &fingerprint,
        account,
        deadline: call.deadline(),
        ctx: &call.ctx,
        refund,
    };
    idem.run(&req, op).await
}

/// Steps 4–5 once: the account's guard, then the provider call `f` at `endpoint`.
pub(crate) async fn guarded<T, F, Fut>(
    call: &Call<'_>,
    endpoint: &'static str,
    f: F,
) -> Result<T, ProviderError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let provider = call.account.provider.name();
    call.account
        .guard
        .call(call.deadline(), (provider, endpoint), f)
        .await
}

/// Steps 3–5: the provider call `f` at `endpoint` through the account's guard, resent while
/// its outcome is unknown if repeating it is safe (`repeat_safe`: a read, or a provider that
/// deduplicates the request).
pub(crate) async fn attempt<T, F, Fut>(
    call: &Call<'_>,
    endpoint: &'static str,
    repeat_safe: bool,
    f: F,
) -> Result<T, ProviderError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let account = call.account;
    let provider = account.provider.name();
    let what = Attempt {
        provider,
        account: &account.name,
        endpoint,
    };
    call_resolving(&call.provider, repeat_safe, what, || {
        account
            .guard
            .call(call.deadline(), (provider, endpoint), &f)
    })
    .await
}
