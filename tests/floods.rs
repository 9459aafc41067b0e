//! The gRPC port under hostile HTTP/2 and a neighbour's outage, through the binary, each with a
//! well-behaved client calling alongside (p99 under 1 s, no error):
//! - a stream flood: 100,000 streams on one connection whose bodies never come;
//! - an error-reset flood: malformed requests whose RST_STREAM answers are never read;
//! - silent connections that never send the HTTP/2 preface;
//! - a retry storm on an account whose provider hangs, while another account is called.
//!
//! The raw frames are written by hand (HPACK literals without Huffman coding), so the client
//! does whatever a hostile one would. RSS stays under 300 MB during and comes back near idle
//! after; sheds are counted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::{GatewayProcess, antom_env, free_port, spawn_configured, spawn_gateway_with};
use common::*;
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use tonic::transport::Channel;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal header field without indexing, no Huffman coding (short strings).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    for s in [name, value] {
        assert!(s.len() < 127);
        block.push(s.len() as u8);
        block.extend_from_slice(s.as_bytes());
    }
}

/// A gRPC request's header block; `valid: false` makes it malformed (a `te` other than
/// `trailers`), which the server answers with RST_STREAM(PROTOCOL_ERROR) on that stream.
fn request_headers(valid: bool) -> Vec<u8> {
    let mut b = Vec::new();
    literal(&mut b, ":method", "POST");
    literal(&mut b, ":scheme", "http");
    literal(&mut b, ":path", "/paygate.v1.RefundService/Inquire");
    literal(&mut b, ":authority", "localhost");
    literal(&mut b, "content-type", "application/grpc");
    literal(&mut b, "te", if valid { "trailers" } else { "gzip" });
    b
}

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const END_HEADERS: u8 = 0x4;

/// A connection to the gateway from the attacker's own address, 127.0.0.2 (the calm client
/// is 127.0.0.1: another client).
fn connect(port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())?;
    socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(socket.into())
}

/// Opens a raw connection and sends the preface and an empty SETTINGS frame (a connection the
/// gateway refused at once fails its first writes).
fn raw(port: u16) -> TcpStream {
    let mut s = connect(port).unwrap();
    let _ = s.write_all(PREFACE);
    let _ = s.write_all(&frame(SETTINGS, 0, 0, &[]));
    s
}

/// The floods run one at a time: each measures latency and memory on a machine of 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes HEADERS frames on new streams (bodies never sent), at most `n` of them and for at
/// most `within`, stopping when the server closes the connection, then holds the connection
/// open (never reading) until `within` is over; the bytes sent, and whether the server closed
/// the connection.
fn flood(mut s: TcpStream, n: u32, valid: bool, within: Duration) -> (usize, bool) {
    let started = Instant::now();
    let block = request_headers(valid);
    s.set_write_timeout(Some(within)).unwrap();
    let (mut sent, mut closed) = (0, false);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i, &block));
        if batch.len() > 64 * 1024 || i + 1 == n {
            if started.elapsed() > within {
                break;
            }
            if s.write_all(&batch).is_err() {
                closed = true;
                break;
            }
            sent += batch.len();
            batch.clear();
        }
    }
    std::thread::sleep(within.saturating_sub(started.elapsed()));
    (sent, closed)
}

fn rss_mib(gw: &GatewayProcess) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

/// A well-behaved client calling every 20 ms until `stop`: its latencies and errors.
fn calm_client(
    channel: Channel,
    account: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Duration>, Vec<tonic::Status>)> {
    tokio::spawn(async move {
        let mut client = RefundServiceClient::new(channel);
        let (mut lat, mut errors) = (Vec::new(), Vec::new());
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let started = Instant::now();
            let req = pb::CreateRefundRequest {
                account: account.into(),
                ..refund_req(&format!("calm-{account}-{n}"), "PAY_USD_100", 1)
            };
            match client
                .create(with_timeout(req, Duration::from_secs(5)))
                .await
            {
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
            lat.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (lat, errors)
    })
}

fn p99(lat: &mut [Duration]) -> Duration {
    lat.sort();
    lat[(lat.len() * 99 / 100).min(lat.len() - 1)]
}

/// The gateway on the shared Antom simulator, with metrics.
async fn gateway() -> (
    paygate::sim::antom::SimServer,
    GatewayProcess,
    tempfile::TempDir,
    u16,
) {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let env = [("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}"))];
    let gw = spawn_gateway_with(dir.path(), &sim.base_url(), &store, &env, Stdio::inherit());
    gw.client().await;
    (sim, gw, dir, metrics)
}

