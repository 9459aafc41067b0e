//! The rules of a key, as pure functions: what a call does given the key's stored row (or the
//! answer to creating it) and the time it has left. [`super::Idempotency::run`] reads the row,
//! asks [`decide`] and carries the step out; nothing here touches the store, a clock or a metric.
//!
//! The rules mirror the `call:` step of `model/refunds.pml` (each line of [`decide`] names its
//! line there), and the table of unit tests below is the same list of cases, so a rule change
//! shows up in one table and one model.

use std::time::Duration;

use crate::retry;
use crate::store::{Inserted, KeyState, Row};

/// The first wait before reading a key again.
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(5);
/// The longest wait between two reads of a key whose live attempt holds it.
pub(crate) const MAX_LEASE_WAIT: Duration = Duration::from_millis(50);
/// The longest wait between two tries to hold a payment another key holds.
pub(crate) const MAX_PAYMENT_WAIT: Duration = Duration::from_millis(100);
/// Time left under which a call stops waiting for a live attempt and answers ABORTED.
pub(crate) const ABORT_UNDER: Duration = Duration::from_millis(1);

/// What a call does next with its key, given the key's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// No row: create the key with this call's lease (`kstate == NONE`).
    Create,
    /// The row was made by a request with other parameters: `IDEMPOTENCY_KEY_REUSED`.
    Conflict,
    /// The outcome is stored: replay it (`kstate == DONE`).
    Replay,
    /// A person must settle the key: `OUTCOME_UNKNOWN`, no RetryInfo (`kstate == UNRESOLVED`).
    Unresolved,
    /// A live attempt holds the key: wait this long, then read it again.
    Wait(Duration),
    /// A live attempt holds the key and this call's time is up: `REQUEST_IN_FLIGHT`, retry
    /// after this long (`kstate == INFLIGHT && live`).
    Abort(Duration),
    /// The key's attempt died or ended unknown: take its lease over and settle that attempt
    /// before acting (`kstate == UNKNOWN || (kstate == INFLIGHT && !live)`).
    TakeOver,
}

/// The step for a call whose request has `fingerprint`, with `left` before its deadline and
/// `backoff` as its next wait, given the key's `row` (`None`: no key yet).
pub(crate) fn decide(
    row: Option<&Row>,
    fingerprint: &str,
    left: Duration,
    backoff: Duration,
) -> Step {
    let Some(row) = row else {
        return Step::Create;
    };
    if row.fingerprint != fingerprint {
        return Step::Conflict;
    }
    match row.state {
        KeyState::Done => Step::Replay,
        KeyState::Unresolved => Step::Unresolved,
        KeyState::InFlight if row.live => {
            if left <= ABORT_UNDER {
                let lease_left = Duration::from_millis(row.lease_left_ms.max(0) as u64);
                Step::Abort(lease_left.clamp(retry::MIN_DELAY, retry::IN_FLIGHT))
            } else {
                Step::Wait(backoff.min(left))
            }
        }
        KeyState::InFlight | KeyState::Unknown => Step::TakeOver,
    }
}

/// What a call does after trying to create its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    /// Created with this call's lease: make the first attempt.
    Attempt,
    /// Another call created it first: read it again.
    Reread,
    /// Another caller owns the request id on the account: `REQUEST_ID_CLAIMED`.
    Claimed,
    /// Another key's refund of the payment is unsettled and this call cannot wait longer:
    /// `PAYMENT_REFUND_PENDING`, retry after this long.
    PaymentBusy(Duration),
    /// Another key's refund of the payment is unsettled: wait this long, then try again
    /// (`slot != 0`).
    PaymentWait(Duration),
}

/// The step after creating the key answered `inserted`, with `left` before the deadline and
/// `backoff` as the next wait.
pub(crate) fn created(inserted: Inserted, left: Duration, backoff: Duration) -> Created {
    match inserted {
        Inserted::Created => Created::Attempt,
        Inserted::Exists => Created::Reread,
        Inserted::Claimed => Created::Claimed,
        Inserted::PaymentBusy if left <= backoff => Created::PaymentBusy(retry::PAYMENT_PENDING),
        Inserted::PaymentBusy => Created::PaymentWait(backoff),
    }
}

