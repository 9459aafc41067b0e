//! What stands between a request and a provider account: the account's rate limit (and its
//! adaptive back-off), a cap on in-flight provider calls, and a circuit breaker that fails fast
//! for a short cool-down when the provider keeps failing. Other accounts are unaffected.

use crate::reason;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::providers::{NotExecuted, ProviderError};
use crate::ratelimit::{self, Limited, Limiter, Rate};
use crate::retry::{self, Backoff, Signal};

/// Settings of one account's guard.
#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// The provider quota to stay under; `None` = unlimited.
    pub rate: Option<Rate>,
    /// Most provider calls in flight at once.
    pub max_in_flight: usize,
    /// Most calls on the account in the gateway at once, whatever they wait for (a provider
    /// call, a duplicate's lease, a payment held by another key): the account's bulkhead, so
    /// that one account's outage cannot take the gateway-wide slots from the others.
    pub max_calls: usize,
    /// Longest a request waits for a rate-limit slot.
    pub max_queue: Duration,
    /// Consecutive failures that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast.
    pub breaker_cool_down: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            rate: None,
            max_in_flight: 64,
            max_calls: 256,
            max_queue: Duration::from_millis(250),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(5),
        }
    }
}

/// Consecutive-failure circuit breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<(u32, Option<Instant>)>,
    threshold: u32,
    cool_down: Duration,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cool_down`.
    pub(crate) fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            state: Mutex::new((0, None)),
            threshold: threshold.max(1),
            cool_down,
        }
    }

    /// How long the circuit stays open, if it is.
    pub(crate) fn open_for(&self) -> Option<Duration> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let left = s.1?.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// A call failed in a way that says the provider is unwell.
    pub(crate) fn failure(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        if s.0 >= self.threshold {
            // Open; after the cool-down a single failed probe opens it again.
            *s = (self.threshold - 1, Some(Instant::now() + self.cool_down));
            tracing::warn!(
                cool_down_ms = self.cool_down.as_millis() as u64,
                "provider keeps failing; failing fast for a cool-down"
            );
        }
    }

    /// A call got an answer.
    pub(crate) fn success(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = (0, None);
    }
}

/// The guard of one account.
#[derive(Debug)]
pub struct AccountGuard {
    account: String,
    limiter: Option<Limiter>,
    backoff: Backoff,
    in_flight: Arc<Semaphore>,
    calls: Arc<Semaphore>,
    breaker: Breaker,
    max_queue: Duration,
}

/// Time kept back from the deadline when deciding whether a wait fits.
const WAIT_MARGIN: Duration = Duration::from_millis(50);

/// A rate-limit rejection as a provider-call error (nothing was sent).
pub(crate) fn rate_limited(l: Limited) -> ProviderError {
    ProviderError {
        quota: Some(Box::new(l.clone())),
        ..ProviderError::retryable(
            NotExecuted::RateLimited,
            reason::RATE_LIMITED,
            format!("rate limit of {} reached; retry after the delay", l.subject),
            l.retry_after,
        )
    }
}

impl AccountGuard {
    /// A guard for `account`.
    pub fn new(account: &str, s: &GuardSettings) -> Self {
        Self {
            account: account.to_owned(),
            limiter: s
                .rate
                .and_then(|r| Limiter::new(format!("account:{account}"), r)),
            backoff: Backoff::default(),
            in_flight: Arc::new(Semaphore::new(s.max_in_flight.max(1))),
            calls: Arc::new(Semaphore::new(s.max_calls.max(1))),
            breaker: Breaker::new(s.breaker_threshold, s.breaker_cool_down),
            max_queue: s.max_queue,
        }
    }

    /// A slot of the account's bulkhead for one call, held until the call answers; `None`
    /// when the account has [`GuardSettings::max_calls`] calls in the gateway already (the call
    /// is shed and counted, `paygate_shed_total{reason="account_calls"}`).
    pub(crate) fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = self.calls.clone().try_acquire_owned().ok();
        if slot.is_none() {
            metrics::counter!("paygate_shed_total", "reason" => "account_calls").increment(1);
        }
        slot
    }

    /// Runs one provider call `f` if the account admits it before `deadline`, and learns from
    /// its result.
    pub async fn call<T, F, Fut>(
        &self,
        deadline: Instant,
        endpoint: (&'static str, &'static str),
        f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        if let Some(left) = self.breaker.open_for() {
            metrics::counter!("paygate_shed_total", "reason" => "circuit_open").increment(1);
            return Err(ProviderError::retryable(
                NotExecuted::CircuitOpen,
                reason::CIRCUIT_OPEN,
                format!(
                    "account {} is failing fast after repeated provider failures",
                    self.account
                ),
                left,
            ));
        }
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            metrics::counter!("paygate_shed_total", "reason" => "account_in_flight").increment(1);
            return Err(ProviderError::retryable(
                NotExecuted::Overloaded,
                reason::OVERLOADED,
                format!("too many calls in flight to account {}", self.account),
                retry::ACCOUNT_OVERLOADED,
            ));
        };
        let until = (deadline.checked_sub(WAIT_MARGIN).unwrap_or(deadline))
            .min(Instant::now() + self.max_queue);
        if let Some(left) = self.backoff.remaining() {
            if Instant::now() + left > until {
                return Err(rate_limited(Limited {
                    subject: format!("account:{}", self.account),
                    description: "the provider asked to slow down".into(),
                    retry_after: left,
                }));
            }
            tokio::time::sleep(left).await;
        }
        if let Some(l) = &self.limiter {
            ratelimit::acquire(l, until).await.map_err(rate_limited)?;
        }
        let (provider, name) = endpoint;
        let in_flight = crate::telemetry::GaugeGuard::hold(metrics::gauge!(
            "paygate_provider_in_flight", "account" => self.account.clone()
        ));
        let started = std::time::Instant::now();
        let result = f().await;
        drop(in_flight);
        metrics::histogram!("paygate_provider_call_duration_seconds",
            "provider" => provider, "account" => self.account.clone(), "endpoint" => name)
        .record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.reason.clone(),
        };
        metrics::counter!("paygate_provider_calls_total",
            "provider" => provider, "account" => self.account.clone(), "endpoint" => name, "result" => outcome)
        .increment(1);
        match retry::signal(&result) {
            Signal::Succeeded => {
                self.breaker.success();
                self.backoff.succeeded();
            }
            Signal::Answered => self.breaker.success(),
            Signal::Throttled(hint) => self.backoff.throttled(hint),
            Signal::Failed => self.breaker.failure(),
            Signal::Neutral => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Disposition;

    #[tokio::test]
    async fn breaker_opens_after_consecutive_failures_and_a_probe_reopens_it() {
        let b = Breaker::new(3, Duration::from_millis(50));
        b.failure();
        b.failure();
        assert!(b.open_for().is_none());
        b.failure();
        assert!(b.open_for().is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(b.open_for().is_none(), "half-open after the cool-down");
        b.failure();
        assert!(b.open_for().is_some(), "one failed probe reopens");
        b.success();
        assert!(b.open_for().is_none());
    }

    #[tokio::test]
    async fn in_flight_cap_sheds_at_once() {
        let g = AccountGuard::new(
            "a",
            &GuardSettings {
                max_in_flight: 1,
                ..Default::default()
            },
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let slow = g.call(deadline, ("test", "x"), || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, ProviderError>(())
        });
        let fast = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            g.call(deadline, ("test", "x"), || async {
                Ok::<_, ProviderError>(())
            })
            .await
        };
        let (a, b) = tokio::join!(slow, fast);
        assert!(a.is_ok());
        let e = b.unwrap_err();
        assert_eq!(e.reason, "OVERLOADED");
        assert_eq!(
            e.disposition,
            Disposition::Retryable {
                why: NotExecuted::Overloaded,
                after: retry::ACCOUNT_OVERLOADED
            }
        );
    }
}
