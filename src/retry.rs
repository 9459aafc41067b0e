//! Every retry rule in one place: what a typed provider failure means for a resend, the
//! resends that settle an unknown outcome inside one call, the back-off after throttling,
//! what the circuit breaker learns from a result, and every RetryInfo delay the gateway
//! gives on its own account. A provider's code table says which of *its* codes are
//! retryable and after how long (a fact about that provider); everything else is here.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::providers::{Attempt, CallContext, Disposition, NotExecuted, ProviderError};
use crate::reason;

/// RetryInfo when an outcome is unknown and the same request may be repeated.
pub(crate) const UNKNOWN_OUTCOME: Duration = Duration::from_secs(1);
/// RetryInfo when the idempotency store cannot be reached.
pub(crate) const STORE_UNAVAILABLE: Duration = Duration::from_secs(1);
/// RetryInfo when the gateway shuts down under a call or a stream.
pub(crate) const SHUTTING_DOWN: Duration = Duration::from_secs(1);
/// RetryInfo when another call holds the same request_id.
pub(crate) const IN_FLIGHT: Duration = Duration::from_secs(1);
/// The shortest RetryInfo the gateway gives for a wait it computes.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(100);
/// RetryInfo when another call completed the same request_id a moment ago and its outcome
/// is being stored.
pub(crate) const IN_FLIGHT_COMPLETING: Duration = Duration::from_millis(100);
/// RetryInfo when another request's refund of the same payment is unsettled.
pub(crate) const PAYMENT_PENDING: Duration = Duration::from_secs(1);
/// RetryInfo when the gateway has too many calls in flight.
pub(crate) const GATEWAY_OVERLOADED: Duration = Duration::from_millis(200);
/// RetryInfo when a stream is refused because a stream cap is full.
pub(crate) const STREAMS_FULL: Duration = Duration::from_secs(1);
/// RetryInfo when the store's admission slots stay busy (`idempotency::STORE_ADMISSION_WAIT`).
pub(crate) const STORE_BUSY: Duration = Duration::from_millis(200);
/// RetryInfo when an account has too many calls in flight.
pub(crate) const ACCOUNT_OVERLOADED: Duration = Duration::from_millis(200);
// The provider's own transport failures carry their delays with them
// (`providers::failure`: PROVIDER_UNREACHABLE, PROVIDER_THROTTLED).

/// How many times an unknown outcome is settled by repeating the call within one RPC.
const MAX_RESOLUTION_ATTEMPTS: u32 = 3;
/// The least time worth starting another attempt with.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);
/// The pause before the first settling resend; it doubles before each further one.
const RESEND_BACKOFF_START: Duration = Duration::from_millis(50);

/// First back-off period after the provider throttled an account.
pub(crate) const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest back-off period.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Settling an earlier attempt failed without sending anything new: the key stays unknown,
/// and the caller may retry the same request. Retryable and misconfigured failures pass.
pub(crate) fn settling_failed(e: ProviderError) -> ProviderError {
    match e.disposition {
        Disposition::Unknown { .. } | Disposition::Definitive(_) => ProviderError {
            disposition: Disposition::Retryable {
                why: NotExecuted::NotReady,
                after: UNKNOWN_OUTCOME,
            },
            reason: reason::OUTCOME_UNKNOWN.into(),
            message: format!("cannot settle an earlier attempt yet: {}", e.message),
            ..e
        },
        _ => e,
    }
}

/// What an account's guard learns from a provider call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The call succeeded: the breaker closes and the back-off resets.
    Succeeded,
    /// The provider answered (a refusal, or the gateway shed the call before sending): the
    /// breaker closes; the back-off stays.
    Answered,
    /// The provider asked to slow down, for at least the hint if it gave one.
    Throttled(Option<Duration>),
    /// The provider failed: the breaker counts it.
    Failed,
    /// Says nothing about the provider (the caller's deadline cut the call).
    Neutral,
}

