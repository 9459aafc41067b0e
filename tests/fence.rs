//! A replica never decides money on a schema newer than the one it was built for, through
//! the binaries of two releases on one PostgreSQL store, as a rolling update runs them:
//! - the previous release (built from git at [`PREVIOUS_RELEASE`], cached under
//!   `target/previous-release/`) serves, then this release starts and migrates the store; from
//!   then on the previous release's retries and first calls fail without reaching the
//!   provider (it still replays completed keys), and this release settles them: one refund;
//! - this release, once the store is migrated past its own generation (its fence dropped, as
//!   the next release's migration does), stops changing anything and says why;
//! - this release refuses to start on a store a newer release migrated, and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::process::{
    GatewayProcess, PX_ORIGINATOR, PX_PASSWORD, TestDatabase, free_port, gateway_binary,
    spawn_payxpert_binary,
};
use common::{money, reason, retry_delay};
use paygate::pb;
use paygate::sim::Simulator as _;
use paygate::sim::payxpert::PayXpertSim;
use paygate::sim::{Fault, FaultKind, SimServer};
use sqlx::Connection;
use tonic::Code;

/// The release before the schema fence: the commit this repository's `main` had then.
const PREVIOUS_RELEASE: &str = "8a7761839d5a2364ac7af0fcb2a0a078098f038c";

/// The previous release's `paygate` binary, built from git once and cached.
fn previous_release() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/previous-release").join(PREVIOUS_RELEASE);
    let bin = dir.join("target/debug/paygate");
    if bin.exists() {
        return bin;
    }
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap();
    let archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", PREVIOUS_RELEASE])
        .output()
        .expect("git");
    assert!(
        archive.status.success(),
        "git archive {PREVIOUS_RELEASE} (a clone with the history is needed): {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&src)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &archive.stdout).unwrap();
    assert!(tar.wait().unwrap().success());
    eprintln!("building the previous release ({PREVIOUS_RELEASE}) once; it is cached");
    let built = Command::new(env!("CARGO"))
        .args(["build", "--locked", "--bin", "paygate", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(built.success(), "building the previous release failed");
    bin
}

/// `paygate serve` of `binary` with one PayXpert account at `px_url`, on `store`.
fn serve(binary: &Path, dir: &Path, px_url: &str, store: &str) -> GatewayProcess {
    let (timeout, quiet) = (Duration::from_millis(1_000), Duration::from_millis(2_500));
    spawn_payxpert_binary(binary, dir, px_url, store, timeout, quiet, &[])
}

fn refund(request_id: &str, payment: &str, value: i64) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: payment.into(),
        amount: money("EUR", value),
        ..Default::default()
    }
}

async fn create(
    gw: &GatewayProcess,
    req: pb::CreateRefundRequest,
) -> Result<pb::Refund, tonic::Status> {
    let mut r = tonic::Request::new(req);
    r.set_timeout(Duration::from_secs(5));
    gw.client().await.create(r).await.map(|r| r.into_inner())
}

