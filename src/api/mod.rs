//! The gRPC edge: one thin method per RPC that begins the call ([`Rpc`]), validates the
//! request, hands the domain work to `ops`, and converts the outcome. Shared here: the
//! per-RPC prelude, deadlines, and domain -> protobuf conversion.

pub(crate) mod admin;
pub(crate) mod event;
pub(crate) mod refund;
pub(crate) mod subscription;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::accounts::{Account, Accounts};
use crate::auth::Auth;
use crate::domain::{
    CancelOutcome, CancelSubscription, CancellationEffect, CancellationStatus, CancellationType,
    Money, ProviderResult, RefundRecord, RefundState,
};
use crate::error::{ErrorContext, GatewayError, REPLAYED_HEADER};
use crate::idempotency::{Idempotency, Reply};
use crate::ops;
use crate::pb;
use crate::ratelimit::{self, CallerLimits};
use crate::telemetry::{self, GaugeGuard};

/// Time kept back from the caller's deadline so the answer reaches it in time.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// Settings shared by the services.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Longest time one RPC may take, whatever the caller's deadline.
    pub max_request_time: Duration,
    /// Most requests in flight in the whole gateway; beyond it, calls are shed at once.
    pub max_in_flight: usize,
    /// Longest a call waits for a caller rate-limit slot.
    pub max_queue: Duration,
    /// Most open event streams (`EventService.Watch`) in the gateway.
    pub max_streams: usize,
    /// Most open event streams of one authenticated caller.
    pub max_streams_per_caller: usize,
}

/// Default cap on open event streams.
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// Default cap on one caller's open event streams.
pub const DEFAULT_MAX_STREAMS_PER_CALLER: usize = 100;

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_request_time: Duration::from_secs(30),
            max_in_flight: 1024,
            max_queue: Duration::from_millis(250),
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_caller: DEFAULT_MAX_STREAMS_PER_CALLER,
        }
    }
}

/// Open event streams, in total and per caller. A slot is held for a stream's life and given
/// back when it ends, however it ends.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    total: Arc<Semaphore>,
    per_caller: usize,
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

/// One open stream's slot.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    _total: OwnedSemaphorePermit,
    caller: String,
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.caller.is_empty() {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

impl StreamSlots {
    /// Up to `total` streams, `per_caller` of each authenticated caller.
    pub(crate) fn new(total: usize, per_caller: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_caller: per_caller.max(1),
            open: Default::default(),
        }
    }

    /// A slot for a stream of `caller` (empty: anonymous, counted in the total only), or
    /// `OVERLOADED` with RetryInfo when a cap is reached.
    pub(crate) fn take(&self, caller: &str) -> Result<StreamSlot, GatewayError> {
        let shed = || GatewayError::Overloaded {
            retry_after: crate::retry::STREAMS_FULL,
        };
        let total = self.total.clone().try_acquire_owned().map_err(|_| shed())?;
        if !caller.is_empty() {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(caller.to_owned()).or_default();
            if *n >= self.per_caller {
                return Err(shed());
            }
            *n += 1;
        }
        Ok(StreamSlot {
            _total: total,
            caller: caller.to_owned(),
            open: self.open.clone(),
        })
    }
}

/// What every service shares: accounts, the idempotency layer, authentication and the
/// gateway-wide limits. Outside the crate it is only handed on (`Gateway::shared`, to
/// `serve_notifications`); its parts are the crate's.
#[derive(Debug)]
pub struct Shared {
    /// Provider accounts.
    pub(crate) accounts: Arc<Accounts>,
    /// The idempotency layer.
    pub(crate) idempotency: Idempotency,
    /// Caller authentication and policies.
    pub(crate) auth: Auth,
    /// Per-caller rate limits.
    pub(crate) callers: CallerLimits,
    /// Settings.
    pub(crate) settings: ApiSettings,
    /// Provider events and subscription states.
    pub(crate) events: crate::events::Events,
    /// Turns true when shutdown starts; long-lived streams end on it.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Turns true when the shutdown grace is over; calls still in flight are answered
    /// UNAVAILABLE `SHUTTING_DOWN` then.
    pub(crate) abandon: tokio::sync::watch::Sender<bool>,
    /// Open event streams.
    pub(crate) streams: StreamSlots,
    in_flight: Arc<Semaphore>,
}

impl Shared {
    /// Bundles the parts.
    pub fn new(
        accounts: Arc<Accounts>,
        idempotency: Idempotency,
        auth: Auth,
        callers: CallerLimits,
        settings: ApiSettings,
    ) -> Self {
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        Self {
            accounts,
            events: crate::events::Events::new(idempotency.clone()),
            stopping: tokio::sync::watch::Sender::new(false),
            abandon: tokio::sync::watch::Sender::new(false),
            streams: StreamSlots::new(settings.max_streams, settings.max_streams_per_caller),
            idempotency,
            auth,
            callers,
            settings,
            in_flight,
        }
    }

