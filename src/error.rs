//! The one place where a failure becomes a gRPC `Status` (AIP-193): exactly one
//! `google.rpc.ErrorInfo` on every error, `RetryInfo` and the `grpc-retry-pushback-ms`
//! trailer only when repeating the same request is safe, `BadRequest` for validation.

use std::collections::HashMap;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::providers::{Disposition, NotExecuted, ProviderError, Refusal};
use crate::retry;

/// ErrorInfo domain of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "paygate";

/// The `ErrorInfo` reasons callers match on (owned by the crate-private `reason` module, which
/// the layers below this one use without depending on `error`).
pub mod reason {
    pub use crate::reason::*;
}

/// Response metadata that marks an answer replayed from the idempotency store.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The gRPC code a provider's refusal for good is answered with.
pub fn refusal_code(r: Refusal) -> Code {
    match r {
        Refusal::InvalidRequest => Code::InvalidArgument,
        Refusal::NotFound => Code::NotFound,
        Refusal::Precondition => Code::FailedPrecondition,
        Refusal::PermissionDenied => Code::PermissionDenied,
    }
}

/// The refusal a stored outcome's gRPC code stands for: stored refusals keep the code they
/// were first answered with ([`refusal_code`]); any other code reads as a precondition.
pub fn refusal_of_code(code: i32) -> Refusal {
    match Code::from_i32(code) {
        Code::InvalidArgument => Refusal::InvalidRequest,
        Code::NotFound => Refusal::NotFound,
        Code::PermissionDenied => Refusal::PermissionDenied,
        _ => Refusal::Precondition,
    }
}

/// The gRPC code a failed provider call is answered with.
pub fn provider_code(d: &Disposition) -> Code {
    match d {
        Disposition::Definitive(r) => refusal_code(*r),
        Disposition::Retryable { why, .. } => match why {
            NotExecuted::Throttled | NotExecuted::Overloaded | NotExecuted::RateLimited => {
                Code::ResourceExhausted
            }
            NotExecuted::Unreachable | NotExecuted::NotReady | NotExecuted::CircuitOpen => {
                Code::Unavailable
            }
        },
        Disposition::Unknown { deadline_cut: true } => Code::DeadlineExceeded,
        Disposition::Unknown {
            deadline_cut: false,
        } => Code::Unavailable,
        Disposition::Misconfigured => Code::Internal,
    }
}

/// Who and what an error is about; copied into ErrorInfo metadata.
#[derive(Debug, Clone, Default)]
pub struct ErrorContext {
    /// Provider name, when a provider was involved.
    pub provider: Option<String>,
    /// Account name, when one was resolved.
    pub account: Option<String>,
    /// The caller's request id, when the request carried one.
    pub request_id: Option<String>,
}

impl ErrorContext {
    /// The context of a request carrying `request_id` (empty = none).
    pub fn for_request(request_id: &str) -> Self {
        Self {
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
            ..Self::default()
        }
    }
}

