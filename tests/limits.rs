//! Rate limits under load: 3x an account's configured rate for 10 s. The provider never sees
//! more than the rate plus the burst in any second; rejected callers get RESOURCE_EXHAUSTED
//! with a RetryInfo delay that works when honoured; a second caller within its own quota is
//! served meanwhile. Prints the figures.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use paygate::pb;
use paygate::server::GuardSettings;
use paygate::server::Policy;
use paygate::server::Rate;
use paygate::sim::Simulator as _;
use tonic::Code;
use tonic_types::StatusExt;

const RATE: f64 = 20.0;
const BURST: u32 = 5;

/// The most calls in any window of `width` starting at a call.
fn max_in_window(times: &[Instant], width: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut best = 0;
    let mut j = 0;
    for i in 0..t.len() {
        while t[i].duration_since(t[j]) >= width {
            j += 1;
        }
        best = best.max(i - j + 1);
    }
    best
}

fn inquiry(id: u64) -> pb::InquireRefundRequest {
    pb::InquireRefundRequest {
        refund_id: format!("R{id}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_the_account_rate_for_ten_seconds() {
    let mut caller_rates = HashMap::new();
    // The noisy caller may use most of the account; billing keeps a share of its own.
    caller_rates.insert(
        "noisy".to_string(),
        Rate {
            per_second: 15.0,
            burst: 5,
        },
    );
    caller_rates.insert(
        "billing".to_string(),
        Rate {
            per_second: 5.0,
            burst: 2,
        },
    );
    let env = start_with(Options {
        guard: GuardSettings {
            rate: Some(Rate {
                per_second: RATE,
                burst: BURST,
            }),
            ..Default::default()
        },
        auth: token_auth(&[("noisy", Policy::default()), ("billing", Policy::default())]),
        caller_rates,
        ..Default::default()
    })
    .await;

    let offered = 3.0 * RATE;
    let test_for = Duration::from_secs(10);
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let delays = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0u64;
    // Open loop: one request every 1/offered s, whatever the answers.
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / offered));
    while started.elapsed() < test_for {
        tick.tick().await;
        n += 1;
        let mut c = env.refunds.clone();
        let (ok, limited, other, delays) =
            (ok.clone(), limited.clone(), other.clone(), delays.clone());
        tasks.push(tokio::spawn(async move {
            match c
                .inquire(authed(inquiry(n), "noisy-token", Duration::from_secs(5)))
                .await
            {
                // Unknown refund ids answer NOT_FOUND: the provider was reached.
                Err(e) if e.code() == Code::NotFound => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.code() == Code::ResourceExhausted => {
                    assert_eq!(reason(&e), "RATE_LIMITED");
                    let d = e.get_error_details();
                    assert!(d.quota_failure().is_some(), "QuotaFailure says which limit");
                    assert!(e.metadata().get("grpc-retry-pushback-ms").is_some());
                    delays
                        .lock()
                        .unwrap()
                        .push(retry_delay(&e).expect("RetryInfo"));
                    limited.fetch_add(1, Ordering::Relaxed);
                }
                other_result => {
                    eprintln!("unexpected: {other_result:?}");
                    other.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Meanwhile billing calls twice a second, well within its quota.
    let billing = {
        let mut c = env.refunds.clone();
        tokio::spawn(async move {
            let mut served = 0;
            let mut refused = 0;
            for i in 0..18 {
                match c
                    .inquire(authed(
                        inquiry(1_000_000 + i),
                        "billing-token",
                        Duration::from_secs(5),
                    ))
                    .await
                {
                    Err(e) if e.code() == Code::NotFound => served += 1,
                    _ => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (served, refused)
        })
    };
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    let (billing_served, billing_refused) = billing.await.unwrap();

    let times = env.sim().call_times("inquiryRefund");
    let worst_second = max_in_window(&times, Duration::from_secs(1));
    let delays = delays.lock().unwrap().clone();
    let max_delay = delays.iter().max().copied().unwrap_or_default();
    println!(
        "offered {n} noisy requests in {elapsed:?} ({offered} req/s); account limit {RATE} req/s + burst {BURST}"
    );
    println!(
        "noisy: {} reached the provider, {} RESOURCE_EXHAUSTED, {} other; billing: {billing_served} served, {billing_refused} refused",
        ok.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed)
    );
    println!(
        "provider saw {} calls, at most {worst_second} in any 1 s window; RetryInfo delays up to {max_delay:?}",
        times.len()
    );

    assert_eq!(other.load(Ordering::Relaxed), 0);
    assert!(
        limited.load(Ordering::Relaxed) > 0,
        "3x the rate must be limited"
    );
    assert!(
        worst_second <= RATE as usize + BURST as usize,
        "provider saw {worst_second} calls in one second"
    );
    assert_eq!(billing_refused, 0, "a caller within its quota is served");
    assert_eq!(billing_served, 18);

    // A burst from the noisy caller: the rejected requests, honouring their RetryInfo delay,
    // get through.
    let mut burst = Vec::new();
    for i in 0..20 {
        let mut c = env.refunds.clone();
        burst.push(tokio::spawn(async move {
            c.inquire(authed(
                inquiry(2_000_000 + i),
                "noisy-token",
                Duration::from_secs(5),
            ))
            .await
        }));
    }
    let mut rejected = Vec::new();
    for (i, t) in burst.into_iter().enumerate() {
        let e = t.await.unwrap().unwrap_err();
        match e.code() {
            Code::NotFound => {}
            Code::ResourceExhausted => rejected.push((i, retry_delay(&e).unwrap())),
            _ => panic!("{e:?}"),
        }
    }
    let mut c = env.refunds.clone();
    for (i, delay) in &rejected {
        tokio::time::sleep(*delay).await;
        let again = c
            .inquire(authed(
                inquiry(2_000_000 + *i as u64),
                "noisy-token",
                Duration::from_secs(5),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            again.code(),
            Code::NotFound,
            "honoured delay succeeds: {again:?}"
        );
    }
    println!(
        "burst of 20 concurrent after the run: {} rejected, each served after its RetryInfo delay",
        rejected.len()
    );
    assert!(!rejected.is_empty());
}

#[tokio::test]
async fn one_caller_alone_cannot_push_the_account_past_its_rate() {
    let env = start_with(Options {
        guard: GuardSettings {
            rate: Some(Rate {
                per_second: 10.0,
                burst: 3,
            }),
            ..Default::default()
        },
        max_queue: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    while started.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        let mut c = env.refunds.clone();
        tasks.push(tokio::spawn(async move { c.inquire(inquiry(7)).await }));
    }
    let mut limited = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap()
            && e.code() == Code::ResourceExhausted
        {
            limited += 1;
        }
    }
    let times = env.sim().call_times("inquiryRefund");
    let worst = max_in_window(&times, Duration::from_secs(1));
    println!(
        "3 s at 30 req/s against 10 req/s + 3: provider saw {} calls, at most {worst} per second, {limited} limited",
        times.len()
    );
    assert!(worst <= 13, "{worst}");
    assert!(limited > 0);
}

#[tokio::test]
async fn the_gateway_wide_in_flight_cap_sheds_at_once() {
    use paygate::sim::antom::{Fault, FaultKind};
    let env = start_with(Options {
        max_in_flight: 2,
        ..Default::default()
    })
    .await;
    env.sim()
        .inject(Fault::on("inquiryRefund", FaultKind::Latency { ms: 500 }).times(2));
    let mut tasks = Vec::new();
    for i in 0..2 {
        let mut c = env.refunds.clone();
        tasks.push(tokio::spawn(async move { c.inquire(inquiry(i)).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let e = env.refunds.clone().inquire(inquiry(9)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "shed quickly"
    );
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(reason(&e), "OVERLOADED");
    assert!(retry_delay(&e).is_some());
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().code(), Code::NotFound);
    }
}

#[tokio::test]
async fn a_failing_provider_opens_the_circuit_for_that_account_only() {
    use paygate::sim::antom::{Fault, FaultKind};
    let mut env = start_with(Options {
        guard: GuardSettings {
            breaker_threshold: 3,
            breaker_cool_down: Duration::from_millis(800),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    env.sim()
        .inject(Fault::on("inquiryRefund", FaultKind::HttpStatus { status: 503 }).times(100));
    // One inquiry makes four attempts (settling resends): the circuit opens.
    let e = env.refunds.inquire(inquiry(1)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let calls = env.sim().calls("inquiryRefund");
    let e = env.refunds.inquire(inquiry(2)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "CIRCUIT_OPEN");
    let wait = retry_delay(&e).unwrap();
    assert!(wait <= Duration::from_millis(800));
    assert_eq!(
        env.sim().calls("inquiryRefund"),
        calls,
        "failing fast: no provider call"
    );
    // After the cool-down a probe goes through and, once the provider is healthy, closes it.
    env.sim().clear_faults();
    tokio::time::sleep(wait).await;
    let e = env.refunds.inquire(inquiry(3)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = env.refunds.inquire(inquiry(4)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}
