//! The gateway's cost next to a direct signed call, and next to the RSA floor.
//! Run: `cargo bench --bench gateway` (about three minutes; PostgreSQL from
//! PAYGATE_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres).
//! `PAYGATE_BENCH_BINARY=path` measures that paygate binary instead of this build's, to
//! compare two builds with the same bench.
//!
//! - direct: this process signs Antom requests itself (paygate's Antom client, as a service
//!   using an SDK would), calls the simulator over HTTP and verifies the answer;
//! - gateway: a tonic client calls a paygate process (release build), which calls the simulator;
//! - floor: one RSA-2048 PKCS#1 v1.5 SHA-256 signature plus one verification with aws-lc-rs.
//!
//! The simulator runs in fast mode (canned answers signed once). Load is open loop at a fixed
//! rate; latency is measured from each request's scheduled start. Gateway CPU and peak RSS are
//! read from /proc for the gateway process. Prints tables; asserts nothing.

use std::future::Future;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate::domain::{CancelSubscription, CancellationType, CreateRefund, InquireRefund, Money};
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::pb::subscription_service_client::SubscriptionServiceClient;
use paygate::providers::antom::Antom;
use paygate::providers::antom::client::Settings;
use paygate::providers::antom::signing::{Signer, Verifier};
use paygate::providers::{CallContext, Provider};
use paygate::sim::antom::{AntomSim, SimServer};
use sqlx::Connection;
use tonic::transport::Channel;

const CLIENT_ID: &str = "BENCH_CLIENT";

struct Keys {
    merchant: String,
    antom: String,
}

fn keys() -> Keys {
    Keys {
        merchant: Signer::generate().unwrap().private_key_pem(),
        antom: Signer::generate().unwrap().private_key_pem(),
    }
}

async fn sim(keys: &Keys, delay: Duration) -> SimServer {
    AntomSim::fast(
        CLIENT_ID,
        Signer::from_bytes(keys.antom.as_bytes()).unwrap(),
        delay,
    )
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap()
}

fn verifier(private_pem: &str) -> Verifier {
    Verifier::from_der(
        &Signer::from_bytes(private_pem.as_bytes())
            .unwrap()
            .public_key_der(),
    )
    .unwrap()
}

// ---------------------------------------------------------------- the gateway process

struct Gateway {
    child: Child,
    port: u16,
    /// Its store, as it opened it.
    store_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn gateway(keys: &Keys, sim_url: &str, store: &str) -> Gateway {
    gateway_with(keys, sim_url, store, &[]).await
}

/// The same, with more environment for the gateway.
async fn gateway_with(keys: &Keys, sim_url: &str, store: &str, env: &[(&str, String)]) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let merchant = dir.path().join("merchant.pem");
    let antom_pub = dir.path().join("antom_pub.pem");
    std::fs::write(&merchant, &keys.merchant).unwrap();
    std::fs::write(
        &antom_pub,
        Signer::from_bytes(keys.antom.as_bytes())
            .unwrap()
            .public_key_pem(),
    )
    .unwrap();
    let store = store.replace("{dir}", &dir.path().display().to_string());
    let config = dir.path().join("paygate.toml");
    std::fs::write(
        &config,
        format!(
            "store_url = {store:?}\nmax_in_flight_requests = 4096\n[accounts.antom]\nprovider = \"antom\"\nbase_url = {sim_url:?}\nclient_id = {CLIENT_ID:?}\nprivate_key_file = {merchant:?}\nantom_public_key_file = {antom_pub:?}\nmax_in_flight = 4096\nmax_calls = 4096\n"
        ),
    )
    .unwrap();
    let port = free_port();
    // PAYGATE_BENCH_BINARY measures another build (e.g. an earlier commit's) with this bench.
    let binary = std::env::var("PAYGATE_BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_paygate").to_owned());
    let child = Command::new(binary)
        .args(["--config"])
        .arg(&config)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PAYGATE_NOTIFY_ADDR", "off")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let g = Gateway {
        child,
        port,
        store_url: store,
        _dir: dir,
    };
    for _ in 0..200 {
        if RefundServiceClient::connect(g.url()).await.is_ok() {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway did not start");
}

impl Gateway {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// User + system CPU seconds of the process so far.
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (t(11) + t(12)) / 100.0
    }

    /// Peak resident set size in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    async fn channels(&self, n: usize) -> Vec<Channel> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(
                Channel::from_shared(self.url())
                    .unwrap()
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        v
    }
}

/// User + system CPU seconds so far of every PostgreSQL process on this machine (the
/// server's backends, its writer and checkpointer, ...): what the store costs the machine
/// beside the gateway. Pooled connections live through a run, so their CPU is counted.
fn postgres_cpu() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (t(11) + t(12)) / 100.0;
    }
    total
}