/// The breaker's and the back-off's view of a result.
pub(crate) fn signal<T>(result: &Result<T, ProviderError>) -> Signal {
    let Err(e) = result else {
        return Signal::Succeeded;
    };
    match e.disposition {
        Disposition::Retryable {
            why: NotExecuted::Throttled,
            after,
        } => Signal::Throttled(Some(after)),
        Disposition::Retryable {
            why: NotExecuted::Unreachable,
            ..
        }
        | Disposition::Unknown {
            deadline_cut: false,
        } => Signal::Failed,
        Disposition::Unknown { deadline_cut: true } => Signal::Neutral,
        _ => Signal::Answered,
    }
}

/// Adaptive back-off after the provider answered "too many requests": the account pauses for
/// a period that doubles on each further throttle ([`BACKOFF_START`] up to [`BACKOFF_MAX`])
/// and resets on success.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    state: Mutex<(Option<Instant>, Duration)>,
}

impl Backoff {
    /// The provider throttled us; `hint` is its own delay, if it gave one.
    pub(crate) fn throttled(&self, hint: Option<Duration>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let period = if s.1.is_zero() {
            BACKOFF_START
        } else {
            (s.1 * 2).min(BACKOFF_MAX)
        };
        let period = hint.map_or(period, |h| h.max(period));
        *s = (Some(Instant::now() + period), period);
    }

    /// A call went through; the back-off resets.
    pub(crate) fn succeeded(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.is_some() || !s.1.is_zero() {
            *s = (None, Duration::ZERO);
        }
    }

    /// How long the account still pauses.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = s.0?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

/// Runs `call`; when its outcome is unknown and repeating it is safe (`repeat_safe`: a read,
/// or a provider that deduplicates), repeats it with backoff while the deadline allows. The
/// repeat *is* the resolution: the provider answers the first execution's result.
pub(crate) async fn call_resolving<T, F, Fut>(
    ctx: &CallContext,
    repeat_safe: bool,
    what: Attempt<'_>,
    mut call: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    use tracing::Instrument;
    let mut backoff = RESEND_BACKOFF_START;
    let mut attempt = 0;
    let mut earlier_unknown: Option<ProviderError> = None;
    loop {
        attempt += 1;
        let span = tracing::info_span!(
            "provider_call",
            otel.name = what.endpoint,
            provider = what.provider,
            account = what.account,
            endpoint = what.endpoint,
            attempt,
            result = tracing::field::Empty,
        );
        let outcome = call().instrument(span.clone()).await;
        span.record(
            "result",
            match &outcome {
                Ok(_) => "ok",
                Err(e) => e.reason.as_str(),
            },
        );
        let err = match outcome {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Disposition::Unknown { deadline_cut } = err.disposition else {
            // A repeat that was not executed (throttled, refused before sending) settles
            // nothing: the earlier attempt's outcome is still unknown.
            return Err(match (&err.disposition, earlier_unknown) {
                (Disposition::Retryable { .. } | Disposition::Misconfigured, Some(u)) => u,
                _ => err,
            });
        };
        if !repeat_safe || deadline_cut || attempt > MAX_RESOLUTION_ATTEMPTS {
            return Err(err);
        }
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        if left < backoff + MIN_ATTEMPT_TIME {
            return Err(err);
        }
        earlier_unknown = Some(err.clone());
        tracing::warn!(attempt, reason = %err.reason, error = %err.message,
            "provider outcome unknown; repeating the identical request to settle it");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backoff_doubles_and_resets() {
        let b = Backoff::default();
        assert!(b.remaining().is_none());
        b.throttled(None);
        let first = b.remaining().unwrap();
        assert!(first <= BACKOFF_START && first > Duration::from_millis(900));
        b.throttled(None);
        assert!(b.remaining().unwrap() > BACKOFF_START);
        b.succeeded();
        assert!(b.remaining().is_none());
    }
}
