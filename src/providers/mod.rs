//! The provider seam: one trait every payment provider implements, and the typed failure
//! (`failure.rs`) a provider returns. What a failure means for resends, back-off and the
//! breaker is decided in `retry.rs`; which gRPC code the caller gets, in `error.rs`.
//!
//! # Adding a provider
//! Everything lives in one folder, `providers/<name>/`, as `antom/` and `payxpert/` show:
//! 1. `wire.rs`: its `NAME` and its JSON bodies, converted to and from `domain` values.
//! 2. `client.rs`: its `Settings` and one pooled HTTP client (auth, signing, bounded answers
//!    through `http.rs`); `signing.rs` if it signs.
//! 3. `codes.rs`: its result codes → [`Meaning`] (a [`Refusal`], a [`NotExecuted`], success or
//!    unknown). It never chooses a gRPC code.
//! 4. `config.rs`: its account keys (a `deny_unknown_fields` struct read through
//!    [`AccountKeys`]), its environment shortcuts and their `--help` lines, their validation
//!    (files read, nothing contacted), and its [`Registration`]; `impl ProviderSettings for
//!    Settings` builds the provider.
//! 5. `mod.rs`: `impl Provider`: the calls, how an unknown outcome is settled
//!    (`resolve_refund`), and, if it sends notifications, `notification` and
//!    `notification_reply` (its acknowledgement and refusals, byte for byte); `notify.rs` for
//!    their verification.
//! 6. One line in [`registry::REGISTRY`].
//! 7. A simulator in `sim/` that answers like the real API, and tests through the binary.
//!
//! No generic module names a provider; only dev mode and the simulators (`sim/`) are about
//! particular ones.

pub mod antom;
mod failure;
pub(crate) mod http;
pub mod payxpert;
pub mod registry;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use self::failure::{Disposition, Meaning, NotExecuted, ProviderError, Refusal};
use crate::domain::Violations;
use crate::domain::{CancelOutcome, CancelSubscription, CreateRefund, InquireRefund, RefundRecord};
use crate::settings::{AccountKeys, ConfigError, Shortcut};
use crate::telemetry::ProviderSeries;

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

    /// What the account reads from files that may change while it serves (keys, a
    /// password), to be read again when they do (see `crate::reload`).
    fn secrets(&self) -> Vec<Arc<dyn crate::reload::Reload>> {
        Vec::new()
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

    /// The body of the gateway's answer to a notification this provider posted, in the
    /// provider's own words (its acknowledgement, or a refusal its logs can show). Providers
    /// that send no notifications keep this default: [`neutral_reply`].
    fn notification_reply(&self, reply: NotificationReply<'_>) -> String {
        neutral_reply(reply)
    }
}

/// What the gateway answers a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationReply<'a> {
    /// Stored, or stored before: the provider may stop resending it.
    Accepted,
    /// Not taken, for this reason; the text says why.
    Refused(NotificationRefusal, &'a str),
}

/// Why a notification was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationRefusal {
    /// No such account or kind of notification.
    NotFound,
    /// The signature or client id is missing or wrong.
    Unverified,
    /// Verified but unreadable, too large, or too slow to arrive.
    Malformed,
    /// It could not be stored now; the provider should send it again.
    Unavailable,
    /// Signed outside the freshness window: a replay, or too late to be told from one.
    Stale,
}

/// The gateway's own answer to a notification, in no provider's dialect: when no provider is
/// known (an unknown account, a body over the limits) and for providers that send none.
/// `{"accepted": true}`, or `{"accepted": false, "refusal": "<why>", "message": "<text>"}`.
pub fn neutral_reply(reply: NotificationReply<'_>) -> String {
    match reply {
        NotificationReply::Accepted => serde_json::json!({"accepted": true}),
        NotificationReply::Refused(why, message) => serde_json::json!({
            "accepted": false,
            "refusal": why.name(),
            "message": message,
        }),
    }
    .to_string()
}

impl NotificationRefusal {
    /// Its name in the gateway's own answer.
    pub fn name(self) -> &'static str {
        match self {
            NotificationRefusal::NotFound => "not_found",
            NotificationRefusal::Unverified => "unverified",
            NotificationRefusal::Malformed => "malformed",
            NotificationRefusal::Unavailable => "unavailable",
            NotificationRefusal::Stale => "stale",
        }
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

/// What one provider's folder registers.
#[derive(Clone, Copy)]
pub struct Registration {
    /// The value of an account's `provider` key.
    pub name: &'static str,
    /// The account its environment shortcuts describe (`PAYGATE_ANTOM_*` → `antom`).
    pub env_account: &'static str,
    /// The environment variables that stand in for that account's keys.
    pub shortcuts: &'static [Shortcut],
    /// Their lines in `--help` (each line ends with a newline).
    pub help: &'static str,
    /// What to set to configure an account from the environment alone, for the message when
    /// no account is configured.
    pub setup: &'static str,
    /// Its label sets of the metrics, which exist from the start.
    pub metrics: ProviderSeries,
    /// Reads and validates an account's own keys (files it names are read; nothing is
    /// contacted).
    pub configure: fn(&mut AccountKeys<'_>) -> Result<ProviderConfig, ConfigError>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A provider's validated settings, ready to become a running provider.
pub trait ProviderSettings: Any + fmt::Debug + Send {
    /// Builds the provider (its HTTP client); contacts nothing.
    fn build(self: Box<Self>) -> Result<Arc<dyn Provider>, reqwest::Error>;

    /// The key versions it would use, for `paygate check-config` (`None`: no versioned keys).
    fn key_versions(&self) -> Option<String> {
        None
    }
}

/// One account's provider settings, whichever the provider.
#[derive(Debug)]
pub struct ProviderConfig(Box<dyn ProviderSettings>);

impl ProviderConfig {
    /// Wraps a provider's settings.
    pub fn new(settings: impl ProviderSettings) -> Self {
        ProviderConfig(Box::new(settings))
    }

    /// Builds the provider.
    pub fn build(self) -> Result<Arc<dyn Provider>, reqwest::Error> {
        self.0.build()
    }

    /// The key versions it would use (see [`ProviderSettings::key_versions`]).
    pub fn key_versions(&self) -> Option<String> {
        self.0.key_versions()
    }

    /// The settings, if they are of provider settings type `T`.
    pub fn settings<T: ProviderSettings>(&self) -> Option<&T> {
        (&*self.0 as &dyn Any).downcast_ref()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_neutral_reply_speaks_no_providers_dialect() {
        let refusals = [
            NotificationRefusal::NotFound,
            NotificationRefusal::Unverified,
            NotificationRefusal::Malformed,
            NotificationRefusal::Unavailable,
            NotificationRefusal::Stale,
        ];
        for why in refusals {
            let body = neutral_reply(NotificationReply::Refused(why, "because"));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["accepted"], false);
            assert_eq!(v["refusal"], why.name());
            assert_eq!(v["message"], "because");
            assert!(v.get("result").is_none(), "not Antom's shape: {body}");
        }
        assert_eq!(
            neutral_reply(NotificationReply::Accepted),
            r#"{"accepted":true}"#
        );
    }
}