    /// Authorizes `caller` for `method`, then admits the call: a gateway-wide in-flight slot
    /// (shed at once when full) and a slot of the caller's rate limit (waited for if the wait
    /// fits the deadline and the queueing limit).
    pub async fn admit(
        &self,
        caller: &str,
        method: &str,
        deadline: Instant,
        ctx: &ErrorContext,
    ) -> Result<OwnedSemaphorePermit, GatewayError> {
        self.auth.authorize_method(caller, method, ctx)?;
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("paygate_shed_total", "reason" => "gateway_in_flight").increment(1);
            GatewayError::Overloaded {
                retry_after: crate::retry::GATEWAY_OVERLOADED,
            }
        })?;
        if let Some(limiter) = self.callers.limiter(caller) {
            let until = deadline
                .checked_sub(Duration::from_millis(50))
                .unwrap_or(deadline)
                .min(Instant::now() + self.settings.max_queue);
            ratelimit::acquire(&limiter, until)
                .await
                .map_err(|l| GatewayError::RateLimited(Box::new(l), ctx.clone()))?;
        }
        Ok(permit)
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The instant by which this RPC must answer: the caller's deadline (minus a margin) or the
/// configured maximum, whichever comes first.
pub(crate) fn deadline_of<T>(req: &Request<T>, settings: &ApiSettings) -> Instant {
    let now = Instant::now();
    let asked = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| t.saturating_sub(DEADLINE_MARGIN));
    now + asked
        .unwrap_or(settings.max_request_time)
        .min(settings.max_request_time)
}

/// Adds the resolved account, the caller and the request id to the RPC's span.
pub(crate) fn record_call(account: &str, caller: &str, request_id: &str) {
    let span = tracing::Span::current();
    span.record("account", account);
    span.record("caller", caller);
    span.record("request_id", request_id);
}

/// Runs an RPC body under its deadline and maps its error to a `Status`, in one place.
/// `mutating` says whether a provider call cut short could have executed.
pub(crate) async fn run<T>(
    shared: &Shared,
    method: &'static str,
    deadline: Instant,
    ctx: ErrorContext,
    mutating: bool,
    body: Pin<Box<impl Future<Output = Result<Reply<T>, GatewayError>>>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let _in_flight = GaugeGuard::hold(metrics::gauge!("paygate_in_flight_requests"));
    let mut abandon = shared.abandon.subscribe();
    let result = tokio::select! {
        r = tokio::time::timeout_at(deadline, body) => match r {
            Ok(r) => r,
            Err(_) => Err(GatewayError::DeadlineExceeded {
                outcome_unknown: mutating,
                ctx,
            }),
        },
        // The shutdown grace is over: the call is answered instead of cut off.
        _ = abandon.wait_for(|a| *a) => Err(GatewayError::Abandoned {
            outcome_unknown: mutating,
            ctx,
        }),
    };
    let elapsed = started.elapsed().as_secs_f64();
    // Milliseconds, to the microsecond.
    let elapsed_ms = (elapsed * 1_000_000.0).round() / 1000.0;
    match result {
        Ok(reply) => {
            metrics::histogram!("paygate_rpc_duration_seconds", "method" => method, "code" => "OK")
                .record(elapsed);
            metrics::counter!("paygate_rpc_total", "method" => method, "code" => "OK").increment(1);
            let span = tracing::Span::current();
            span.record("grpc.code", "OK");
            span.record("replayed", reply.replayed);
            tracing::info!(
                method,
                elapsed_ms,
                code = "OK",
                replayed = reply.replayed,
                "rpc"
            );
            let mut response = Response::new(reply.value);
            if reply.replayed {
                response
                    .metadata_mut()
                    .insert(REPLAYED_HEADER, MetadataValue::from_static("true"));
            }
            Ok(response)
        }
        Err(e) => {
            let status = Status::from(e);
            let code = format!("{:?}", status.code());
            tracing::Span::current().record("grpc.code", code.as_str());
            if status.metadata().get(REPLAYED_HEADER).is_some() {
                tracing::Span::current().record("replayed", true);
            }
            metrics::histogram!("paygate_rpc_duration_seconds", "method" => method, "code" => code.clone())
                .record(elapsed);
            metrics::counter!("paygate_rpc_total", "method" => method, "code" => code).increment(1);
            tracing::info!(method, elapsed_ms, code = ?status.code(), grpc_message = status.message(), "rpc");
            Err(status)
        }
    }
}