// ---------------------------------------------------------------- load

struct Stats {
    p50: f64,
    p99: f64,
    p999: f64,
    n: usize,
    errors: usize,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Open loop: request `i` is scheduled at `start + i / rate`; its latency counts from then.
async fn open_loop<F, Fut>(rate: f64, dur: Duration, call: F) -> Stats
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let n = (rate * dur.as_secs_f64()) as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let fut = call(i);
        tasks.push(tokio::spawn(async move {
            let ok = fut.await;
            (at.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        if !ok {
            errors += 1;
        }
        lat.push(d);
    }
    lat.sort();
    Stats {
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        p999: pct(&lat, 0.999),
        n: lat.len(),
        errors,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    CreateFirst,
    CreateReplay,
    Cancel,
    Inquire,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::CreateFirst => "refund Create (first call)",
            Op::CreateReplay => "refund Create (replay)",
            Op::Cancel => "Cancel",
            Op::Inquire => "Inquire",
        }
    }
}

fn refund(id: String) -> CreateRefund {
    CreateRefund {
        request_id: id,
        payment_id: "PAY_BENCH".into(),
        amount: Money {
            currency: "USD".into(),
            value: 100,
        },
        reason: None,
        reference_refund_id: None,
        cancel_subscription: false,
    }
}

async fn direct(antom: Arc<Antom>, op: Op, rate: f64, dur: Duration, tag: &str) -> Stats {
    let tag = tag.to_owned();
    open_loop(rate, dur, move |i| {
        let antom = antom.clone();
        let id = match op {
            Op::CreateReplay => format!("direct-replay-{tag}"),
            _ => format!("direct-{tag}-{i}"),
        };
        async move {
            let ctx = CallContext::new(tokio::time::Instant::now() + Duration::from_secs(10));
            match op {
                Op::CreateFirst | Op::CreateReplay => {
                    antom.create_refund(&refund(id), &ctx).await.is_ok()
                }
                Op::Cancel => antom
                    .cancel_subscription(
                        &CancelSubscription {
                            request_id: id,
                            subscription_id: Some("SUB_BENCH".into()),
                            subscription_request_id: None,
                            cancellation_type: CancellationType::Cancel,
                            cancel_reason: None,
                        },
                        &ctx,
                    )
                    .await
                    .is_ok(),
                Op::Inquire => antom
                    .inquire_refund(
                        &InquireRefund {
                            refund_id: Some("2026BENCH0000000001".into()),
                            request_id: None,
                        },
                        &ctx,
                    )
                    .await
                    .is_ok(),
            }
        }
    })
    .await
}

/// The gateway's errors by status code and reason, as the client saw them (printed by the
/// profile mode and the knee search).
static ERRORS: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Whether a call succeeded, counting its error by code and reason.
fn counted<T>(r: Result<T, tonic::Status>) -> bool {
    match r {
        Ok(_) => true,
        Err(s) => {
            let what = format!("{:?}: {}", s.code(), s.message());
            *ERRORS.lock().unwrap().entry(what).or_default() += 1;
            false
        }
    }
}

/// The errors counted since the last call, as `code reason: n, ...`.
fn errors_seen() -> String {
    let mut e = ERRORS.lock().unwrap();
    let s = e
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    e.clear();
    s
}

fn req<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.set_timeout(Duration::from_secs(10));
    r
}

async fn via_gateway(channels: &[Channel], op: Op, rate: f64, dur: Duration, tag: &str) -> Stats {
    let channels = channels.to_vec();
    let tag = tag.to_owned();
    open_loop(rate, dur, move |i| {
        let ch = channels[i as usize % channels.len()].clone();
        let id = match op {
            Op::CreateReplay => format!("gw-replay-{tag}"),
            _ => format!("gw-{tag}-{i}"),
        };
        async move {
            match op {
                Op::CreateFirst | Op::CreateReplay => RefundServiceClient::new(ch)
                    .create(req(pb::CreateRefundRequest {
                        request_id: id,
                        payment_id: "PAY_BENCH".into(),
                        amount: Some(pb::Money {
                            currency: "USD".into(),
                            value: 100,
                        }),
                        ..Default::default()
                    }))
                    .await
                    .map_or_else(|e| counted::<()>(Err(e)), |_| true),
                Op::Cancel => SubscriptionServiceClient::new(ch)
                    .cancel(req(pb::CancelSubscriptionRequest {
                        request_id: id,
                        subscription_id: "SUB_BENCH".into(),
                        cancellation_type: pb::CancellationType::Cancel as i32,
                        ..Default::default()
                    }))
                    .await
                    .map_or_else(|e| counted::<()>(Err(e)), |_| true),
                Op::Inquire => RefundServiceClient::new(ch)
                    .inquire(req(pb::InquireRefundRequest {
                        refund_id: "2026BENCH0000000001".into(),
                        ..Default::default()
                    }))
                    .await
                    .map_or_else(|e| counted::<()>(Err(e)), |_| true),
            }
        }
    })
    .await
}

/// Has the simulator sign ahead the refund answers that first calls at `rate` for `dur` will
/// take, for each request-id prefix (`gw-<tag>` through the gateway, `direct-<tag>` to the
/// provider), so that it does not sign while it is timed.
fn sign_ahead(sim: &SimServer, op: Op, rate: f64, dur: Duration, prefixes: &[String]) {
    if op == Op::CreateFirst {
        for p in prefixes {
            sim.sim
                .presign_refunds(p, (rate * dur.as_secs_f64()) as usize + 1);
        }
    }
}

/// Mean cost of one RSA-2048 signature plus one verification, in ms.
fn floor_ms() -> f64 {
    let s = Signer::generate().unwrap();
    let v = Verifier::from_der(&s.public_key_der()).unwrap();
    let msg = vec![b'x'; 300];
    let n = 2_000;
    let t = Instant::now();
    for _ in 0..n {
        let sig = s.sign(&msg);
        assert!(v.verify(&msg, &sig));
    }
    t.elapsed().as_secs_f64() * 1e3 / n as f64
}

// ---------------------------------------------------------------- gRPC's own floor

/// A bare tonic server: RefundService.Create answers one fixed message, with no paygate
/// logic; the floor a replay is compared with. Runs in a process of its own (this bench
/// binary again, `PAYGATE_BENCH_BARE=<file of the encoded message>`), as the gateway does, so
/// its CPU is read the same way.
struct Bare {
    answer: pb::Refund,
}

#[tonic::async_trait]
impl pb::refund_service_server::RefundService for Bare {
    async fn create(
        &self,
        _: tonic::Request<pb::CreateRefundRequest>,
    ) -> Result<tonic::Response<pb::Refund>, tonic::Status> {
        Ok(tonic::Response::new(self.answer.clone()))
    }

