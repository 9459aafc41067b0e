//! Rollouts drop no calls, through the binary: two gateway processes behind a client-side
//! balancer that, like the endpoints controller, stops sending to a pod once its readiness
//! probe (gRPC health of `paygate.v1.RefundService`) is not SERVING. One gateway gets SIGTERM
//! while clients without retries call continuously: none of them sees an error, because the
//! gateway keeps taking calls for its drain delay after turning NOT_SERVING.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::spawn_gateway_with;
use common::*;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Payment, PaymentStatus};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

const READINESS: &str = "paygate.v1.RefundService";
/// How often the balancer looks at readiness: the endpoints controller's lag.
const PROBE_EVERY: Duration = Duration::from_millis(500);

async fn ready(channel: Channel) -> bool {
    let mut health = HealthClient::new(channel);
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: READINESS.into(),
    });
    req.set_timeout(Duration::from_millis(500));
    matches!(health.check(req).await, Ok(r) if r.get_ref().status() == tonic_health::pb::health_check_response::ServingStatus::Serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_retries_calling_through_a_sigterm_sees_no_error() {
    let sim = shared_antom_sim().await;
    sim.sim.add_payment(Payment {
        payment_id: "PAY_ROLLOUT".into(),
        currency: "USD".into(),
        amount: 100_000_000,
        status: PaymentStatus::Success,
        paid_days_ago: 1,
        multiple_refunds: true,
        async_refunds: false,
    });
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut gateways: Vec<_> = dirs
        .iter()
        .map(|d| {
            let store = format!("sqlite://{}", d.path().join("paygate.db").display());
            spawn_gateway_with(
                d.path(),
                &sim.base_url(),
                &store,
                &[("PAYGATE_SHUTDOWN_DRAIN_DELAY_MS", "2000".to_string())],
                std::process::Stdio::inherit(),
            )
        })
        .collect();
    for g in &gateways {
        g.client().await; // up
    }
    let channels: Vec<Channel> = gateways
        .iter()
        .map(|g| Channel::from_shared(g.url()).unwrap().connect_lazy())
        .collect();

    // The balancer's endpoints: those whose readiness is SERVING.
    let endpoints = Arc::new(Mutex::new(vec![0usize, 1]));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (endpoints, stop, channels) = (endpoints.clone(), stop.clone(), channels.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (i, ch) in channels.iter().enumerate() {
                    let up = ready(ch.clone()).await;
                    let mut e = endpoints.lock().await;
                    if !up {
                        e.retain(|x| *x != i);
                    }
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
        })
    };

    let sent = Arc::new(AtomicUsize::new(0));
    let terminated_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (endpoints, stop, channels, sent, terminated_at) = (
            endpoints.clone(),
            stop.clone(),
            channels.clone(),
            sent.clone(),
            terminated_at.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut served = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let target = {
                    let e = endpoints.lock().await;
                    e[(w + n) % e.len()]
                };
                n += 1;
                let started = Instant::now();
                let after_term = terminated_at.lock().await.is_some_and(|t| started >= t);
                let mut client = RefundServiceClient::new(channels[target].clone());
                let mut req =
                    tonic::Request::new(refund_req(&format!("rollout-{w}-{n}"), "PAY_ROLLOUT", 1));
                req.set_timeout(Duration::from_secs(5));
                let result = client.create(req).await.map(|_| ());
                sent.fetch_add(1, Ordering::Relaxed);
                served.push((target, after_term, result));
            }
            served
        }));
    }

    while sent.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    *terminated_at.lock().await = Some(Instant::now());
    common::provision::sigterm(gateways[0].child.id());
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = gateways[0].child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until,
            "the gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A little more traffic, on the other gateway alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    assert_eq!(status.code(), Some(0), "clean exit after SIGTERM");

    let errors: Vec<_> = results
        .iter()
        .filter_map(|(t, after, r)| {
            r.as_ref()
                .err()
                .map(|e| (t, after, e.code(), e.message().to_owned()))
        })
        .collect();
    let drained = results
        .iter()
        .filter(|(t, after, r)| *t == 0 && *after && r.is_ok())
        .count();
    let on_other_after = results
        .iter()
        .filter(|(t, after, r)| *t == 1 && *after && r.is_ok())
        .count();
    eprintln!(
        "{} calls; {} answered by the terminating gateway after its SIGTERM; {} by the other after it; {} errors",
        results.len(),
        drained,
        on_other_after,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "calls failed through the SIGTERM: {errors:?}"
    );
    assert!(
        drained > 0,
        "no call reached the terminating gateway after SIGTERM: the test did not exercise the drain"
    );
    assert!(on_other_after > 0);
    let executed = sim.sim.calls("refund");
    assert_eq!(executed, results.len() as u64, "one refund per call");
}
