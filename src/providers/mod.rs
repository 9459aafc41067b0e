//! The provider seam: one trait every payment provider implements, the error a provider
//! returns with its *disposition*, and the loop that settles unknown outcomes inside the
//! caller's deadline.

pub mod antom;
pub mod http;
pub mod payxpert;

use crate::reason;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use crate::domain::Violations;
use crate::domain::{
    CancelOutcome, CancelSubscription, CreateRefund, InquireRefund, ProviderResult, RefundRecord,
};

/// A boxed future, so the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every provider call carries besides its request.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// When the caller stops waiting; every upstream timeout is derived from it.
    pub deadline: Instant,
}

/// Time kept back from the deadline for the gateway's own work after an upstream call.
const UPSTREAM_MARGIN: Duration = Duration::from_millis(5);

impl CallContext {
    /// A context whose calls must end by `deadline`.
    pub fn new(deadline: Instant) -> Self {
        Self { deadline }
    }

    /// How long an upstream attempt may take: what remains of the deadline minus a margin,
    /// capped at `cap`. `None` when nothing useful remains.
    pub fn attempt_timeout(&self, cap: Duration) -> Option<Duration> {
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .checked_sub(UPSTREAM_MARGIN)?;
        if left < Duration::from_millis(1) {
            None
        } else {
            Some(left.min(cap))
        }
    }
}

/// What a provider result code means. Each provider's code table maps its codes to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// The call succeeded.
    Success,
    /// A refund was accepted and is still being processed (answered as OK + PROCESSING).
    Processing,
    /// A definitive refusal; the same request always gets the same answer.
    Definitive(Code),
    /// Not executed; the same request may be repeated after the delay.
    Retryable(Code, Duration),
    /// Our keys, credentials or set-up are wrong.
    Misconfigured,
    /// The outcome is unknown.
    Unknown,
}

/// What a failed provider call means for the caller and for the idempotency store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The provider refused for good. Repeating the same request gives the same answer.
    Definitive,
    /// Not executed; the same request may be repeated, after `after` if the provider said.
    Retryable {
        /// How long to wait before repeating.
        after: Duration,
    },
    /// The request may or may not have been executed.
    Unknown {
        /// True when the caller's deadline, not the provider, ended the attempt.
        deadline_cut: bool,
    },
    /// Our own keys, credentials or settings are wrong; an operator must act.
    Misconfigured,
}

/// A provider call that did not produce a domain outcome.
#[derive(Debug, Clone)]
pub struct ProviderError {
    /// What it means.
    pub disposition: Disposition,
    /// The gRPC code the caller gets.
    pub code: Code,
    /// ErrorInfo reason: the provider's result code, or a gateway reason such as
    /// `OUTCOME_UNKNOWN`.
    pub reason: String,
    /// Developer-facing message.
    pub message: String,
    /// The provider's raw result, when a verified answer carried one.
    pub result: Option<Box<ProviderResult>>,
    /// The limit that refused the call, when a rate limit did.
    pub quota: Option<Box<crate::ratelimit::Limited>>,
}

impl ProviderError {
    /// An outcome the gateway cannot know.
    pub fn unknown(message: impl Into<String>, result: Option<ProviderResult>) -> Self {
        Self {
            disposition: Disposition::Unknown {
                deadline_cut: false,
            },
            code: Code::Unavailable,
            reason: reason::OUTCOME_UNKNOWN.into(),
            message: message.into(),
            result: result.map(Box::new),
            quota: None,
        }
    }

    /// An attempt that the caller's deadline ended while it may have been executing.
    pub fn deadline_cut(message: impl Into<String>) -> Self {
        Self {
            disposition: Disposition::Unknown { deadline_cut: true },
            code: Code::DeadlineExceeded,
            reason: reason::OUTCOME_UNKNOWN.into(),
            message: message.into(),
            result: None,
            quota: None,
        }
    }

    /// A request that never left, or that the provider refused before executing.
    pub fn retryable(
        code: Code,
        reason: impl Into<String>,
        message: impl Into<String>,
        after: Duration,
    ) -> Self {
        Self {
            disposition: Disposition::Retryable { after },
            code,
            reason: reason.into(),
            message: message.into(),
            result: None,
            quota: None,
        }
    }