/// One RPC, from its first line to its answer: every method begins with [`Rpc::begin`]
/// (deadline, caller identity, span), admits the call with [`Rpc::admit`], enters the
/// account with [`Rpc::enter`], hands the domain work to `ops`, and answers through
/// [`Rpc::respond`] (deadline, shutdown, metrics, logs, and the error mapping).
pub(crate) struct Rpc<'a> {
    /// What every service shares.
    pub shared: &'a Shared,
    method: &'static str,
    deadline: Instant,
    caller: Mutex<Option<Result<String, GatewayError>>>,
    span: tracing::Span,
}

impl<'a> Rpc<'a> {
    /// Starts `method` on `request`: its deadline, who calls (checked by [`Rpc::admit`]),
    /// and its span; returns the request's message.
    pub(crate) fn begin<T>(
        shared: &'a Shared,
        method: &'static str,
        request: Request<T>,
    ) -> (Self, T) {
        let deadline = deadline_of(&request, &shared.settings);
        let caller = shared.auth.authenticate(&request);
        let span = telemetry::rpc_span(method, request.metadata());
        let rpc = Self {
            shared,
            method,
            deadline,
            caller: Mutex::new(Some(caller)),
            span,
        };
        (rpc, request.into_inner())
    }

    /// The authenticated caller, authorized for the method and admitted (see
    /// [`Shared::admit`]); hold the permit for the call.
    pub(crate) async fn admit(
        &self,
        ctx: &ErrorContext,
    ) -> Result<(String, OwnedSemaphorePermit), GatewayError> {
        let caller = self
            .caller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| Err(GatewayError::Internal("a call admitted twice".into())))?;
        let permit = self
            .shared
            .admit(&caller, self.method, self.deadline, ctx)
            .await?;
        Ok((caller, permit))
    }

    /// The call of `caller` on `account`: its error context, the span's fields (with the
    /// request id, if the request has one), and the caller's authorization for the account.
    pub(crate) fn enter<'c>(
        &self,
        caller: &'c str,
        account: &'c Account,
        request_id: Option<&str>,
        ctx: &ErrorContext,
    ) -> Result<ops::Call<'c>, GatewayError> {
        let ctx = account.context(ctx);
        if let Some(request_id) = request_id {
            record_call(&account.name, caller, request_id);
        }
        self.shared
            .auth
            .authorize_account(caller, &account.name, &ctx)?;
        let slot = account.guard.enter().ok_or(GatewayError::Overloaded {
            retry_after: crate::retry::ACCOUNT_OVERLOADED,
        })?;
        Ok(ops::Call::new(caller, account, ctx, self.deadline, slot))
    }

    /// Runs `body` under the RPC's deadline and span, and answers (see [`run`]).
    ///
    /// `body` goes to the heap once, here: a future passed by value down through `async fn`s
    /// is kept in each one's state (the compiler does not overlap an `async fn`'s arguments
    /// with what it awaits), so an unboxed body would be held twice per call in flight, and
    /// once more for each further layer.
    pub(crate) fn respond<T, B>(
        &self,
        ctx: ErrorContext,
        mutating: bool,
        body: B,
    ) -> impl Future<Output = Result<Response<T>, Status>> + use<'a, T, B>
    where
        B: Future<Output = Result<Reply<T>, GatewayError>>,
    {
        run(
            self.shared,
            self.method,
            self.deadline,
            ctx,
            mutating,
            Box::pin(body),
        )
        .instrument(self.span.clone())
    }
}

fn money(m: &Money) -> pb::Money {
    pb::Money {
        currency: m.currency.clone(),
        value: m.value,
    }
}

fn provider_result(r: &ProviderResult) -> pb::ProviderResult {
    pb::ProviderResult {
        provider: r.provider.clone(),
        code: r.code.clone(),
        status: r.status.clone(),
        message: r.message.clone(),
    }
}

/// Domain refund at `account` -> `Refund` message.
pub(crate) fn refund_to_pb(account: &str, r: &RefundRecord) -> pb::Refund {
    pb::Refund {
        account: account.to_owned(),
        refund_id: r.refund_id.clone().unwrap_or_default(),
        request_id: r.request_id.clone().unwrap_or_default(),
        payment_id: r.payment_id.clone().unwrap_or_default(),
        amount: r.amount.as_ref().map(money),
        status: match r.state {
            RefundState::Succeeded => pb::RefundStatus::Succeeded,
            RefundState::Processing => pb::RefundStatus::Processing,
            RefundState::Failed => pb::RefundStatus::Failed,
        } as i32,
        refund_time: r.refund_time.map(timestamp),
        provider_result: Some(provider_result(&r.result)),
        reference_refund_id: r.reference_refund_id.clone().unwrap_or_default(),
    }
}