/// Everything that can go wrong in an RPC, before it is mapped to a `Status`.
#[derive(Debug)]
pub enum GatewayError {
    /// The request is invalid; nothing was sent anywhere.
    InvalidArgument(Vec<FieldViolation>),
    /// A provider call failed.
    Provider(Box<ProviderError>, ErrorContext),
    /// The caller's deadline passed before an answer; `outcome_unknown` when a provider call
    /// was under way.
    DeadlineExceeded {
        /// A provider call may have executed.
        outcome_unknown: bool,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// The idempotency key was used before with other parameters.
    KeyReused(ErrorContext),
    /// Another caller claimed this request id on the account.
    RequestIdClaimed(ErrorContext),
    /// Another attempt with the same key is under way and did not finish within this
    /// call's deadline.
    InFlight {
        /// When to try again.
        retry_after: Duration,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// An earlier attempt's outcome is unknown and this provider cannot settle it by resending;
    /// an operator must check.
    OutcomeUnresolved(ErrorContext),
    /// Another request's refund of the same payment is in flight or unsettled, on a provider
    /// without an idempotency key; nothing was sent.
    PaymentBusy {
        /// When to try again.
        retry_after: Duration,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// An earlier attempt is not found at the provider, but the quiet period after it has not
    /// passed, so "not found" does not yet mean "not executed"; nothing was sent.
    NotYetDecidable {
        /// When the outcome becomes decidable.
        retry_after: Duration,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// The provider answered, but the store could not hold the outcome: it is not answered,
    /// since an answer the store does not hold could be contradicted later. The outcome is
    /// unknown to the caller until a retry settles it.
    NotStored {
        /// When a retry may settle it.
        retry_after: Duration,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// The idempotency store cannot be reached; nothing was sent to the provider.
    StoreUnavailable(ErrorContext),
    /// The caller did not prove who it is.
    Unauthenticated {
        /// ErrorInfo reason.
        reason: &'static str,
        /// What to do about it.
        message: &'static str,
    },
    /// The caller may not do this.
    PermissionDenied {
        /// What was refused.
        message: String,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// A gateway rate limit refused the call (nothing was sent).
    RateLimited(Box<crate::ratelimit::Limited>, ErrorContext),
    /// The gateway has too much work in flight (nothing was sent).
    Overloaded {
        /// When to try again.
        retry_after: Duration,
    },
    /// Nothing is known of what the request names.
    NotFound {
        /// ErrorInfo reason.
        reason: &'static str,
        /// What was not found.
        message: String,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// The events after a Watch cursor were purged.
    CursorExpired {
        /// The oldest cursor that can still be resumed from.
        oldest: i64,
    },
    /// A Watch cursor is beyond the newest event.
    CursorAhead {
        /// The newest cursor given out.
        newest: i64,
    },
    /// The shutdown grace ended while the call was in flight.
    Abandoned {
        /// A provider call may have been under way.
        outcome_unknown: bool,
        /// What the call was about.
        ctx: ErrorContext,
    },
    /// The gateway is shutting down; a stream ends with this.
    ShuttingDown,
    /// A stored final error, replayed.
    Replayed(Box<GatewayError>),
    /// A bug or an impossible state in the gateway itself.
    Internal(String),
}

impl GatewayError {
    /// Wraps a provider error with its context.
    pub fn provider(err: ProviderError, ctx: ErrorContext) -> Self {
        if let Disposition::Unknown { deadline_cut: true } = err.disposition {
            return Self::DeadlineExceeded {
                outcome_unknown: true,
                ctx,
            };
        }
        Self::Provider(Box::new(err), ctx)
    }
}

fn metadata(ctx: &ErrorContext) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(p) = &ctx.provider {
        m.insert("provider".into(), p.clone());
    }
    if let Some(a) = &ctx.account {
        m.insert("account".into(), a.clone());
    }
    if let Some(r) = &ctx.request_id {
        m.insert("requestId".into(), r.clone());
    }
    m
}

fn status(
    code: Code,
    message: String,
    details: ErrorDetails,
    retry_after: Option<Duration>,
) -> Status {
    // The reason closes the message too, for people reading a status with a tool that shows
    // details as bytes (`buf curl` prints each Any's value in base64); programs branch on
    // ErrorInfo.reason.
    let message = match details.error_info() {
        Some(info) => format!("{message} (reason: {})", info.reason),
        None => message,
    };
    let mut trailers = MetadataMap::new();
    if let Some(after) = retry_after {
        let ms = after.as_millis().min(i32::MAX as u128).to_string();
        if let Ok(v) = ms.parse() {
            trailers.insert("grpc-retry-pushback-ms", v);
        }
    }
    Status::with_error_details_and_metadata(code, message, details, trailers)
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Status {
        match err {
            GatewayError::InvalidArgument(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut d = ErrorDetails::with_bad_request(violations);
                d.set_error_info(reason::INVALID_REQUEST, ERROR_DOMAIN, HashMap::new());
                status(
                    Code::InvalidArgument,
                    format!("invalid request: {summary}"),
                    d,
                    None,
                )
            }
            GatewayError::Provider(e, ctx) => {
                let mut md = metadata(&ctx);
                if let Some(r) = &e.result {
                    md.insert("resultCode".into(), r.code.clone());
                    md.insert("resultStatus".into(), r.status.clone());
                    md.insert("resultMessage".into(), r.message.clone());
                }
                let retry_after = match &e.disposition {
                    Disposition::Retryable { after, .. } => Some(*after),
                    Disposition::Unknown { .. } => Some(retry::UNKNOWN_OUTCOME),
                    Disposition::Definitive(_) | Disposition::Misconfigured => None,
                };
                let mut d = ErrorDetails::with_error_info(e.reason.clone(), ERROR_DOMAIN, md);
                if let Some(after) = retry_after {
                    d.set_retry_info(Some(after));
                }
                if let Some(q) = &e.quota {
                    d.add_quota_failure_violation(q.subject.clone(), q.description.clone());
                }
                let message = match &e.disposition {
                    Disposition::Unknown { .. } => format!(
                        "{}; the outcome is unknown: retry with the same request_id, which never executes twice",
                        e.message
                    ),
                    _ => e.message.clone(),
                };
                status(provider_code(&e.disposition), message, d, retry_after)
            }
            GatewayError::DeadlineExceeded {
                outcome_unknown,
                ctx,
            } => {
                let (reason, message) = if outcome_unknown {
                    (
                        reason::OUTCOME_UNKNOWN,
                        "deadline exceeded while the provider call was under way; the outcome is unknown: retry with the same request_id, which never executes twice",
                    )
                } else {
                    (reason::DEADLINE_EXCEEDED, "deadline exceeded")
                };
                let d = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata(&ctx));
                status(Code::DeadlineExceeded, message.into(), d, None)
            }
            GatewayError::KeyReused(ctx) => {
                let d = ErrorDetails::with_error_info(
                    reason::IDEMPOTENCY_KEY_REUSED,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                status(
                    Code::InvalidArgument,
                    "request_id was already used with different parameters; use a new request_id for a new operation".into(),
                    d,
                    None,
                )
            }
            GatewayError::RequestIdClaimed(ctx) => {
                let d = ErrorDetails::with_error_info(
                    reason::REQUEST_ID_CLAIMED,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                status(
                    Code::AlreadyExists,
                    "another caller already uses this request_id on this account; request ids are unique per account and method across callers, so use a new one".into(),
                    d,
                    None,
                )
            }
            GatewayError::InFlight { retry_after, ctx } => {
                let mut d = ErrorDetails::with_error_info(
                    reason::REQUEST_IN_FLIGHT,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                d.set_retry_info(Some(retry_after));
                status(
                    Code::Aborted,
                    "another request with this request_id is still in progress; retry after the delay to get its outcome".into(),
                    d,
                    Some(retry_after),
                )
            }
            GatewayError::OutcomeUnresolved(ctx) => {
                let d = ErrorDetails::with_error_info(
                    reason::OUTCOME_UNKNOWN,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                status(
                    Code::FailedPrecondition,
                    "an earlier attempt with this request_id has an unknown outcome that the gateway could not settle; an operator must check the provider and settle the key".into(),
                    d,
                    None,
                )
            }
            GatewayError::PaymentBusy { retry_after, ctx } => {
                let mut d = ErrorDetails::with_error_info(
                    reason::PAYMENT_REFUND_PENDING,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                d.set_retry_info(Some(retry_after));
                status(
                    Code::Aborted,
                    "another request's refund of this payment is in flight or unsettled; the provider has no idempotency key, so refunds of one payment never overlap: retry after the delay".into(),
                    d,
                    Some(retry_after),
                )
            }
            GatewayError::NotYetDecidable { retry_after, ctx } => {
                let mut d = ErrorDetails::with_error_info(
                    reason::OUTCOME_UNKNOWN,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                d.set_retry_info(Some(retry_after));
                status(
                    Code::Unavailable,
                    format!(
                        "an earlier attempt is not in the provider's records yet, which means it did not execute only after the quiet period; retry in {} ms with the same request_id",
                        retry_after.as_millis()
                    ),
                    d,
                    Some(retry_after),
                )
            }
            GatewayError::NotStored { retry_after, ctx } => {
                let mut d = ErrorDetails::with_error_info(
                    reason::OUTCOME_UNKNOWN,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                d.set_retry_info(Some(retry_after));
                status(
                    Code::Unavailable,
                    "the provider answered, but the gateway could not store the outcome, so the outcome is unknown: retry with the same request_id, which settles it and never executes twice".into(),
                    d,
                    Some(retry_after),
                )
            }
            GatewayError::StoreUnavailable(ctx) => {
                let mut d = ErrorDetails::with_error_info(
                    reason::STORE_UNAVAILABLE,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                d.set_retry_info(Some(retry::STORE_UNAVAILABLE));
                status(
                    Code::Unavailable,
                    "the idempotency store is unavailable; nothing was sent to the provider".into(),
                    d,
                    Some(retry::STORE_UNAVAILABLE),
                )
            }
            GatewayError::Unauthenticated { reason, message } => {
                let d = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
                status(Code::Unauthenticated, message.into(), d, None)
            }
            GatewayError::PermissionDenied { message, ctx } => {
                let d = ErrorDetails::with_error_info(
                    reason::CALLER_NOT_ALLOWED,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                status(Code::PermissionDenied, message, d, None)
            }
            GatewayError::RateLimited(l, ctx) => {
                let mut md = metadata(&ctx);
                md.insert("limit".into(), l.subject.clone());
                let mut d = ErrorDetails::with_error_info(reason::RATE_LIMITED, ERROR_DOMAIN, md);
                d.set_retry_info(Some(l.retry_after));
                d.add_quota_failure_violation(l.subject.clone(), l.description.clone());
                status(
                    Code::ResourceExhausted,
                    format!("rate limit of {} reached; retry after the delay", l.subject),
                    d,
                    Some(l.retry_after),
                )
            }
            GatewayError::Overloaded { retry_after } => {
                let mut d =
                    ErrorDetails::with_error_info(reason::OVERLOADED, ERROR_DOMAIN, HashMap::new());
                d.set_retry_info(Some(retry_after));
                status(
                    Code::ResourceExhausted,
                    "the gateway has too many requests in flight; retry after the delay".into(),
                    d,
                    Some(retry_after),
                )
            }
            GatewayError::NotFound {
                reason,
                message,
                ctx,
            } => {
                let d = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata(&ctx));
                status(Code::NotFound, message, d, None)
            }
            GatewayError::CursorAhead { newest } => {
                let mut md = HashMap::new();
                md.insert("newestCursor".into(), newest.to_string());
                let d = ErrorDetails::with_error_info(reason::CURSOR_AHEAD, ERROR_DOMAIN, md);
                status(
                    Code::OutOfRange,
                    format!(
                        "this cursor is beyond the newest event ({newest}): it was not given by this gateway's store; resume from a cursor you received, or from the start (empty cursor)"
                    ),
                    d,
                    None,
                )
            }
            GatewayError::CursorExpired { oldest } => {
                let mut md = HashMap::new();
                md.insert("oldestCursor".into(), oldest.to_string());
                let d = ErrorDetails::with_error_info(reason::CURSOR_EXPIRED, ERROR_DOMAIN, md);
                status(
                    Code::OutOfRange,
                    format!(
                        "events after this cursor were purged by retention; resume from cursor {oldest} or from the start (empty cursor), and reconcile what may be missing"
                    ),
                    d,
                    None,
                )
            }
            GatewayError::Abandoned {
                outcome_unknown,
                ctx,
            } => {
                let mut d = ErrorDetails::with_error_info(
                    reason::SHUTTING_DOWN,
                    ERROR_DOMAIN,
                    metadata(&ctx),
                );
                d.set_retry_info(Some(retry::SHUTTING_DOWN));
                let message = if outcome_unknown {
                    "the gateway shut down while this call was in progress; its outcome is unknown: retry with the same request_id (another replica answers), which never executes twice"
                } else {
                    "the gateway shut down while this call was in progress; retry (another replica answers)"
                };
                status(
                    Code::Unavailable,
                    message.into(),
                    d,
                    Some(retry::SHUTTING_DOWN),
                )
            }
            GatewayError::ShuttingDown => {
                let mut d = ErrorDetails::with_error_info(
                    reason::SHUTTING_DOWN,
                    ERROR_DOMAIN,
                    HashMap::new(),
                );
                d.set_retry_info(Some(retry::SHUTTING_DOWN));
                status(
                    Code::Unavailable,
                    "the gateway is shutting down; reconnect and resume from your last cursor"
                        .into(),
                    d,
                    Some(retry::SHUTTING_DOWN),
                )
            }
            GatewayError::Replayed(inner) => {
                let mut s = Status::from(*inner);
                s.metadata_mut().insert(
                    REPLAYED_HEADER,
                    tonic::metadata::MetadataValue::from_static("true"),
                );
                s
            }
            GatewayError::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                let d =
                    ErrorDetails::with_error_info(reason::INTERNAL, ERROR_DOMAIN, HashMap::new());
                status(Code::Internal, "internal error".into(), d, None)
            }
        }
    }
}

/// The request messages tonic could not read (garbage, truncated varints, invalid UTF-8, a
/// missing message) or refused for their size, as tonic reports them.
fn undecodable(s: &Status) -> bool {
    let m = s.message();
    (s.code() == Code::Internal
        && (m.starts_with("failed to decode Protobuf message")
            || m.starts_with("Unexpected EOF decoding stream")
            || m.starts_with("Missing request message")))
        || (s.code() == Code::OutOfRange
            && m.starts_with("Error, decoded message length too large"))
}

/// Maps a response of the gRPC server: a request message tonic could not decode, or one over
/// the size limit, becomes INVALID_ARGUMENT with ErrorInfo `INVALID_REQUEST` (and BadRequest),
/// like every other bad request; everything else passes unchanged.
pub fn undecodable_as_invalid<B: Default>(
    response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let Some(s) = response.extensions().get::<Status>() else {
        return response;
    };
    if !undecodable(s) {
        return response;
    }
    let description = if s.code() == Code::OutOfRange {
        "the request message is larger than the gateway accepts".to_owned()
    } else {
        format!("the request message cannot be decoded: {}", s.message())
    };
    let violations = vec![tonic_types::FieldViolation::new("", description)];
    Status::from(GatewayError::InvalidArgument(violations)).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            provider: Some("antom".into()),
            account: Some("main".into()),
            request_id: Some("r-1".into()),
        }
    }

    #[test]
    fn unknown_outcome_is_unavailable_with_retry_info_and_pushback() {
        let s: Status =
            GatewayError::provider(ProviderError::unknown("HTTP 503", None), ctx()).into();
        assert_eq!(s.code(), Code::Unavailable);
        let d = s.get_error_details();
        assert_eq!(d.error_info().unwrap().reason, "OUTCOME_UNKNOWN");
        assert_eq!(d.error_info().unwrap().metadata["requestId"], "r-1");
        assert_eq!(
            d.retry_info().unwrap().retry_delay,
            Some(retry::UNKNOWN_OUTCOME)
        );
        assert_eq!(s.metadata().get("grpc-retry-pushback-ms").unwrap(), "1000");
    }

    #[test]
    fn an_outcome_not_stored_is_unknown_with_retry_info() {
        let s: Status = GatewayError::NotStored {
            retry_after: retry::UNKNOWN_OUTCOME,
            ctx: ctx(),
        }
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        let d = s.get_error_details();
        assert_eq!(d.error_info().unwrap().reason, "OUTCOME_UNKNOWN");
        assert_eq!(
            d.retry_info().unwrap().retry_delay,
            Some(retry::UNKNOWN_OUTCOME)
        );
    }

    #[test]
    fn definitive_refusal_has_no_retry_info() {
        let e = ProviderError::definitive(Refusal::Precondition, "X", "y", None);
        let s: Status = GatewayError::provider(e, ctx()).into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.get_error_details().retry_info().is_none());
        assert!(s.metadata().get("grpc-retry-pushback-ms").is_none());
    }

    #[test]
    fn deadline_cut_becomes_deadline_exceeded() {
        let s: Status =
            GatewayError::provider(ProviderError::deadline_cut("timed out"), ctx()).into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert_eq!(
            s.get_error_details().error_info().unwrap().reason,
            "OUTCOME_UNKNOWN"
        );
        assert!(s.get_error_details().retry_info().is_none());
    }

    #[test]
    fn each_failure_has_one_code_and_stored_refusals_read_back() {
        use NotExecuted::*;
        let refusals = [
            (Refusal::InvalidRequest, Code::InvalidArgument),
            (Refusal::NotFound, Code::NotFound),
            (Refusal::Precondition, Code::FailedPrecondition),
            (Refusal::PermissionDenied, Code::PermissionDenied),
        ];
        for (r, code) in refusals {
            assert_eq!(provider_code(&Disposition::Definitive(r)), code, "{r:?}");
            assert_eq!(refusal_of_code(refusal_code(r) as i32), r);
        }
        assert_eq!(refusal_of_code(Code::Unknown as i32), Refusal::Precondition);
        let retryable = [
            (Throttled, Code::ResourceExhausted),
            (Overloaded, Code::ResourceExhausted),
            (RateLimited, Code::ResourceExhausted),
            (Unreachable, Code::Unavailable),
            (NotReady, Code::Unavailable),
            (CircuitOpen, Code::Unavailable),
        ];
        for (why, code) in retryable {
            let d = Disposition::Retryable {
                why,
                after: Duration::from_secs(1),
            };
            assert_eq!(provider_code(&d), code, "{why:?}");
        }
        assert_eq!(
            provider_code(&Disposition::Unknown {
                deadline_cut: false
            }),
            Code::Unavailable
        );
        assert_eq!(provider_code(&Disposition::Misconfigured), Code::Internal);
    }
}
