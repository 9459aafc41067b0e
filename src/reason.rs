//! The ErrorInfo reasons the gateway itself gives (domain `paygate`). A provider's refusal
//! carries the provider's code as its reason: Antom's result code as it is, PayXpert's error
//! code as `PAYXPERT_<code>`. `proto/paygate/v1/error_reasons.md` documents every one.

/// A request field breaks a rule (with BadRequest).
pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
/// A provider call may have executed and the gateway could not learn its outcome.
pub const OUTCOME_UNKNOWN: &str = "OUTCOME_UNKNOWN";
/// The deadline ended before any provider call.
pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
/// The request_id was used before with other parameters.
pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
/// Another call with the same request_id is in progress.
pub const REQUEST_IN_FLIGHT: &str = "REQUEST_IN_FLIGHT";
/// Another caller already uses this request_id on the account.
pub const REQUEST_ID_CLAIMED: &str = "REQUEST_ID_CLAIMED";
/// Another request's refund of the same payment is unsettled (providers without a key).
pub const PAYMENT_REFUND_PENDING: &str = "PAYMENT_REFUND_PENDING";
/// The idempotency store cannot be reached.
pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
/// The caller's policy forbids the method or the account.
pub const CALLER_NOT_ALLOWED: &str = "CALLER_NOT_ALLOWED";
/// A gateway rate limit refused the call.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// Too many calls in flight.
pub const OVERLOADED: &str = "OVERLOADED";
/// The account's circuit breaker is open.
pub const CIRCUIT_OPEN: &str = "CIRCUIT_OPEN";
/// No refund is recorded for the request_id.
pub const REFUND_NOT_RECORDED: &str = "REFUND_NOT_RECORDED";
/// A bug or a broken set-up in the gateway.
pub const INTERNAL: &str = "INTERNAL";
/// The call carried no credentials.
pub const MISSING_CREDENTIALS: &str = "MISSING_CREDENTIALS";
/// The bearer token is unknown.
pub const INVALID_TOKEN: &str = "INVALID_TOKEN";
/// The client certificate names no identity.
pub const CERTIFICATE_WITHOUT_IDENTITY: &str = "CERTIFICATE_WITHOUT_IDENTITY";
/// The provider refused the connection; nothing was sent.
pub const PROVIDER_UNAVAILABLE: &str = "PROVIDER_UNAVAILABLE";
/// The provider answered HTTP 429.
pub const PROVIDER_RATE_LIMITED: &str = "PROVIDER_RATE_LIMITED";
/// The provider refused the gateway's credentials.
pub const PROVIDER_AUTH_FAILED: &str = "PROVIDER_AUTH_FAILED";
/// The refund's currency is not the payment's.
pub const CURRENCY_MISMATCH: &str = "CURRENCY_MISMATCH";
/// The refund_id names a transaction that is not a refund.
pub const NOT_A_REFUND: &str = "NOT_A_REFUND";
/// An operator settled the key as failed.
pub const SETTLED_AS_FAILED: &str = "SETTLED_AS_FAILED";
/// The gateway knows nothing of the subscription.
pub const SUBSCRIPTION_NOT_RECORDED: &str = "SUBSCRIPTION_NOT_RECORDED";
/// Events after the cursor were purged by retention.
pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";
/// The Watch cursor is beyond the newest event: this store never gave it out.
pub const CURSOR_AHEAD: &str = "CURSOR_AHEAD";
/// The gateway is shutting down; reconnect (to another replica).
pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
/// `AdminService`: no idempotency key has that name.
pub const KEY_NOT_FOUND: &str = "KEY_NOT_FOUND";
/// `AdminService.SettleKey`: the key does not need a person (or the decision does not fit it).
pub const KEY_NOT_SETTLEABLE: &str = "KEY_NOT_SETTLEABLE";
/// `AdminService`: off without caller authentication, unless the gateway listens on loopback.
pub const ADMIN_DISABLED: &str = "ADMIN_DISABLED";

/// Every reason above.
pub const ALL: &[&str] = &[
    INVALID_REQUEST,
    OUTCOME_UNKNOWN,
    DEADLINE_EXCEEDED,
    IDEMPOTENCY_KEY_REUSED,
    REQUEST_IN_FLIGHT,
    PAYMENT_REFUND_PENDING,
    REQUEST_ID_CLAIMED,
    STORE_UNAVAILABLE,
    CALLER_NOT_ALLOWED,
    RATE_LIMITED,
    OVERLOADED,
    CIRCUIT_OPEN,
    REFUND_NOT_RECORDED,
    INTERNAL,
    MISSING_CREDENTIALS,
    INVALID_TOKEN,
    CERTIFICATE_WITHOUT_IDENTITY,
    PROVIDER_UNAVAILABLE,
    PROVIDER_RATE_LIMITED,
    PROVIDER_AUTH_FAILED,
    CURRENCY_MISMATCH,
    NOT_A_REFUND,
    SETTLED_AS_FAILED,
    SUBSCRIPTION_NOT_RECORDED,
    CURSOR_EXPIRED,
    CURSOR_AHEAD,
    SHUTTING_DOWN,
    KEY_NOT_FOUND,
    KEY_NOT_SETTLEABLE,
    ADMIN_DISABLED,
];