/// Domain cancellation at `account` -> `CancelSubscriptionResponse`.
pub(crate) fn cancel_to_pb(
    account: &str,
    req: &CancelSubscription,
    out: &CancelOutcome,
) -> pb::CancelSubscriptionResponse {
    pb::CancelSubscriptionResponse {
        account: account.to_owned(),
        subscription_id: req.subscription_id.clone().unwrap_or_default(),
        subscription_request_id: req.subscription_request_id.clone().unwrap_or_default(),
        cancellation_type: match req.cancellation_type {
            CancellationType::Cancel => pb::CancellationType::Cancel,
            CancellationType::Terminate => pb::CancellationType::Terminate,
        } as i32,
        status: match out.status {
            CancellationStatus::Accepted => pb::CancellationStatus::Accepted,
            CancellationStatus::Confirmed => pb::CancellationStatus::Confirmed,
        } as i32,
        provider_result: Some(provider_result(&out.result)),
        effect: match out.effect {
            Some(CancellationEffect::Immediate) => pb::CancellationEffect::Immediate,
            Some(CancellationEffect::EndOfPeriod) => pb::CancellationEffect::EndOfPeriod,
            None => pb::CancellationEffect::Unspecified,
        } as i32,
        subscription_state: out.subscription_state.clone().unwrap_or_default(),
        cancel_time: out.cancel_time.map(timestamp),
        end_time: out.cancel_time.map(timestamp),
        cancel_reason: out.cancel_reason.map_or(0, i32::from),
    }
}

/// Domain subscription state -> `Subscription`.
pub(crate) fn subscription_to_pb(
    account: &str,
    r: &crate::domain::SubscriptionRecord,
    updated_ms: i64,
) -> pb::Subscription {
    pb::Subscription {
        account: account.to_owned(),
        subscription_id: r.subscription_id.clone(),
        subscription_request_id: r.subscription_request_id.clone().unwrap_or_default(),
        cancellation_status: match r.cancellation {
            None => pb::CancellationStatus::Unspecified,
            Some(CancellationStatus::Accepted) => pb::CancellationStatus::Accepted,
            Some(CancellationStatus::Confirmed) => pb::CancellationStatus::Confirmed,
        } as i32,
        cancellation_type: match r.cancellation_type {
            None => pb::CancellationType::Unspecified,
            Some(CancellationType::Cancel) => pb::CancellationType::Cancel,
            Some(CancellationType::Terminate) => pb::CancellationType::Terminate,
        } as i32,
        subscription_state: r.state.clone().unwrap_or_default(),
        last_notification_type: r.last_notification_type.clone().unwrap_or_default(),
        end_time: r.end_time.map(timestamp),
        update_time: Some(timestamp_ms(updated_ms)),
    }
}

/// A stored event -> `Event`.
pub(crate) fn event_to_pb(e: &crate::events::Event) -> pb::Event {
    use crate::domain::Notice;
    use pb::event::Payload;
    let payload = match &e.notice {
        Notice::Refund(r) => Payload::Refund(refund_to_pb(&e.account, r)),
        Notice::Subscription(s) => {
            Payload::Subscription(subscription_to_pb(&e.account, s, e.received_at))
        }
        Notice::SubscriptionPayment(p) => Payload::SubscriptionPayment(pb::SubscriptionPayment {
            subscription_id: p.subscription_id.clone(),
            subscription_request_id: p.subscription_request_id.clone().unwrap_or_default(),
            payment_id: p.payment_id.clone(),
            amount: p.amount.as_ref().map(money),
            status: if p.succeeded {
                pb::SubscriptionPaymentStatus::Succeeded
            } else {
                pb::SubscriptionPaymentStatus::Failed
            } as i32,
            phase: p.phase.clone().unwrap_or_default(),
            period_start_time: p.period_start.map(timestamp),
            period_end_time: p.period_end.map(timestamp),
            payment_time: p.payment_time.map(timestamp),
            provider_result: Some(provider_result(&p.result)),
        }),
    };
    pb::Event {
        cursor: e.seq.to_string(),
        event_id: e.event_id.clone(),
        account: e.account.clone(),
        provider: e.provider.clone(),
        provider_event_type: e.kind.clone(),
        receive_time: Some(timestamp_ms(e.received_at)),
        payload: Some(payload),
        source: match e.source {
            crate::store::EventSource::Notification => pb::EventSource::Notification,
            crate::store::EventSource::Answer => pb::EventSource::ProviderAnswer,
            crate::store::EventSource::Inquiry => pb::EventSource::Inquiry,
            crate::store::EventSource::Operator => pb::EventSource::Operator,
        } as i32,
    }
}

fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
    }
}
