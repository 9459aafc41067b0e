//! JSON log lines are what a log pipeline's strict parser accepts, through the binary: every
//! line of a JSON-logging gateway, through successes, refusals and a settled unknown outcome,
//! is one JSON object without duplicate keys.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::spawn_gateway_with;
use common::*;
use paygate::pb;
use paygate::sim::Simulator as _;
use paygate::sim::{Fault, FaultKind};

/// Python's json module, told to refuse duplicate keys, reads every line of `path`; returns
/// its complaints (empty when every line is a valid object without duplicate keys).
fn strict_json_lines(path: &std::path::Path) -> String {
    let script = r#"
import json, sys
def no_dupes(pairs):
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError("duplicate keys %s" % dupes)
    return dict(pairs)
bad = 0
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    try:
        v = json.loads(line, object_pairs_hook=no_dupes)
        if not isinstance(v, dict):
            raise ValueError("not an object")
    except ValueError as e:
        bad += 1
        print("line %d: %s: %s" % (n, e, line.strip()[:300]))
print("%d lines" % n, file=sys.stderr)
"#;
    let out = Command::new(common::provision::command("python3", "python3"))
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 is required for the strict JSON check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a gateway logging in `format` through successes, refusals and a settled unknown
/// outcome, stops it with SIGTERM, and answers the path of everything it wrote to stderr.
async fn logged_run(format: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let sim = shared_antom_sim().await;
    let log = dir.join("gateway.log");
    let store = format!("sqlite://{}", dir.join("paygate.db").display());
    let mut gw = spawn_gateway_with(
        dir,
        &sim.base_url(),
        &store,
        &[
            ("PAYGATE_LOG_FORMAT", format.to_string()),
            ("RUST_LOG", "info".to_string()),
        ],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let mut c = gw.client().await;
    c.create(refund_req("log-ok", "PAY_USD_100", 100))
        .await
        .unwrap();
    // Refusals: invalid, unknown payment, a reused key.
    c.create(refund_req("", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    c.create(refund_req("log-missing", "PAY_NOPE", 100))
        .await
        .unwrap_err();
    c.create(refund_req("log-ok", "PAY_USD_100", 999))
        .await
        .unwrap_err();
    // An unknown outcome settled by resending (its warning carries the provider's message).
    sim.sim.inject(Fault::on("refund", FaultKind::LoseAnswer));
    let mut r = tonic::Request::new(refund_req("log-lost", "PAY_USD_100", 100));
    r.set_timeout(Duration::from_secs(5));
    c.create(r).await.unwrap();
    c.inquire(pb::InquireRefundRequest {
        request_id: "log-ok".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    gw.sigterm_and_wait();
    log
}

#[tokio::test]
async fn every_json_log_line_is_one_object_without_duplicate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = logged_run("json", dir.path()).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() >= 6, "{text}");
    assert!(text.contains("\"rpc\""), "{text}");
    let complaints = strict_json_lines(&log);
    assert!(complaints.is_empty(), "{complaints}");
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_terminal_colours() {
    let dir = tempfile::tempdir().unwrap();
    let log = logged_run("text", dir.path()).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("rpc"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{text:?}"
    );
}
