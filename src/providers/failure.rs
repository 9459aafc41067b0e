//! What a failed provider call is: a typed failure whose variants cannot contradict each
//! other. Providers say *what happened* (refused for good, not executed and why, unknown,
//! misconfigured); `retry.rs` decides what that means for resends, back-off and the breaker,
//! and `error.rs` alone chooses the gRPC code the caller gets.

use std::time::Duration;

use crate::domain::ProviderResult;
use crate::ratelimit::Limited;
use crate::reason;

/// Why a provider refused for good: the same request always gets the same answer. Stored by
/// its name (`invalid_request`, `not_found`, `precondition`, `permission_denied`) with a
/// refusal's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The request breaks one of the provider's rules.
    InvalidRequest,
    /// What the request names does not exist at the provider.
    NotFound,
    /// The payment, refund or subscription is not in a state that allows it.
    Precondition,
    /// The merchant may not do this at the provider.
    PermissionDenied,
}

/// Why a request was not executed; the same request may be repeated after a delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotExecuted {
    /// The provider asked to slow down (HTTP 429 or a throttling code): the account backs off.
    Throttled,
    /// The provider could not be reached, or a read of it failed: the breaker counts it.
    Unreachable,
    /// The provider is not ready for this request yet (it said so), or an earlier attempt
    /// cannot be settled yet.
    NotReady,
    /// The account's circuit breaker is open; nothing was sent.
    CircuitOpen,
    /// The account has too many calls in flight; nothing was sent.
    Overloaded,
    /// A gateway rate limit refused the call; nothing was sent.
    RateLimited,
}

/// What a failed provider call means for the caller and for the idempotency store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The provider refused for good. Repeating the same request gives the same answer.
    Definitive(Refusal),
    /// Not executed; the same request may be repeated after `after`.
    Retryable {
        /// Why it was not executed.
        why: NotExecuted,
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

/// What a provider result code means. Each provider's code table maps its codes to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// The call succeeded.
    Success,
    /// A refund was accepted and is still being processed (answered as OK + PROCESSING).
    Processing,
    /// A definitive refusal; the same request always gets the same answer.
    Definitive(Refusal),
    /// Not executed; the same request may be repeated after the delay.
    Retryable(NotExecuted, Duration),
    /// Our keys, credentials or set-up are wrong.
    Misconfigured,
    /// The outcome is unknown.
    Unknown,
}

/// A provider call that did not produce a domain outcome.
#[derive(Debug, Clone)]
pub struct ProviderError {
    /// What it means.
    pub disposition: Disposition,
    /// ErrorInfo reason: the provider's result code, or a gateway reason such as
    /// `OUTCOME_UNKNOWN`.
    pub reason: String,
    /// Developer-facing message.
    pub message: String,
    /// The provider's raw result, when a verified answer carried one.
    pub result: Option<Box<ProviderResult>>,
    /// The limit that refused the call, when a rate limit did.
    pub quota: Option<Box<Limited>>,
}

/// RetryInfo when the provider could not be reached (nothing executed).
pub(crate) const PROVIDER_UNREACHABLE: Duration = Duration::from_secs(1);
/// RetryInfo after HTTP 429 without a usable Retry-After.
pub(crate) const PROVIDER_THROTTLED: Duration = Duration::from_secs(1);

/// A failed read (nothing executed at the provider) that did not get through: retryable,
/// and the breaker counts it like a refused connection. Other failures pass unchanged.
pub(crate) fn read_failed(e: ProviderError) -> ProviderError {
    match e.disposition {
        Disposition::Unknown {
            deadline_cut: false,
        } => ProviderError::retryable(
            NotExecuted::Unreachable,
            reason::PROVIDER_UNAVAILABLE,
            e.message,
            PROVIDER_UNREACHABLE,
        ),
        _ => e,
    }
}

impl ProviderError {
    fn new(disposition: Disposition, reason: String, message: String) -> Self {
        Self {
            disposition,
            reason,
            message,
            result: None,
            quota: None,
        }
    }

    /// An outcome the gateway cannot know.
    pub fn unknown(message: impl Into<String>, result: Option<ProviderResult>) -> Self {
        Self {
            result: result.map(Box::new),
            ..Self::new(
                Disposition::Unknown {
                    deadline_cut: false,
                },
                reason::OUTCOME_UNKNOWN.into(),
                message.into(),
            )
        }
    }

    /// A provider answer that does not match the request it answers (another refund's ids,
    /// payment or amount): never a success. It is an anomaly for a person (logged, counted in
    /// `paygate_answer_mismatches_total{provider}`), and the outcome is unknown, so the
    /// provider's own rule settles it.
    pub fn answer_mismatch(provider: &'static str, what: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        metrics::counter!("paygate_answer_mismatches_total", "provider" => provider).increment(1);
        tracing::error!(provider, what, detail = %detail,
            "anomaly: the provider's answer is not about the request it answers; the outcome is unknown");
        Self::unknown(
            format!("{provider} {what} answer does not match the request: {detail}"),
            None,
        )
    }

    /// An attempt that the caller's deadline ended while it may have been executing.
    pub fn deadline_cut(message: impl Into<String>) -> Self {
        Self::new(
            Disposition::Unknown { deadline_cut: true },
            reason::OUTCOME_UNKNOWN.into(),
            message.into(),
        )
    }

    /// A request that never left, or that the provider refused before executing.
    pub fn retryable(
        why: NotExecuted,
        reason: impl Into<String>,
        message: impl Into<String>,
        after: Duration,
    ) -> Self {
        Self::new(
            Disposition::Retryable { why, after },
            reason.into(),
            message.into(),
        )
    }

    /// A refusal for good that the gateway itself read from an answer.
    pub fn definitive(
        refusal: Refusal,
        reason: impl Into<String>,
        message: impl Into<String>,
        result: Option<ProviderResult>,
    ) -> Self {
        Self {
            result: result.map(Box::new),
            ..Self::new(
                Disposition::Definitive(refusal),
                reason.into(),
                message.into(),
            )
        }
    }

    /// Our side is misconfigured.
    pub fn misconfigured(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Disposition::Misconfigured, reason.into(), message.into())
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
            Meaning::Definitive(refusal) => ProviderError {
                result,
                ..ProviderError::new(Disposition::Definitive(refusal), reason, message)
            },
            Meaning::Retryable(why, after) => ProviderError {
                result,
                ..ProviderError::retryable(why, reason, message, after)
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
