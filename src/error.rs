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
use crate::store::StoreError;

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
    /// The admin service is off: no caller authentication, and the gateway listens beyond
    /// loopback.
    AdminDisabled,
    /// An operator action refused because of what the key is (`KEY_NOT_SETTLEABLE`); nothing
    /// changed.
    KeyNotSettleable {
        /// What the key is, and why that refuses the action.
        message: String,
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

/// What the store was doing for a call when it failed, for the log line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreUse {
    /// The idempotency layer's keys, refunds and claims: logged at ERROR.
    Keys,
    /// Reading what the gateway recorded (this, e.g. "the event log"): logged at WARN.
    Read(&'static str),
}

impl GatewayError {
    /// The one conversion of a store failure under a call: logged with what the store was
    /// doing, and answered UNAVAILABLE `STORE_UNAVAILABLE` with RetryInfo. Nothing is sent to
    /// a provider because of it.
    pub(crate) fn store(e: &StoreError, doing: StoreUse, ctx: &ErrorContext) -> Self {
        match doing {
            StoreUse::Keys => tracing::error!(error = %e, "idempotency store failed"),
            StoreUse::Read(what) => tracing::warn!(error = %e, "cannot read {what}"),
        }
        GatewayError::StoreUnavailable(ctx.clone())
    }

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

/// One error's answer: `code`, one ErrorInfo (`reason`, `metadata`), and, when repeating the
/// request is safe, RetryInfo and the pushback trailer (`retry_after`); `more` adds the other
/// details a kind carries (BadRequest, QuotaFailure).
fn answer(
    code: Code,
    reason: impl Into<String>,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
    more: impl FnOnce(&mut ErrorDetails),
) -> Status {
    let mut d = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if let Some(after) = retry_after {
        d.set_retry_info(Some(after));
    }
    more(&mut d);
    status(code, message.into(), d, retry_after)
}

/// [`answer`] with nothing more.
fn plain(
    code: Code,
    reason: impl Into<String>,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
) -> Status {
    answer(code, reason, message, metadata, retry_after, |_| {})
}

/// Every violation of a request, in one BadRequest.
fn invalid_request(violations: Vec<FieldViolation>) -> Status {
    let summary = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("invalid request: {summary}");
    answer(
        Code::InvalidArgument,
        reason::INVALID_REQUEST,
        message,
        HashMap::new(),
        None,
        |d| {
            d.set_bad_request(violations);
        },
    )
}

/// A provider's failure: its code from the disposition, the provider's result in the metadata.
fn provider_failure(e: &ProviderError, ctx: &ErrorContext) -> Status {
    let mut md = metadata(ctx);
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
    let message = match &e.disposition {
        Disposition::Unknown { .. } => format!(
            "{}; the outcome is unknown: retry with the same request_id, which never executes twice",
            e.message
        ),
        _ => e.message.clone(),
    };
    let code = provider_code(&e.disposition);
    answer(code, e.reason.clone(), message, md, retry_after, |d| {
        if let Some(q) = &e.quota {
            d.add_quota_failure_violation(q.subject.clone(), q.description.clone());
        }
    })
}

/// One metadata entry.
fn one(key: &str, value: impl ToString) -> HashMap<String, String> {
    HashMap::from([(key.to_owned(), value.to_string())])
}

/// What each error says, for a person reading it (callers branch on the reason).
mod say {
    pub(super) const ADMIN_DISABLED: &str = "the admin service needs caller authentication (tokens or mutual TLS, and a policy naming the AdminService methods) on a gateway that listens beyond loopback";
    pub(super) const OUTCOME_CUT: &str = "deadline exceeded while the provider call was under way; the outcome is unknown: retry with the same request_id, which never executes twice";
    pub(super) const DEADLINE: &str = "deadline exceeded";
    pub(super) const KEY_REUSED: &str = "request_id was already used with different parameters; use a new request_id for a new operation";
    pub(super) const ID_CLAIMED: &str = "another caller already uses this request_id on this account; request ids are unique per account and method across callers, so use a new one";
    pub(super) const IN_FLIGHT: &str = "another request with this request_id is still in progress; retry after the delay to get its outcome";
    pub(super) const UNRESOLVED: &str = "an earlier attempt with this request_id has an unknown outcome that the gateway could not settle; an operator must check the provider and settle the key";
    pub(super) const PAYMENT_BUSY: &str = "another request's refund of this payment is in flight or unsettled; the provider has no idempotency key, so refunds of one payment never overlap: retry after the delay";
    pub(super) const NOT_STORED: &str = "the provider answered, but the gateway could not store the outcome, so the outcome is unknown: retry with the same request_id, which settles it and never executes twice";
    pub(super) const STORE_DOWN: &str =
        "the idempotency store is unavailable; nothing was sent to the provider";
    pub(super) const OVERLOADED: &str =
        "the gateway has too many requests in flight; retry after the delay";
    pub(super) const ABANDONED_UNKNOWN: &str = "the gateway shut down while this call was in progress; its outcome is unknown: retry with the same request_id (another replica answers), which never executes twice";
    pub(super) const ABANDONED: &str =
        "the gateway shut down while this call was in progress; retry (another replica answers)";
    pub(super) const SHUTTING_DOWN: &str =
        "the gateway is shutting down; reconnect and resume from your last cursor";

    pub(super) fn not_yet(retry_after: std::time::Duration) -> String {
        format!(
            "an earlier attempt is not in the provider's records yet, which means it did not execute only after the quiet period; retry in {} ms with the same request_id",
            retry_after.as_millis()
        )
    }

    pub(super) fn ahead(newest: i64) -> String {
        format!(
            "this cursor is beyond the newest event ({newest}): it was not given by this gateway's store; resume from a cursor you received, or from the start (empty cursor)"
        )
    }

    pub(super) fn expired(oldest: i64) -> String {
        format!(
            "events after this cursor were purged by retention; resume from cursor {oldest} or from the start (empty cursor), and reconcile what may be missing"
        )
    }
}

/// [`plain`] about `ctx` (its metadata).
fn about(
    ctx: &ErrorContext,
    code: Code,
    reason: &str,
    message: impl Into<String>,
    retry_after: Option<Duration>,
) -> Status {
    plain(code, reason, message, metadata(ctx), retry_after)
}

impl From<GatewayError> for Status {
    /// The one place an error becomes a status: one line per kind (a table, so laid out by
    /// hand): its code, its reason, what it says, and, when repeating it is safe, after how long.
    #[rustfmt::skip]
    fn from(err: GatewayError) -> Status {
        use Code::*;
        use GatewayError as E;
        use reason as r;
        let none = HashMap::new;
        let (down, shutdown) = (Some(retry::STORE_UNAVAILABLE), Some(retry::SHUTTING_DOWN));
        match err {
            E::InvalidArgument(violations) => invalid_request(violations),
            E::Provider(e, c) => provider_failure(&e, &c),
            E::DeadlineExceeded { outcome_unknown: true, ctx: c } => about(&c, DeadlineExceeded, r::OUTCOME_UNKNOWN, say::OUTCOME_CUT, None),
            E::DeadlineExceeded { ctx: c, .. } => about(&c, DeadlineExceeded, r::DEADLINE_EXCEEDED, say::DEADLINE, None),
            E::KeyReused(c) => about(&c, InvalidArgument, r::IDEMPOTENCY_KEY_REUSED, say::KEY_REUSED, None),
            E::RequestIdClaimed(c) => about(&c, AlreadyExists, r::REQUEST_ID_CLAIMED, say::ID_CLAIMED, None),
            E::InFlight { retry_after: a, ctx: c } => about(&c, Aborted, r::REQUEST_IN_FLIGHT, say::IN_FLIGHT, Some(a)),
            E::OutcomeUnresolved(c) => about(&c, FailedPrecondition, r::OUTCOME_UNKNOWN, say::UNRESOLVED, None),
            E::PaymentBusy { retry_after: a, ctx: c } => about(&c, Aborted, r::PAYMENT_REFUND_PENDING, say::PAYMENT_BUSY, Some(a)),
            E::NotYetDecidable { retry_after: a, ctx: c } => about(&c, Unavailable, r::OUTCOME_UNKNOWN, say::not_yet(a), Some(a)),
            E::NotStored { retry_after: a, ctx: c } => about(&c, Unavailable, r::OUTCOME_UNKNOWN, say::NOT_STORED, Some(a)),
            E::StoreUnavailable(c) => about(&c, Unavailable, r::STORE_UNAVAILABLE, say::STORE_DOWN, down),
            E::Unauthenticated { reason, message } => plain(Unauthenticated, reason, message, none(), None),
            E::PermissionDenied { message, ctx: c } => about(&c, PermissionDenied, r::CALLER_NOT_ALLOWED, message, None),
            E::RateLimited(l, c) => rate_limited(&l, &c),
            E::Overloaded { retry_after: a } => plain(ResourceExhausted, r::OVERLOADED, say::OVERLOADED, none(), Some(a)),
            E::NotFound { reason, message, ctx: c } => about(&c, NotFound, reason, message, None),
            E::AdminDisabled => plain(PermissionDenied, r::ADMIN_DISABLED, say::ADMIN_DISABLED, none(), None),
            E::KeyNotSettleable { message } => plain(FailedPrecondition, r::KEY_NOT_SETTLEABLE, message, none(), None),
            E::CursorAhead { newest: n } => plain(OutOfRange, r::CURSOR_AHEAD, say::ahead(n), one("newestCursor", n), None),
            E::CursorExpired { oldest: o } => plain(OutOfRange, r::CURSOR_EXPIRED, say::expired(o), one("oldestCursor", o), None),
            E::Abandoned { outcome_unknown: true, ctx: c } => about(&c, Unavailable, r::SHUTTING_DOWN, say::ABANDONED_UNKNOWN, shutdown),
            E::Abandoned { ctx: c, .. } => about(&c, Unavailable, r::SHUTTING_DOWN, say::ABANDONED, shutdown),
            E::ShuttingDown => plain(Unavailable, r::SHUTTING_DOWN, say::SHUTTING_DOWN, none(), shutdown),
            E::Replayed(inner) => replayed(*inner),
            E::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                plain(Internal, r::INTERNAL, "internal error", none(), None)
            }
        }
    }
}

/// A stored final error, answered again: marked replayed.
fn replayed(inner: GatewayError) -> Status {
    let mut s = Status::from(inner);
    s.metadata_mut().insert(
        REPLAYED_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    s
}

/// A gateway rate limit: which one, and when a slot frees.
fn rate_limited(l: &crate::ratelimit::Limited, ctx: &ErrorContext) -> Status {
    let mut md = metadata(ctx);
    md.insert("limit".into(), l.subject.clone());
    let message = format!("rate limit of {} reached; retry after the delay", l.subject);
    answer(
        Code::ResourceExhausted,
        reason::RATE_LIMITED,
        message,
        md,
        Some(l.retry_after),
        |d| {
            d.add_quota_failure_violation(l.subject.clone(), l.description.clone());
        },
    )
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

    /// The message ends with the ErrorInfo reason, for tools that print details as bytes.
    #[test]
    fn the_message_ends_with_the_reason() {
        let s = Status::from(GatewayError::KeyReused(ErrorContext::default()));
        assert!(
            s.message().ends_with("(reason: IDEMPOTENCY_KEY_REUSED)"),
            "{}",
            s.message()
        );
        let s = Status::from(GatewayError::Replayed(Box::new(GatewayError::ShuttingDown)));
        assert_eq!(s.message().matches("(reason: SHUTTING_DOWN)").count(), 1);
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