    async fn inquire(
        &self,
        _: tonic::Request<pb::InquireRefundRequest>,
    ) -> Result<tonic::Response<pb::Refund>, tonic::Status> {
        Err(tonic::Status::unimplemented("bare server"))
    }
}

/// The bare server's process mode: serves on `PAYGATE_BENCH_BARE_PORT`.
async fn serve_bare(file: &str) {
    use prost::Message;
    let answer = pb::Refund::decode(std::fs::read(file).unwrap().as_slice()).unwrap();
    let port: u16 = std::env::var("PAYGATE_BENCH_BARE_PORT")
        .unwrap()
        .parse()
        .unwrap();
    tonic::transport::Server::builder()
        .add_service(pb::refund_service_server::RefundServiceServer::new(Bare {
            answer,
        }))
        .serve(([127, 0, 0, 1], port).into())
        .await
        .unwrap();
}

/// Starts the bare server answering `answer`; a [`Gateway`] for its process and port.
async fn bare_server(answer: &pb::Refund) -> Gateway {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answer.bin");
    std::fs::write(&file, answer.encode_to_vec()).unwrap();
    let port = free_port();
    let child = Command::new(std::env::current_exe().unwrap())
        .env("PAYGATE_BENCH_BARE", &file)
        .env("PAYGATE_BENCH_BARE_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let g = Gateway {
        child,
        port,
        store_url: String::new(),
        _dir: dir,
    };
    for _ in 0..200 {
        if RefundServiceClient::connect(g.url()).await.is_ok() {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the bare server did not start");
}

/// The replay next to the same answer from a bare tonic server, same client, same rate.
async fn replay_floor(keys: &Keys, sim: &SimServer, floor: f64) {
    println!("\n## A replay next to gRPC's own floor (SQLite store, 1,000 req/s)\n");
    row(&[
        "server",
        "p50 / p99 ms",
        "CPU ms/req",
        "CPU / floor (RSA)",
        "errors",
    ]
    .map(String::from));
    row(&["---"; 5].map(String::from));
    let gw = gateway(keys, &sim.base_url(), "sqlite://{dir}/paygate.db").await;
    let chans = gw.channels(4).await;
    let _ = via_gateway(
        &chans,
        Op::CreateReplay,
        200.0,
        Duration::from_millis(300),
        "floor",
    )
    .await;
    let answer = RefundServiceClient::new(chans[0].clone())
        .create(req(pb::CreateRefundRequest {
            request_id: "gw-replay-floor".into(),
            payment_id: "PAY_BENCH".into(),
            amount: Some(pb::Money {
                currency: "USD".into(),
                value: 100,
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let bare = bare_server(&answer).await;
    let bare_chans = bare.channels(4).await;
    let dur = Duration::from_secs(5);
    let mut cpus = Vec::new();
    for (name, server, chans) in [
        ("paygate (replay)", &gw, &chans),
        ("bare tonic", &bare, &bare_chans),
    ] {
        let _ = via_gateway(
            chans,
            Op::CreateReplay,
            1000.0,
            Duration::from_millis(500),
            "floor",
        )
        .await;
        let cpu0 = server.cpu();
        let g = via_gateway(chans, Op::CreateReplay, 1000.0, dur, "floor").await;
        let cpu = (server.cpu() - cpu0) * 1e3 / g.n.max(1) as f64;
        cpus.push(cpu);
        row(&[
            name.into(),
            format!("{:.3} / {:.3}", g.p50, g.p99),
            format!("{cpu:.3}"),
            format!("{:.2}", cpu / floor),
            g.errors.to_string(),
        ]);
    }
    println!(
        "\nreplay CPU / bare tonic CPU = {:.2}",
        cpus[0] / cpus[1].max(f64::MIN_POSITIVE)
    );
}

/// A fresh store named `name` (`sqlite`, or `postgres`: a database of its own, `tag` in its
/// name): its URL, and the database to drop after; `None` when PostgreSQL is unavailable.
async fn fresh_store(name: &str, tag: &str) -> Option<(Option<Pg>, String)> {
    match name {
        "postgres" => match Pg::create(tag).await {
            Some((pg, url)) => Some((Some(pg), url)),
            None => {
                println!("PostgreSQL unavailable: its rows are skipped");
                None
            }
        },
        _ => Some((None, "sqlite://{dir}/paygate.db".to_string())),
    }
}

/// Warms a gateway's connections and store: first calls at 200/s for 0.5 s, tagged `tag`.
async fn warm_up(sim: &SimServer, chans: &[Channel], tag: &str) {
    let (rate, dur) = (200.0, Duration::from_millis(500));
    sign_ahead(sim, Op::CreateFirst, rate, dur, &[format!("gw-{tag}")]);
    let _ = via_gateway(chans, Op::CreateFirst, rate, dur, tag).await;
}

// ---------------------------------------------------------------- the knee

/// The highest rate of first calls a store takes with p99 <= 50 ms and no error: rates
/// from 500/s up in steps, 4 s each, until one misses; what the first miss got, by error.
async fn knee(keys: &Keys, sim: &SimServer) {
    println!("\n## The knee: first calls, p99 <= 50 ms and no error (4 s per rate)\n");
    row(&["store", "rate/s", "p50 / p99 ms", "errors", "within?"].map(String::from));
    row(&["---"; 5].map(String::from));
    for name in ["sqlite", "postgres"] {
        let Some((pg, store)) = fresh_store(name, "knee").await else {
            continue;
        };
        let gw = gateway(keys, &sim.base_url(), &store).await;
        let chans = gw.channels(4).await;
        warm_up(sim, &chans, &format!("knee-{name}-warm")).await;
        let (mut knee, mut missed) = (None, false);
        for rate in [
            500.0, 750.0, 1000.0, 1250.0, 1500.0, 1750.0, 2000.0, 2500.0, 3000.0,
        ] {
            let dur = Duration::from_secs(4);
            let tag = format!("knee-{name}-{rate}");
            sign_ahead(sim, Op::CreateFirst, rate, dur, &[format!("gw-{tag}")]);
            let g = via_gateway(&chans, Op::CreateFirst, rate, dur, &tag).await;
            let within = g.errors == 0 && g.p99 <= 50.0;
            let errors = errors_seen();
            row(&[
                name.into(),
                format!("{rate}"),
                format!("{:.3} / {:.3}", g.p50, g.p99),
                if errors.is_empty() {
                    "0".into()
                } else {
                    format!("{} ({errors})", g.errors)
                },
                if within { "yes" } else { "no" }.into(),
            ]);
            if !within {
                missed = true;
                break;
            }
            knee = Some(rate);
            // Let the store settle between rates.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let knee = match (knee, missed) {
            (None, _) => "below 500/s".to_string(),
            (Some(k), true) => format!("{k}/s"),
            (Some(k), false) => format!("at least {k}/s (the highest rate tried)"),
        };
        println!("| {name} | knee: {knee} | | | |");
        drop(gw);
        if let Some(p) = pg {
            p.drop_db().await;
        }
    }
}

// ---------------------------------------------------------------- stores

struct Pg {
    admin: String,
    name: String,
}

impl Pg {
    async fn create(tag: &str) -> Option<(Pg, String)> {
        let admin = std::env::var("PAYGATE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut c = sqlx::PgConnection::connect(&admin).await.ok()?;
        let name = format!("paygate_bench_{tag}_{}", std::process::id());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .ok()?;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin.clone());
        let url = format!("{base}/{name}");
        Some((Pg { admin, name }, url))
    }

    async fn drop_db(self) {
        if let Ok(mut c) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut c)
            .await;
        }
    }
}

/// The key columns `prefill` writes (later migrations add columns that may stay NULL).
const KEY_COLUMNS: &str = "caller, method, request_id, fingerprint, state, lease, \
     lease_until, attempts, outcome, created_at, updated_at";

/// Fills the store with `n` completed keys (done directly in SQL).
async fn prefill(store_url: &str, n: u64) {
    let now = 1_795_000_000_000i64;
    let outcome = r#"{"Cancel":{"status":"Accepted","result":{"provider":"antom","code":"SUCCESS","status":"S","message":"success"}}}"#;
    if store_url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(store_url).await.unwrap();
        let sql = format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
             INSERT OR IGNORE INTO idempotency_keys ({KEY_COLUMNS}) \
             SELECT 'hist', 'SubscriptionService.Cancel', 'hist-' || x, 'fp', 'done', NULL, 0, 1, '{outcome}', {now}, {now} FROM c"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(store_url).await.unwrap();
        let sql = format!(
            "INSERT INTO idempotency_keys ({KEY_COLUMNS}) \
             SELECT 'hist', 'SubscriptionService.Cancel', 'hist-' || x, 'fp', 'done', NULL, 0, 1, '{outcome}', {now}, {now} \
             FROM generate_series(1, {n}) AS x ON CONFLICT DO NOTHING; ANALYZE idempotency_keys"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    format!(
        "{} cores ({cpu}), {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
    let _ = std::io::stdout().flush();
}

/// `PAYGATE_BENCH_PROFILE=relay`: first calls at 1,000 refunds/s for 5 s on SQLite and on
/// PostgreSQL, with the relay to NATS JetStream off and on (a NATS server with JetStream at
/// `PAYGATE_BENCH_NATS`, default nats://127.0.0.1:4222): what the outbox and the relay cost a
/// first call, and how far the relay falls behind (sampled from the store every 100 ms) and
/// how long it takes to drain after the load.
async fn relay_lag(keys: &Keys, sim: &SimServer) {
    let nats = std::env::var("PAYGATE_BENCH_NATS").unwrap_or("nats://127.0.0.1:4222".into());
    println!("## The relay at 1,000 first calls/s (5 s)\n");
    row(&[
        "store",
        "relay",
        "first call p50/p99 ms",
        "gateway CPU ms/req",
        "errors",
        "max lag (events / s)",
        "drained after the load (s)",
    ]
    .map(String::from));
    row(&["---"; 7].map(String::from));
    let rate = 1000.0;
    let dur = Duration::from_secs(5);
    for name in ["sqlite", "postgres"] {
        for relay in [false, true] {
            let run = format!("{}_{}", std::process::id(), relay as u8);
            // A fresh store each run: the relay starts with no backlog.
            let Some((pg, store)) = fresh_store(name, &format!("relay{run}")).await else {
                break;
            };
            let env = if relay {
                vec![
                    ("PAYGATE_EVENTS_NATS_URL", nats.clone()),
                    ("PAYGATE_EVENTS_NATS_STREAM", format!("BENCH_{run}")),
                    ("PAYGATE_EVENTS_NATS_SUBJECT_PREFIX", format!("bench.{run}")),
                ]
            } else {
                vec![]
            };
            let gw = gateway_with(keys, &sim.base_url(), &store, &env).await;
            let chans = gw.channels(4).await;
            let tag = format!("relay-{name}-{relay}");
            warm_up(sim, &chans, &format!("{tag}-warm")).await;
            sign_ahead(sim, Op::CreateFirst, rate, dur, &[format!("gw-{tag}")]);
            // Read only with the relay on: opening the store migrates it, which would fence an
            // older binary driven with PAYGATE_BENCH_BINARY.
            let reader = match relay {
                true => Some(
                    paygate::store::open(&gw.store_url)
                        .await
                        .expect("the store"),
                ),
                false => None,
            };
            let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let sampler = {
                let (reader, sampling) = (reader.clone(), sampling.clone());
                tokio::spawn(async move {
                    let mut max = (0i64, 0.0f64);
                    while let Some(reader) = &reader
                        && sampling.load(std::sync::atomic::Ordering::Relaxed)
                    {
                        if let Ok(l) = reader.relay_lag("nats").await {
                            let secs = l.oldest_at.map_or(0.0, |at| (l.now - at) as f64 / 1e3);
                            max = (max.0.max(l.events), max.1.max(secs));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    max
                })
            };
            let cpu0 = gw.cpu();
            let g = via_gateway(&chans, Op::CreateFirst, rate, dur, &tag).await;
            let cpu = (gw.cpu() - cpu0) * 1e3 / g.n.max(1) as f64;
            let ended = Instant::now();
            let mut drained = None;
            if let Some(reader) = &reader {
                while ended.elapsed() < Duration::from_secs(60) {
                    if reader.relay_lag("nats").await.is_ok_and(|l| l.events == 0) {
                        drained = Some(ended.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            sampling.store(false, std::sync::atomic::Ordering::Relaxed);
            let max = sampler.await.unwrap_or_default();
            row(&[
                name.to_string(),
                if relay { "on" } else { "off" }.into(),
                format!("{:.3} / {:.3}", g.p50, g.p99),
                format!("{cpu:.3}"),
                g.errors.to_string(),
                if relay {
                    format!("{} / {:.2}", max.0, max.1)
                } else {
                    "-".into()
                },
                match (relay, drained) {
                    (false, _) => "-".into(),
                    (true, Some(d)) => format!("{:.2}", d.as_secs_f64()),
                    (true, None) => "not within 60 s".into(),
                },
            ]);
            drop(gw);
            if let Some(p) = pg {
                p.drop_db().await;
            }
        }
    }
}

#[tokio::main]
async fn main() {
    if let Ok(file) = std::env::var("PAYGATE_BENCH_BARE") {
        serve_bare(&file).await;
        return;
    }
    let quick = std::env::var("PAYGATE_BENCH_QUICK").is_ok();
    let dur = |rate: f64| {
        let base = if rate <= 200.0 { 5.0 } else { 3.0 };
        Duration::from_secs_f64(if quick { base / 5.0 } else { base })
    };
    println!("machine: {}", machine());
    let floor = floor_ms();
    println!("floor: RSA-2048 sign + verify = {floor:.3} ms of one core (aws-lc-rs)\n");

    let keys = keys();
    let fast_sim = sim(&keys, Duration::ZERO).await;
    let antom = Arc::new(
        Antom::new(Settings {
            base_url: fast_sim.base_url(),
            client_id: CLIENT_ID.into(),
            sandbox: false,
            timeout: Duration::from_secs(10),
            keys: paygate::providers::antom::keys::Keys::fixed(
                paygate::providers::antom::keys::KeyRing::single(
                    1,
                    Signer::from_bytes(keys.merchant.as_bytes()).unwrap(),
                    verifier(&keys.antom),
                ),
            ),
            notify_url: None,
        })
        .unwrap(),
    );

    // Profiling aid: PAYGATE_BENCH_PROFILE=first|replay|inquire|cancel runs one operation against
    // a SQLite gateway (PostgreSQL with PAYGATE_BENCH_PROFILE_STORE=postgres) at 1000 req/s for
    // 20 s and prints the gateway's pid, for `perf record -p`;
    // PAYGATE_BENCH_PROFILE=rss runs only the peak-RSS measurement with 1,000 calls in flight.
    if let Ok(which) = std::env::var("PAYGATE_BENCH_PROFILE") {
        match which.as_str() {
            "relay" => return relay_lag(&keys, &fast_sim).await,
            "knee" => return knee(&keys, &fast_sim).await,
            "floor" => return replay_floor(&keys, &fast_sim, floor_ms()).await,
            _ => {}
        }
        let op = match which.as_str() {
            "replay" => Op::CreateReplay,
            "inquire" => Op::Inquire,
            "cancel" => Op::Cancel,
            "rss" => {
                peak_rss_in_flight(&keys).await;
                return;
            }
            _ => Op::CreateFirst,
        };
        // PAYGATE_BENCH_PROFILE_STORE=postgres profiles on PostgreSQL instead.
        let pg = match std::env::var("PAYGATE_BENCH_PROFILE_STORE").as_deref() {
            Ok("postgres") => Some(Pg::create("profile").await.expect("PostgreSQL")),
            _ => None,
        };
        let store = pg
            .as_ref()
            .map_or("sqlite://{dir}/paygate.db", |(_, url)| url.as_str());
        let gw = gateway(&keys, &fast_sim.base_url(), store).await;
        let chans = gw.channels(4).await;
        sign_ahead(
            &fast_sim,
            op,
            200.0,
            Duration::from_millis(500),
            &["gw-warm".into()],
        );
        let _ = via_gateway(&chans, op, 200.0, Duration::from_millis(500), "warm").await;
        // PAYGATE_BENCH_PROFILE_RATE (default 1000) and PAYGATE_BENCH_PROFILE_SECONDS (20).
        let env_num = |k: &str, d: f64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let rate = env_num("PAYGATE_BENCH_PROFILE_RATE", 1000.0);
        let secs = Duration::from_secs_f64(env_num("PAYGATE_BENCH_PROFILE_SECONDS", 20.0));
        sign_ahead(&fast_sim, op, rate, secs, &["gw-profile".into()]);
        eprintln!("gateway pid {}", gw.child.id());
        let (cpu0, pg0) = (gw.cpu(), postgres_cpu());
        let g = via_gateway(&chans, op, rate, secs, "profile").await;
        let pg_cpu = match pg {
            Some(_) => format!(
                ", PostgreSQL CPU {:.3} ms/req",
                (postgres_cpu() - pg0) * 1e3 / g.n as f64
            ),
            None => String::new(),
        };
        println!(
            "{} at {rate}/s: p50 {:.3} ms, p99 {:.3} ms, CPU {:.3} ms/req{pg_cpu}, errors {} ({})",
            op.name(),
            g.p50,
            g.p99,
            (gw.cpu() - cpu0) * 1e3 / g.n as f64,
            g.errors,
            errors_seen()
        );
        drop(gw);
        if let Some((p, _)) = pg {
            p.drop_db().await;
        }
        return;
    }

    let pg = Pg::create("main").await;
    let mut stores = vec![
        ("sqlite", "sqlite://{dir}/paygate.db".to_string()),
        (
            "sqlite sync=normal",
            "sqlite://{dir}/paygate.db?synchronous=normal".to_string(),
        ),
    ];
    match &pg {
        Some((_, url)) => stores.push(("postgres", url.clone())),
        None => println!("PostgreSQL unavailable: its rows are skipped"),
    }

    println!("## Latency (open loop) and gateway CPU per request\n");
    row(&[
        "store",
        "operation",
        "rate/s",
        "direct p50/p99/p99.9 ms",
        "gateway p50/p99/p99.9 ms",
        "added p50 / p99 ms",
        "gateway CPU ms/req",
        "CPU / floor",
        "PostgreSQL CPU ms/req",
        "errors",
    ]
    .map(String::from));
    row(&["---"; 10].map(String::from));
    let mut warm = true;
    for (store_name, store) in &stores {
        let gw = gateway(&keys, &fast_sim.base_url(), store).await;
        let chans = gw.channels(4).await;
        // Warm up connections and the store, and create the replayed key.
        let _ = via_gateway(
            &chans,
            Op::CreateReplay,
            200.0,
            Duration::from_millis(300),
            store_name,
        )
        .await;
        sign_ahead(
            &fast_sim,
            Op::CreateFirst,
            200.0,
            Duration::from_millis(300),
            &[format!("gw-warm-{store_name}"), "direct-warm".into()],
        );
        let _ = via_gateway(
            &chans,
            Op::CreateFirst,
            200.0,
            Duration::from_millis(300),
            &format!("warm-{store_name}"),
        )
        .await;
        if warm {
            let _ = direct(
                antom.clone(),
                Op::CreateFirst,
                200.0,
                Duration::from_millis(300),
                "warm",
            )
            .await;
            warm = false;
        }
        for op in [Op::CreateFirst, Op::CreateReplay, Op::Cancel, Op::Inquire] {
            // First calls also at 2,000 req/s, to show where the knee is.
            let rates: &[f64] = match op {
                Op::CreateFirst => &[200.0, 1000.0, 2000.0],
                _ => &[200.0, 1000.0],
            };
            for &rate in rates {
                let tag = format!("{}-{rate}", store_name.replace([' ', '='], "-"));
                sign_ahead(
                    &fast_sim,
                    op,
                    rate,
                    dur(rate),
                    &[format!("direct-{tag}"), format!("gw-{tag}")],
                );
                let d = direct(antom.clone(), op, rate, dur(rate), &tag).await;
                let (cpu0, pg0) = (gw.cpu(), postgres_cpu());
                let g = via_gateway(&chans, op, rate, dur(rate), &tag).await;
                let cpu = (gw.cpu() - cpu0) * 1e3 / g.n as f64;
                let pg_cpu = match *store_name {
                    "postgres" => format!("{:.3}", (postgres_cpu() - pg0) * 1e3 / g.n as f64),
                    _ => "-".into(),
                };
                row(&[
                    store_name.to_string(),
                    op.name().into(),
                    format!("{rate}"),
                    format!("{:.3} / {:.3} / {:.3}", d.p50, d.p99, d.p999),
                    format!("{:.3} / {:.3} / {:.3}", g.p50, g.p99, g.p999),
                    format!("{:.3} / {:.3}", g.p50 - d.p50, g.p99 - d.p99),
                    format!("{cpu:.3}"),
                    format!("{:.2}", cpu / floor),
                    pg_cpu,
                    format!("{}", d.errors + g.errors),
                ]);
                let _ = errors_seen();
            }
        }
        println!(
            "| {store_name} | peak RSS after the runs: {:.1} MiB | | | | | | | | |",
            gw.peak_rss_mib()
        );
    }

    println!("\n## Cost per request with history in the store (200 req/s)\n");
    row(&[
        "store",
        "keys already stored",
        "operation",
        "gateway p50 ms",
        "gateway CPU ms/req",
    ]
    .map(String::from));
    row(&["---"; 5].map(String::from));
    for (store_name, _) in stores.iter().filter(|(n, _)| !n.contains("normal")) {
        for n in [10_000u64, 1_000_000] {
            let (store_url, extra) = if *store_name == "sqlite" {
                ("sqlite://{dir}/paygate.db".to_string(), None)
            } else {
                match Pg::create(&format!("h{n}")).await {
                    Some((p, url)) => (url, Some(p)),
                    None => continue,
                }
            };
            let gw = gateway(&keys, &fast_sim.base_url(), &store_url).await;
            let resolved = if *store_name == "sqlite" {
                format!("sqlite://{}/paygate.db", gw._dir.path().display())
            } else {
                store_url.clone()
            };
            let t = Instant::now();
            prefill(&resolved, n).await;
            eprintln!("prefilled {n} keys into {store_name} in {:?}", t.elapsed());
            let chans = gw.channels(4).await;
            let _ = via_gateway(
                &chans,
                Op::CreateReplay,
                200.0,
                Duration::from_millis(300),
                &format!("h{n}"),
            )
            .await;
            for op in [Op::CreateFirst, Op::CreateReplay] {
                sign_ahead(&fast_sim, op, 200.0, dur(200.0), &[format!("gw-h{n}")]);
                let cpu0 = gw.cpu();
                let g = via_gateway(&chans, op, 200.0, dur(200.0), &format!("h{n}")).await;
                let cpu = (gw.cpu() - cpu0) * 1e3 / g.n as f64;
                row(&[
                    store_name.to_string(),
                    format!("{n}"),
                    op.name().into(),
                    format!("{:.3}", g.p50),
                    format!("{cpu:.3}"),
                ]);
            }
            drop(gw);
            if let Some(p) = extra {
                p.drop_db().await;
            }
        }
    }

    replay_floor(&keys, &fast_sim, floor).await;
    knee(&keys, &fast_sim).await;
    println!();
    relay_lag(&keys, &fast_sim).await;

    println!(
        "\n## Peak RSS with 1,000 requests in flight (SQLite store, simulator answers after 2 s)\n"
    );
    peak_rss_in_flight(&keys).await;
    if let Some((p, _)) = pg {
        p.drop_db().await;
    }
}

/// Peak RSS of a SQLite gateway with 1,000 Create calls in flight (the simulator answers each
/// after 2 s).
async fn peak_rss_in_flight(keys: &Keys) {
    let slow_sim = sim(keys, Duration::from_secs(2)).await;
    slow_sim.sim.presign_refunds("rss", 1000);
    let gw = gateway(keys, &slow_sim.base_url(), "sqlite://{dir}/paygate.db").await;
    // 100 streams per connection at most: enough connections for 1,000 calls at once.
    let chans = gw.channels(12).await;
    let before = gw.peak_rss_mib();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let ch = chans[i % chans.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut r = tonic::Request::new(pb::CreateRefundRequest {
                request_id: format!("rss-{i}"),
                payment_id: "PAY_BENCH".into(),
                amount: Some(pb::Money {
                    currency: "USD".into(),
                    value: 100,
                }),
                ..Default::default()
            });
            r.set_timeout(Duration::from_secs(30));
            counted(RefundServiceClient::new(ch).create(r).await)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() {
            ok += 1;
        }
    }
    println!(
        "peak RSS {:.1} MiB (idle {before:.1} MiB), {ok}/1000 succeeded {}",
        gw.peak_rss_mib(),
        errors_seen()
    );
}