/// The wait after `waited`, for a step that waits again: doubling up to its cap.
pub(crate) fn next_wait(waited: Duration, step_cap: Duration) -> Duration {
    (waited * 2).min(step_cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "fingerprint";
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn row(state: KeyState, live: bool, lease_left_ms: i64) -> Row {
        Row {
            fingerprint: FP.into(),
            state,
            lease_left_ms,
            outcome: None,
            live,
        }
    }

    /// The rules of `model/refunds.pml`'s `call:` step, one line each: the key's row, the
    /// call's fingerprint, the time it has left and its next wait, and what it does.
    #[test]
    fn decide_follows_the_model() {
        use KeyState::*;
        let other = "another request's fingerprint";
        #[rustfmt::skip]
        let table: &[(&str, Option<Row>, &str, Duration, Step)] = &[
            ("no key: create it with a lease",                    None,                          FP,    MS(900), Step::Create),
            ("same key, other parameters",                        Some(row(Done, false, 0)),     other, MS(900), Step::Conflict),
            ("other parameters beat every state",                 Some(row(InFlight, true, 900)), other, MS(900), Step::Conflict),
            ("done: replay",                                      Some(row(Done, false, 0)),     FP,    MS(900), Step::Replay),
            ("done, no time left: still a replay",                Some(row(Done, false, 0)),     FP,    MS(0),   Step::Replay),
            ("unresolved: a person settles it",                   Some(row(Unresolved, false, 0)), FP,  MS(900), Step::Unresolved),
            ("live attempt: wait the backoff",                    Some(row(InFlight, true, 900)), FP,   MS(900), Step::Wait(MS(5))),
            ("live attempt: never wait past the deadline",        Some(row(InFlight, true, 900)), FP,   MS(3),   Step::Wait(MS(3))),
            ("live attempt, time up: abort until the lease ends", Some(row(InFlight, true, 700)), FP,   MS(1),   Step::Abort(MS(700))),
            ("abort: at least the minimal delay",                 Some(row(InFlight, true, 10)),  FP,   MS(0),   Step::Abort(retry::MIN_DELAY)),
            ("abort: at most the in-flight delay",                Some(row(InFlight, true, 60_000)), FP, MS(0),  Step::Abort(retry::IN_FLIGHT)),
            ("dead attempt (expired or its instance gone)",       Some(row(InFlight, false, -5)), FP,   MS(900), Step::TakeOver),
            ("dead attempt, even with no time left",              Some(row(InFlight, false, 500)), FP,  MS(0),   Step::TakeOver),
            ("unknown outcome: take over and settle it first",    Some(row(Unknown, false, 0)),  FP,    MS(900), Step::TakeOver),
        ];
        for (rule, r, fp, left, want) in table {
            assert_eq!(decide(r.as_ref(), fp, *left, FIRST_WAIT), *want, "{rule}");
        }
    }

    #[test]
    fn creating_the_key() {
        #[rustfmt::skip]
        let table: &[(&str, Inserted, Duration, Duration, Created)] = &[
            ("created: the first attempt",                 Inserted::Created,     MS(900), MS(5),   Created::Attempt),
            ("another call created it first: read it",     Inserted::Exists,      MS(900), MS(5),   Created::Reread),
            ("another caller owns the request id",         Inserted::Claimed,     MS(900), MS(5),   Created::Claimed),
            ("payment held by another key: wait",          Inserted::PaymentBusy, MS(900), MS(5),   Created::PaymentWait(MS(5))),
            ("payment held, no time for the wait: abort",  Inserted::PaymentBusy, MS(5),   MS(5),   Created::PaymentBusy(retry::PAYMENT_PENDING)),
            ("payment held, the wait fits: wait",          Inserted::PaymentBusy, MS(101), MS(100), Created::PaymentWait(MS(100))),
        ];
        for (rule, inserted, left, backoff, want) in table {
            assert_eq!(created(*inserted, *left, *backoff), *want, "{rule}");
        }
    }

    #[test]
    fn waits_double_up_to_their_cap() {
        let mut w = FIRST_WAIT;
        let mut seen = vec![w];
        for _ in 0..6 {
            w = next_wait(w, MAX_LEASE_WAIT);
            seen.push(w);
        }
        assert_eq!(seen, [5, 10, 20, 40, 50, 50, 50].map(MS));
        assert_eq!(next_wait(MS(80), MAX_PAYMENT_WAIT), MS(100));
    }

    #[test]
    fn every_state_has_its_stored_name() {
        for s in KeyState::ALL {
            assert_eq!(KeyState::parse(s.as_str()), Some(s));
        }
        assert_eq!(KeyState::parse("Done"), None);
    }
}