async fn channel(gw: &GatewayProcess) -> Channel {
    Channel::from_shared(gw.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Runs `attack` on a thread while a calm client calls; then checks the client, the peak RSS
/// and that RSS comes back near idle.
async fn under_attack(name: &str, gw: &GatewayProcess, attack: impl FnOnce() + Send + 'static) {
    let idle = rss_mib(gw);
    let stop = Arc::new(AtomicBool::new(false));
    let calm = calm_client(channel(gw).await, "antom", stop.clone());
    let attacker = std::thread::spawn(attack);
    let mut peak = idle;
    while !attacker.is_finished() {
        peak = peak.max(rss_mib(gw));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    attacker.join().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, errors) = calm.await.unwrap();
    // The memory of ended connections goes back within a few seconds.
    let mut after = rss_mib(gw);
    for _ in 0..30 {
        if after < idle + 40.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = rss_mib(gw);
    }
    let p99 = p99(&mut lat);
    println!(
        "{name}: RSS idle {idle:.1} MiB, peak {peak:.1} MiB, after {after:.1} MiB; calm client {} calls, p99 {} ms, {} errors",
        lat.len(),
        p99.as_millis(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{name}: {} errors, the first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(p99 < Duration::from_secs(1), "{name}: p99 {p99:?}");
    assert!(peak < 300.0, "{name}: peak RSS {peak:.1} MiB");
    assert!(
        after < idle + 40.0,
        "{name}: RSS {after:.1} MiB after, {idle:.1} idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_on_one_connection_is_bounded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_sim, gw, _dir, _) = gateway().await;
    let port = gw.port;
    under_attack("stream flood", &gw, move || {
        let (sent, _) = flood(raw(port), 100_000, true, Duration::from_secs(4));
        println!("stream flood: {} KB sent", sent / 1024);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_over_many_connections_is_bounded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_sim, gw, _dir, metrics) = gateway().await;
    let port = gw.port;
    under_attack("streams over 100 connections", &gw, move || {
        // 100 connections, each with 200 streams whose bodies never come.
        let floods: Vec<_> = (0..100)
            .map(|_| {
                std::thread::spawn(move || flood(raw(port), 200, true, Duration::from_secs(4)))
            })
            .collect();
        for f in floods {
            f.join().unwrap();
        }
    })
    .await;
    // One client's connections beyond its cap were closed at once, and counted.
    let scrape = scrape(metrics).await;
    let shed = metric_value(
        &scrape,
        "paygate_shed_total",
        &[("reason", "client_connections")],
    )
    .unwrap_or(0.0);
    println!("streams over 100 connections: {shed} connections beyond the client's cap closed");
    assert!(shed >= 68.0, "{shed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reset_flood_is_bounded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_sim, gw, _dir, metrics) = gateway().await;
    let port = gw.port;
    under_attack("error-reset flood", &gw, move || {
        // Many connections at once, each sending malformed requests and never reading the
        // resets, held open.
        let floods: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    flood(raw(port), 1_000_000_000, false, Duration::from_secs(6))
                })
            })
            .collect();
        let done: Vec<(usize, bool)> = floods.into_iter().map(|f| f.join().unwrap()).collect();
        let sent: usize = done.iter().map(|d| d.0).sum();
        let closed = done.iter().filter(|d| d.1).count();
        println!(
            "error-reset flood: {} KB sent, {closed} of {} connections closed by the server",
            sent / 1024,
            done.len()
        );
        // Each flooding connection is closed once its resets reach the limit.
        assert_eq!(closed, done.len(), "a connection's resets are unbounded");
    })
    .await;
    // Counted, not logged once per connection.
    let scrape = scrape(metrics).await;
    let goaways = metric_value(
        &scrape,
        "paygate_http2_goaways_total",
        &[("reason", "local_error_resets")],
    )
    .unwrap_or(0.0);
    assert!(goaways >= 8.0, "{goaways}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_counted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_sim, gw, _dir, metrics) = gateway().await;
    let port = gw.port;
    let opened = Instant::now();
    let silent: Vec<TcpStream> = (0..500)
        .map(|i| {
            // From 20 addresses, within the per-client cap.
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let from = std::net::SocketAddr::from(([127, 0, 1, (i % 20) as u8 + 1], 0));
            socket.bind(&from.into()).unwrap();
            socket
                .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                .unwrap();
            socket.into()
        })
        .collect();
    under_attack("silent connections", &gw, || {
        std::thread::sleep(Duration::from_millis(500));
    })
    .await;
    // The handshake timeout (5 s) closes every one of them (15 s leaves room for a loaded
    // machine).
    tokio::task::spawn_blocking(move || {
        for mut s in silent {
            let left = Duration::from_secs(15).saturating_sub(opened.elapsed());
            s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .unwrap();
            // The server's own SETTINGS may come first; then the connection must end.
            let mut b = [0u8; 256];
            loop {
                match s.read(&mut b) {
                    Ok(n) if n > 0 && opened.elapsed() < Duration::from_secs(15) => continue,
                    Ok(0) | Err(_) if opened.elapsed() < Duration::from_secs(15) => break,
                    other => panic!("a silent connection is still open after 15 s: {other:?}"),
                }
            }
        }
    })
    .await
    .unwrap();
    let scrape = scrape(metrics).await;
    let timed_out = metric_value(
        &scrape,
        "paygate_shed_total",
        &[("reason", "handshake_timeout")],
    )
    .unwrap_or(0.0);
    assert!(timed_out >= 500.0, "{timed_out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_accounts_retry_storm_never_sheds_another_account() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Two Antom accounts on two simulators; account `hung`'s provider stops answering.
    let (hung, calm) = (shared_antom_sim().await, shared_antom_sim().await);
    let dir = tempfile::tempdir().unwrap();
    let env = antom_env(dir.path(), &calm.base_url());
    let key = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let account = |name: &str, url: &str| {
        format!(
            "[accounts.{name}]\nprovider = \"antom\"\nbase_url = \"{url}\"\nclient_id = \"{CLIENT_ID}\"\n\
             private_key_file = \"{}\"\nantom_public_key_file = \"{}\"\n",
            key("PAYGATE_ANTOM_PRIVATE_KEY_FILE"),
            key("PAYGATE_ANTOM_PUBLIC_KEY_FILE"),
        )
    };
    let config = dir.path().join("paygate.toml");
    std::fs::write(
        &config,
        format!(
            "default_account = \"calm\"\n{}{}",
            account("hung", &hung.base_url()),
            account("calm", &calm.base_url())
        ),
    )
    .unwrap();
    let metrics = free_port();
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let gw = spawn_configured(
        &config,
        &store,
        &[("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}"))],
    );
    gw.client().await;
    hung.sim
        .inject(Fault::on("refund", FaultKind::Latency { ms: 20_000 }).times(1_000));
    let stop = Arc::new(AtomicBool::new(false));
    let calm_calls = calm_client(channel(&gw).await, "calm", stop.clone());
    // The hung account's callers retry the same 50 request ids, as the README tells them to:
    // 1,280 calls at once over 16 connections (more than the gateway's 1,024 slots), again and
    // again.
    let mut storm_channels = Vec::new();
    for _ in 0..16 {
        storm_channels.push(channel(&gw).await);
    }
    let storm = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(4);
        let mut shed = 0;
        while Instant::now() < until {
            let calls: Vec<_> = (0..1280)
                .map(|i| {
                    let mut c = RefundServiceClient::new(storm_channels[i % 16].clone());
                    tokio::spawn(async move {
                        let req = pb::CreateRefundRequest {
                            account: "hung".into(),
                            ..refund_req(&format!("storm-{}", i % 50), "PAY_USD_100", 1)
                        };
                        c.create(with_timeout(req, Duration::from_millis(800)))
                            .await
                    })
                })
                .collect();
            for c in calls {
                if let Err(e) = c.await.unwrap()
                    && e.code() == tonic::Code::ResourceExhausted
                {
                    shed += 1;
                }
            }
        }
        shed
    });
    let storm_shed = storm.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut lat, errors) = calm_calls.await.unwrap();
    let p99 = p99(&mut lat);
    let scrape = scrape(metrics).await;
    let shed = |reason: &str| {
        metric_value(&scrape, "paygate_shed_total", &[("reason", reason)]).unwrap_or(-1.0)
    };
    println!(
        "retry storm: {storm_shed} of the hung account's calls shed; calm account {} calls, p99 {} ms, {} errors; shed account_calls {}, gateway_in_flight {}",
        lat.len(),
        p99.as_millis(),
        errors.len(),
        shed("account_calls"),
        shed("gateway_in_flight"),
    );
    assert!(
        errors.is_empty(),
        "the calm account got {} errors, the first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(p99 < Duration::from_secs(1), "{p99:?}");
    assert!(
        shed("account_calls") > 0.0,
        "the hung account's bulkhead never filled"
    );
    assert_eq!(shed("gateway_in_flight"), 0.0);
}