    /// Our side is misconfigured.
    pub fn misconfigured(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            disposition: Disposition::Misconfigured,
            code: Code::Internal,
            reason: reason.into(),
            message: message.into(),
            result: None,
            quota: None,
        }
    }

    /// The error for a provider answer that is not a success, per the code table's `meaning`.
    pub fn refusal(
        meaning: Meaning,
        reason: String,
        message: String,
        result: ProviderResult,
    ) -> Self {
        let result = Some(Box::new(result));
        match meaning {
            Meaning::Definitive(code) => ProviderError {
                disposition: Disposition::Definitive,
                code,
                reason,
                message,
                result,
                quota: None,
            },
            Meaning::Retryable(code, after) => ProviderError {
                result,
                ..ProviderError::retryable(code, reason, message, after)
            },
            Meaning::Misconfigured => {
                tracing::error!(reason = %reason,
                    "the provider refused our credentials or set-up; an operator must fix the account");
                ProviderError {
                    result,
                    ..ProviderError::misconfigured(reason, message)
                }
            }
            Meaning::Success | Meaning::Processing | Meaning::Unknown => ProviderError {
                result,
                ..ProviderError::unknown(message, None)
            },
        }
    }

    /// True if the request may have been executed.
    pub fn is_unknown(&self) -> bool {
        matches!(self.disposition, Disposition::Unknown { .. })
    }
}

/// How an earlier attempt with an unknown outcome was settled.
#[derive(Debug, Clone)]
pub enum Resolution<T> {
    /// It did not execute, or the provider deduplicates: sending the request again is safe.
    Resend,
    /// It executed; this is its outcome.
    Adopt(T),
    /// It cannot be decided automatically; an operator must check (the text says what).
    Undecidable(String),
}

/// A payment provider behind the gateway. Implementations live in one folder each and own
/// their HTTP client, wire types, signing and code table.
pub trait Provider: Send + Sync + 'static {
    /// Short provider name used in errors, logs and `ProviderResult.provider`.
    fn name(&self) -> &'static str;

    /// True when the provider itself deduplicates a repeated mutating request (Antom on
    /// refundRequestId), so an unknown outcome may be settled by sending the same request
    /// again.
    fn deduplicates_requests(&self) -> bool;

    /// Provider-specific rules for a refund, added to the generic validation.
    fn check_refund(&self, req: &CreateRefund, violations: &mut Violations);

    /// Provider-specific rules for a cancellation, added to the generic validation.
    fn check_cancel(&self, req: &CancelSubscription, violations: &mut Violations);

    /// True when the provider can look a refund up by the request id it was created with;
    /// otherwise the gateway supplies the refund id it recorded.
    fn inquires_by_request_id(&self) -> bool;

    /// For a provider without an idempotency key of its own (`deduplicates_requests` false):
    /// how long after an attempt may have left "not found at the provider" starts to mean
    /// "not executed". The gateway holds one unsettled refund attempt per payment for such
    /// providers.
    fn quiet_period(&self) -> Option<Duration> {
        None
    }

    /// Settles an earlier refund attempt whose outcome is unknown, before anything is sent
    /// again. `reconcile` says, for providers without a key, when the key's first attempt
    /// started and which refund ids are attributed to other keys on the payment. `Resend`
    /// means "not found"; the gateway resends only once the quiet period allows.
    fn resolve_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        reconcile: &'a crate::domain::Reconcile,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Resolution<RefundRecord>, ProviderError>>;

    /// Cancels a subscription.
    fn cancel_subscription<'a>(
        &'a self,
        req: &'a CancelSubscription,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<CancelOutcome, ProviderError>>;

    /// Creates a refund.
    fn create_refund<'a>(
        &'a self,
        req: &'a CreateRefund,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<RefundRecord, ProviderError>>;

    /// Reads a refund.
    fn inquire_refund<'a>(
        &'a self,
        req: &'a InquireRefund,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<RefundRecord, ProviderError>>;

    /// Verifies and reads a notification the provider sent: `kind` is the last path segment
    /// it was posted to (`refund`, `subscription`, `payment`), `uri` the path and query as
    /// received, `header` looks request headers up by lower-case name, `body` is the raw body.
    /// Providers that send none keep this default.
    fn notification(
        &self,
        kind: &str,
        uri: &str,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<crate::domain::Notification, NotificationError> {
        let _ = (kind, uri, header, body);
        Err(NotificationError::Unsupported)
    }
}

/// Why a notification was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationError {
    /// The provider or the path takes no notifications.
    Unsupported,
    /// The signature or client id is missing or wrong: not from the provider.
    Unverified(&'static str),
    /// Verified, but not a body the gateway understands.
    Malformed(String),
}

/// What a provider attempt is, for its trace span.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Provider name.
    pub provider: &'static str,
    /// Account name.
    pub account: &'a str,
    /// Endpoint (refund, inquire, cancel).
    pub endpoint: &'static str,
}

/// How many times an unknown outcome is settled by repeating the call within one RPC.
const MAX_RESOLUTION_ATTEMPTS: u32 = 3;
/// The least time worth starting another attempt with.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);

/// Runs `call`; when its outcome is unknown and repeating it is safe (`repeat_safe`: a read,
/// or a provider that deduplicates), repeats it with backoff while the deadline allows. The
/// repeat *is* the resolution: the provider answers the first execution's result.
pub async fn call_resolving<T, F, Fut>(
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
    let mut backoff = Duration::from_millis(50);
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
