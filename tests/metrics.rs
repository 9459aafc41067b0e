//! `/metrics` after a few calls: the series exist with the right counts.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{free_port, spawn_gateway_with};
use common::*;
use paygate::providers::antom::signing::{self, Signer};
use paygate::sim::Simulator as _;
use paygate::sim::antom::AntomSim;
use tonic::Code;

#[tokio::test]
async fn metrics_count_rpcs_provider_calls_and_replays() {
    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    seed(&sim);
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let notify_port = free_port();
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let gw = spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &[
            ("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{port}")),
            ("PAYGATE_NOTIFY_ADDR", format!("127.0.0.1:{notify_port}")),
        ],
        Stdio::null(),
    );
    let mut client = gw.client().await;
    client
        .create(refund_req("m-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    client
        .create(refund_req("m-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    let e = client
        .create(refund_req("m-2", "PAY_USD_100", 50_000))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = client
        .create(refund_req("m-1", "PAY_USD_100", 7))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .create(refund_req("bad id", "PAY_USD_100", 7))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // One forged notification (unsigned) and one genuine, signed with Antom's key.
    let path = "/notify/antom/payment";
    let body = r#"{"result":{"resultCode":"SUCCESS","resultStatus":"S"},"paymentId":"P1","paymentAmount":{"currency":"USD","value":"100"},"subscriptionRequestId":"SUBREQ_1","subscriptionId":"SUB_1"}"#;
    let t = &request_time_now();
    let signer = Signer::from_bytes(antom_pem().as_bytes()).unwrap();
    let sig = signer.sign(&signing::content(path, CLIENT_ID, t, body.as_bytes()));
    let http = reqwest::Client::new();
    let send = |signed: bool| {
        let mut r = http
            .post(format!("http://127.0.0.1:{notify_port}{path}"))
            .header("client-id", CLIENT_ID)
            .header("request-time", t)
            .body(body);
        if signed {
            r = r.header("signature", signing::signature_header(1, &sig));
        }
        r.send()
    };
    assert_eq!(send(false).await.unwrap().status(), 401);
    assert_eq!(send(true).await.unwrap().status(), 200);

    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut scrape = String::new();
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(&url).await {
            assert_eq!(r.status(), 200);
            assert_eq!(
                r.headers()["content-type"],
                "text/plain; version=0.0.4; charset=utf-8"
            );
            scrape = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // /metrics only.
    for other in ["/", "/health", "/metrics/x"] {
        let r = reqwest::get(format!("http://127.0.0.1:{port}{other}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{other}");
    }
    // Prometheus's own checker accepts the scrape (tests/provision.sh finds or unpacks it).
    let mut promtool = std::process::Command::new(common::provision::provisioned(&["promtool"]))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let get = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&scrape, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{scrape}"))
    };
    // Every series has HELP and TYPE.
    let series: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
        })
        .collect();
    for name in &series {
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            scrape.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    assert_eq!(
        get(
            "paygate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(get("process_resident_memory_bytes", &[]) > 0.0);
    assert!(get("process_open_fds", &[]) > 0.0);
    // Counters with known label sets exist from the start, so increase() sees a first event.
    assert_eq!(
        get("paygate_idempotency_events_total", &[("event", "unknown")]),
        0.0
    );
    assert_eq!(
        get(
            "paygate_signature_failures_total",
            &[("provider", "antom"), ("kind", "invalid")]
        ),
        0.0
    );
    assert_eq!(
        get("paygate_answer_mismatches_total", &[("provider", "antom")]),
        0.0
    );
    let create = ("method", "RefundService.Create");
    assert_eq!(get("paygate_rpc_total", &[create, ("code", "OK")]), 2.0);
    assert_eq!(
        get(
            "paygate_rpc_total",
            &[create, ("code", "FailedPrecondition")]
        ),
        1.0
    );
    assert_eq!(
        get("paygate_rpc_total", &[create, ("code", "InvalidArgument")]),
        2.0
    );
    let refund = [
        ("provider", "antom"),
        ("account", "antom"),
        ("endpoint", "refund"),
    ];
    assert_eq!(
        get(
            "paygate_provider_calls_total",
            &[refund[0], refund[1], refund[2], ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "paygate_provider_calls_total",
            &[
                refund[0],
                refund[1],
                refund[2],
                ("result", "REFUND_AMOUNT_EXCEED")
            ]
        ),
        1.0
    );
    assert_eq!(
        get("paygate_provider_call_duration_seconds_count", &refund),
        2.0
    );
    assert_eq!(
        get("paygate_idempotency_events_total", &[("event", "replay")]),
        1.0
    );
    assert_eq!(
        get("paygate_idempotency_events_total", &[("event", "conflict")]),
        1.0
    );
    assert_eq!(get("paygate_in_flight_requests", &[]), 0.0);
    assert!(
        get(
            "paygate_store_duration_seconds_count",
            &[("op", "complete")]
        ) >= 2.0
    );
    // The duration histogram is labelled by code too, like the counter.
    for (code, n) in [
        ("OK", 2.0),
        ("FailedPrecondition", 1.0),
        ("InvalidArgument", 2.0),
    ] {
        assert_eq!(
            get(
                "paygate_rpc_duration_seconds_count",
                &[create, ("code", code)]
            ),
            n,
            "{code}"
        );
    }
    assert_eq!(sim.sim.calls("refund"), 2);
    let payment = [("provider", "antom"), ("kind", "payment")];
    assert_eq!(
        get(
            "paygate_notifications_total",
            &[payment[0], payment[1], ("outcome", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "paygate_notifications_total",
            &[payment[0], payment[1], ("outcome", "stored")]
        ),
        1.0
    );
}
