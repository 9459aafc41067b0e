//! Rate limits with governor (GCRA): one limiter per provider account (protecting the
//! provider's quota) and one per caller (fairness), plus the adaptive back-off an account
//! takes after the provider itself says "too many requests".

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// A rate: requests per second with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (may be fractional).
    pub per_second: f64,
    /// Requests that may be sent at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// The governor quota, or `None` if the rate is not positive.
    pub fn quota(&self) -> Option<Quota> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / self.per_second);
        Some(Quota::with_period(period)?.allow_burst(NonZeroU32::new(self.burst.max(1))?))
    }
}

/// One GCRA limiter.
pub struct Limiter<C: Clock = DefaultClock> {
    inner: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// What it limits, for QuotaFailure (e.g. `account:antom`).
    pub subject: String,
    /// The configured rate.
    pub rate: Rate,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("subject", &self.subject)
            .field("rate", &self.rate)
            .finish()
    }
}

impl Limiter<DefaultClock> {
    /// A limiter on the real clock; `None` when the rate is not positive.
    pub fn new(subject: impl Into<String>, rate: Rate) -> Option<Self> {
        Self::with_clock(subject, rate, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter on `clock` (tests use governor's fake clock).
    pub fn with_clock(subject: impl Into<String>, rate: Rate, clock: C) -> Option<Self> {
        let quota = rate.quota()?;
        Some(Self {
            inner: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            subject: subject.into(),
            rate,
        })
    }

    /// Takes a slot now, or says how long until one frees.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.inner
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Why a request was not admitted: which limit, and the real delay until a slot frees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The limit's subject, e.g. `account:antom` or `caller:billing`.
    pub subject: String,
    /// A description for QuotaFailure.
    pub description: String,
    /// How long until a slot frees.
    pub retry_after: Duration,
}

/// Waits for a slot of `limiter` if the wait ends before `until`; otherwise says how long the
/// caller would have had to wait.
pub(crate) async fn acquire(limiter: &Limiter, until: Instant) -> Result<(), Limited> {
    let mut waited = false;
    loop {
        match limiter.try_acquire() {
            Ok(()) => {
                if waited {
                    metrics::counter!("paygate_rate_limit_total", "limit" => limiter.subject.clone(), "outcome" => "waited").increment(1);
                }
                return Ok(());
            }
            Err(wait) => {
                if Instant::now() + wait > until {
                    metrics::counter!("paygate_rate_limit_total", "limit" => limiter.subject.clone(), "outcome" => "rejected").increment(1);
                    return Err(Limited {
                        subject: limiter.subject.clone(),
                        description: format!(
                            "at most {} requests per second (burst {})",
                            limiter.rate.per_second, limiter.rate.burst
                        ),
                        retry_after: wait.max(Duration::from_millis(1)),
                    });
                }
                waited = true;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The per-caller limits: a default rate for every caller, and overrides by name.
#[derive(Debug, Default)]
pub struct CallerLimits {
    default: Option<Rate>,
    by_caller: Mutex<HashMap<String, std::sync::Arc<Limiter>>>,
    overrides: HashMap<String, Rate>,
}

impl CallerLimits {
    /// `default` applies to callers without an override; `None` = unlimited.
    pub fn new(default: Option<Rate>, overrides: HashMap<String, Rate>) -> Self {
        Self {
            default,
            by_caller: Mutex::new(HashMap::new()),
            overrides,
        }
    }

    /// The limiter of `caller`, if it has a limit.
    pub fn limiter(&self, caller: &str) -> Option<std::sync::Arc<Limiter>> {
        let rate = self.overrides.get(caller).copied().or(self.default)?;
        let mut map = self.by_caller.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = map.get(caller) {
            return Some(l.clone());
        }
        let name = if caller.is_empty() {
            "anonymous"
        } else {
            caller
        };
        let l = std::sync::Arc::new(Limiter::new(format!("caller:{name}"), rate)?);
        map.insert(caller.to_owned(), l.clone());
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_then_the_real_delay_until_a_slot() {
        let clock = FakeRelativeClock::default();
        let rate = Rate {
            per_second: 10.0,
            burst: 3,
        };
        let l = Limiter::with_clock("account:a", rate, clock.clone()).unwrap();
        for _ in 0..3 {
            assert_eq!(l.try_acquire(), Ok(()));
        }
        assert_eq!(l.try_acquire(), Err(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(40));
        assert_eq!(l.try_acquire(), Err(Duration::from_millis(60)));
        clock.advance(Duration::from_millis(60));
        assert_eq!(l.try_acquire(), Ok(()));
        assert!(l.try_acquire().is_err());
    }

    #[test]
    fn fractional_rates_and_invalid_rates() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(
            "x",
            Rate {
                per_second: 0.5,
                burst: 1,
            },
            clock.clone(),
        )
        .unwrap();
        assert!(l.try_acquire().is_ok());
        assert_eq!(l.try_acquire(), Err(Duration::from_secs(2)));
        assert!(
            Rate {
                per_second: 0.0,
                burst: 1
            }
            .quota()
            .is_none()
        );
        assert!(
            Rate {
                per_second: f64::NAN,
                burst: 1
            }
            .quota()
            .is_none()
        );
    }

    #[test]
    fn callers_get_their_own_limits() {
        let mut o = HashMap::new();
        o.insert(
            "batch".to_string(),
            Rate {
                per_second: 1.0,
                burst: 1,
            },
        );
        let limits = CallerLimits::new(
            Some(Rate {
                per_second: 100.0,
                burst: 100,
            }),
            o,
        );
        let batch = limits.limiter("batch").unwrap();
        assert_eq!(batch.rate.burst, 1);
        assert!(batch.try_acquire().is_ok());
        assert!(batch.try_acquire().is_err());
        let billing = limits.limiter("billing").unwrap();
        assert!(billing.try_acquire().is_ok());
        assert!(CallerLimits::default().limiter("x").is_none());
    }
}