async fn px() -> SimServer<PayXpertSim> {
    let sim = PayXpertSim::new(PX_ORIGINATOR, PX_PASSWORD);
    for sale in ["8001", "8002", "8003"] {
        sim.add_sale(sale, 10_000, "EUR", None);
    }
    sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_the_previous_release_stops_deciding_money_when_this_release_migrates() {
    let previous = tokio::task::spawn_blocking(previous_release).await.unwrap();
    let sim = px().await;
    let db = TestDatabase::create().await;
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // The previous release serves alone, and refunds.
    let old = serve(&previous, old_dir.path(), &sim.base_url(), &db.url);
    let done = create(&old, refund("before", "8001", 100)).await.unwrap();
    assert_eq!(sim.sim.refunds_of("8001").len(), 1);

    // The rolling update starts: this release migrates the store while the previous one
    // still serves. A refund's answer is lost on the new replica: its outcome is unknown.
    let new = serve(
        Path::new(&gateway_binary()),
        new_dir.path(),
        &sim.base_url(),
        &db.url,
    );
    new.client().await;
    sim.sim.inject(Fault::on("refund", FaultKind::LoseAnswer));
    let e = create(&new, refund("lost", "8002", 300)).await.unwrap_err();
    assert_eq!(reason(&e), "OUTCOME_UNKNOWN", "{e:?}");
    assert_eq!(sim.sim.refunds_of("8002").len(), 1);

    // The caller's retries land on the old replica: it reaches no provider.
    let calls_before = sim.sim.stats().calls.get("refund").copied().unwrap_or(0);
    for (id, payment) in [("lost", "8002"), ("fresh", "8003")] {
        let value = if id == "lost" { 300 } else { 200 };
        let e = create(&old, refund(id, payment, value))
            .await
            .expect_err("the previous release decided money on a newer schema");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert_eq!(reason(&e), "STORE_UNAVAILABLE", "{e:?}");
    }
    assert_eq!(
        sim.sim.stats().calls.get("refund").copied().unwrap_or(0),
        calls_before,
        "the previous release sent a refund"
    );
    // It still replays what is completed: a read decides nothing.
    let replay = create(&old, refund("before", "8001", 100)).await.unwrap();
    assert_eq!(replay.refund_id, done.refund_id);

    // This release settles the lost one, and serves the fresh one: one refund each.
    let end = Instant::now() + Duration::from_secs(20);
    for (id, payment, value) in [("lost", "8002", 300), ("fresh", "8003", 200)] {
        let r = loop {
            match create(&new, refund(id, payment, value)).await {
                Ok(r) => break r,
                Err(e) => match retry_delay(&e) {
                    Some(d) if Instant::now() + d < end => tokio::time::sleep(d).await,
                    _ => panic!("{id}: {e:?}"),
                },
            }
        };
        let executed = sim.sim.refunds_of(payment);
        assert_eq!(executed.len(), 1, "{id}: {executed:?}");
        assert_eq!(r.refund_id, executed[0].transaction_id);
    }
}

/// The next release's migration, as far as this release can see it: its fence is dropped.
async fn migrate_past_this_release(url: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(
        "DROP TABLE schema_fence_7; CREATE TABLE schema_fence_8 (id INTEGER PRIMARY KEY)",
    )
    .execute(&mut c)
    .await
    .unwrap();
}

#[tokio::test]
async fn this_release_is_fenced_by_the_next_and_refuses_to_start_on_its_schema() {
    let sim = px().await;
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = PathBuf::from(gateway_binary());
    let gw = serve(&bin, dir.path(), &sim.base_url(), &db.url);
    let done = create(&gw, refund("kept", "8001", 100)).await.unwrap();

    migrate_past_this_release(&db.url).await;
    let e = create(&gw, refund("after", "8002", 100)).await.unwrap_err();
    assert_eq!(reason(&e), "STORE_UNAVAILABLE", "{e:?}");
    assert!(sim.sim.refunds_of("8002").is_empty());
    let replay = create(&gw, refund("kept", "8001", 100)).await.unwrap();
    assert_eq!(replay.refund_id, done.refund_id);
    drop(gw);

    // A release that knows only generation 7 does not start on a store at generation 8.
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (8, 'the next release', true, '\\x00', 0)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let serve_out = Command::new(&bin)
        .arg("serve")
        .env("PAYGATE_CONFIG", dir.path().join("paygate.toml"))
        .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("PAYGATE_NOTIFY_ADDR", "off")
        .env("PAYGATE_STORE_URL", &db.url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&serve_out.stderr);
    assert!(!serve_out.status.success());
    assert!(
        stderr.contains("migrated by a newer paygate release") && stderr.contains("generation 8"),
        "{stderr}"
    );
    assert!(!stderr.contains("configuration error"), "{stderr}");
}
